"""Monotone post-hoc calibration of the Hagnifinder output, fitted on training sources only.

A regressor trained with a (Huber) loss on a bounded target range regresses towards the middle
of the range: it over-predicts at 5x and under-predicts at 40x. A monotone map of the raw
output, fitted on predictions for the **training** source images (never the held-out ones),
undoes that bias without retraining and without changing the ranking of predictions.

Maps are fitted and applied in log2-magnification space (a magnification is a scale factor, so
relative error is what matters):

- ``identity``: no change;
- ``log_linear``: ``log2 m = a + b * log2 raw``;
- ``isotonic``: isotonic (pool-adjacent-violators) regression of ``log2 true`` on
  ``log2 raw``, summarised as a strictly increasing piecewise-linear map through the means of
  ``n_knots`` quantile bins; outside the knots it continues with slope 1 (a constant offset).

:func:`choose_calibration` picks among them by cross-validation grouped by training source
image, so that the choice uses no held-out image either. The result is a JSON-able dict stored
as ``calibration`` in the model's ``config.json`` and applied by :func:`apply_calibration` in
the prediction path (:func:`napari_histo.models.magnification.predict_magnification`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np

from napari_histo.models.hagnifinder.calibration import apply_calibration, log2_clipped
from napari_histo.models.hagnifinder.images import to_tensor
from napari_histo.models.magnification import read_model_folder
from napari_histo.utils import atomic_write
from src_models.hagnifinder.data import discover_sources, split_sources, validation_patches
from src_models.hagnifinder.fitted import write_fitted
from src_models.hagnifinder.metrics import grouped_folds, summarise

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.

METHODS = ("identity", "log_linear", "isotonic")


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-decreasing least-squares fit of ``y`` ordered by ``x`` (pool adjacent violators).

    Returns the fitted values in the order of ``np.argsort(x, kind="stable")``.
    """
    order = np.argsort(np.asarray(x, float), kind="stable")
    values = list(np.asarray(y, float)[order])
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    return np.concatenate([np.full(int(n), s / n) for s, n in blocks])


