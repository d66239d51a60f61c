"""Prediction interval of magnification estimates: quantile lines, widening by source-grouped CV,
the shipped spec, and what the API and the CLI report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_histo.models.magnification import (
    STANDARD_OBJECTIVES,
    MagnificationPrediction,
    interval_text,
    load_model,
    predict_magnification,
    prediction_interval,
)
from src_models.hagnifinder.interval import (
    cross_validated_coverage,
    fit_interval,
    image_residuals,
    quantile_line,
    widened_level,
)


def test_quantile_line_recovers_a_known_quantile_line():
    rng = np.random.default_rng(0)
    x = rng.uniform(2, 5, 4000)
    r = 0.3 - 0.1 * x + rng.uniform(-0.5, 0.5, x.size) * (x / 5)  # spread grows with x
    intercept, slope = quantile_line(x, r, 0.95)
    # true 95 % line: 0.3 - 0.1 x + 0.45 x / 5 = 0.3 - 0.01 x
    assert slope == pytest.approx(-0.01, abs=0.02)
    assert intercept == pytest.approx(0.3, abs=0.06)
    assert np.mean(r <= intercept + slope * x) == pytest.approx(0.95, abs=0.01)


def test_interval_covers_its_level_and_always_contains_the_estimate():
    rng = np.random.default_rng(1)
    true = rng.choice([5.0, 10, 20, 40], 3000)
    estimate = true * 2 ** rng.normal(0.0, 0.2, true.size)
    spec = fit_interval(estimate, true, 0.8)
    bounds = np.array([prediction_interval(e, spec) for e in estimate])
    inside = (bounds[:, 0] <= true) & (true <= bounds[:, 1])
    assert inside.mean() == pytest.approx(0.8, abs=0.02)
    assert np.all(bounds[:, 0] <= estimate) and np.all(estimate <= bounds[:, 1])
    # outside the fitted range the residual lines are not extrapolated: same relative width
    lo, hi = spec["log2_estimate_range"]
    far_low, edge_low = prediction_interval(2 ** (lo - 2), spec), prediction_interval(2 ** lo, spec)
    assert far_low[1] / far_low[0] == pytest.approx(edge_low[1] / edge_low[0])


def _source_biased_rows(n_sources=30, bias_sd=0.25, seed=2):
    """Image rows whose error is mostly a per-source bias, as for magnification."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sources):
        bias = rng.normal(0, bias_sd)
        for m in (5.0, 10, 15, 20, 25, 30, 35, 40):
            rows.append({"source": f"s{s}", "nominal": m, "mag": m,
                         "estimate": m * 2 ** (bias + rng.normal(0, 0.05))})
    return rows


def test_widening_reaches_the_nominal_coverage_in_source_grouped_cv():
    # 20 sources, errors mostly a per-source bias: lines fitted on 16 of them under-cover the rest
    rows = _source_biased_rows(n_sources=20)
    plain = cross_validated_coverage(rows, 0.9)
    assert plain["coverage"] < 0.88
    fitted, cv = widened_level(rows, 0.9)
    assert 0.9 < fitted < 0.99 and cv["coverage"] >= 0.9
    assert cv["median_width_log2"] > plain["median_width_log2"]
    # with too few sources no quantile level helps: the search stops at its ceiling
    fitted, cv = widened_level(_source_biased_rows(n_sources=12), 0.9)
    assert fitted == pytest.approx(0.99) and cv["coverage"] < 0.9


def test_image_residuals_aggregate_fields_per_source_and_magnification():
    rng = np.random.default_rng(3)
    records = []
    for s in range(10):
        for m in (10.0, 20.0, 40.0):
            for _ in range(8):
                records.append({"source": f"s{s}", "nominal": m, "mag": m,
                                "raw": m * 1.2 * 2 ** rng.normal(0, 0.05)})  # a 20 % over-estimate
    rows = image_residuals(records)
    assert len(rows) == 30 and {r["source"] for r in rows} == {f"s{s}" for s in range(10)}
    # the calibration fitted on the other folds removes the constant over-estimate
    errors = np.log2([r["estimate"] / r["mag"] for r in rows])
    assert abs(np.median(errors)) < 0.05


def test_shipped_interval_is_fitted_on_training_sources_only():
    _, config = load_model()
    spec = config.interval
    assert spec["level"] == 0.9 and spec["fitted_on"]["sources"] == 29
    assert spec["fitted_on"]["cv_coverage"] >= 0.9
    lo, hi = prediction_interval(20.0, spec)
    assert lo < 20 < hi and 1.2 < hi / lo < 3.0  # a real uncertainty, not the crop spread


