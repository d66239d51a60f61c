"""Train panel: fine-tune the nucleus model on the nuclei you corrected in napari.

The plugin's manifest declares this dock widget, but it lives in the training package: napari
loads it only when the user opens it, and the viewer plugin's code never imports training code. Pick the nuclei layer you corrected (deleted,
redrawn, retyped) or imported from QuPath / Sedeen; the panel cuts the region those nuclei cover
from the open slide (with its pixel size), writes it as an annotated image, and fine-tunes the
shipped model on it in a cancellable background job with progress. The model lands in the
per-user ``models`` folder, where the Nuclei panel lists it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_histo._napari import _layers
from napari_histo._napari._docks import panel_dock
from napari_histo._napari._exchange import nuclei_layer_names, nuclei_table, refresh_layer_combo
from napari_histo._napari._workers import CANCELLED, Job, notify_error, notify_info
from napari_histo.utils import user_data_dir

#: Largest region (level-0 px per side) cut around the nuclei to train on.
MAX_REGION_PX = 4096
#: Context (level-0 px) kept around the nuclei.
MARGIN_PX = 32


def region_of(table, width: int, height: int) -> tuple[int, int, int, int]:
    """Level-0 box (x0, y0, x1, y1) around the table's nuclei plus a margin, inside the slide."""
    x0 = max(0, int(np.floor(table["bbox_x0"].min())) - MARGIN_PX)
    y0 = max(0, int(np.floor(table["bbox_y0"].min())) - MARGIN_PX)
    x1 = min(width, int(np.ceil(table["bbox_x1"].max())) + MARGIN_PX)
    y1 = min(height, int(np.ceil(table["bbox_y1"].max())) + MARGIN_PX)
    if x1 - x0 > MAX_REGION_PX or y1 - y0 > MAX_REGION_PX:
        raise ValueError(f"the nuclei span {x1 - x0} x {y1 - y0} px; train on a region up to {MAX_REGION_PX} px "
                         "a side (correct the nuclei of one field)")
    return x0, y0, x1, y1


def panel_training_events(rgb: np.ndarray, table: Any, origin: tuple[int, int], mpp: float, out: Path,
                          iterations: int, init: str):
    """Write the annotated region, then fine-tune (yields progress records; returns the summary)."""
    from src_models.hovernet.own_data import train_own_steps, write_annotated_region

    data = write_annotated_region(rgb, table, origin, out / "annotations")
    return (yield from train_own_steps(data, out, iterations=iterations, minutes=120.0, init=init, mpp=mpp))


def preview_patches(rgb: np.ndarray, table: Any, origin: tuple[int, int], mpp: float, size: int = 256,
                    step: int = 256) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """What training will see: the region cut into patches at the network's resolution, as
    (RGB grid with outlines in type colours, instance grid, type names) -- the same annotated-image
    path the Train button takes."""
    import tempfile

    from src_models.hovernet.config import TrainConfig
    from src_models.hovernet.own_data import shipped_weights_dir, write_annotated_region
    from src_models.hovernet.patches import own_tiles, patch_tiles, preview_grid, vocabulary_names

    work_mpp = TrainConfig.load(shipped_weights_dir() / "train_config.json").model.network_mpp
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_annotated_region(rgb, table, origin, Path(tmp) / "annotations")
        tiles, vocabulary = own_tiles(folder, mpp, work_mpp)
    names = vocabulary_names(vocabulary)
    grid, labels = preview_grid(patch_tiles(tiles, size, step), names)
    return grid, labels, names


def preview_patch_events(rgb: np.ndarray, table: Any, origin: tuple[int, int], mpp: float):
    """:func:`preview_patches` as a job generator (one progress record, then the layers' data)."""
    yield {"step": "cutting the region into training patches"}
    return preview_patches(rgb, table, origin, mpp)