def fit_calibration(raw: Sequence[float], true: Sequence[float], method: str = "isotonic",
                    n_knots: int = 12) -> dict:
    """Fit a monotone map ``raw prediction -> magnification`` (see module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r} (one of {METHODS})")
    x, t = log2_clipped(raw), log2_clipped(true)
    if x.size < 2:
        raise ValueError("calibration needs at least two predictions")
    if method == "identity":
        return {"method": "identity", "space": "log2"}
    if method == "log_linear":
        b, a = np.polyfit(x, t, 1)
        if b <= 0:
            raise ValueError("log-linear calibration is not increasing (slope <= 0)")
        return {"method": "log_linear", "space": "log2", "intercept": float(a), "slope": float(b)}
    order = np.argsort(x, kind="stable")
    xs, fitted = x[order], isotonic_fit(x, t)
    bins = np.array_split(np.arange(xs.size), max(2, min(n_knots, xs.size)))
    kx = np.array([xs[b].mean() for b in bins if b.size])
    ky = np.array([fitted[b].mean() for b in bins if b.size])
    # strictly increasing knots: equal x merged, flat y tilted by a negligible amount
    keep = np.concatenate([[True], np.diff(kx) > 1e-9])
    kx, ky = kx[keep], ky[keep]
    ky = np.maximum.accumulate(ky) + np.arange(ky.size) * 1e-6
    return {"method": "isotonic", "space": "log2", "knots_log2_raw": [float(v) for v in kx],
            "knots_log2_mag": [float(v) for v in ky]}


def choose_calibration(raw: Sequence[float], true: Sequence[float], groups: Sequence[str],
                       n_folds: int = 5, methods: Sequence[str] = METHODS, seed: int = 0
                       ) -> tuple[str, dict[str, float]]:
    """Method with the lowest cross-validated MAE (x), folds grouped by source image.

    Returns the chosen method and the CV MAE of every method.
    """
    raw, true, groups = np.asarray(raw, float), np.asarray(true, float), np.asarray(groups)
    fold_of = grouped_folds(groups, n_folds, seed)
    folds = np.array([fold_of[g] for g in groups])
    scores = {}
    for method in methods:
        err = np.empty_like(raw)
        for f in range(n_folds):
            test = folds == f
            if not test.any():
                continue
            cal = fit_calibration(raw[~test], true[~test], method)
            err[test] = np.abs(apply_calibration(cal, raw[test]) - true[test])
        scores[method] = float(err.mean())
    return min(scores, key=scores.get), scores


def training_predictions(model_dir, data_root=None, crops_per_mag: int = 8, seed: int = 123,
                         mags: Sequence[float] = (5, 10, 15, 20, 25, 30, 35, 40)) -> list[dict]:
    """Raw predictions on fields of the **training** source images (the held-out list excluded).

    Same field protocol as the held-out evaluation (``validation_patches``), other crop seed.
    Each record: source, nominal, mag (true), raw. For a cross-fitted ensemble, ``raw`` is the
    **out-of-fold** prediction: that of the member which never saw the field's source.
    """
    model, config = read_model_folder(model_dir)
    train_src, _ = split_sources(discover_sources(data_root or config.data_root), config.holdout)
    held = set(config.holdout)
    if any(s.name in held for s in train_src):  # split_sources guarantees it; checked anyway
        raise RuntimeError("a held-out source reached the calibration data")
    records = validation_patches(train_src, mags, crops_per_mag, config.patch_size, seed=seed)
    preds = raw_predictions(model, config, np.stack([r["patch"] for r in records]),
                            [r["source"] for r in records])
    return [{"source": r["source"], "nominal": r["nominal"], "mag": r["mag"], "raw": float(p)}
            for r, p in zip(records, preds)]


def raw_predictions(model, config, patches: np.ndarray, sources: Sequence[str]) -> np.ndarray:
    """Raw outputs for training patches: out of fold for a cross-fitted ensemble (each patch
    scored by the member that never saw its source), the model's own output otherwise."""
    import torch

    from napari_histo.models.hagnifinder.model import predict_patches

    if not config.member_holdouts:
        return predict_patches(model, patches)
    member_of = {name: k for k, names in enumerate(config.member_holdouts) for name in names}
    missing = sorted(set(sources) - set(member_of))
    if missing:
        raise RuntimeError(f"no member left out training sources {missing}: no out-of-fold prediction")
    model.eval()
    with torch.no_grad():
        per_member = np.concatenate([model.member_outputs(to_tensor(patches[i:i + 32])).numpy()
                                     for i in range(0, len(patches), 32)], axis=1)
    return per_member[[member_of[s] for s in sources], np.arange(len(patches))]


def main(argv: list[str] | None = None) -> int:
    """``python -m src_models.hagnifinder.calibration --model-dir DIR [--write] [--out F]``."""
    import torch

    parser = argparse.ArgumentParser(description="Fit the monotone output calibration on training sources.")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--crops", type=int, default=8, help="fields per training image and magnification")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--method", default="auto", choices=("auto", *METHODS),
                        help="auto: lowest source-grouped cross-validated MAE")
    parser.add_argument("--write", action="store_true", help="store the calibration in DIR/config.json")
    parser.add_argument("--out", help="write the training predictions and CV scores (JSON) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    records = training_predictions(args.model_dir, args.data_root, args.crops, args.seed)
    raw = [r["raw"] for r in records]
    true = [r["mag"] for r in records]
    groups = [r["source"] for r in records]
    chosen, scores = choose_calibration(raw, true, groups)
    method = chosen if args.method == "auto" else args.method
    calibration = fit_calibration(raw, true, method)
    calibration["fitted_on"] = sorted(set(groups))
    calibration["fit"] = {"crops_per_mag": args.crops, "seed": args.seed, "n": len(records),
                          "cv_mae": scores}
    print(f"training fields: {len(records)} from {len(set(groups))} source images")
    print("source-grouped 5-fold CV MAE (x): " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(f"method: {method}; in-sample MAE raw {summarise(raw, true)['mae']:.3f} -> "
          f"calibrated {summarise(apply_calibration(calibration, raw), true)['mae']:.3f}")
    if args.out:
        with atomic_write(args.out) as fh:
            json.dump({"calibration": calibration, "records": records}, fh, indent=1)
    if args.write:
        cfg_path = write_fitted(args.model_dir, "calibration", calibration, calibration["fitted_on"])
        print(f"calibration written to {cfg_path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
