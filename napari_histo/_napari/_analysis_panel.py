"""Density & hotspots panel: a nucleus-density heatmap over the slide and the top-k hotspots.

Thin over :func:`napari_histo.analysis.density.density_map` and
:func:`napari_histo.analysis.hotspots.find_hotspots`. The heatmap is a semi-transparent Image
layer aligned with the slide (``scale = P*s0``, ``translate = t0 + offset*s0``: napari puts pixel
centres at ``index * scale + translate``);
hotspots are a Shapes layer (circles for the radius kinds, boxes for the tile kind) and a table
with one "Go" button per hotspot that moves the camera onto it. Hotspots can be limited to the
shapes of a region layer (a drawn or imported tumour outline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_histo._napari import _layers
from napari_histo._napari._analysis_job import analysis_events, summary_lines
from napari_histo._napari._exchange import nuclei_layer_names, nuclei_table, refresh_layer_combo
from napari_histo._napari._workers import CANCELLED, Job, notify_error

# Lazy imports: napari, pandas are imported inside the functions that use them (directly or
# through the modules named there): napari-histo --help and napari's plugin discovery import this
# module.

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import pandas as pd

WHOLE_SLIDE = "whole slide"

KIND_LABELS = {
    "count": "count within radius (QuPath raw counts)",
    "gaussian": "Gaussian (σ = radius)",
    "percent": "percent of secondary type",
    "tile": "tile grid (nuclei per px²)",
}

#: Title of the heatmap's legend per kind (the colour bar shows the values).
HEATMAP_TITLE = {
    "count": "Nuclei within the radius",
    "gaussian": "Gaussian-weighted nuclei",
    "percent": "Share of the secondary type",
    "tile": "Nuclei per tile",
}

#: Hotspot outlines and labels.
HOTSPOT_COLOUR = "#00e5ff"


class AnalysisPanel(QWidget):
    """Types, kind, radius or tile size, k -> heatmap layer, hotspots layer and table."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.job: Job | None = None
        self.density: Any = None
        self.hotspots: pd.DataFrame | None = None
        self.summary: pd.DataFrame | None = None

        self.nuclei_combo = QComboBox()
        self.nuclei_combo.setToolTip("The nuclei to map: a segmentation result or imported annotations")
        self.nuclei_combo.currentTextChanged.connect(self.refresh_types)
        self.type_combo = QComboBox()
        self.secondary_combo = QComboBox()
        self.kind_combo = QComboBox()
        for kind, label in KIND_LABELS.items():
            self.kind_combo.addItem(label, kind)
        self.kind_combo.currentIndexChanged.connect(self._kind_changed)
        self.radius = QDoubleSpinBox()
        self.radius.setRange(1.0, 5000.0)
        self.radius.setValue(50.0)
        self.radius.setSuffix(" µm")
        self.tile = QSpinBox()
        self.tile.setRange(4, 4096)
        self.tile.setValue(50)
        self.tile.setSuffix(" px")
        self.window = QSpinBox()
        self.window.setRange(1, 200)
        self.window.setValue(20)
        self.window.setSuffix(" tiles")
        self.k = QSpinBox()
        self.k.setRange(1, 50)
        self.k.setValue(5)
        self.region_combo = QComboBox()
        self.region_combo.setToolTip("Search hotspots only inside the shapes of this layer (e.g. a tumour outline)")
        self.run_button = QPushButton("Compute")
        self.run_button.clicked.connect(self.run)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table_widget = QTableWidget(0, 4)
        self.table_widget.setHorizontalHeaderLabels(["hotspot", "count", "score", ""])
        self.table_widget.verticalHeader().setVisible(False)

        form = QFormLayout()
        form.addRow("Nuclei layer", self.nuclei_combo)
        form.addRow("Nuclei", self.type_combo)
        form.addRow("Kind", self.kind_combo)
        form.addRow("Secondary", self.secondary_combo)
        form.addRow("Radius", self.radius)
        form.addRow("Tile size", self.tile)
        form.addRow("Hotspot window", self.window)
        form.addRow("Hotspots (k)", self.k)
        form.addRow("Hotspots within", self.region_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.status)
        layout.addWidget(self.table_widget)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh_nuclei_layers)
            event.connect(self.refresh_regions)
        self.refresh_nuclei_layers()
        self.refresh_regions()
        self._kind_changed()

    # -- inputs -----------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return str(self.kind_combo.currentData())

    def _kind_changed(self, *_: Any) -> None:
        tile = self.kind == "tile"
        self.radius.setEnabled(not tile)
        self.tile.setEnabled(tile)
        self.window.setEnabled(tile)
        self.secondary_combo.setEnabled(self.kind == "percent")

    def refresh_nuclei_layers(self, *_: Any) -> None:
        """Offer every layer holding nuclei (segmented or imported), then that layer's types."""
        refresh_layer_combo(self.nuclei_combo, nuclei_layer_names(self.viewer))
        self.refresh_types()

    def selected_table(self) -> pd.DataFrame | None:
        """The nucleus table of the chosen nuclei layer."""
        return nuclei_table(self.viewer, self.nuclei_combo.currentText() or None)

    def refresh_types(self, *_: Any) -> None:
        """Offer "all", the coarse classes present, the type names (and "positive") of the chosen layer."""
        from napari_histo.schema.vocabulary import COARSE_CLASSES, coarse_class

        table = self.selected_table()
        current, current_sec = self.type_combo.currentText(), self.secondary_combo.currentText()
        names = ["all"]
        if table is not None and len(table):
            info = _layers.type_info_of(table)
            present = sorted(set(table["type"].tolist()))
            fine = [info.name(t) for t in present if t != 0]
            coarse = {coarse_class(n) for n in fine} - {None}
            # a coarse class is offered when it groups several of the layer's types
            grouped = [c for c in COARSE_CLASSES.values() if c in coarse and c not in fine
                       and sum(coarse_class(n) == c for n in fine) > 1]
            names += grouped + fine
        secondary = [n for n in names[1:]]
        if table is not None and "positive" in table.columns:
            secondary.insert(0, "positive")
        self.type_combo.clear()
        self.type_combo.addItems(names)
        self.secondary_combo.clear()
        self.secondary_combo.addItems(secondary)
        if current in names:
            self.type_combo.setCurrentText(current)
        if current_sec in secondary:
            self.secondary_combo.setCurrentText(current_sec)

    def refresh_regions(self, *_: Any) -> None:
        """Offer the whole slide plus every user Shapes layer (drawn or imported regions)."""
        from napari.layers import Shapes

        current = self.region_combo.currentText()
        self.region_combo.clear()
        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, Shapes) and not layer.metadata.get("napari_histo_overlay")]
        self.region_combo.addItems([WHOLE_SLIDE, *names])
        if current in names:
            self.region_combo.setCurrentText(current)

    def region(self, slide_layer: Any | None) -> list | None:
        """The chosen region layer's shapes as level-0 annotations, or None for the whole slide."""
        from napari_histo._napari._exchange import shapes_to_annotations

        name = self.region_combo.currentText()
        if name in ("", WHOLE_SLIDE) or name not in self.viewer.layers:
            return None
        rois = shapes_to_annotations(self.viewer.layers[name], slide_layer)
        if not rois:
            raise ValueError(f"the region layer {name!r} holds no polygon")
        return rois

    def parameters(self, table: pd.DataFrame, slide_layer: Any | None) -> dict[str, Any]:
        mpp = table.attrs.get("mpp") or (_layers.layer_mpp(slide_layer) if slide_layer is not None else None)
        shape = None
        if slide_layer is not None:
            h, w = _layers.level0_shape(slide_layer)
            shape = (w, h)
        type_name = self.type_combo.currentText()
        params = {
            "kind": self.kind,
            "type": None if type_name in ("", "all") else type_name,
            "secondary": self.secondary_combo.currentText() or "positive",
            "mpp": mpp,
            "shape": shape,
            "radius_um": float(self.radius.value()),
            "radius_px": float(self.radius.value()) / (mpp or 1.0),
            "tile": int(self.tile.value()),
            "window": int(self.window.value()),
            "k": int(self.k.value()),
            "roi": self.region(slide_layer),
        }
        return params

    # -- running ----------------------------------------------------------------------------
    def run(self) -> Job | None:
        """Compute the heatmap and hotspots for the nuclei of the chosen layer."""
        table = self.selected_table()
        if table is None or not len(table):
            notify_error(ValueError("no nuclei: run the Nuclei panel (or import nuclei) first"), "density")
            return None
        slide_layer = _layers.find_slide_layer(self.viewer)
        self.slide_layer = slide_layer
        try:
            params = self.parameters(table, slide_layer)
        except ValueError as exc:
            notify_error(exc, "density")
            return None
        self.run_button.setEnabled(False)
        self.status.setText("computing…")
        self.job = Job(analysis_events, table, params, on_return=self._on_return,
                       on_finish=lambda: self.run_button.setEnabled(True), context="density")
        return self.job.start()

    def _on_return(self, value: Any) -> None:
        if value is CANCELLED or value is None:
            return
        dmap, spots, summary = value
        self.density, self.hotspots, self.summary = dmap, spots, summary
        finite = dmap.array[np.isfinite(dmap.array)]
        hi = float(finite.max()) if finite.size else 1.0
        data, meta, _ = _layers.heatmap_layer_data(
            dmap.array, dmap.pixel_size, self.slide_layer, offset=dmap.offset,
            contrast_limits=(0.0, hi if hi > 0 else 1.0),
        )
        meta["metadata"].update({"kind": dmap.kind, "units": dmap.units, "type": dmap.type})
        heat = _layers.add_or_update(self.viewer, (data, meta, "image"))
        # a colour bar with the map's meaning and units (napari's colour bar has ticks, no title)
        heat.colorbar.visible = True
        text = self.viewer.canvas.overlays.text
        which = "" if dmap.type in (None, "all") else f" ({dmap.type})"
        text.text = f"{HEATMAP_TITLE.get(dmap.kind, dmap.kind)}{which}: {dmap.units}"
        text.position = "top_left"
        text.visible = True
        self.show_hotspots(spots)
        # keep the hotspots above the heatmap, both above the slide
        self.viewer.layers.selection.active = heat
        self.status.setText(
            f"{dmap.kind} map {dmap.shape[1]}×{dmap.shape[0]} ({dmap.pixel_size:g} px cells, {dmap.units}); "
            f"{len(spots)} hotspot(s)" + "".join(f"\n{line}" for line in summary_lines(summary))
        )

    def show_hotspots(self, spots: pd.DataFrame) -> None:
        """Hotspots as a Shapes layer (level-0 px, slide-aligned) and a table with Go buttons."""
        import pandas as pd

        from napari_histo.analysis.hotspots import hotspot_annotations

        anns = hotspot_annotations(spots)
        polygons = [np.asarray(a.geometry.exterior.coords)[:-1][:, ::-1] for a in anns]
        if _layers.HOTSPOTS in self.viewer.layers:
            self.viewer.layers.remove(_layers.HOTSPOTS)
        if polygons:
            features = pd.DataFrame({"name": spots["name"].astype(str).to_numpy(), "count": spots["count"].to_numpy()})
            # cyan on the inferno heatmap (black-purple-orange-yellow): no heatmap colour is close to it
            data, meta, _ = _layers.shapes_layer_data(polygons, self.slide_layer, name=_layers.HOTSPOTS, features=features,
                                                      edge_color=HOTSPOT_COLOUR)
            meta["metadata"].update({"hotspots_table": spots, "circles": bool(len(spots) and spots["mode"].iloc[0] == "circle")})
            meta["text"] = {"string": "{name}", "color": HOTSPOT_COLOUR, "size": 12, "anchor": "center"}
            self.viewer.add_shapes(data, **meta)
        self.table_widget.setRowCount(len(spots))
        for r, (_, row) in enumerate(spots.iterrows()):
            self.table_widget.setItem(r, 0, QTableWidgetItem(str(row["name"])))
            self.table_widget.setItem(r, 1, QTableWidgetItem(str(int(row["count"]))))
            self.table_widget.setItem(r, 2, QTableWidgetItem(f"{float(row['score']):.3g}"))
            go = QPushButton("Go")
            go.clicked.connect(lambda _=False, i=r: self.go_to(i))
            self.table_widget.setCellWidget(r, 3, go)

    def go_to(self, index: int) -> None:
        """Centre the camera on hotspot ``index`` (0-based) and zoom so it fills the view."""
        if self.hotspots is None or index >= len(self.hotspots):
            return
        row = self.hotspots.iloc[index]
        slide_layer = getattr(self, "slide_layer", None) or _layers.find_slide_layer(self.viewer)
        centre = np.array([row["y"], row["x"]], float)
        half = np.array([row["y1"] - row["y0"], row["x1"] - row["x0"]], float) / 2
        world = _layers.level0_to_world(slide_layer, centre) if slide_layer is not None else centre
        scale = np.asarray(slide_layer.scale[-2:], float) if slide_layer is not None else np.ones(2)
        size = np.asarray(self.viewer.canvas.size, float)
        camera = self.viewer.scene.camera
        camera.center = tuple(world)
        camera.zoom = float(min(size / (2.4 * np.maximum(half, 1.0) * scale)))
