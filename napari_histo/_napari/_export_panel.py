"""Export/import panel: nuclei, ROIs and hotspots to QuPath GeoJSON, Sedeen XML, HoVer-Net JSON,
CSV and the density heatmap to PNG; import any supported annotation file back into layers.

Default file names sit beside the slide (``<slide stem>.geojson``, ``<slide stem>.session.xml``
as Sedeen expects, ...). Nothing existing is clobbered: a taken name gets a `` (2)`` suffix,
except the Sedeen session, which the writer merges into. Every writer is atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_histo._napari import _layers
from napari_histo._napari._workers import CANCELLED, Job, notify_error, notify_info

# Lazy imports: PIL, napari, pandas, shapely are imported inside the functions that use them
# (directly or through the modules named there): napari-histo --help and napari's plugin discovery
# import this module.

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import pandas as pd

#: kind -> (label, default file name pattern)
EXPORTS: dict[str, tuple[str, str]] = {
    "geojson": ("QuPath GeoJSON", "{stem}.geojson"),
    "sedeen": ("Sedeen session XML", "{stem}.session.xml"),
    "hovernet": ("HoVer-Net JSON", "{stem}.hovernet.json"),
    "csv": ("CSV table", "{stem}.nuclei.csv"),
    "heatmap": ("Heatmap PNG", "{stem}.density.png"),
}

IMPORT_FILTER = "Annotations (*.xml *.geojson *.json *.geojson.gz *.json.gz);;All files (*)"


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------
def unique_path(path: str | Path) -> Path:
    """``path`` if free, else ``name (2).ext``, ``name (3).ext``... (never clobber a file)."""
    path = Path(path)
    if not path.exists():
        return path
    name = path.name
    stem, dot, suffix = name.partition(".")
    for k in range(2, 10_000):
        candidate = path.with_name(f"{stem} ({k}){dot}{suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(path)


def default_paths(slide_path: str | Path | None, fallback_dir: str | Path | None = None) -> dict[str, Path]:
    """Default export paths beside the slide (or in ``fallback_dir`` / cwd, stem "nuclei")."""
    import os

    fallback = Path(fallback_dir or Path.cwd())
    if slide_path:
        slide_path = Path(slide_path)
        folder, stem = slide_path.parent, slide_path.name.split(".")[0]
        if not os.access(folder, os.W_OK):  # read-only slide folder: fall back
            folder = fallback
    else:
        folder, stem = fallback, "nuclei"
    out = {}
    for kind, (_, pattern) in EXPORTS.items():
        path = folder / pattern.format(stem=stem)
        out[kind] = path if kind == "sedeen" else unique_path(path)
    return out


def nuclei_table(viewer: napari.Viewer) -> pd.DataFrame | None:
    """The nucleus table of the topmost napari-histo nuclei layer, else None."""
    for layer in reversed(list(viewer.layers)):
        table = layer.metadata.get("nuclei_table")
        if table is not None:
            return table
    return None


def shapes_to_annotations(shapes_layer: Any, slide_layer: Any | None, *, class_name: str | None = None) -> list:
    """Polygons of a Shapes layer as level-0 :class:`~napari_histo.formats._common.Annotation`."""
    from shapely.geometry import Polygon

    from napari_histo.formats._common import Annotation

    names = None
    if "name" in getattr(shapes_layer, "features", {}):
        names = list(shapes_layer.features["name"])
    out = []
    for i, verts in enumerate(shapes_layer.data):
        world = _layers.vertices_to_world(shapes_layer, verts)
        yx = _layers.world_to_level0(slide_layer, world) if slide_layer is not None else world
        if len(yx) < 3:
            continue
        geom = Polygon(yx[:, ::-1])
        if not geom.is_valid:
            geom = geom.buffer(0)
        shape_type = shapes_layer.shape_type[i]
        name = names[i] if names else f"{shapes_layer.name} {i + 1}"
        out.append(Annotation(geometry=geom, name=str(name), class_name=class_name, shape=shape_type, is_ellipse=shape_type == "ellipse"))
    return out


def roi_annotations(viewer: napari.Viewer, slide_layer: Any | None) -> list:
    """Annotations from user Shapes layers (ROIs drawn by hand)."""
    from napari.layers import Shapes

    rois = []
    for layer in viewer.layers:
        if isinstance(layer, Shapes) and not layer.metadata.get("napari_histo_overlay"):
            rois.extend(shapes_to_annotations(layer, slide_layer, class_name="ROI"))
    return rois


def hotspot_annotations(viewer: napari.Viewer) -> list:
    """The Density & hotspots panel's hotspots as level-0 annotations ("Hotspot 1", ...)."""
    if _layers.HOTSPOTS not in viewer.layers:
        return []
    layer = viewer.layers[_layers.HOTSPOTS]
    anns = shapes_to_annotations(layer, _layers.find_slide_layer(viewer), class_name="Hotspot")
    circles = layer.metadata.get("circles", False)
    for ann in anns:
        ann.is_ellipse = bool(circles)
    return anns


