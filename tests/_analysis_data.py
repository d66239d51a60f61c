"""Synthetic nucleus tables for the analysis/format tests (realistic polygon contours, no I/O)."""

from __future__ import annotations

import numpy as np

from napari_histo.formats._common import table_from_contours

PANNUKE = {
    "0": ["nolabe", [0, 0, 0]],
    "1": ["Neoplastic", [255, 0, 0]],
    "2": ["Inflammatory", [0, 255, 0]],
    "3": ["Connective", [0, 0, 255]],
    "4": ["Dead", [255, 255, 0]],
    "5": ["Epithelial", [255, 165, 0]],
}


def ellipse_contour(cx: float, cy: float, a: float, b: float, angle: float, n: int = 24, jitter: float = 0.0, rng=None) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1.0 + (rng.uniform(-jitter, jitter, n) if jitter and rng is not None else 0.0)
    x, y = a * r * np.cos(t), b * r * np.sin(t)
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([cx + x * ca - y * sa, cy + x * sa + y * ca], axis=1).astype(np.float32)


def synthetic_table(n_side: int = 8, spacing: float = 30.0, seed: int = 0, mpp: float | None = 0.25, n_vertices: int = 24):
    """A grid of non-overlapping, slightly irregular elliptical nuclei with PanNuke types 1..5."""
    rng = np.random.default_rng(seed)
    contours, types, probs = [], [], []
    for i in range(n_side):
        for j in range(n_side):
            cx = 20 + j * spacing + rng.uniform(-3, 3)
            cy = 20 + i * spacing + rng.uniform(-3, 3)
            a, b = rng.uniform(6, 10), rng.uniform(4, 7)
            contours.append(ellipse_contour(cx, cy, a, b, rng.uniform(0, np.pi), n_vertices, 0.08, rng))
            types.append(int(rng.integers(1, 6)))
            probs.append(float(rng.uniform(0.5, 1.0)))
    df = table_from_contours(contours, types, probs, mpp=mpp, type_info=PANNUKE)
    df["circularity"] = 4 * np.pi * df["area_px"] / df["perimeter_px"] ** 2
    df["solidity"] = rng.uniform(0.85, 1.0, len(df))
    df["eccentricity"] = rng.uniform(0.1, 0.9, len(df))
    return df
