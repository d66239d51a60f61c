"""Magnification panel and the Slide panel's "predict magnification" on a real MoNuSeg tile (a
TIFF without a pixel size). Skipped when ../shared/data or the shipped Hagnifinder model is absent."""

from __future__ import annotations

import numpy as np
import pytest
from _widget_helpers import open_with_slide_panel
from conftest import shared_path

pytestmark = [pytest.mark.gui, pytest.mark.shared_data]

TILE = "TCGA-21-5784-01Z-00-DX1"


@pytest.fixture(scope="module", autouse=True)
def _shipped_model():
    from napari_histo.models.magnification import default_model_dir

    if not (default_model_dir() / "model.pt").exists():
        pytest.skip("the shipped magnification model is not in this checkout")


def _edges(layer):
    """World coordinates of the outer edges (y0, x0, y1, x1) of a 2-D layer."""
    from napari_histo._napari import _layers

    h, w = _layers.level0_shape(layer)
    lo = layer.data_to_world(np.zeros(2)) - np.asarray(layer.scale) / 2
    hi = layer.data_to_world(np.array([h - 1, w - 1], float)) + np.asarray(layer.scale) / 2
    return np.concatenate([lo, hi])


def test_predict_and_apply_magnification(viewer, qtbot):
    from napari_histo._napari import _layers
    from napari_histo._napari._magnification_panel import MagnificationPanel

    tif = shared_path("monuseg", "MoNuSegTrainData", f"{TILE}.tif")
    slide_panel, tile = open_with_slide_panel(viewer, tif)
    assert slide_panel.info["mpp"] is None
    assert slide_panel.predict_button.isVisibleTo(slide_panel)

    # Slide panel: predict, then apply; the tissue overlay follows the new scale
    slide_panel.tissue_box.setChecked(True)
    qtbot.waitUntil(lambda: _layers.TISSUE in viewer.layers, timeout=30_000)
    tissue = viewer.layers[_layers.TISSUE]
    job = slide_panel.predict_magnification()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    prediction = slide_panel.prediction
    assert job.error is None and prediction is not None and 0.5 < prediction.magnification < 200
    assert "predicted" in slide_panel.labels["mpp"].text()
    assert "% interval" in slide_panel.labels["mpp"].text()
    assert slide_panel.objective_button.isVisibleTo(slide_panel) == (prediction.scan_objective is not None)
    slide_panel.apply_prediction()
    assert tuple(tile.scale) == pytest.approx((prediction.mpp, prediction.mpp))
    assert _layers.layer_mpp(tile) == pytest.approx(prediction.mpp)
    # same outer edges, to within one mask pixel
    np.testing.assert_allclose(_edges(tissue), _edges(tile), atol=float(tissue.scale[0]) + 1e-6)

    # Magnification panel: whole layer and current view
    panel = MagnificationPanel(viewer)
    assert panel.layer_box.currentText() == tile.name
    panel.scope.setCurrentText("whole layer")
    job = panel.predict()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    whole = panel.prediction
    assert job.error is None and whole is not None and panel.apply_button.isEnabled()
    assert f"{whole.magnification:.1f}×" in panel.result_label.text()
    assert "90 % interval" in panel.result_label.text()
    panel.apply()
    assert tuple(tile.scale) == pytest.approx((whole.mpp, whole.mpp))
    # a 40x tile: the one standard objective in the interval is offered and applied exactly
    assert whole.scan_objective == 40.0 and panel.objective_button.isVisibleTo(panel)
    assert panel.objective_button.text() == "Apply 40× scan (0.250 µm/px)"
    panel.apply_objective()
    assert tuple(tile.scale) == pytest.approx((0.25, 0.25))
    assert tile.metadata["mpp_source"] == "predicted (standard objective)"
    viewer.reset_view()
    panel.scope.setCurrentText("current view")
    job = panel.predict()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert job.error is None and panel.prediction is not whole and np.isfinite(panel.prediction.magnification)


def test_the_panels_show_the_softness_note(viewer, qtbot, sample_slide_path):
    from napari_histo._napari._magnification_panel import MagnificationPanel
    from napari_histo._napari._slide_panel import SlidePanel
    from napari_histo.models.hagnifinder.images import read_rgb
    from napari_histo.models.magnification import predict_magnification
    from src_models.hagnifinder.data import blur_patch

    soft = blur_patch(read_rgb(sample_slide_path), 1.0)  # the whole CC0 sample (20x), one pixel softer
    prediction = predict_magnification(soft)
    assert prediction.note  # the check fires (as in test_magnification_softness)
    # the interval spans both models' estimates, so no single objective is claimed
    lo, hi = prediction.interval
    assert lo < prediction.blur_invariant < prediction.magnification < hi
    assert prediction.scan_objective is None
    layer = viewer.add_image(soft, rgb=True, name="soft snapshot")
    panel = MagnificationPanel(viewer)
    panel._show(prediction, layer)
    assert "⚠ image softer than the training scans" in panel.result_label.text()
    assert not panel.objective_button.isVisibleTo(panel)
    slide_panel = SlidePanel(viewer)
    slide_panel._show_prediction(prediction)
    assert f"blur-invariant estimate is {prediction.blur_invariant:.1f}×" in slide_panel.labels["mpp"].text()
