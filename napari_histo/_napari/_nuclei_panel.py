"""Nuclei panel: segment and type nuclei in the view, a drawn shape or the whole slide.

A thin adapter over :func:`napari_histo.engine.run.run_segmentation`, which tiles the region,
yields one progress event per finished tile and assembles ``nuclei.parquet`` + ``labels.zarr``
in an output folder. The panel runs it in a :class:`~napari_histo._napari._workers.Job`
(thread worker, or synchronous with ``NAPARI_HISTO_NOTHREADS=1``). While it runs, each finished
tile's instance labels are painted (in the worker thread) into a preview Labels layer coloured by
type (:mod:`~napari_histo._napari._preview`: in memory for view/shape runs, a zarr pyramid on disk
for whole-slide runs) and its centroids join a Points layer; the Qt thread only redraws the painted
region, at most every :data:`FLUSH_MIN_S` seconds (longer when a redraw gets slow). On completion
the run's own layers replace the preview: (multiscale) Labels of the true nucleus ids coloured by
type, the centroids with their measurements as ``features``, a type legend with counts and, for a
selected nucleus, its measurements. Cancel stops at the next tile and deletes the run's work folder
and the preview, so a cancelled run leaves no files behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_histo._napari import _layers
from napari_histo._napari._preview import LabelPreview, refresh_region
from napari_histo._napari._segment_job import (
    TileUpdate,
    crop_region,
    default_outdir,
    format_eta,
    segmentation_events,
)
from napari_histo._napari._settings import engine_settings
from napari_histo._napari._workers import CANCELLED, Job, call_in_thread, notify_error, notify_info
from napari_histo.engine.options import SegmentationOptions

# Lazy imports: dask, napari, pandas are imported inside the functions that use them (directly or
# through the modules named there): napari-histo --help and napari's plugin discovery import this
# module.

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import pandas as pd

MODELS = {
    "shipped default (HoVer-Net compact)": "default",
    "HoVer-Net checkpoint file…": "checkpoint",
    "classical (no training)": "classical",
}
SCOPES = ("current view", "drawn shape", "whole slide")
#: Name of a model the user trained, in the model list.
USER_MODEL_PREFIX = "my model: "
#: Classical detector stains: label -> ClassicalParams.stains.
STAINS = {"auto (H&E or H-DAB)": "auto", "H&E": "he", "H-DAB (IHC)": "hdab"}
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Shortest interval (s) between two redraws of the results shown during a run.
FLUSH_MIN_S = 0.25
#: A redraw may take at most 1/FLUSH_COST_RATIO of the Qt thread's time during a run.
FLUSH_COST_RATIO = 10.0
#: Opacity of the filled whole-slide preview (the tissue stays visible underneath).
PREVIEW_FILLED_OPACITY = 0.5


#: Typing choice: the segmentation model's own types.
MODEL_TYPES = "model's types"
#: Prefix of the label-completion typing choices.
LABEL_COMPLETION_PREFIX = "label completion: "


def label_completion_choices() -> list[str]:
    """One typing choice per label set of the shipped label-completion model (none when absent)."""
    import json

    from napari_histo.utils import resource_path

    config = resource_path("weights", "label_completion", "config.json")
    try:
        sets = json.loads(config.read_text(encoding="utf-8"))["label_sets"]
        return [LABEL_COMPLETION_PREFIX + s["name"] for s in sets]
    except (OSError, ValueError, KeyError, TypeError):
        return []


class NucleiPanel(QWidget):
    """Model, scope and device; Run/Cancel with progress; legend; selected-nucleus measurements."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.job: Job | None = None
        self.table: pd.DataFrame | None = None
        self.result: Any = None
        self.outdir: Path | None = None
        self.slide_layer: Any = None
        self.origin: tuple[int, int] = (0, 0)
        self._culling: Any = None
        self._partial: list[pd.DataFrame] = []
        self._partial_shown = 0
        self._type_info: dict | None = None
        self.preview: LabelPreview | None = None
        self._dirty: tuple[int, int, int, int] | None = None
        self._last_flush = -np.inf
        self._flush_interval = FLUSH_MIN_S
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.timeout.connect(self._flush)
        settings = engine_settings()

        self.model_combo = QComboBox()
        self.model_combo.addItems(list(MODELS))
        self.model_combo.currentTextChanged.connect(self._model_changed)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("HoVer-Net checkpoint (.pt / .tar) or model folder")
        self.checkpoint_button = QPushButton("…")
        self.checkpoint_button.setMaximumWidth(30)
        self.checkpoint_button.clicked.connect(self._browse_checkpoint)
        checkpoint_row = QHBoxLayout()
        checkpoint_row.addWidget(self.checkpoint_edit)
        checkpoint_row.addWidget(self.checkpoint_button)
        self.stains_combo = QComboBox()
        self.stains_combo.addItems(list(STAINS))
        self.stains_combo.setToolTip("Classical detector: colour deconvolution; H-DAB adds DAB OD and a positive call. "
                                     "'auto' looks for DAB without eosin (choose H-DAB for IHC with few positive cells)")
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(list(SCOPES))
        self.shapes_combo = QComboBox()
        self.shapes_combo.setToolTip("Shapes layer holding the region (its selected or last shape)")
        self.typing_combo = QComboBox()
        self.typing_combo.addItems([MODEL_TYPES, *label_completion_choices()])
        self.typing_combo.setToolTip("Types from the segmentation model, or from the shipped label-completion model "
                                     "in one of its taxonomies (CoNSeP, MoNuSAC, CRCHistoPhenotypes classes)")
        self.typing_job: Job | None = None
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.setCurrentText(settings.device if settings.device in DEVICES else "auto")

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        # Shown when the image states no pixel size: the run waits for one (never a guessed scale).
        self.scale_box = QGroupBox("Pixel size needed")
        self.scale_text = QLabel("")
        self.scale_text.setWordWrap(True)
        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(0.0, 50.0)
        self.scale_spin.setDecimals(4)
        self.scale_spin.setSingleStep(0.01)
        self.scale_spin.setSuffix(" µm/px")
        self.scale_spin.setSpecialValueText("type the pixel size")
        self.scale_spin.setToolTip("µm per pixel of the image: 0.25 for a 40× scan, 0.5 for 20×, 1.0 for 10×")
        self.scale_predict_button = QPushButton("Predict")
        self.scale_predict_button.setToolTip("Predict the magnification from the image (Hagnifinder)")
        self.scale_predict_button.clicked.connect(self.predict_scale)
        self.scale_use_button = QPushButton("Use and run")
        self.scale_use_button.clicked.connect(self.use_scale_and_run)
        scale_row = QHBoxLayout()
        scale_row.addWidget(self.scale_spin)
        scale_row.addWidget(self.scale_predict_button)
        scale_row.addWidget(self.scale_use_button)
        scale_layout = QVBoxLayout(self.scale_box)
        scale_layout.addWidget(self.scale_text)
        scale_layout.addLayout(scale_row)
        self.scale_box.setVisible(False)
        self.scale_job: Job | None = None

        self.legend = QTableWidget(0, 2)
        self.legend.setHorizontalHeaderLabels(["type", "count"])
        self.legend.verticalHeader().setVisible(False)
        self._fit_legend()
        self.details = QTableWidget(0, 2)
        self.details.setHorizontalHeaderLabels(["measurement", "value"])
        self.details.verticalHeader().setVisible(False)

        form = QFormLayout()
        form.addRow("Model", self.model_combo)
        form.addRow("Checkpoint", checkpoint_row)
        form.addRow("Stains", self.stains_combo)
        form.addRow("Scope", self.scope_combo)
        form.addRow("Region layer", self.shapes_combo)
        form.addRow("Types", self.typing_combo)
        form.addRow("Device", self.device_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.scale_box)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Types"))
        layout.addWidget(self.legend)
        layout.addWidget(QLabel("Selected nucleus"))
        layout.addWidget(self.details)

        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_shapes)
        self._refresh_shapes()
        self.refresh_models()
        self._model_changed(self.model_combo.currentText())

    # -- inputs -----------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """List the models trained by the user (the per-user ``models`` folder, e.g. by the Train
        panel or ``train hovernet --data``) after the shipped ones."""
        from napari_histo.utils import user_data_dir

        current = self.model_combo.currentText()
        self._user_models = {f"{USER_MODEL_PREFIX}{p.name}": p for p in sorted(user_data_dir("models").iterdir())
                             if ((p / "config.json").is_file() and (p / "model.pt").is_file())
                             or (p / "model_info.json").is_file()}
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems([*MODELS, *self._user_models])
        if current and self.model_combo.findText(current) >= 0:
            self.model_combo.setCurrentText(current)
        self.model_combo.blockSignals(False)

    def _model_changed(self, text: str) -> None:
        is_checkpoint = MODELS.get(text) == "checkpoint"
        self.checkpoint_edit.setEnabled(is_checkpoint)
        self.checkpoint_button.setEnabled(is_checkpoint)
        self.stains_combo.setEnabled(MODELS.get(text) == "classical")

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "HoVer-Net checkpoint", "", "Checkpoints (*.pt *.pth *.tar);;All files (*)")
        if path:
            self.checkpoint_edit.setText(path)

    def _refresh_shapes(self, *_: Any) -> None:
        from napari.layers import Shapes

        current = self.shapes_combo.currentText()
        self.shapes_combo.clear()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Shapes) and not layer.metadata.get("napari_histo_overlay")]
        self.shapes_combo.addItems(names)
        if current in names:
            self.shapes_combo.setCurrentText(current)

    def model_spec(self) -> Any:
        """The registry spec for the chosen model ("default", "classical" or a checkpoint path), or
        the classical detector itself when its stains are chosen."""
        text = self.model_combo.currentText()
        if text in getattr(self, "_user_models", {}):
            return str(self._user_models[text])
        spec = MODELS[text]
        stains = STAINS[self.stains_combo.currentText()]
        if spec == "classical" and stains != "auto":
            from napari_histo.models import get_segmenter

            return get_segmenter("classical", stains=stains)
        if spec == "checkpoint":
            path = self.checkpoint_edit.text().strip()
            if not path:
                raise ValueError("choose a HoVer-Net checkpoint file")
            if not Path(path).exists():
                raise FileNotFoundError(f"{path}: checkpoint not found")
            return path
        return spec

    def region(self, slide_layer: Any) -> Any:
        """ROI for the chosen scope in level-0 px: ``(x, y, w, h)``, polygon (N, 2) x,y, or None."""
        scope = self.scope_combo.currentText()
        if scope == "whole slide":
            return None
        if scope == "current view":
            x0, y0, x1, y1 = _layers.field_of_view(self.viewer, slide_layer)
            if x1 - x0 < 16 or y1 - y0 < 16:
                raise ValueError("the current view does not show the slide; pan to it or choose another scope")
            return (x0, y0, x1 - x0, y1 - y0)
        name = self.shapes_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("draw a rectangle or polygon in a Shapes layer first")
        xy, _ = _layers.shape_bbox(self.viewer.layers[name], slide_layer)
        return xy

    # -- pixel size -------------------------------------------------------------------------
    def ask_for_scale(self, slide_layer: Any) -> None:
        """Explain that the image has no pixel size and wait for one (typed or predicted)."""
        self.scale_layer = slide_layer
        self.scale_text.setText(
            f"“{slide_layer.name}” does not state its pixel size, and nuclei found at a guessed scale are "
            "wrong. Type it (µm/px: 0.25 for a 40× scan, 0.5 for 20×) or predict it from the image.")
        self.scale_box.setVisible(True)
        self.status.setText("waiting for the pixel size")

    def predict_scale(self) -> Job | None:
        """Predict the magnification of the image waiting for a pixel size (a background job)."""
        from napari_histo._napari._magnification_actions import predict_for_slide_layer

        layer = getattr(self, "scale_layer", None)
        if layer is None or layer not in self.viewer.layers:
            return None
        self.scale_predict_button.setEnabled(False)
        self.scale_text.setText("predicting the magnification…")
        self.scale_job = call_in_thread(predict_for_slide_layer, layer, context="magnification",
                                        on_return=self._show_scale_prediction,
                                        on_finish=lambda: self.scale_predict_button.setEnabled(True))
        return self.scale_job

    def _show_scale_prediction(self, prediction: Any) -> None:
        if prediction is None or prediction is CANCELLED:
            return
        from napari_histo.models.magnification import MPP_AT_1X, interval_text

        text = f"Predicted {prediction.magnification:.1f}× (≈ {prediction.mpp:.3f} µm/px)."
        span = interval_text(prediction) if getattr(prediction, "interval", None) else ""
        if span:
            text += f" {span}."
        wide = prediction.interval is not None and prediction.interval[1] / max(prediction.interval[0], 1e-6) > 2.5
        if getattr(prediction, "note", "") or wide:
            reason = prediction.note or "the interval is wide"
            text += f" Not filled in: {reason}. Type the pixel size if you know it."
        else:
            objective = getattr(prediction, "scan_objective", None)
            value = MPP_AT_1X / objective if objective else float(prediction.mpp)
            self.scale_spin.setValue(value)
            text += " Check the value below, then “Use and run”."
        self.scale_text.setText(text)

    def use_scale_and_run(self) -> Job | None:
        """Give the waiting image the typed pixel size and start the run."""
        from napari_histo._napari._magnification_actions import apply_mpp

        layer = getattr(self, "scale_layer", None)
        value = float(self.scale_spin.value())
        if layer is None or layer not in self.viewer.layers:
            return None
        if value <= 0:
            notify_error(ValueError("type the pixel size in µm/px first (or predict it)"), "nuclei")
            return None
        apply_mpp(self.viewer, layer, value)
        layer.metadata["mpp_source"] = "given in the Nuclei panel"
        self.scale_box.setVisible(False)
        return self.run()

    # -- running ----------------------------------------------------------------------------
    def run(self, outdir: str | Path | None = None) -> Job | None:
        """Start a run on the current slide (returns the job, or None when inputs are invalid)."""
        if self.job is not None and self.job.running:
            notify_error(RuntimeError("a run is already in progress"))
            return None
        slide_layer = _layers.find_slide_layer(self.viewer)
        try:
            if slide_layer is None:
                raise ValueError("open a slide or image first")
            model = self.model_spec()
            roi = self.region(slide_layer)
        except Exception as exc:
            notify_error(exc, "nuclei")
            return None
        if _layers.layer_mpp(slide_layer) is None:
            self.ask_for_scale(slide_layer)
            return None
        self.scale_box.setVisible(False)
        path = _layers.layer_path(slide_layer)
        source: Any = path
        origin = (0, 0)
        try:
            if roi is not None:  # view or shape: segment the region (plus context) as an image
                source, origin, roi = crop_region(slide_layer, roi, _layers.layer_mpp(slide_layer))
            elif path is None or not Path(path).exists():  # a plain in-memory image layer
                data = slide_layer.data[0] if slide_layer.multiscale else slide_layer.data
                source = np.ascontiguousarray(np.asarray(data)[..., :3])
        except Exception as exc:
            notify_error(exc, "nuclei")
            return None
        self.origin = origin
        settings = engine_settings()
        device = self.device_combo.currentText()
        options = SegmentationOptions(
            mpp=_layers.layer_mpp(slide_layer),
            tile_size=settings.tile_size,
            batch_size=settings.batch_size,
            device=None if device == "auto" else device,
            stem=Path(path).name.split(".")[0] if path else slide_layer.name,
        )
        scheduler = settings.scheduler_address or None
        self.outdir = Path(outdir) if outdir else default_outdir(path)
        self.slide_layer = slide_layer
        self._partial = []
        self._partial_shown = 0
        self.table = None
        self.result = None
        _layers.remove_layers(self.viewer, [_layers.NUCLEI_POINTS, _layers.NUCLEI_LABELS])
        self._close_preview()
        try:
            if roi is not None:  # view or shape: the crop is in memory already, so are its labels
                self.preview = LabelPreview(np.shape(source)[:2], multiscale=False)
            else:  # whole slide: a zarr pyramid on disk, never a level-0 array in memory
                self.preview = LabelPreview(_layers.level0_shape(slide_layer), multiscale=True)
        except Exception as exc:  # no preview is no reason not to run
            notify_info(f"results will appear when the run finishes ({exc})")
            self.preview = None
        self._dirty = None
        self._last_flush = -np.inf
        self._flush_interval = FLUSH_MIN_S
        self.progress.setRange(0, 0)  # busy until the plan is known
        self.status.setText("planning…")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job = Job(
            segmentation_events, source, model, self.outdir, roi, origin, self.preview,
            on_yield=self._on_event, on_return=self._on_return, on_finish=self._on_finish,
            on_error=self._on_error, context="nuclei", options=options, scheduler=scheduler,
        )
        return self.job.start()

    def cancel(self) -> None:
        """Stop the run at the next tile; its work folder is deleted."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.status.setText("cancelling…")

    def _on_event(self, update: TileUpdate) -> None:
        event = update.event
        if event.total:
            self.progress.setRange(0, int(event.total))
            self.progress.setValue(int(event.done))
        stage = {"plan": "planned", "assemble": "assembling outputs", "done": "done", "cancelled": "cancelled"}.get(event.stage, "")
        self.status.setText(f"{event.done}/{event.total} tiles · {event.nuclei:,} nuclei {format_eta(event.eta_s)} {stage}".strip())
        if update.table is not None and len(update.table):
            self._partial.append(update.table)
        if update.box is not None:
            self._dirty = update.box if self._dirty is None else (
                min(self._dirty[0], update.box[0]), min(self._dirty[1], update.box[1]),
                max(self._dirty[2], update.box[2]), max(self._dirty[3], update.box[3]))
        if event.stage in ("assemble", "done", "cancelled"):
            self._flush()
        elif self._dirty is not None or len(self._partial) > self._partial_shown:
            wait = self._last_flush + self._flush_interval - time.perf_counter()
            if wait <= 0:
                self._flush()
            elif not self._flush_timer.isActive():
                self._flush_timer.start(max(1, int(wait * 1000)))

    def _flush(self) -> None:
        """Show what the worker painted and found since the last redraw (Qt thread, throttled)."""
        self._flush_timer.stop()
        if self.job is None or self.job.cancelled or self.table is not None:
            return
        t0 = time.perf_counter()
        if self.preview is not None and self._dirty is not None:
            self._show_preview_labels(self._dirty)
            self._dirty = None
        if len(self._partial) > self._partial_shown:
            parts = self._show_partial()
            self._partial_shown = len(self._partial)
            self.update_legend(parts)  # counts so far
        cost = time.perf_counter() - t0
        self._last_flush = time.perf_counter()
        self._flush_interval = max(FLUSH_MIN_S, FLUSH_COST_RATIO * cost)

    def preview_layer(self) -> Any | None:
        """The Labels layer showing the running job's tiles (None when absent or replaced)."""
        layer = self.viewer.layers[_layers.NUCLEI_LABELS] if _layers.NUCLEI_LABELS in self.viewer.layers else None
        return layer if layer is not None and layer.metadata.get("napari_histo_preview") else None

    def _show_preview_labels(self, box: tuple[int, int, int, int]) -> None:
        layer = self.preview_layer()
        if layer is None:
            preview = self.preview
            kwargs = _layers.aligned_kwargs(self.slide_layer, self.origin)
            # whole-slide previews are drawn filled and half transparent: napari's outline
            # computation is most of a multiscale refresh (docs/benchmarks/widgets.md), and the
            # final layer that replaces the preview is drawn with outlines
            filled = preview.multiscale
            layer = self.viewer.add_labels(
                preview.data, name=_layers.NUCLEI_LABELS, colormap=preview.colormap(),
                opacity=PREVIEW_FILLED_OPACITY if filled else 0.9,
                multiscale=preview.multiscale, metadata={"napari_histo_overlay": True, "napari_histo_preview": True},
                **kwargs,
            )
            layer.contour = 0 if filled else 1
            return
        view = None
        if layer.multiscale and self.slide_layer is not None:
            view = _layers.field_of_view(self.viewer, self.slide_layer)
        refresh_region(layer, box, view)

    def _show_partial(self) -> pd.DataFrame:
        """Centroids of the finished tiles as one Points layer; returns their table."""
        import pandas as pd

        parts = pd.concat(self._partial, ignore_index=True)
        parts.attrs = dict(self._partial[0].attrs)
        coords = np.column_stack([parts["y"].to_numpy(float), parts["x"].to_numpy(float)])
        colours = _layers.type_rgba(_layers.type_info_of(parts), parts["type"].to_numpy())
        name = _layers.NUCLEI_POINTS
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = coords
            layer.face_color = colours
        else:
            kwargs = _layers.overlay_kwargs(self.slide_layer)
            self.viewer.add_points(coords, name=name, face_color=colours, border_width=0,
                                   size=8.0 * kwargs.get("scale", (1.0,))[0], metadata={"napari_histo_overlay": True}, **kwargs)
        return parts

    def _on_return(self, value: Any) -> None:
        if value is CANCELLED or value is None:
            self.status.setText("cancelled — no output written")
            self._remove_partial_layer()
            return
        run, loaded = value
        if loaded is None:
            self.status.setText("cancelled — no output written")
            self._remove_partial_layer()
            return
        self.result = loaded
        self.show_result(loaded.table, loaded.labels)
        n = len(loaded.table)
        self.status.setText(f"{n:,} nuclei in {run.n_tiles} tile(s) · {run.timings.get('total_s', 0):.1f} s · {run.folder}")
        for warning in run.warnings:
            notify_info(warning)
        if self.typing_combo.currentText() != MODEL_TYPES and n:
            self.type_nuclei(self.typing_combo.currentText().removeprefix(LABEL_COMPLETION_PREFIX))

    def type_nuclei(self, label_set: str) -> Job | None:
        """Re-type the shown nuclei with the shipped label-completion model in ``label_set``
        (a background job; the legend and colours follow when it is done)."""
        slide = self.slide_layer or _layers.find_slide_layer(self.viewer)
        path = _layers.layer_path(slide) if slide is not None else None
        if self.table is None or path is None:
            notify_error(ValueError("typing reads the slide's pixels: segment an image opened from a file first"))
            return None
        table = self.table
        labels = self.result.labels if self.result is not None else None

        def work():
            from napari_histo.models.label_completion.inference import type_table_from_slide
            from napari_histo.models.label_completion.model import load_model, shipped_model_dir

            return type_table_from_slide(table, path, load_model(shipped_model_dir()), set_type=label_set)

        self.status.setText(f"typing {len(table):,} nuclei ({label_set} classes)…")
        self.typing_job = call_in_thread(work, on_return=lambda typed: self._show_typed(typed, labels, label_set),
                                         context="label completion")
        return self.typing_job

    def _show_typed(self, typed: Any, labels: Any, label_set: str) -> None:
        if typed is None or typed is CANCELLED:
            return
        self.show_result(typed, labels)
        self.status.setText(f"{len(typed):,} nuclei typed by label completion ({label_set} classes)")

    def _remove_partial_layer(self) -> None:
        remove = []
        if _layers.NUCLEI_POINTS in self.viewer.layers and self.table is None:
            remove.append(_layers.NUCLEI_POINTS)
            self.legend.setRowCount(0)
        layer = self.preview_layer()
        if layer is not None:
            remove.append(layer)
        _layers.remove_layers(self.viewer, remove)

    def _close_preview(self) -> None:
        """Forget the preview's painted data and delete its on-disk pyramid (after its layer is gone)."""
        self._flush_timer.stop()
        self._dirty = None
        if self.preview is not None:
            self.preview.close()
            self.preview = None

    def _on_error(self, exc: BaseException) -> None:
        notify_error(exc, "nuclei")
        self.status.setText(f"failed: {exc}")
        self._remove_partial_layer()

    def _on_finish(self) -> None:
        if self.table is None:
            self._remove_partial_layer()
        self._close_preview()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    # -- results ----------------------------------------------------------------------------
    def show_result(self, table: pd.DataFrame, labels: Any = None) -> None:
        """Show a nucleus table (+ label image or pyramid) as Labels + Points, legend, selection."""
        self.table = table
        slide_layer = self.slide_layer or _layers.find_slide_layer(self.viewer)
        if labels is not None and len(labels):
            import dask.array as da

            levels = [da.from_zarr(level) if not isinstance(level, np.ndarray) else level for level in labels]
            data = levels if len(levels) > 1 else levels[0]
            ldata, lmeta, _ = _layers.labels_layer_data(data, table, slide_layer, origin=self.origin)
            labels_layer = _layers.add_or_update(self.viewer, (ldata, lmeta, "labels"))
            labels_layer.contour = 1  # outlines keep the nuclei visible underneath
            if "label_ids" in labels_layer.metadata:  # display values: read the true id under the click
                labels_layer.mouse_drag_callbacks.append(self._label_clicked)
            else:
                labels_layer.events.selected_label.connect(self._label_selected)
        pdata, pmeta, _ = _layers.points_layer_data(table, slide_layer)
        pmeta["metadata"]["nuclei_table"] = table
        if self.result is not None:
            pmeta["metadata"]["run_folder"] = str(self.result.folder)
        if self._culling is not None:
            self._culling.disconnect()
        points = _layers.add_or_update(self.viewer, (pdata, pmeta, "points"))
        points.selected_data.events.items_changed.connect(self._point_selected)
        # whole-slide results: draw only the centroids near the view (docs/benchmarks/widgets.md)
        self._culling = _layers.ViewportCulling(self.viewer, points)
        self.update_legend(table)

    def update_legend(self, table: pd.DataFrame) -> None:
        rows = _layers.type_counts(table)
        self.legend.setRowCount(len(rows))
        for r, (_, name, colour, count) in enumerate(rows):
            item = QTableWidgetItem(name)
            item.setBackground(QColor(*colour, 120))
            self.legend.setItem(r, 0, item)
            self.legend.setItem(r, 1, QTableWidgetItem(f"{count:,}"))
        self._fit_legend()

    def _fit_legend(self) -> None:
        """Height for every row (up to 8, then it scrolls), so no type hides below the fold."""
        rows = min(max(self.legend.rowCount(), 1), 8)
        height = self.legend.horizontalHeader().sizeHint().height() + 2 * self.legend.frameWidth()
        height += rows * self.legend.verticalHeader().defaultSectionSize()
        self.legend.setFixedHeight(height)

    def legend_counts(self) -> dict[str, int]:
        """Type name -> count as shown in the legend."""
        out = {}
        for r in range(self.legend.rowCount()):
            out[self.legend.item(r, 0).text()] = int(self.legend.item(r, 1).text().replace(",", ""))
        return out

    def _point_selected(self, *_: Any) -> None:
        layer = self.viewer.layers[_layers.NUCLEI_POINTS] if _layers.NUCLEI_POINTS in self.viewer.layers else None
        if layer is None or not layer.selected_data:
            return
        index = sorted(layer.selected_data)[0]
        self.show_nucleus(int(layer.features["id"].iloc[index]))

    def _label_selected(self, event: Any = None) -> None:
        layer = self.viewer.layers[_layers.NUCLEI_LABELS]
        if layer.selected_label > 0:
            self.show_nucleus(int(layer.selected_label))

    def _label_clicked(self, layer: Any, event: Any) -> None:
        """Measurements of the nucleus under a click on a type-coded Labels layer (true ids in metadata)."""
        if getattr(event, "type", "mouse_press") != "mouse_press":
            return
        ids = layer.metadata.get("label_ids")
        if ids is None:
            return
        row, col = (int(v) for v in np.round(np.asarray(layer.world_to_data(event.position), float)[-2:]))
        if 0 <= row < ids.shape[0] and 0 <= col < ids.shape[1]:
            nucleus_id = int(np.asarray(ids[row, col]))
            if nucleus_id > 0:
                self.show_nucleus(nucleus_id)

    def show_nucleus(self, nucleus_id: int) -> dict[str, Any]:
        """Show the measurements of nucleus ``nucleus_id`` in the details table."""
        if self.table is None:
            return {}
        rows = self.table.loc[self.table["id"] == nucleus_id]
        if rows.empty:
            return {}
        features = _layers.nuclei_features(rows)
        values = {k: v for k, v in features.iloc[0].items()}
        self.details.setRowCount(len(values))
        for r, (key, value) in enumerate(values.items()):
            text = f"{value:.3f}" if isinstance(value, float | np.floating) else str(value)
            self.details.setItem(r, 0, QTableWidgetItem(key))
            self.details.setItem(r, 1, QTableWidgetItem(text))
        return values
