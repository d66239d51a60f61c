"""Slide panel: open a slide, show what it is (vendor, size, mpp, power), tissue-mask overlay.

Opening goes through napari (``viewer.open(path, plugin="napari-histo")``) so a slide opened
from the dialog and one dropped onto the canvas take the same reader path. When the slide has no
mpp the panel offers the predicted magnification (Magnification panel logic) and applies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_histo._napari import _layers
from napari_histo._napari._slide_info import _format_info, slide_info
from napari_histo._napari._workers import (
    CANCELLED,
    call_in_thread,
    notify_error,
    notify_info,
)

# Lazy imports: napari is imported inside the functions that use it (directly or through the
# modules named there): napari-histo --help and napari's plugin discovery import this module.

if TYPE_CHECKING:  # pragma: no cover
    import napari

SLIDE_FILTER = "Slides and images (*.svs *.ndpi *.mrxs *.scn *.bif *.vms *.vmu *.svslide *.tif *.tiff *.png *.jpg *.jpeg *.bmp);;All files (*)"


def _tissue_colormap() -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (0.0, 0.9, 1.0, 1.0)})


class SlidePanel(QWidget):
    """Open a slide, inspect it, toggle its tissue mask."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.info: dict[str, Any] | None = None
        self.prediction: Any = None
        from napari_histo._napari._reader_preference import prefer_this_reader

        prefer_this_reader()  # first use: dropped slides open with this plugin

        self.open_button = QPushButton("Open slide…")
        self.open_button.clicked.connect(self._choose_file)
        self.labels = {key: QLabel("–") for key in ("layer", "vendor", "size", "mpp", "power")}
        for label in self.labels.values():
            label.setWordWrap(True)
        self.predict_button = QPushButton("Predict magnification")
        self.predict_button.setToolTip("The slide stores no µm/px: estimate it from the pixels")
        self.predict_button.clicked.connect(self.predict_magnification)
        self.predict_button.setVisible(False)
        self.apply_button = QPushButton("Apply predicted scale")
        self.apply_button.clicked.connect(self.apply_prediction)
        self.apply_button.setVisible(False)
        self.objective_button = QPushButton()
        self.objective_button.clicked.connect(self.apply_objective)
        self.objective_button.setVisible(False)
        self.tissue_box = QCheckBox("Show tissue mask")
        self.tissue_box.toggled.connect(self.set_tissue_visible)

        form = QFormLayout()
        form.addRow("Layer", self.labels["layer"])
        form.addRow("Vendor", self.labels["vendor"])
        form.addRow("Size", self.labels["size"])
        form.addRow("Pixel size", self.labels["mpp"])
        form.addRow("Objective", self.labels["power"])
        layout = QVBoxLayout(self)
        layout.addWidget(self.open_button)
        layout.addLayout(form)
        layout.addWidget(self.predict_button)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.objective_button)
        layout.addWidget(self.tissue_box)
        layout.addStretch(1)

        viewer.layers.selection.events.active.connect(self._refresh)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    # -- opening ----------------------------------------------------------------------------
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a slide", "", SLIDE_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> list:
        """Open ``path`` with the napari-histo reader (the same route as drag-and-drop)."""
        try:
            layers = self.viewer.open(path, plugin="napari-histo")
        except Exception as exc:
            notify_error(exc, f"cannot open {path}")
            return []
        if layers:
            self.viewer.layers.selection.active = layers[0]
        self._refresh()
        return layers

    # -- info -------------------------------------------------------------------------------
    @property
    def slide_layer(self) -> Any | None:
        return _layers.find_slide_layer(self.viewer)

    def _refresh(self, *_: Any) -> None:
        layer = self.slide_layer
        self.info = None
        self.prediction = None
        self.apply_button.setVisible(False)
        self.objective_button.setVisible(False)
        if layer is None:
            for label in self.labels.values():
                label.setText("–")
            self.predict_button.setVisible(False)
            return
        self.labels["layer"].setText(layer.name)
        path = _layers.layer_path(layer)
        info = None
        if path:
            try:
                info = slide_info(path)
            except Exception:  # not a slide the core can open (e.g. a plain image layer)
                info = None
        if info is None:
            h, w = _layers.level0_shape(layer)
            mpp = _layers.layer_mpp(layer)
            info = {
                "path": path,
                "vendor": "image layer",
                "backend": None,
                "dimensions": (w, h),
                "levels": len(layer.data) if layer.multiscale else 1,
                "mpp": None if mpp is None else (mpp, mpp),
                "objective_power": None,
            }
        self.info = info
        for key, text in _format_info(info).items():
            self.labels[key].setText(text)
        self.predict_button.setVisible(info["mpp"] is None)

    # -- magnification ----------------------------------------------------------------------
    def predict_magnification(self) -> Any:
        """Predict the magnification of the current slide (background job), then offer to apply it."""
        layer = self.slide_layer
        if layer is None:
            notify_error(ValueError("open a slide first"))
            return None
        self.predict_button.setEnabled(False)
        self.labels["mpp"].setText("unknown — predicting…")
        self.job = call_in_thread(self._predict, layer, on_return=self._show_prediction, context="magnification",
                                  on_finish=lambda: self.predict_button.setEnabled(True))
        return self.job

    def _show_prediction(self, prediction: Any) -> None:
        if prediction is None or prediction is CANCELLED:
            return
        from napari_histo._napari._magnification_actions import show_objective_button
        from napari_histo.models.magnification import interval_text

        self.prediction = prediction
        self.labels["mpp"].setText(
            f"unknown — predicted {prediction.mpp:.3f} µm/px ({prediction.magnification:.1f}×"
            + (f", {interval_text(prediction)})" if getattr(prediction, "interval", None)
               else f", ±{prediction.uncertainty:.1f})")
            + (" ⚠ soft image: the blur-invariant estimate is "
               f"{prediction.blur_invariant:.1f}×" if getattr(prediction, "note", "") else "")
        )
        self.apply_button.setVisible(True)
        show_objective_button(self.objective_button, prediction)

    @staticmethod
    def _predict(layer: Any) -> Any:
        from napari_histo._napari._magnification_actions import predict_for_slide_layer

        return predict_for_slide_layer(layer)

    def apply_prediction(self) -> None:
        """Use the predicted µm/px as the slide layer's scale."""
        from napari_histo._napari._magnification_actions import apply_mpp

        layer = self.slide_layer
        if layer is None or self.prediction is None:
            return
        apply_mpp(self.viewer, layer, float(self.prediction.mpp))
        notify_info(f"{layer.name}: scale set to {self.prediction.mpp:.3f} µm/px (predicted)")

    def apply_objective(self) -> None:
        """Use the standard objective that fits the prediction (e.g. 20× -> 0.5 µm/px) as the scale."""
        from napari_histo._napari._magnification_actions import apply_objective

        if self.slide_layer is not None and self.prediction is not None:
            apply_objective(self.viewer, self.slide_layer, self.prediction)

    # -- tissue mask ------------------------------------------------------------------------
    def set_tissue_visible(self, visible: bool) -> Any | None:
        """Show (computing it once, in a background job) or hide the tissue mask of the current slide."""
        name = _layers.TISSUE
        if name in self.viewer.layers:
            self.viewer.layers[name].visible = bool(visible)
            return self.viewer.layers[name]
        if not visible:
            return None
        layer = self.slide_layer
        if layer is None:
            notify_error(ValueError("open a slide first"))
            return None
        self.tissue_box.setEnabled(False)
        self.job = call_in_thread(self._tissue_layer_data, layer, on_return=self._add_tissue,
                                  on_finish=self._tissue_finished, context="tissue mask")
        return self.job

    def _add_tissue(self, result: Any) -> None:
        if result is None or result is CANCELLED or _layers.TISSUE in self.viewer.layers:
            return
        added = self.viewer.add_labels(result[0], **result[1])
        added.visible = self.tissue_box.isChecked()

    def _tissue_finished(self) -> None:
        self.tissue_box.setEnabled(True)
        if _layers.TISSUE not in self.viewer.layers:  # failed: the error was notified
            self.tissue_box.blockSignals(True)
            self.tissue_box.setChecked(False)
            self.tissue_box.blockSignals(False)

    def _tissue_layer_data(self, layer: Any) -> tuple:
        from napari_histo.slide import open_slide, tissue_mask

        path = _layers.layer_path(layer)
        if path:
            with open_slide(path) as slide:
                tm = tissue_mask(slide)
        else:  # a plain image layer: detect on its coarsest level
            data = layer.data[-1] if layer.multiscale else layer.data
            rgb = np.asarray(data)
            tm = tissue_mask(rgb, downsample=_layers.level0_shape(layer)[0] / rgb.shape[0])
        d = float(tm.downsample)
        (s0y, s0x), (t0y, t0x) = _layers.layer_geometry(layer)
        meta = {
            "name": _layers.TISSUE,
            "scale": (d * s0y, d * s0x),
            "translate": (t0y + (d - 1) / 2 * s0y, t0x + (d - 1) / 2 * s0x),
            "opacity": 0.3,
            "colormap": _tissue_colormap(),
            "metadata": {"napari_histo_overlay": True, "downsample": d},
            **_layers.units_kwargs(layer),
        }
        return np.asarray(tm.mask, dtype=np.uint8), meta
