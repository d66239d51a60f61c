"""Exactly-once ownership of nuclei across tiles (the StarDist ``predict_instances_big`` rule).

A nucleus found in tile T is kept iff

1. the top-left corner of its level-0 bounding box lies in T's core, and
2. it does not touch the edge of T's processed window.

Every nucleus smaller than the halo whose corner lies in a core is whole inside that tile's
window, and a corner lies in exactly one core, so each nucleus is kept by exactly one tile:
no IoU matching, no second pass, no seam artefacts. A nucleus whose corner is in the core but
which touches the window edge is larger than the halo; it is dropped and counted
(``n_oversize``), as StarDist raises on objects larger than its overlap.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.engine.plan import Tile, TilePlan
from napari_histo.schema.table import offset_table

# Lazy imports: numcodecs, shapely are imported inside the functions that use them (directly or
# through the modules named there): importing this module stays light for the CLI and the napari
# manifest.


@dataclass
class TileResult:
    """The nuclei one tile owns.

    Attributes
    ----------
    index : int
        Tile index in the plan grid.
    table : pandas.DataFrame
        Owned nuclei, level-0 px, local ids 1..n (global ids are assigned at assembly).
    labels : numpy.ndarray or None
        int32 local-id labels at level 0 covering the owned nuclei (None when n == 0).
    origin : tuple[int, int]
        Level-0 (x, y) of ``labels[0, 0]``.
    n_oversize : int
        Nuclei dropped because they touch the window edge while owned by this tile.
    n_too_large : int
        Objects dropped because their area exceeds the plan's ``max_area_px``.
    """

    index: int
    table: pd.DataFrame
    labels: np.ndarray | None
    origin: tuple[int, int]
    n_oversize: int = 0
    n_too_large: int = 0

    @property
    def n(self) -> int:
        return len(self.table)


def edge_ids(labels: np.ndarray) -> np.ndarray:
    """Ids of instances touching the border of ``labels``."""
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    ids = np.unique(border)
    return ids[ids > 0]


def select_owned(
    labels: np.ndarray,
    table: pd.DataFrame,
    tile: Tile,
    plan: TilePlan,
    roi: Any = None,
) -> TileResult:
    """Apply the ownership rule to one tile's segmentation (working px) -> :class:`TileResult`.

    ``roi`` (shapely geometry, level-0 px) additionally keeps only nuclei whose centroid lies
    inside it.
    """
    wx0, wy0 = tile.window[0], tile.window[1]
    cx0, cy0, cx1, cy1 = tile.core
    t0 = offset_table(table, wx0, wy0, plan.scale) if len(table) else table.copy()
    if len(t0) and plan.scale != 1.0:
        # pixel-centre convention: working px i covers level-0 [i*s, (i+1)*s), centre i*s + (s-1)/2
        shift = (plan.scale - 1.0) / 2.0
        t0["x"] += shift
        t0["y"] += shift
        t0["contour"] = [np.asarray(c, np.float32) + np.float32(shift) for c in t0["contour"]]
    if len(t0) == 0:
        return TileResult(tile.index, _renumber(t0, plan), None, (cx0, cy0), 0)
    in_core = (
        (t0["bbox_x0"].to_numpy() >= cx0) & (t0["bbox_x0"].to_numpy() < cx1)
        & (t0["bbox_y0"].to_numpy() >= cy0) & (t0["bbox_y0"].to_numpy() < cy1)
    )
    touching = np.isin(t0["id"].to_numpy(), edge_ids(labels))
    owned = in_core & ~touching
    n_oversize = int((in_core & touching).sum())
    n_too_large = 0
    if plan.max_area_px is not None and owned.any():
        too_large = owned & (t0["area_px"].to_numpy(np.float64) > plan.max_area_px)
        n_too_large = int(too_large.sum())
        owned &= ~too_large
    if roi is not None and owned.any():
        import shapely

        owned &= shapely.contains_xy(roi, t0["x"].to_numpy(), t0["y"].to_numpy())
    kept = t0.loc[owned]
    old_ids = kept["id"].to_numpy(np.int64)
    kept = _renumber(kept, plan)
    if len(kept) == 0:
        return TileResult(tile.index, kept, None, (cx0, cy0), n_oversize, n_too_large)
    x0, y0 = int(kept["bbox_x0"].min()), int(kept["bbox_y0"].min())
    x1, y1 = int(kept["bbox_x1"].max()), int(kept["bbox_y1"].max())
    lut = np.zeros(max(int(labels.max()), int(old_ids.max())) + 1, np.int32)
    lut[old_ids] = np.arange(1, len(old_ids) + 1, dtype=np.int32)
    if plan.scale == 1.0:
        crop = labels[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
    else:
        # nearest sampling of working px at level-0 pixel centres
        ix = np.clip(np.floor((np.arange(x0, x1) - wx0 + 0.5) / plan.scale).astype(np.int64), 0, labels.shape[1] - 1)
        iy = np.clip(np.floor((np.arange(y0, y1) - wy0 + 0.5) / plan.scale).astype(np.int64), 0, labels.shape[0] - 1)
        crop = labels[np.ix_(iy, ix)]
    return TileResult(tile.index, kept, lut[crop], (x0, y0), n_oversize, n_too_large)


def _renumber(df: pd.DataFrame, plan: TilePlan) -> pd.DataFrame:
    out = df.reset_index(drop=True).copy()
    out["id"] = np.arange(1, len(out) + 1, dtype=np.int64)
    # the segmenter measured at its own working scale; only the slide's pixel size makes µm²
    out["area_um2"] = (out["area_px"].astype("float64") * plan.slide_mpp**2 if plan.slide_mpp
                       else np.full(len(out), np.nan))
    out.attrs = dict(df.attrs)
    out.attrs["mpp"] = plan.slide_mpp
    return out


# ---- compact label crops for the journal and for transport between processes ----

def encode_labels(labels: np.ndarray, origin: tuple[int, int]) -> bytes:
    """Compress an int32 label crop with its level-0 origin (Blosc zstd, bit-shuffled)."""
    from numcodecs import Blosc

    codec = Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)
    payload = codec.encode(np.ascontiguousarray(labels, np.int32))
    header = json.dumps({"shape": list(labels.shape), "origin": list(origin)}).encode()
    return struct.pack("<I", len(header)) + header + bytes(payload)


def decode_labels(data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    """Inverse of :func:`encode_labels`."""
    from numcodecs import Blosc

    (n,) = struct.unpack("<I", data[:4])
    header = json.loads(data[4:4 + n])
    arr = np.frombuffer(Blosc().decode(data[4 + n:]), np.int32).reshape(header["shape"])
    return arr, (int(header["origin"][0]), int(header["origin"][1]))
