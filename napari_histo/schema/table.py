"""The per-nucleus table shared by every producer (segmenters, engine, importers) and consumer
(analysis, exporters, widgets).

A nucleus table is a :class:`pandas.DataFrame` with one row per nucleus and the columns below.
Coordinates are **level-0 pixels** of the slide/image (x right, y down). ``df.attrs`` carries
``mpp`` (µm/px at level 0, or None) and ``type_info`` (a JSON dict as
:meth:`TypeInfo.to_json_dict`).

Required columns
----------------
id : int64            instance id (value in the label image), unique, > 0
x, y : float64        centroid
bbox_x0, bbox_y0, bbox_x1, bbox_y1 : int64   bounding box, half-open [x0, x1) × [y0, y1)
area_px : float64     area in level-0 px²
area_um2 : float64    area in µm² (NaN when mpp is unknown)
perimeter_px : float64
type : int64          type id (0 = unlabelled)
type_prob : float64   HoVer-Net's type_prob (fraction of instance pixels voting for `type`), 1.0 if untyped
contour : object      (N, 2) float32 array of x, y vertices (open ring), level-0 px

Optional columns
----------------
probs : object        (C,) float32 mean softmax over the instance (real class probabilities)
circularity, eccentricity, solidity : float64
dab_od : float64      mean DAB optical density (IHC), positive : bool
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.utils import atomic_path, positive_float

# Lazy imports: pyarrow is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

REQUIRED_COLUMNS: dict[str, str] = {
    "id": "int64",
    "x": "float64",
    "y": "float64",
    "bbox_x0": "int64",
    "bbox_y0": "int64",
    "bbox_x1": "int64",
    "bbox_y1": "int64",
    "area_px": "float64",
    "area_um2": "float64",
    "perimeter_px": "float64",
    "type": "int64",
    "type_prob": "float64",
    "contour": "object",
}

OPTIONAL_COLUMNS: dict[str, str] = {
    "probs": "object",
    "circularity": "float64",
    "eccentricity": "float64",
    "solidity": "float64",
    "dab_od": "float64",
    "positive": "bool",
}


def empty_table(mpp: float | None = None, type_info: dict | None = None) -> pd.DataFrame:
    """A zero-row nucleus table with the required columns and dtypes."""
    df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in REQUIRED_COLUMNS.items()})
    df.attrs["mpp"] = mpp
    df.attrs["type_info"] = type_info
    return df


def validate_table(df: pd.DataFrame) -> None:
    """Raise ValueError naming what is wrong when ``df`` is not a nucleus table."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"nucleus table lacks columns {missing}")
    if len(df) and (df["id"] <= 0).any():
        raise ValueError("nucleus ids must be > 0")
    if df["id"].duplicated().any():
        raise ValueError("nucleus ids must be unique")


def offset_table(df: pd.DataFrame, dx: float, dy: float, scale: float = 1.0) -> pd.DataFrame:
    """Map a table from tile/working pixels to level-0: ``x0 = x * scale + dx`` (new frame).

    ``scale`` is level-0 px per working px; areas and perimeters are rescaled accordingly.
    """
    out = df.copy()
    for c in ("x", "bbox_x0", "bbox_x1"):
        out[c] = out[c] * scale + dx
    for c in ("y", "bbox_y0", "bbox_y1"):
        out[c] = out[c] * scale + dy
    for c in ("bbox_x0", "bbox_y0"):
        out[c] = np.floor(out[c]).astype("int64")
    for c in ("bbox_x1", "bbox_y1"):
        out[c] = np.ceil(out[c]).astype("int64")
    out["area_px"] = out["area_px"] * scale * scale
    out["perimeter_px"] = out["perimeter_px"] * scale
    offset = np.array([dx, dy], dtype=np.float32)
    out["contour"] = [np.asarray(c, dtype=np.float32) * np.float32(scale) + offset for c in out["contour"]]
    out.attrs = dict(df.attrs)
    return out


_ARRAY_COLUMNS = ("contour", "probs")
_META_KEY = b"napari_histo"


def write_table_parquet(df: pd.DataFrame, path) -> None:
    """Write a nucleus table to Parquet atomically.

    ``contour`` is stored as a flat ``list<float32>`` (x0, y0, x1, y1, ...), ``probs`` as
    ``list<float32>``; ``df.attrs`` (mpp, type_info, ...) go in the schema metadata as JSON.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = df.drop(columns=[c for c in _ARRAY_COLUMNS if c in df.columns])
    table = pa.Table.from_pandas(plain, preserve_index=False)
    for col in _ARRAY_COLUMNS:
        if col in df.columns:
            values = [None if v is None else np.asarray(v, dtype=np.float32).ravel() for v in df[col]]
            table = table.append_column(col, pa.array(values, type=pa.list_(pa.float32())))
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = json.dumps(df.attrs, default=_json_default).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: any file name (pyarrow needs UTF-8 paths)
        pq.write_table(table, fh, compression="zstd")


def read_table_parquet(path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a table written by :func:`write_table_parquet` (contours back to (N, 2) arrays)."""
    import pyarrow.parquet as pq

    with open(path, "rb") as fh:  # a file object: any file name (pyarrow needs UTF-8 paths)
        table = pq.read_table(fh, columns=columns)
    arrays = {c: table.column(c).to_pylist() for c in _ARRAY_COLUMNS if c in table.column_names}
    plain = table.drop([c for c in arrays]) if arrays else table
    df = plain.to_pandas()
    if "contour" in arrays:
        df["contour"] = [None if v is None else np.asarray(v, np.float32).reshape(-1, 2) for v in arrays["contour"]]
    if "probs" in arrays:
        df["probs"] = [None if v is None else np.asarray(v, np.float32) for v in arrays["probs"]]
    meta = (table.schema.metadata or {}).get(_META_KEY)
    try:
        attrs = json.loads(meta) if meta else {}
    except ValueError:
        attrs = {}
    df.attrs = clean_attrs(attrs)
    return df


def clean_attrs(attrs: Any) -> dict:
    """Table metadata read from a file, keeping only what is usable: a finite positive ``mpp``
    (else None: the pixel size is unknown, never guessed) and ``type_info`` entries of the form
    ``id -> [name, [r, g, b]]`` (a file is data from anywhere)."""

    if not isinstance(attrs, dict):
        return {}
    out = dict(attrs)
    mpp = positive_float(out.get("mpp"))
    out["mpp"] = mpp if mpp is not None and mpp < 1e6 else None
    if out.get("type_info") is not None:
        out["type_info"] = clean_type_info(out["type_info"])
    return out


def clean_type_info(info: Any) -> dict | None:
    """The well-formed ``id -> [name, [r, g, b]]`` entries of a type table read from a file
    (None when none is)."""
    if not isinstance(info, dict):
        return None
    kept = {str(k): [str(v[0]), [int(c) & 255 for c in v[1][:3]]] for k, v in info.items() if _type_entry_ok(k, v)}
    return kept or None


def _type_entry_ok(key: Any, value: Any) -> bool:
    try:
        int(key)
    except (TypeError, ValueError):
        return False
    return (isinstance(value, list | tuple) and len(value) >= 2 and isinstance(value[0], str)
            and isinstance(value[1], list | tuple) and len(value[1]) >= 3
            and all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) and abs(c) < 2**31
                    for c in value[1][:3]))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")
