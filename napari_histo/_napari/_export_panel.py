"""Export/import panel: nuclei, ROIs and hotspots to QuPath GeoJSON, Sedeen XML, HoVer-Net JSON,
CSV and the density heatmap to PNG; import any supported annotation file back into layers.

Default file names sit beside the slide (``<slide stem>.geojson``, ``<slide stem>.session.xml``
as Sedeen expects, ...). Nothing existing is clobbered: a taken name gets a `` (2)`` suffix,
except the Sedeen session, which the writer merges into. Every writer is atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_histo._napari import _layers
from napari_histo._napari._exchange import (
    EXPORTS,
    default_paths,
    export_kind,
    nuclei_layer_names,
    refresh_layer_combo,
    unique_path,
)
from napari_histo._napari._workers import CANCELLED, Job, notify_error, notify_info

# Lazy imports: PIL, napari, pandas, shapely are imported inside the functions that use them
# (directly or through the modules named there): napari-histo --help and napari's plugin discovery
# import this module.

if TYPE_CHECKING:  # pragma: no cover
    import napari


IMPORT_FILTER = "Annotations (*.xml *.geojson *.json *.geojson.gz *.json.gz);;All files (*)"


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
        self.nuclei_combo = QComboBox()
        self.nuclei_combo.setToolTip("The nuclei to export: a segmentation result or imported annotations")
        nuclei_row = QHBoxLayout()
        nuclei_row.addWidget(QLabel("Nuclei layer"))
        nuclei_row.addWidget(self.nuclei_combo, 1)
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)
        self.import_button = QPushButton("Import annotations (QuPath, Sedeen, HoVer-Net, ImageScope, ASAP)…")
        self.import_button.clicked.connect(self._choose_import)
        self.imported: list = []
        self.import_job: Job | None = None
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(nuclei_row)
        layout.addLayout(grid)
        layout.addWidget(self.export_button)
        layout.addWidget(self.import_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh_defaults)
            event.connect(self.refresh_nuclei_layers)
        self.refresh_defaults()
        self.refresh_nuclei_layers()

    def refresh_nuclei_layers(self, *_: Any) -> None:
        """Offer every layer holding nuclei (segmented or imported)."""
        refresh_layer_combo(self.nuclei_combo, nuclei_layer_names(self.viewer))

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
                written[kind] = export_kind(self.viewer, kind, target, self.nuclei_combo.currentText() or None)
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
