"""Tissue map panel: outline a few regions per class, map every tissue tile of the slide.

The user adds one Shapes layer per class ("Add class": a layer named ``tissue: <class>``) and
draws a few rectangles or polygons in each, or imports annotated regions (their names are the
classes). "Fit and map" runs :func:`napari_histo.models.tissue_maps.iter_tissue_map` in a
cancellable worker with the shipped DeepCMorph nucleus module (or a chosen model folder): tile
features, a logistic-regression head fitted on the tiles inside the regions, every tissue tile
classified. The result is a Labels layer (one label per class, legend in the panel), the nucleus
classes as a second Labels layer, and exports to QuPath GeoJSON tiles and a Sedeen session.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_histo._napari import _layers
from napari_histo._napari._exchange import combo_layer, refresh_slide_combo, shapes_to_annotations
from napari_histo._napari._workers import CANCELLED, notify_error, notify_info, run_job

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: Prefix of the Shapes layers that hold the regions of one class.
CLASS_LAYER_PREFIX = "tissue: "
TISSUE_MAP = "tissue map"
NUCLEUS_CLASSES = _layers.NUCLEUS_CLASSES


def shape_class_names(layer: Any) -> list[str]:
    """The class of each shape of a Shapes layer: its ``class`` feature, else the layer's name
    after ``tissue: ``, else its ``name`` feature (imported regions)."""
    n = len(layer.data)
    features = getattr(layer, "features", None)
    if features is not None and "class" in features.columns and len(features) == n:
        return [str(v) for v in features["class"]]
    if layer.name.startswith(CLASS_LAYER_PREFIX):
        return [layer.name[len(CLASS_LAYER_PREFIX):].strip()] * n
    if features is not None and "name" in features.columns and len(features) == n:
        return [str(v) for v in features["name"]]
    return [""] * n


def regions_from_layers(viewer: Any, slide_layer: Any) -> list[Any]:
    """Every classed polygon of the viewer's user Shapes layers as level-0 :class:`Annotation`s."""
    from napari.layers import Shapes

    out = []
    for layer in viewer.layers:
        if isinstance(layer, Shapes) and not layer.metadata.get("napari_histo_overlay"):
            out.extend(a for a in shapes_to_annotations(layer, slide_layer, class_names=shape_class_names(layer))
                       if a.class_name and a.shape not in ("line", "path"))
    return out


