"""Magnification panel: predict a slide's magnification from pixels, apply it as the layer scale.

Predicts on the current field of view or on a whole chosen image layer (centre crop for large
images) with :func:`napari_histo.models.magnification.predict_magnification`; shows the magnification,
µm/px and the spread of the per-crop predictions; one click sets the layer's scale (µm) and keeps
every napari-histo overlay aligned with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_histo._napari import _layers
from napari_histo._napari._exchange import combo_layer, refresh_slide_combo
from napari_histo._napari._magnification_actions import (
    apply_mpp,
    apply_objective,
    predict_for_layer,
    show_objective_button,
)
from napari_histo._napari._workers import CANCELLED, call_in_thread, notify_error, notify_info

if TYPE_CHECKING:  # pragma: no cover
    import napari


class MagnificationPanel(QWidget):
    """Predict magnification for the view or a layer; apply it as the layer's scale."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.prediction: Any = None
        self.target_layer: Any = None

        self.scope = QComboBox()
        self.scope.addItems(["current view", "whole layer"])
        self.layer_box = QComboBox()
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.predict)
        self.result_label = QLabel("–")
        self.result_label.setWordWrap(True)
        self.apply_button = QPushButton("Apply as layer scale")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply)
        self.objective_button = QPushButton()
        self.objective_button.setToolTip("For an image at its scan resolution: use the one standard "
                                         "objective inside the prediction interval")
        self.objective_button.clicked.connect(self.apply_objective)
        self.objective_button.setVisible(False)

        form = QFormLayout()
        form.addRow("Image layer", self.layer_box)
        form.addRow("Scope", self.scope)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.predict_button)
        layout.addWidget(self.result_label)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.objective_button)
        layout.addStretch(1)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, *_: Any) -> None:
        refresh_slide_combo(self.layer_box, self.viewer)

    def selected_layer(self) -> Any | None:
        return combo_layer(self.layer_box, self.viewer)

    def predict(self) -> Any:
        """Start the prediction on the chosen scope (a background job); the result is shown when done."""
        layer = self.selected_layer()
        if layer is None:
            notify_error(ValueError("no image layer to predict on"))
            return None
        box = _layers.field_of_view(self.viewer, layer) if self.scope.currentText() == "current view" else None
        self.predict_button.setEnabled(False)
        self.result_label.setText("predicting…")
        self.job = call_in_thread(predict_for_layer, layer, box, context="magnification",
                                  on_return=lambda p: self._show(p, layer),
                                  on_finish=lambda: self.predict_button.setEnabled(True))
        return self.job

    def _show(self, prediction: Any, layer: Any) -> None:
        if prediction is None or prediction is CANCELLED:
            return
        from napari_histo.models.magnification import interval_text

        self.prediction, self.target_layer = prediction, layer
        self.result_label.setText(
            f"{prediction.magnification:.1f}× ≈ {prediction.mpp:.3f} µm/px\n"
            + (f"{interval_text(prediction)}\n" if getattr(prediction, "interval", None) else "")
            + f"crop spread ±{prediction.uncertainty:.2f} ({len(prediction.per_crop)} crops)"
            + (f"\n⚠ {prediction.note}" if getattr(prediction, "note", "") else "")
        )
        self.apply_button.setEnabled(True)
        show_objective_button(self.objective_button, prediction)

    def apply(self) -> None:
        """Apply the last prediction as the layer's µm scale."""
        if self.prediction is None or self.target_layer is None:
            return
        apply_mpp(self.viewer, self.target_layer, float(self.prediction.mpp))
        notify_info(f"{self.target_layer.name}: scale set to {self.prediction.mpp:.3f} µm/px")

    def apply_objective(self) -> None:
        """Apply the standard objective that fits the last prediction as the layer's µm scale."""
        if self.prediction is None or self.target_layer is None:
            return
        apply_objective(self.viewer, self.target_layer, self.prediction)
