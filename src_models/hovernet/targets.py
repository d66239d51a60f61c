"""HoVer-Net training targets (Graham et al. 2019; ``models/hovernet/targets.py`` of https://github.com/vqdang/hover_net): np, hv and tp maps from an instance map."""

from __future__ import annotations

import numpy as np

# Lazy imports: scipy is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.


def fix_duplicate_ids(inst: np.ndarray) -> np.ndarray:
    """Give every connected component of a repeated id its own id (mirroring/affine duplicates)."""
    from scipy import ndimage as ndi

    inst = np.asarray(inst)
    out = np.zeros(inst.shape, np.int32)
    next_id = 1
    for idx, sl in enumerate(ndi.find_objects(inst.astype(np.int32)), start=1):
        if sl is None:
            continue
        mask = inst[sl] == idx
        comp, n = ndi.label(mask)
        region = out[sl]
        region[comp > 0] = comp[comp > 0] + next_id - 1
        next_id += n
    return out


def hv_map(inst: np.ndarray, min_area: int = 30) -> np.ndarray:
    """Horizontal/vertical distance maps (2, H, W) float32 in [-1, 1].

    For each instance (bbox expanded by 2 px) the pixel coordinates minus the rounded-half-up
    centre of mass are scaled separately for negatives (1/|min|) and positives (1/max); pixels
    outside the instance are 0. Instances smaller than ``min_area`` px are ignored (spec: 30 px
    at 40×; callers scale it with the working mpp).
    """
    from scipy import ndimage as ndi

    inst = np.asarray(inst, dtype=np.int32)
    h, w = inst.shape
    out = np.zeros((2, h, w), np.float32)
    for idx, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is None:
            continue
        r0, r1 = max(sl[0].start - 2, 0), min(sl[0].stop + 2, h)
        c0, c1 = max(sl[1].start - 2, 0), min(sl[1].stop + 2, w)
        mask = inst[r0:r1, c0:c1] == idx
        area = int(mask.sum())
        if area < min_area:
            continue
        rows, cols = np.nonzero(mask)
        com_r = int(np.floor(rows.mean() + 0.5))
        com_c = int(np.floor(cols.mean() + 0.5))
        # Coordinates 1..n minus the COM: the zero crossing sits one px up/left (spec parity).
        xs = (cols + 1 - com_c).astype(np.float32)
        ys = (rows + 1 - com_r).astype(np.float32)
        for vals in (xs, ys):
            neg = vals < 0
            pos = vals > 0
            if neg.any():
                vals[neg] /= -vals[neg].min()
            if pos.any():
                vals[pos] /= vals[pos].max()
        out[0, rows + r0, cols + c0] = xs
        out[1, rows + r0, cols + c0] = ys
    return out


def make_targets(inst: np.ndarray, types: np.ndarray | None, min_area: int = 30) -> dict[str, np.ndarray]:
    """np (H, W) int64 {0, 1}, hv (2, H, W) float32, tp (H, W) int64 (-1 = unknown type, ignored).

    ``types`` is a per-pixel type map (0 background, -1 nucleus of unknown type); ``None`` means
    the source has no type labels, so every nucleus pixel is -1.
    """
    inst = fix_duplicate_ids(inst)
    np_t = (inst > 0).astype(np.int64)
    if types is None:
        tp_t = np.where(inst > 0, -1, 0).astype(np.int64)
    else:
        tp_t = np.where(inst > 0, types, 0).astype(np.int64)
    return {"np": np_t, "hv": hv_map(inst, min_area=min_area), "tp": tp_t}