def tissue_map_layer_data(result: Any, slide_layer: Any) -> tuple:
    """A Labels ``LayerDataTuple`` of the tile classes (label k + 1 = class k, 0 = not classified)."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_histo.models.classification import class_palette

    palette = class_palette(len(result.class_names))
    colours: dict[int | None, Any] = {None: np.zeros(4), 0: np.zeros(4)}
    colours.update({k + 1: np.array([*palette[k], 255]) / 255.0 for k in range(len(result.class_names))})
    kwargs = _layers.grid_kwargs(slide_layer, result.origin, result.step_level0)
    labels = (result.class_map.astype(np.int32) + 1).clip(0)
    meta = {"name": TISSUE_MAP, "colormap": DirectLabelColormap(color_dict=colours), "opacity": 0.5,
            "metadata": {"napari_histo_overlay": True, "class_names": list(result.class_names)}, **kwargs}
    return labels, meta, "labels"


class TissueMapPanel(QWidget):
    """Few-shot tissue maps from a few regions per class (see module docstring)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.result: Any = None
        self.job: Any = None
        self.model: Any = None
        self._weights: str | None = None  # what self.model was loaded from
        self.maps_dir: Path | None = None
        self._features: tuple[Any, Any] | None = None  # ((path, tile, weights), features of the last pass)

        self.layer_box = QComboBox()
        self.class_edit = QLineEdit()
        self.class_edit.setPlaceholderText("e.g. tumour")
        self.add_class_button = QPushButton("Add class")
        self.add_class_button.setToolTip("A Shapes layer for the regions of this class: draw a few in it")
        self.add_class_button.clicked.connect(lambda: self.add_class(self.class_edit.text()))
        self.tile_box = QSpinBox()
        self.tile_box.setRange(32, 1024)
        self.tile_box.setValue(224)
        self.tile_box.setSuffix(" px")
        self.tile_box.setToolTip("Tile side at the model's resolution (0.5 µm/px for the shipped module)")
        self.weights_edit = QLineEdit()
        self.weights_edit.setPlaceholderText("shipped nucleus module")
        self.weights_edit.setToolTip("A DeepCMorph model folder or released name; empty = the shipped module")
        self.run_button = QPushButton("Fit and map")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel("Add a class per tissue, draw a few regions in each, then Fit and map.")
        self.status.setWordWrap(True)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.geojson_button = QPushButton("Export QuPath GeoJSON…")
        self.sedeen_button = QPushButton("Export Sedeen session…")
        for button, fn in ((self.geojson_button, self.export_geojson), (self.sedeen_button, self.export_sedeen)):
            button.setEnabled(False)
            button.clicked.connect(lambda _=False, f=fn: self._export_dialog(f))

        form = QFormLayout()
        form.addRow("Image layer", self.layer_box)
        row = QHBoxLayout()
        row.addWidget(self.class_edit)
        row.addWidget(self.add_class_button)
        form.addRow("Class", row)
        form.addRow("Tile", self.tile_box)
        form.addRow("Model", self.weights_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.legend)
        layout.addWidget(self.geojson_button)
        layout.addWidget(self.sedeen_button)
        layout.addStretch(1)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # -- layers ------------------------------------------------------------------------------
    def _refresh_layers(self, *_: Any) -> None:
        refresh_slide_combo(self.layer_box, self.viewer)

    def selected_layer(self) -> Any | None:
        return combo_layer(self.layer_box, self.viewer)

    def add_class(self, name: str) -> Any:
        """Add (or select) the Shapes layer of class ``name``, in rectangle mode."""
        name = name.strip()
        if not name:
            notify_error(ValueError("type a class name first (e.g. tumour)"))
            return None
        layer_name = CLASS_LAYER_PREFIX + name
        if layer_name in self.viewer.layers:
            layer = self.viewer.layers[layer_name]
        else:
            from napari_histo.models.classification import class_palette

            k = sum(1 for lyr in self.viewer.layers if lyr.name.startswith(CLASS_LAYER_PREFIX))
            colour = np.array([*class_palette(k + 1)[k], 255]) / 255.0
            layer = self.viewer.add_shapes(name=layer_name, edge_color=colour, face_color=[0, 0, 0, 0],
                                           edge_width=4, **_layers.overlay_kwargs(self.selected_layer()))
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        return layer

    # -- run ---------------------------------------------------------------------------------
    def _work(self, slide_layer: Any, annotations: list[Any], tile: int, weights: str | None):
        from napari_histo.models.classification import ClassifyProgress, load_tile_classifier
        from napari_histo.models.tissue_maps import (
            TrainingRegions,
            fit_tissue_map,
            iter_tissue_map,
            missing_region_tiles,
        )

        regions = TrainingRegions.from_annotations(annotations)
        if len(regions.classes) < 2:
            raise ValueError("draw regions of at least two classes (found "
                             f"{', '.join(regions.classes) or 'none'})")
        if self.model is None or self._weights != weights:
            self.model, self._weights = load_tile_classifier(weights or None), weights
        path = _layers.layer_path(slide_layer)
        if path is None:
            raise ValueError(f"{slide_layer.name}: the tissue map reads the image file at the model's resolution; "
                             "open the image from a file (slide or TIFF with its pixel size)")
        key = (path, tile, weights)
        cached = self._features if self._features is not None and self._features[0] == key else None
        if cached is not None and missing_region_tiles(cached[1], regions) == 0:
            # same slide, tiles and model, and every region tile already read: refit only
            return iter([ClassifyProgress(1, 1, fit_tissue_map(cached[1], regions))])
        from napari_histo.utils import user_data_dir

        self.maps_dir = Path(tempfile.mkdtemp(prefix="tissue_map_", dir=user_data_dir("tissue_maps")))

        def read_then_fit():
            # the layer's µm scale: the file's own, or one the user applied (predicted magnification)
            for event in iter_tissue_map(path, self.model, regions, tile_size=tile,
                                         maps_store=self.maps_dir / "nucleus_maps.zarr",
                                         image_mpp=_layers.layer_mpp(slide_layer)):
                if event.result is not None:  # its features serve later refits
                    self._features = (key, event.result)
                yield event

        return read_then_fit()

    def run(self) -> Any:
        """Fit the head on the drawn regions and map every tissue tile (a cancellable job)."""
        slide = self.selected_layer()
        if slide is None:
            notify_error(ValueError("open a slide or image first"))
            return None
        annotations = regions_from_layers(self.viewer, slide)
        if not annotations:
            notify_error(ValueError("no regions: add a class and draw a few regions in it"))
            return None
        weights = self.weights_edit.text().strip() or None
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("extracting tile features…")

        def gen():
            result = None
            for event in self._work(slide, annotations, self.tile_box.value(), weights):
                result = event.result or result
                yield event
            return result

        self.job = run_job(gen, on_yield=self._progress, on_return=lambda r: self._show(r, slide),
                           on_finish=self._finished, context="tissue map")
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _progress(self, event: Any) -> None:
        self.status.setText(f"tiles {event.done} / {event.total}")

    def _finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show(self, result: Any, slide: Any) -> None:
        if result is None or result is CANCELLED:
            self.status.setText("cancelled")
            return
        from napari_histo.models.classification import class_palette

        self.result = result
        _layers.add_or_update(self.viewer, tissue_map_layer_data(result, slide))
        store = self.maps_dir / "nucleus_maps.zarr" if self.maps_dir is not None else None
        if store is not None and store.exists():
            layer = _layers.add_or_update(self.viewer, _layers.nucleus_classes_layer_data(store, slide))
            layer.visible = False
        palette = class_palette(len(result.class_names))
        counts = [int((result.class_map == k).sum()) for k in range(len(result.class_names))]
        train = result.head.train_tiles if result.head is not None else {}
        self.legend.setText("<br>".join(
            f'<span style="color: rgb({r},{g},{b})">■</span> {name}: {n} tiles ({train.get(name, 0)} in regions)'
            for name, (r, g, b), n in zip(result.class_names, palette.tolist(), counts)))
        self.status.setText(f"{int((result.class_map >= 0).sum())} tiles classified")
        self.geojson_button.setEnabled(True)
        self.sedeen_button.setEnabled(True)

    # -- export ------------------------------------------------------------------------------
    def export_geojson(self, path: str | Path) -> Path:
        """The classified tiles as QuPath ``tile`` objects (class, colour, probability)."""
        from napari_histo.formats.geojson import write_geojson
        from napari_histo.models.tissue_maps import tile_annotations

        return write_geojson(None, path, annotations=tile_annotations(self.result))

    def export_sedeen(self, path: str | Path) -> Path:
        """One region per class in a Sedeen session (merged into an existing session)."""
        from napari_histo.formats.sedeen import write_sedeen
        from napari_histo.models.tissue_maps import class_run_annotations

        slide = self.selected_layer()
        name = Path(_layers.layer_path(slide)).name if slide is not None and _layers.layer_path(slide) else None
        return write_sedeen(None, path, rois=class_run_annotations(self.result), slide_name=name)

    def _export_dialog(self, fn: Any) -> None:
        if self.result is None:
            return
        geo = fn == self.export_geojson
        path, _ = QFileDialog.getSaveFileName(self, "Export tissue map", "tissue_map" + (".geojson" if geo else ".session.xml"),
                                              "GeoJSON (*.geojson)" if geo else "Sedeen session (*.xml)")
        if path:
            try:
                notify_info(f"written {fn(path)}")
            except Exception as exc:  # noqa: BLE001 - shown to the user
                notify_error(exc, "export")
