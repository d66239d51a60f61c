"""Hagnifinder output calibration: monotone, fitted on training sources only, used in predict."""

from __future__ import annotations

import numpy as np
import pytest

from napari_histo.models.hagnifinder.calibration import aggregate_log, apply_calibration
from napari_histo.models.hagnifinder.images import read_rgb
from napari_histo.models.magnification import AGGREGATE_TRIM, load_model
from src_models.hagnifinder.calibration import choose_calibration, fit_calibration, isotonic_fit
from src_models.hagnifinder.data import DEFAULT_HOLDOUT, discover_sources, split_sources


def _shrunk_predictions(seed: int = 0, n: int = 600):
    """Synthetic regression-to-the-mean: raw = 22 + 0.7 * (true - 22) + noise (sources a..l)."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(5, 40, n)
    raw = 22 + 0.7 * (true - 22) + rng.normal(0, 1.0, n)
    groups = np.array([f"src{i % 12}" for i in range(n)])
    return raw, true, groups


def test_isotonic_fit_is_the_pav_solution():
    fitted = isotonic_fit(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    np.testing.assert_allclose(fitted, [1.0, 2.5, 2.5, 4.0])


@pytest.mark.parametrize("method", ["log_linear", "isotonic"])
def test_calibration_is_monotone_and_undoes_shrinkage(method):
    raw, true, _ = _shrunk_predictions()
    cal = fit_calibration(raw, true, method)
    grid = np.linspace(1, 60, 500)
    mapped = apply_calibration(cal, grid)
    assert np.all(np.diff(mapped) > 0)  # strictly increasing, also outside the fitted range
    before = np.mean(np.abs(raw - true))
    after = np.mean(np.abs(apply_calibration(cal, raw) - true))
    assert after < 0.6 * before
    # the ends of the range are no longer pulled to the middle: at least half the shrinkage undone
    top, bottom = 22 + 0.7 * 18, 22 - 0.7 * 17
    assert abs(apply_calibration(cal, [top])[0] - 40) < 0.5 * (40 - top)
    assert abs(apply_calibration(cal, [bottom])[0] - 5) < 0.5 * (bottom - 5)


def test_identity_and_none_leave_predictions_unchanged():
    raw = np.array([5.0, 17.5, 39.0])
    np.testing.assert_array_equal(apply_calibration(None, raw), raw)
    np.testing.assert_array_equal(apply_calibration(fit_calibration(raw, raw, "identity"), raw), raw)


def test_grouped_cross_validation_prefers_a_calibration_for_shrunk_outputs():
    raw, true, groups = _shrunk_predictions(1)
    method, scores = choose_calibration(raw, true, groups)
    assert method != "identity" and scores[method] < scores["identity"]
    with pytest.raises(ValueError):
        fit_calibration(raw, true, "spline")


def test_trimmed_log_aggregate_ignores_one_outlier_crop():
    crops = [20.0] * 7 + [80.0]
    assert aggregate_log(crops, AGGREGATE_TRIM) == pytest.approx(20.0)
    assert aggregate_log([10.0, 40.0], AGGREGATE_TRIM) == pytest.approx(20.0)  # geometric mean
    assert aggregate_log([12.0]) == pytest.approx(12.0)


def test_shipped_calibration_is_monotone_and_from_training_sources_only():
    _, config = load_model()
    cal = config.calibration
    assert cal is not None and cal["method"] != "identity"
    assert not set(cal["fitted_on"]) & set(config.holdout)
    assert set(DEFAULT_HOLDOUT) <= set(config.holdout)
    grid = np.linspace(3, 45, 300)
    assert np.all(np.diff(apply_calibration(cal, grid)) > 0)


def test_shipped_calibration_sources_are_the_training_split(shared_data):
    _, config = load_model()
    train, held = split_sources(discover_sources(shared_data), config.holdout)
    fitted_on = set(config.calibration["fitted_on"])
    assert fitted_on <= {s.name for s in train}
    assert not fitted_on & {s.name for s in held}


def test_predict_applies_calibration_to_each_crop(sample_slide_path):
    import torch

    from napari_histo.models.hagnifinder.images import to_tensor
    from napari_histo.models.magnification import predict_with_model, select_crops

    rgb = read_rgb(sample_slide_path)  # whole level 0; crops are chosen where the tissue is
    model, config = load_model()
    # single scale here; the multi-scale combination is tested in test_magnification_multiscale
    pred = predict_with_model(model, config, rgb, n_crops=8, seed=0, scales=(1.0,))
    with torch.no_grad():
        raw = model(to_tensor(np.stack(select_crops(rgb, 8, config.patch_size, 0)))).numpy()
    np.testing.assert_allclose(pred.per_crop, apply_calibration(config.calibration, raw), rtol=1e-5)
    assert pred.magnification == pytest.approx(aggregate_log(pred.per_crop, AGGREGATE_TRIM))
    # the CMU sample is a 20x Aperio scan (0.499 µm/px)
    assert abs(pred.magnification - 20) <= 5
