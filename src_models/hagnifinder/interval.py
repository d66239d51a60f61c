"""A prediction interval for magnification estimates, fitted on errors for unseen sources.

The spread of a prediction's crops says how much the crops of *one* image disagree; it says
nothing about the error that matters, the bias of a source the model never saw (a scanner, a
stain, a tissue). That error is measured here without the held-out images: the out-of-fold
predictions of a cross-fitted ensemble (:mod:`src_models.hagnifinder.calibration` ``--out`` on a
model trained with ``cross_fit_folds``) are predictions for training sources by a member that
never saw them.

From those field records:

1. each field is calibrated by an isotonic map fitted on the *other* folds' sources, so the
   calibration has not seen the source either;
2. fields are aggregated per source and nominal magnification as ``predict_magnification``
   aggregates crops (trimmed log2 mean): one image-level estimate each;
3. the residual ``r = log2(true) - log2(estimate)`` gets a lower and an upper quantile line in
   ``x = log2(estimate)`` (pinball loss; relative error changes with magnification);
4. lines fitted on a few sources cover less than their quantiles say on new ones, so the
   quantiles are widened (:func:`widened_level`) until source-grouped cross-validation covers
   the nominal level.

The result, stored as ``interval`` in the model's ``config.json``, is applied by
:func:`napari_histo.models.magnification.prediction_interval`. Source-grouped cross-validation of the
lines gives their coverage on training sources::

    python -m src_models.hagnifinder.calibration --model-dir runs/hagnifinder_cv5 --out RECORDS.json
    python -m src_models.hagnifinder.interval RECORDS.json --model-dir resources/weights/hagnifinder [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_histo.models.hagnifinder.calibration import aggregate_log, apply_calibration
from napari_histo.models.magnification import AGGREGATE_TRIM, prediction_interval
from src_models.hagnifinder.calibration import fit_calibration
from src_models.hagnifinder.fitted import write_fitted
from src_models.hagnifinder.metrics import grouped_folds

#: Slopes tried for a quantile line (log2 residual per log2 magnification).
SLOPES = np.linspace(-1.0, 1.0, 401)


def quantile_line(x: Sequence[float], r: Sequence[float], q: float) -> tuple[float, float]:
    """(intercept, slope) of the ``q`` quantile line of ``r`` against ``x`` (pinball loss).

    For each slope of :data:`SLOPES`, the best intercept is the ``q`` quantile of
    ``r - slope * x``; the slope with the lowest pinball loss wins (a one-parameter search
    instead of a linear program: two parameters, a few hundred points).
    """
    x, r = np.asarray(x, float), np.asarray(r, float)
    if x.size < 2:
        raise ValueError("a quantile line needs at least two points")
    best = (np.inf, 0.0, 0.0)
    for slope in SLOPES:
        resid = r - slope * x
        intercept = float(np.quantile(resid, q))
        u = resid - intercept
        loss = float(np.mean(np.maximum(q * u, (q - 1) * u)))
        if loss < best[0] - 1e-12:
            best = (loss, intercept, float(slope))
    return best[1], best[2]


def fit_interval(estimates: Sequence[float], true: Sequence[float], level: float = 0.9) -> dict:
    """Interval spec (JSON-able) from image-level estimates and true magnifications (x)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.log2(np.asarray(estimates, float))
    r = np.log2(np.asarray(true, float)) - x
    tail = (1.0 - level) / 2.0
    low, high = quantile_line(x, r, tail), quantile_line(x, r, 1.0 - tail)
    return {"level": float(level), "space": "log2",
            "low": {"intercept": low[0], "slope": low[1]},
            "high": {"intercept": high[0], "slope": high[1]},
            "log2_estimate_range": [float(x.min()), float(x.max())]}


def image_residuals(records: list[dict], n_folds: int = 5, seed: int = 0) -> list[dict]:
    """Image-level out-of-fold estimates from field records (source, nominal, mag, raw).

    ``raw`` must be out of fold (each field predicted by a member that never saw its source).
    Each field is calibrated by an isotonic map fitted on the other folds' sources, then the
    fields of one source and nominal magnification are aggregated as crops are.
    """
    src = np.array([r["source"] for r in records])
    raw = np.array([r["raw"] for r in records], float)
    mag = np.array([r["mag"] for r in records], float)
    nominal = np.array([r["nominal"] for r in records], float)
    fold_of = grouped_folds(src, n_folds, seed)
    folds = np.array([fold_of[s] for s in src])
    calibrated = np.empty_like(raw)
    for f in np.unique(folds):
        test = folds == f
        calibration = fit_calibration(raw[~test], mag[~test], "isotonic")
        calibrated[test] = apply_calibration(calibration, raw[test])
    rows = []
    for s, m in sorted(set(zip(src.tolist(), nominal.tolist()))):
        sel = (src == s) & (nominal == m)
        rows.append({"source": s, "nominal": m, "mag": float(mag[sel][0]),
                     "estimate": aggregate_log(calibrated[sel], AGGREGATE_TRIM)})
    return rows


