"""Applying the Hagnifinder calibration at prediction time: a monotone map of the raw network
output in log2-magnification space, fitted after training (the fitting is in the training
package, ``src_models.hagnifinder.calibration``), and the trimmed log-mean that turns an image's
crop estimates into one magnification."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Smallest raw output accepted before taking log2 (the network's output is unbounded below).
_MIN_RAW = 0.5


def log2_clipped(values) -> np.ndarray:
    return np.log2(np.clip(np.asarray(values, float), _MIN_RAW, None))


def apply_calibration(calibration: dict | None, raw) -> np.ndarray:
    """Calibrated magnifications (x) for raw network outputs; ``None`` means identity."""
    raw = np.asarray(raw, float)
    method = (calibration or {}).get("method", "identity")
    if method == "identity":
        return raw.copy()
    x = log2_clipped(raw)
    if method == "log_linear":
        y = calibration["intercept"] + calibration["slope"] * x
    elif method == "isotonic":
        kx = np.asarray(calibration["knots_log2_raw"], float)
        ky = np.asarray(calibration["knots_log2_mag"], float)
        y = np.interp(x, kx, ky)
        y = np.where(x < kx[0], ky[0] + (x - kx[0]), y)
        y = np.where(x > kx[-1], ky[-1] + (x - kx[-1]), y)
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    return np.exp2(y)


def aggregate_log(values: Sequence[float], trim: float = 0.125) -> float:
    """Trimmed mean in log2 space (a geometric mean without the extreme crops).

    ``trim`` is the fraction dropped at each end (at least one crop each end when 5 or more
    crops are given and ``trim > 0``).
    """
    v = np.sort(log2_clipped(values))
    if v.size == 0:
        raise ValueError("no values to aggregate")
    k = int(np.floor(trim * v.size))
    if trim > 0 and v.size >= 5:
        k = max(k, 1)
    if 2 * k >= v.size:
        k = (v.size - 1) // 2
    return float(np.exp2(v[k:v.size - k].mean()))
