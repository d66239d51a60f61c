"""Test helpers for nucleus tests: ideal HoVer-Net maps from an instance map, synthetic images."""

from __future__ import annotations

import numpy as np


def ideal_maps(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Perfect ``np`` probability and ``hv`` (H, W, 2; x then y) maps for an instance map.

    Each instance gets x/y offsets from its centre of mass, negatives scaled by 1/|min| and
    positives by 1/max separately (as HoVer-Net's targets).
    """
    from scipy import ndimage as ndi

    hv = np.zeros(inst.shape + (2,), np.float32)
    for i, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is None:
            continue
        m = inst[sl] == i
        rr, cc = np.nonzero(m)
        cy, cx = rr.mean(), cc.mean()
        for ch, d in ((0, cc - cx), (1, rr - cy)):
            d = d.astype(np.float32)
            neg, pos = d < 0, d > 0
            if neg.any():
                d[neg] /= -d[neg].min()
            if pos.any():
                d[pos] /= d[pos].max()
            view = hv[sl][..., ch]
            view[rr, cc] = d
    return (inst > 0).astype(np.float32), hv


def disks(shape, centres, radii) -> np.ndarray:
    """Instance map of (possibly touching) disks; later disks overwrite earlier ones."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for k, ((cy, cx), r) in enumerate(zip(centres, radii), start=1):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    return inst


def synthetic_stained(inst: np.ndarray, positive: set[int], seed: int = 0) -> np.ndarray:
    """Beer-Lambert RGB of nuclei stained by haematoxylin, plus DAB for ``positive`` ids.

    Background: faint haematoxylin-free tissue; noise keeps thresholds honest.
    """
    rng = np.random.default_rng(seed)
    haem = np.array([0.650, 0.704, 0.286])
    dab = np.array([0.268, 0.570, 0.776])
    haem, dab = haem / np.linalg.norm(haem), dab / np.linalg.norm(dab)
    h_conc = np.where(inst > 0, 0.55, 0.04) + rng.normal(0, 0.02, inst.shape)
    d_conc = np.where(np.isin(inst, list(positive)), 0.6, 0.0) + np.abs(rng.normal(0, 0.01, inst.shape))
    od = h_conc[..., None] * haem + d_conc[..., None] * dab
    rgb = 255.0 * 10.0 ** (-np.clip(od, 0, None))
    return np.clip(rgb, 0, 255).astype(np.uint8)
