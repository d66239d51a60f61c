"""Softness check: a blur-invariant companion model vetoes estimates it contradicts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_histo.models.hagnifinder.images import read_rgb
from napari_histo.models.magnification import (
    SOFT_IMAGE_NOTE,
    default_model_dir,
    predict_magnification,
    read_model_folder,
    softness_check,
)
from napari_histo.utils import HistoError


@pytest.fixture(scope="module")
def cmu_region(sample_slide_path):
    return read_rgb(sample_slide_path)


def test_only_estimates_far_above_the_blur_invariant_one_are_replaced():
    main = np.array([40.0, 40.0, 10.0, 30.0])
    invariant = np.array([35.0, 15.0, 20.0, 17.0])
    values, replaced = softness_check(main, invariant, 1.75)
    assert replaced.tolist() == [False, True, False, True]  # 40/35 and 10/20 stand; 40/15, 30/17 do not
    assert values.tolist() == [40.0, 15.0, 10.0, 17.0]
    value, flag = softness_check(30.0, 20.0, 1.75)  # scalars too
    assert float(value) == 30.0 and not flag


def _folder_with_companion(tmp_path, max_ratio: float, action: str = "replace"):
    """The shipped network twice: the main copy's output doubled by its calibration (log2 + 1),
    the companion's left raw, so the main estimate is exactly twice the companion's."""
    src = default_model_dir()
    main_dir = tmp_path / f"main_{max_ratio:g}_{action}"
    (main_dir / "invariant").mkdir(parents=True)
    for name in ("model.pt", "config.json"):
        shutil.copy(src / name, main_dir / name)
        shutil.copy(src / name, main_dir / "invariant" / name)
    cfg = json.loads((main_dir / "config.json").read_text())
    cfg.pop("softness_check", None)
    companion = dict(cfg, calibration=None)
    (main_dir / "invariant" / "config.json").write_text(json.dumps(companion))
    cfg["calibration"] = {"method": "log_linear", "space": "log2", "intercept": 1.0, "slope": 1.0}
    cfg["softness_check"] = {"model": "invariant", "max_ratio": max_ratio, "action": action}
    (main_dir / "config.json").write_text(json.dumps(cfg))
    return main_dir


def test_a_companion_replaces_an_estimate_it_contradicts_and_says_so(tmp_path, cmu_region):
    vetoed = predict_magnification(cmu_region, n_crops=4, seed=3,
                                   model_dir=_folder_with_companion(tmp_path, 1.75))
    kept = predict_magnification(cmu_region, n_crops=4, seed=3,
                                 model_dir=_folder_with_companion(tmp_path, 2.5))
    assert kept.note == "" and vetoed.note == SOFT_IMAGE_NOTE
    assert kept.magnification == pytest.approx(2 * vetoed.magnification, rel=1e-6)
    companion = predict_magnification(cmu_region, n_crops=4, seed=3,
                                      model_dir=tmp_path / "main_1.75_replace" / "invariant")
    assert vetoed.magnification == pytest.approx(companion.magnification, rel=1e-9)
    assert kept.blur_invariant == pytest.approx(companion.magnification, rel=1e-9)


def test_in_warn_mode_the_estimate_stands_and_the_note_gives_the_other(tmp_path, cmu_region):
    warned = predict_magnification(cmu_region, n_crops=4, seed=3,
                                   model_dir=_folder_with_companion(tmp_path, 1.75, "warn"))
    kept = predict_magnification(cmu_region, n_crops=4, seed=3,
                                 model_dir=_folder_with_companion(tmp_path, 2.5, "warn"))
    assert warned.magnification == kept.magnification and warned.per_crop == kept.per_crop
    assert kept.note == ""
    assert warned.note.startswith("image softer than the training scans")
    assert f"{warned.blur_invariant:.1f}x" in warned.note
    assert warned.magnification == pytest.approx(2 * warned.blur_invariant, rel=1e-6)


def test_a_broken_softness_check_names_the_config(tmp_path):
    folder = _folder_with_companion(tmp_path, 1.75)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["softness_check"] = {"model": "invariant"}  # no ratio
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HistoError, match="config.json: softness_check"):
        read_model_folder(folder)
    cfg["softness_check"] = {"model": "invariant", "max_ratio": 1.75, "action": "ignore"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HistoError, match="config.json: softness_check.*'ignore'"):
        read_model_folder(folder)
    cfg["softness_check"] = {"model": "missing", "max_ratio": 1.75}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HistoError, match="missing.*model file missing"):
        read_model_folder(folder)


def test_the_shipped_model_warns_on_a_soft_image_and_not_on_the_sharp_scan(cmu_region):
    from src_models.hagnifinder.data import blur_patch

    sharp = predict_magnification(cmu_region)  # the CC0 sample, a 20x scan
    soft = predict_magnification(blur_patch(cmu_region, 1.0))  # the same, one pixel softer
    assert sharp.note == "" and abs(sharp.magnification - 20.0) < 5.0
    assert soft.note.startswith("image softer than the training scans")
    assert soft.magnification > 30.0  # what the sharpness-reading model makes of it, kept ("warn")
    assert abs(soft.blur_invariant - 20.0) < 5.0  # the structures still say 20x


def test_the_ratio_table_counts_replacements_and_their_error():
    from src_models.hagnifinder.softness import summarise_ratios

    records = [{"source": "a", "mag": 10.0, "sigma": 0.0, "main": 11.0, "companion": 10.0},
               {"source": "a", "mag": 10.0, "sigma": 1.0, "main": 30.0, "companion": 12.0},
               {"source": "b", "mag": 20.0, "sigma": 1.0, "main": 30.0, "companion": 20.0}]
    table = summarise_ratios(records, ratios=(1.2, 2.0))
    sharp, soft = table["0"], table["1"]
    assert sharp["by_ratio"]["1.2"] == {"mae": 1.0, "replaced": 0.0}
    assert soft["mae_main"] == 15.0 and soft["mae_companion"] == 1.0
    assert soft["by_ratio"]["1.2"] == {"mae": 1.0, "replaced": 1.0}  # 30/12 and 30/20 both > 1.2
    assert soft["by_ratio"]["2"] == {"mae": 6.0, "replaced": 0.5}  # only 30/12 > 2
    assert soft["ratio_percentiles"]["max"] == 2.5