class TrainPanel(QWidget):
    """Nuclei layer, iterations, starting weights, output folder; Train / Cancel with progress."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.job: Job | None = None
        self.summary: dict | None = None
        self.nuclei_combo = QComboBox()
        self.nuclei_combo.setToolTip("The corrected (or imported) nuclei to learn from")
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 100_000)
        self.iterations.setValue(300)
        self.init_combo = QComboBox()
        self.init_combo.addItems(["shipped model", "random weights"])
        self.name_edit = QLineEdit(f"my-model-{time.strftime('%Y%m%d-%H%M')}")
        self.name_edit.setToolTip("Folder name of the new model in the per-user models folder")
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.preview_button = QPushButton("Preview patches")
        self.preview_button.setToolTip("Show the training patches with their outlines before training")
        self.preview_button.clicked.connect(self.preview)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Nuclei layer", self.nuclei_combo)
        form.addRow("Iterations", self.iterations)
        form.addRow("Start from", self.init_combo)
        form.addRow("Model name", self.name_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        refresh_layer_combo(self.nuclei_combo, nuclei_layer_names(self.viewer))

    def output_folder(self) -> Path:
        name = "".join(c for c in self.name_edit.text().strip() if c.isalnum() or c in "-_.") or "my-model"
        return user_data_dir("models") / name

    def _region(self) -> tuple[np.ndarray, Any, tuple[int, int], float]:
        """(RGB of the region, its nuclei, level-0 origin, µm/px) of the chosen nuclei layer."""
        slide = _layers.find_slide_layer(self.viewer)
        if slide is None:
            raise ValueError("open the slide or image the nuclei belong to first")
        mpp = _layers.layer_mpp(slide)
        if mpp is None:
            raise ValueError(f"{slide.name} states no pixel size: set it (Nuclei or Magnification panel) first")
        table = nuclei_table(self.viewer, self.nuclei_combo.currentText() or None)
        if table is None or not len(table):
            raise ValueError("choose a layer of nuclei (segmented and corrected, or imported) to learn from")
        height, width = _layers.level0_shape(slide)
        x0, y0, x1, y1 = region_of(table, width, height)
        inside = table[(table["x"] >= x0) & (table["x"] < x1) & (table["y"] >= y0) & (table["y"] < y1)]
        data = slide.data[0] if slide.multiscale else slide.data
        rgb = np.ascontiguousarray(np.asarray(data[y0:y1, x0:x1])[..., :3])
        return rgb, inside, (x0, y0), float(mpp)

    def preview(self) -> Job | None:
        """Add the training patches of the chosen nuclei as layers (background job)."""
        if self.job is not None and self.job.running:
            notify_error(RuntimeError("a job of this panel is already running"), "preview")
            return None
        try:
            rgb, inside, origin, mpp = self._region()
        except Exception as exc:
            notify_error(exc, "preview")
            return None
        self.status.setText(f"cutting {len(inside)} nuclei into training patches…")
        self.job = Job(preview_patch_events, rgb, inside, origin, mpp, on_return=self._add_preview,
                       context="preview")
        return self.job.start()

    def _add_preview(self, value: Any) -> None:
        if value is CANCELLED or value is None:
            return
        grid, labels, names = value
        self.viewer.add_image(grid, name="training patches", rgb=True)
        self.viewer.add_labels(labels, name="training patch nuclei", opacity=0.3)
        types = ", ".join(names[1:]) or "no types"
        self.status.setText(f"{int(labels.max())} nuclei in the preview; types: {types}")

    def train(self) -> Job | None:
        """Cut the region of the chosen nuclei from the slide and fine-tune on it (background job)."""
        if self.job is not None and self.job.running:
            notify_error(RuntimeError("a training run is already in progress"), "train")
            return None
        try:
            rgb, inside, (x0, y0), mpp = self._region()
            y1, x1 = y0 + rgb.shape[0], x0 + rgb.shape[1]
            out = self.output_folder()
            if (out / "model.pt").exists():
                raise ValueError(f"{out} already holds a model: choose another name")
        except Exception as exc:
            notify_error(exc, "train")
            return None
        init = "default" if self.init_combo.currentText() == "shipped model" else "none"
        self.progress.setRange(0, int(self.iterations.value()))
        self.progress.setValue(0)
        self.status.setText(f"training on {len(inside)} nuclei ({x1 - x0} x {y1 - y0} px)…")
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job = Job(panel_training_events, rgb, inside, (x0, y0), float(mpp), out, int(self.iterations.value()),
                       init, on_yield=self._on_progress, on_return=self._on_return, on_finish=self._on_finish,
                       context="train")
        return self.job.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _on_progress(self, record: dict) -> None:
        self.progress.setValue(int(record.get("iter", 0)))
        self.status.setText(f"iteration {record.get('iter')}, loss {record.get('loss', float('nan')):.3f}")

    def _on_return(self, value: Any) -> None:
        if value is CANCELLED or value is None:
            self.status.setText("cancelled; the checkpoint is kept")
            return
        self.summary = value
        self.progress.setValue(self.progress.maximum())
        self.status.setText(f"model written to {value['model_folder']}; choose it in the Nuclei panel")
        notify_info(f"new nucleus model: {Path(value['model_folder']).name} (listed in the Nuclei panel)")

    def _on_finish(self) -> None:
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


#: The Train panel as napari docks it (a scroll area around it, as the other panels).
TrainDock = panel_dock("src_models._napari_train", "TrainPanel")
