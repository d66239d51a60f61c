"""Per-nucleus measurements as CSV (one row per nucleus; no contours).

The module is ``napari_histo.formats.csv``; with absolute imports it never shadows the standard
library ``csv`` (which pandas uses internally).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from napari_histo.formats._common import table_type_info
from napari_histo.utils import atomic_write

__all__ = ["write_csv", "measurement_frame"]

_ORDER = ["id", "x", "y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px", "area_um2", "perimeter_px",
          "perimeter_um", "circularity", "eccentricity", "solidity", "type", "type_name", "type_prob", "dab_od", "positive"]


def measurement_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The table without array columns, plus ``type_name``, ``perimeter_um`` and one ``prob_<type>`` column per class."""
    info = table_type_info(table)
    out = table.drop(columns=[c for c in ("contour", "probs", "cell_contour") if c in table.columns]).copy()
    out["type_name"] = [info.name(int(t)) for t in table["type"]]
    mpp = table.attrs.get("mpp")
    out["perimeter_um"] = table["perimeter_px"] * float(mpp) if mpp else np.nan
    cols = [c for c in _ORDER if c in out.columns] + [c for c in out.columns if c not in _ORDER]
    out = out[cols]
    if "probs" in table.columns and len(table):
        valid = [p for p in table["probs"] if p is not None]
        if valid:
            n = max(len(p) for p in valid)
            mat = np.full((len(table), n), np.nan, np.float32)
            for i, p in enumerate(table["probs"]):
                if p is not None:
                    mat[i, : len(p)] = p
            for k in range(n):
                out[f"prob_{info.name(k)}"] = mat[:, k]
    return out


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write :func:`measurement_frame` of ``table`` to ``path`` atomically (UTF-8, '.' decimals)."""
    path = Path(path)
    frame = measurement_frame(table)
    with atomic_write(path, encoding="utf-8", newline="") as fh:
        frame.to_csv(fh, index=False, float_format="%.6g")
    return path
