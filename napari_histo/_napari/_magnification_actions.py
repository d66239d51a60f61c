"""Magnification actions on napari layers: predict from a layer's pixels (a centred box of a
big image), show the standard objective the prediction leaves, and apply a pixel size to a
layer and the layers aligned with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_histo._napari import _layers
from napari_histo._napari._workers import notify_info

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: Largest square (level-0 px) read for a prediction; the predictor samples crops inside it.
MAX_READ_PX = 2048


def _read_box(layer: Any, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    data = layer.data[0] if layer.multiscale else layer.data
    rgb = np.asarray(data[y0:y1, x0:x1])
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.dtype != np.uint8:
        hi = float(rgb.max()) or 1.0
        rgb = (rgb.astype(np.float32) * (255.0 / hi)).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., :3])


def _centre_box(box: tuple[int, int, int, int], max_px: int = MAX_READ_PX) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    hw, hh = min(x1 - x0, max_px) // 2, min(y1 - y0, max_px) // 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def predict_for_layer(layer: Any, box: tuple[int, int, int, int] | None = None) -> Any:
    """Predict the magnification of ``layer`` (whole layer, or a level-0 box) -> MagnificationPrediction."""
    from napari_histo.models.magnification import predict_magnification

    if box is None:
        h, w = _layers.level0_shape(layer)
        box = (0, 0, w, h)
    rgb = _read_box(layer, _centre_box(box))
    if min(rgb.shape[:2]) < 64:
        raise ValueError(f"the region of {layer.name!r} is too small to predict its magnification ({rgb.shape[1]}×{rgb.shape[0]} px)")
    return predict_magnification(rgb)


def predict_for_slide_layer(layer: Any) -> Any:
    """The magnification of an opened image as every front end predicts it: a file-backed layer
    through :func:`~napari_histo.models.magnification.predict_slide_magnification` (the window the
    command line reads: same crops, same answer, same softness note), an in-memory layer from its
    pixels."""
    path = _layers.layer_path(layer)
    if path:
        from napari_histo.models.magnification import predict_slide_magnification
        from napari_histo.slide import open_slide

        with open_slide(path) as slide:
            return predict_slide_magnification(slide)
    return predict_for_layer(layer)


def show_objective_button(button: Any, prediction: Any) -> None:
    """Offer "Apply 20× scan (0.500 µm/px)" when exactly one standard objective fits."""
    from napari_histo.models.magnification import MPP_AT_1X

    objective = getattr(prediction, "scan_objective", None)
    button.setVisible(objective is not None)
    if objective is not None:
        button.setText(f"Apply {objective:g}× scan ({MPP_AT_1X / objective:.3f} µm/px)")


def apply_objective(viewer: napari.Viewer, layer: Any, prediction: Any) -> None:
    """Set ``layer``'s scale to the standard objective of ``prediction`` (10 / objective µm/px)."""
    from napari_histo.models.magnification import MPP_AT_1X

    objective = prediction.scan_objective
    if objective is None:
        return
    apply_mpp(viewer, layer, MPP_AT_1X / objective)
    layer.metadata["mpp_source"] = "predicted (standard objective)"
    notify_info(f"{layer.name}: scale set to {MPP_AT_1X / objective:.3f} µm/px ({objective:g}× scan, predicted)")


def apply_mpp(viewer: napari.Viewer, layer: Any, mpp: float) -> None:
    """Set ``layer``'s scale to ``mpp`` µm/px and rescale the overlays aligned with it."""
    old_scale, old_translate = _layers.layer_geometry(layer)
    ratio = np.asarray([mpp / old_scale[0], mpp / old_scale[1]])
    for other in viewer.layers:
        if other is layer or not other.metadata.get("napari_histo_overlay"):
            continue
        scale = np.asarray(other.scale[-2:], float) * ratio
        translate = (np.asarray(other.translate[-2:], float) - old_translate) * ratio + old_translate
        other.scale = tuple(scale)
        other.translate = tuple(translate)
    layer.scale = (*layer.scale[:-2], mpp, mpp)
    try:
        layer.units = ("um",) * layer.ndim
    except Exception:  # older napari without layer units
        pass
    layer.metadata["mpp"] = (mpp, mpp)
    layer.metadata["mpp_source"] = "predicted"
    viewer.reset_view()