def cross_validated_coverage(rows: list[dict], level: float = 0.9, n_folds: int = 5, seed: int = 1
                             ) -> dict:
    """Coverage of intervals fitted on the other folds' sources (folds grouped by source)."""
    fold_of = grouped_folds([r["source"] for r in rows], n_folds, seed)
    inside, widths = [], []
    for f in range(n_folds):
        train = [r for r in rows if fold_of[r["source"]] != f]
        test = [r for r in rows if fold_of[r["source"]] == f]
        if not test:
            continue
        spec = fit_interval([r["estimate"] for r in train], [r["mag"] for r in train], level)
        for r in test:
            lo, hi = prediction_interval(r["estimate"], spec)
            inside.append(lo <= r["mag"] <= hi)
            widths.append(np.log2(hi / lo))
    return {"coverage": float(np.mean(inside)), "n": len(inside),
            "median_width_log2": float(np.median(widths))}


#: Quantile levels tried by :func:`widened_level`, from the nominal level up.
LEVEL_STEP = 0.01


def widened_level(rows: list[dict], level: float = 0.9, max_level: float = 0.99) -> tuple[float, dict]:
    """Smallest fitted level (nominal upwards in steps of :data:`LEVEL_STEP`) whose intervals
    cover at least ``level`` of the rows in source-grouped CV; (fitted level, its CV summary)."""
    fitted = level
    while True:
        cv = cross_validated_coverage(rows, fitted)
        if cv["coverage"] >= level or fitted + LEVEL_STEP > max_level + 1e-9:
            return fitted, cv
        fitted = round(fitted + LEVEL_STEP, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fit the magnification prediction interval on "
                                                 "out-of-fold training predictions.")
    parser.add_argument("records", help="JSON from `calibration --out` of a cross-fitted model")
    parser.add_argument("--model-dir", default=None, help="model whose config.json gets the interval")
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--write", action="store_true", help="store the interval in MODEL_DIR/config.json")
    parser.add_argument("--basis", default=None, help="what made the records (stored with the interval)")
    args = parser.parse_args(argv)
    with open(args.records) as fh:
        records = json.load(fh)["records"]
    rows = image_residuals(records)
    plain = cross_validated_coverage(rows, args.level)
    fitted_level, cv = widened_level(rows, args.level)
    spec = fit_interval([r["estimate"] for r in rows], [r["mag"] for r in rows], fitted_level)
    spec["level"] = float(args.level)
    spec["fitted_on"] = {"records": args.basis or Path(args.records).name, "images": len(rows),
                         "sources": len({r["source"] for r in rows}), "quantile_level": fitted_level,
                         "cv_coverage": round(cv["coverage"], 4),
                         "cv_coverage_unwidened": round(plain["coverage"], 4)}
    mae = float(np.mean([abs(r["estimate"] - r["mag"]) for r in rows]))
    print(f"{len(rows)} image-level out-of-fold estimates from {spec['fitted_on']['sources']} sources, "
          f"MAE {mae:.3f}x")
    print(f"source-grouped CV coverage of the {100 * args.level:.0f} % quantile lines: "
          f"{100 * plain['coverage']:.1f} %; widened to the {100 * fitted_level:.0f} % lines")
    print(f"{100 * args.level:.0f} % interval: log2 low {spec['low']['intercept']:+.3f} "
          f"{spec['low']['slope']:+.3f}·x, high {spec['high']['intercept']:+.3f} {spec['high']['slope']:+.3f}·x")

    for m in (5, 10, 20, 30, 40):
        lo, hi = prediction_interval(m, spec)
        print(f"  estimate {m}x -> {lo:.1f}-{hi:.1f}x")
    print(f"source-grouped CV coverage {100 * cv['coverage']:.1f} % (n = {cv['n']}, "
          f"median width x{2 ** cv['median_width_log2']:.2f})")
    if cv["coverage"] < args.level:
        print(f"warning: even the {100 * fitted_level:.0f} % lines cover under {100 * args.level:.0f} % "
              "of unseen sources: too few sources for this level", file=sys.stderr)
    if args.write:
        if not args.model_dir:
            parser.error("--write needs --model-dir")

        cfg_path = write_fitted(args.model_dir, "interval", spec, {r["source"] for r in rows})
        print(f"interval written to {cfg_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
