"""Hagnifinder metrics: accuracy within ±N (N = 0.5, 1, 5) and mean absolute error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLDS = (0.5, 1.0, 5.0)


def accuracy_within(pred: Sequence[float], target: Sequence[float], n: float) -> float:
    """Fraction of predictions with ``|pred - target| <= n``."""
    pred, target = np.asarray(pred, float), np.asarray(target, float)
    if pred.size == 0:
        return float("nan")
    return float(np.mean(np.abs(pred - target) <= n + 1e-9))


def mean_absolute_error(pred: Sequence[float], target: Sequence[float]) -> float:
    """Mean ``|pred - target|`` in x (objective power)."""
    pred, target = np.asarray(pred, float), np.asarray(target, float)
    return float(np.mean(np.abs(pred - target))) if pred.size else float("nan")


def summarise(pred: Sequence[float], target: Sequence[float],
              thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """``{"n", "mae", "acc@0.5", "acc@1", "acc@5"}`` for one group of predictions."""
    out = {"n": int(np.asarray(pred).size), "mae": mean_absolute_error(pred, target)}
    for t in thresholds:
        out[f"acc@{t:g}"] = accuracy_within(pred, target, t)
    return out


def grouped_folds(groups: Sequence[str], n_folds: int = 5, seed: int = 0) -> dict[str, int]:
    """Cross-validation fold of each source name (whole sources stay in one fold)."""
    names = np.unique(np.asarray(groups))
    rng = np.random.default_rng(seed)
    return dict(zip(names.tolist(), (rng.permutation(names.size) % n_folds).tolist()))
