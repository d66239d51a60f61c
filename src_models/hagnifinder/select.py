"""Choose between Hagnifinder models without the held-out images.

A fine-tuning run leaves a few **training** source images out (``tuning_holdout`` in its
config). Each candidate model is calibrated on the run's training sources (source-grouped CV
picks the calibration method, as for the shipped model) and scored on those left-out tuning
sources with the held-out protocol (fields at 5, 10, ..., 40x, per patch and per image). The
images in ``holdout`` are never read.

``python -m src_models.hagnifinder.select CONFIG --model-dir A --model-dir B [--out F]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from napari_histo.models.hagnifinder.calibration import aggregate_log, apply_calibration
from napari_histo.models.hagnifinder.config import HagnifinderConfig
from napari_histo.models.hagnifinder.model import predict_patches
from napari_histo.models.magnification import read_model_folder
from napari_histo.utils import atomic_write
from src_models.hagnifinder.calibration import choose_calibration, fit_calibration
from src_models.hagnifinder.data import discover_sources, split_sources, validation_patches
from src_models.hagnifinder.evaluate import EVAL_MAGS
from src_models.hagnifinder.metrics import summarise
from src_models.hagnifinder.train import load_config_file


def tuning_split(config: HagnifinderConfig, data_root: str | Path | None = None):
    """(fit sources, tuning sources): training sources without / with ``tuning_holdout``."""
    if not config.tuning_holdout:
        raise ValueError("the config has no tuning_holdout: nothing to choose on")
    train, _held = split_sources(discover_sources(data_root or config.data_root), config.holdout)
    fit, tune = split_sources(train, config.tuning_holdout)
    if {s.name for s in tune} & set(config.holdout):
        raise RuntimeError("tuning sources overlap the held-out list")
    return fit, tune


def score_model(model_dir: str | Path, fit_patches: list[dict], tune_patches: list[dict]) -> dict:
    """Calibrate ``model_dir`` on ``fit_patches`` and score it on ``tune_patches``."""
    model, _ = read_model_folder(model_dir)
    fit_raw = predict_patches(model, np.stack([r["patch"] for r in fit_patches]))
    fit_true = [r["mag"] for r in fit_patches]
    method, cv = choose_calibration(fit_raw, fit_true, [r["source"] for r in fit_patches])
    cal = fit_calibration(fit_raw, fit_true, method)
    raw = predict_patches(model, np.stack([r["patch"] for r in tune_patches]))
    pred = apply_calibration(cal, raw)
    true = np.array([r["mag"] for r in tune_patches])
    images: dict[tuple, list] = {}
    for rec, p in zip(tune_patches, pred):
        images.setdefault((rec["source"], rec["nominal"]), []).append((p, rec["mag"]))
    img_pred = [aggregate_log([p for p, _ in v]) for v in images.values()]
    img_true = [v[0][1] for v in images.values()]
    return {"model_dir": str(model_dir), "calibration": method, "cv_mae": cv,
            "patches": summarise(pred, true), "patches_uncalibrated": summarise(raw, true),
            "images": summarise(img_pred, img_true)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare models on the tuning sources of a run.")
    parser.add_argument("config", help="config of the fine-tuning run (holdout + tuning_holdout)")
    parser.add_argument("--model-dir", action="append", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config_file(args.config)
    fit, tune = tuning_split(config, args.data_root)
    fit_patches = validation_patches(fit, EVAL_MAGS, args.crops, config.patch_size, seed=123)
    tune_patches = validation_patches(tune, EVAL_MAGS, args.crops, config.patch_size, seed=7)
    print(f"calibration fields: {len(fit_patches)} from {len(fit)} sources; tuning fields: "
          f"{len(tune_patches)} from {', '.join(s.name for s in tune)}")
    results = []
    for model_dir in args.model_dir:
        r = score_model(model_dir, fit_patches, tune_patches)
        results.append(r)
        print(f"{model_dir}: calibration {r['calibration']}; tuning patches MAE "
              f"{r['patches']['mae']:.2f}x (uncalibrated {r['patches_uncalibrated']['mae']:.2f}), "
              f"±5x {100 * r['patches']['acc@5']:.1f} %; images MAE {r['images']['mae']:.2f}x, "
              f"±5x {100 * r['images']['acc@5']:.1f} %")
    if args.out:
        with atomic_write(args.out) as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