def hotspot_table(viewer: napari.Viewer) -> pd.DataFrame | None:
    """The hotspot table (``find_hotspots`` output) behind the hotspots layer, if any."""
    if _layers.HOTSPOTS not in viewer.layers:
        return None
    return viewer.layers[_layers.HOTSPOTS].metadata.get("hotspots_table")


def heatmap_rgba(layer: Any) -> np.ndarray:
    """The heatmap layer rendered with its own colormap and contrast limits (uint8 RGBA)."""
    data = np.asarray(layer.data, dtype=np.float32)
    lo, hi = layer.contrast_limits
    norm = np.clip((data - lo) / ((hi - lo) or 1.0), 0, 1)
    rgba = layer.colormap.map(norm.ravel()).reshape(*data.shape, 4)
    rgba[~np.isfinite(data)] = 0
    return (rgba * 255).round().astype(np.uint8)


def write_heatmap_png(layer: Any, path: str | Path) -> Path:
    """Save the heatmap layer as a PNG (one pixel per grid cell), atomically."""
    from PIL import Image

    from napari_histo.utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(heatmap_rgba(layer), mode="RGBA").save(tmp, format="PNG")
    return path


def export_kind(viewer: napari.Viewer, kind: str, path: str | Path) -> Path:
    """Write one export; raises a clear error when its input is missing."""
    slide_layer = _layers.find_slide_layer(viewer)
    path = Path(path)
    if kind == "heatmap":
        if _layers.HEATMAP not in viewer.layers:
            raise ValueError("no density heatmap: run the Density & hotspots panel first")
        return write_heatmap_png(viewer.layers[_layers.HEATMAP], path)
    table = nuclei_table(viewer)
    hotspots = hotspot_annotations(viewer)
    rois = roi_annotations(viewer, slide_layer)
    if kind == "sedeen":
        from napari_histo.formats.sedeen import write_sedeen

        spots = hotspot_table(viewer)
        if table is None and spots is None and not rois:
            raise ValueError("nothing to export: no nuclei, hotspots or ROIs")
        slide_name = None
        if slide_layer is not None and (slide_file := _layers.layer_path(slide_layer)):
            slide_name = Path(slide_file).name
        return write_sedeen(table, path, hotspots=spots, rois=rois or None, merge=True, slide_name=slide_name)
    if table is None:
        raise ValueError("no nuclei to export: run the Nuclei panel (or import nuclei) first")
    if kind == "geojson":
        from napari_histo.formats.geojson import write_geojson

        write_geojson(table, path, annotations=[*rois, *hotspots])
    elif kind == "hovernet":
        from napari_histo.formats.hovernet_json import write_hovernet_json

        mag = None
        if slide_layer is not None and (info_path := _layers.layer_path(slide_layer)):
            try:
                from napari_histo.slide import open_slide

                with open_slide(info_path) as slide:
                    mag = slide.objective_power
            except Exception:
                mag = None
        write_hovernet_json(table, path, mag=mag)
    elif kind == "csv":
        from napari_histo.formats.csv import write_csv

        write_csv(table, path)
    else:
        raise ValueError(f"unknown export kind {kind!r}")
    return path