def test_prediction_reports_the_interval_and_the_objective_on_the_sample_slide(sample_slide_path, capsys):
    from napari_histo.cli import main
    from napari_histo.models.hagnifinder.images import read_rgb

    pred = predict_magnification(read_rgb(sample_slide_path), n_crops=8, seed=0)
    lo, hi = pred.interval
    assert lo <= pred.magnification <= hi and pred.interval_level == 0.9
    assert lo <= 20 <= hi  # a 20x scan
    assert pred.consistent_objectives == (20.0,)
    assert "only 20x fits" in interval_text(pred)
    assert main(["magnification", str(sample_slide_path), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)[0]
    # the CLI reads a 2048² tissue region of the slide, so its own estimate's interval
    spec = load_model()[1].interval
    assert rec["interval"] == pytest.approx(list(prediction_interval(rec["magnification"], spec)), abs=2e-3)
    assert rec["consistent_objectives"] == [20.0] and rec["interval_level"] == 0.9
    assert main(["magnification", str(sample_slide_path)]) == 0
    assert "90 % interval" in capsys.readouterr().out


def test_consistent_objectives_are_the_standard_ones_inside():
    pred = MagnificationPrediction(30.0, 10 / 30, 1.0, interval=(19.0, 41.0), interval_level=0.9)
    assert pred.consistent_objectives == (20.0, 40.0)
    assert "only" not in interval_text(pred)
    assert MagnificationPrediction(30.0, 10 / 30, 1.0).consistent_objectives == ()
    assert interval_text(MagnificationPrediction(30.0, 10 / 30, 1.0)) == ""
    assert set(STANDARD_OBJECTIVES) == {5.0, 10.0, 20.0, 40.0}


def test_held_out_coverage_counts_fields_images_and_scan_objectives():
    from src_models.hagnifinder.evaluate import interval_coverage

    spec = fit_interval([10.0, 20.0, 40.0, 12.0, 18.0, 36.0], [10.0, 20.0, 40.0, 10.0, 20.0, 40.0], 0.9)
    patches = [{"pred": 20.0, "mag": 20.0}, {"pred": 20.0, "mag": 60.0},
               # a soft field: the interval spans the blur-invariant estimate too
               {"pred": 38.0, "mag": 10.0, "soft": True, "invariant": 10.0}]
    whole = [{"interval": [15.0, 25.0], "mag": 20.0}, {"interval": [15.0, 25.0], "mag": 30.0}]
    native = [{"interval": [30.0, 45.0], "true": 40.3, "objectives": [40.0]},
              {"interval": [15.0, 45.0], "true": 20.0, "objectives": [20.0, 40.0]},
              {"interval": [15.0, 25.0], "true": 18.2, "objectives": [20.0]}]  # not at a standard objective
    out = interval_coverage(spec, patches, whole, native)
    assert out["patches"] == {"coverage": pytest.approx(2 / 3), "n": 3}
    assert out["whole_images"]["coverage"] == 0.5
    assert out["native"]["coverage"] == 1.0
    assert out["native_single_objective"] == {"n": 2, "true_objective_only": 1}
    assert interval_coverage(None, patches, whole, native) is None


def test_interval_cli_writes_the_spec_and_refuses_held_out_sources(tmp_path, capsys):
    import shutil

    from napari_histo.models.hagnifinder.config import HagnifinderConfig
    from napari_histo.models.magnification import default_model_dir
    from src_models.hagnifinder.interval import main

    shutil.copy(default_model_dir() / "config.json", tmp_path / "config.json")
    held_out = HagnifinderConfig.load(tmp_path / "config.json").holdout[0]
    rng = np.random.default_rng(4)
    records = [{"source": f"train{s}", "nominal": m, "mag": m, "raw": m * 2 ** rng.normal(0, 0.1)}
               for s in range(10) for m in (5.0, 10.0, 20.0, 40.0) for _ in range(4)]
    good = tmp_path / "records.json"
    good.write_text(json.dumps({"records": records}))
    assert main([str(good), "--model-dir", str(tmp_path), "--write", "--basis", "synthetic"]) == 0
    assert "interval written" in capsys.readouterr().out
    spec = HagnifinderConfig.load(tmp_path / "config.json").interval
    assert spec["fitted_on"]["records"] == "synthetic" and spec["fitted_on"]["sources"] == 10
    bad = tmp_path / "leaky.json"
    bad.write_text(json.dumps({"records": records + [dict(records[0], source=held_out)]}))
    with pytest.raises(RuntimeError, match="held-out sources"):
        main([str(bad), "--model-dir", str(tmp_path), "--write"])