def import_file(viewer: napari.Viewer, path: str | Path) -> list:
    """Import any supported annotation file (format from its content) into layers aligned with the
    slide, synchronously: nuclei -> Points, regions -> Shapes (:func:`_layers.annotation_layers`)."""
    return _layers.add_layer_tuples(viewer, _layers.annotation_layers(path, _layers.find_slide_layer(viewer)))


# ---------------------------------------------------------------------------------------------
# widget
# ---------------------------------------------------------------------------------------------
class ExportPanel(QWidget):
    """Choose formats and paths, export; import annotation files."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.checks: dict[str, QCheckBox] = {}
        self.paths: dict[str, QLineEdit] = {}
        grid = QGridLayout()
        for row, (kind, (label, _)) in enumerate(EXPORTS.items()):
            check = QCheckBox(label)
            check.setChecked(kind != "heatmap")
            edit = QLineEdit()
            browse = QPushButton("…")
            browse.setMaximumWidth(30)
            browse.clicked.connect(lambda _=False, k=kind: self._browse(k))
            grid.addWidget(check, row, 0)
            grid.addWidget(edit, row, 1)
            grid.addWidget(browse, row, 2)
            self.checks[kind], self.paths[kind] = check, edit
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)
        self.import_button = QPushButton("Import annotations (QuPath, Sedeen, HoVer-Net, ImageScope, ASAP)…")
        self.import_button.clicked.connect(self._choose_import)
        self.imported: list = []
        self.import_job: Job | None = None
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.export_button)
        layout.addWidget(self.import_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        viewer.layers.events.inserted.connect(self.refresh_defaults)
        viewer.layers.events.removed.connect(self.refresh_defaults)
        self.refresh_defaults()

    def refresh_defaults(self, *_: Any, force: bool = False) -> None:
        """Reset the paths to the defaults beside the current slide (when the slide changes)."""
        slide = _layers.find_slide_layer(self.viewer)
        slide_path = _layers.layer_path(slide) if slide is not None else None
        if not force and self.paths["geojson"].text() and slide_path == getattr(self, "_slide_path", None):
            return
        self._slide_path = slide_path
        defaults = default_paths(slide_path)
        for kind, edit in self.paths.items():
            edit.setText(str(defaults[kind]))

    def _browse(self, kind: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, EXPORTS[kind][0], self.paths[kind].text())
        if path:
            self.paths[kind].setText(path)

    def export(self) -> dict[str, Path]:
        """Write every checked format; returns kind -> written path (errors are notified)."""
        written: dict[str, Path] = {}
        for kind, check in self.checks.items():
            if not check.isChecked():
                continue
            target = self.paths[kind].text().strip()
            if not target:
                continue
            try:
                written[kind] = export_kind(self.viewer, kind, target)
            except Exception as exc:
                notify_error(exc, f"export {EXPORTS[kind][0]}")
        if written:
            self.status.setText("Wrote:\n" + "\n".join(str(p) for p in written.values()))
            notify_info(f"exported {len(written)} file(s)")
            for kind, path in written.items():  # the next export never clobbers these
                if kind != "sedeen":
                    self.paths[kind].setText(str(unique_path(path)))
        return written

    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import annotations", "", IMPORT_FILTER)
        if path:
            self.import_path(path)

    def import_path(self, path: str | Path) -> Job:
        """Import an annotation file into layers in a worker (a whole-slide GeoJSON takes seconds
        to read; the viewer stays responsive). Errors are notified; ``self.imported`` holds the
        layers added."""
        path = Path(path)
        self.imported = []
        self.import_button.setEnabled(False)
        self.status.setText(f"Importing {path.name}…")

        def added(layer_tuples: list) -> None:
            if layer_tuples is CANCELLED:
                return
            self.imported = _layers.add_layer_tuples(self.viewer, layer_tuples)
            self.status.setText(f"Imported {path.name}: " + ", ".join(layer.name for layer in self.imported))

        def failed(exc: BaseException) -> None:
            self.status.setText(f"Import of {path.name} failed")
            notify_error(exc, "import")

        self.import_job = Job(_layers.annotation_import_events, path, _layers.find_slide_layer(self.viewer),
                              on_return=added, on_error=failed,
                              on_finish=lambda: self.import_button.setEnabled(True), context="import")
        return self.import_job.start()
