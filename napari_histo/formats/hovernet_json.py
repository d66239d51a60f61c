"""HoVer-Net JSON (``{"mag", "nuc": {id: {bbox, centroid, contour, type_prob, type}}}``) I/O.

Writer: the official layout (``run_infer.py`` JSON output of https://github.com/vqdang/hover_net) with bbox as [[rmin, cmin], [rmax, cmax]] (max
exclusive, row/col), centroid and contour as x, y, contours rounded to 2 decimals (open ring).
Two extra top-level keys, ignored by HoVer-Net's own readers, make a round trip lossless:
``type_info`` (the table's id -> [name, colour]) and ``mpp``. Streamed, atomic.

Reader: keys on ``nuc``; accepts ``box``/``bbox`` and ``prob``/``type_prob``; ignores the stored
bbox (wrong in HoVer-Net WSI output) and recomputes it from the contour; ``mag`` different from
``base_mag`` rescales coordinates to level 0.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from napari_histo.formats._common import (
    AnnotationFormatError,
    load_json,
    table_from_contours,
    table_type_info,
)
from napari_histo.formats._fastjson import vertex_rows
from napari_histo.schema.table import clean_type_info, validate_table
from napari_histo.utils import atomic_write

__all__ = ["write_hovernet_json", "read_hovernet_json", "PANNUKE_TYPE_INFO"]

#: HoVer-Net's shipped PanNuke ``type_info.json`` (default when a file carries none).
PANNUKE_TYPE_INFO = {
    "0": ["nolabe", [0, 0, 0]],
    "1": ["neopla", [255, 0, 0]],
    "2": ["inflam", [0, 255, 0]],
    "3": ["connec", [0, 0, 255]],
    "4": ["necros", [255, 255, 0]],
    "5": ["no-neo", [255, 165, 0]],
}

_DUMPS = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def write_hovernet_json(table: pd.DataFrame, path: str | os.PathLike, mag: float | None = None,
                        integer_contours: bool = False) -> Path:
    """Write a nucleus table as HoVer-Net JSON (level-0 px; ``mag`` recorded as given, None in tile mode).

    ``integer_contours`` writes every contour vertex as whole pixels (``floor(v + 0.5)``, within half a
    pixel of the outline), as the official code's ``cv2.findContours`` gives them: the official
    notebook's ``cv2.drawContours`` and ``visualize_instances_dict`` need int32 points and fail on
    the default half-pixel float outlines ("npoints > 0").
    """
    validate_table(table)
    path = Path(path)
    info = table_type_info(table).to_json_dict()
    mpp = table.attrs.get("mpp")
    head = {"mag": mag, "mpp": float(mpp) if mpp else None, "type_info": info}

    chunk = 8192
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write(_DUMPS(head)[:-1] + ',"nuc":{')
        first = True
        for start in range(0, len(table), chunk):
            sub = table.iloc[start : start + chunk]
            contours = [np.asarray(c, np.float64).reshape(-1, 2) for c in sub["contour"]]
            lengths = np.array([len(c) for c in contours], np.int64)
            coords = np.concatenate(contours) if lengths.sum() else np.zeros((0, 2))
            if not np.isfinite(coords).all():
                raise ValueError("contour with non-finite coordinates")
            decimals = 0 if integer_contours else 2
            coords = np.floor(coords + 0.5) if integer_contours else np.round(coords, 2)
            blob, off = vertex_rows(coords, decimals) if len(coords) else (b"", np.zeros(1, np.int64))
            text = blob.decode("ascii")
            starts = np.zeros(len(sub), np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            a_list = off[starts].tolist()
            e_list = off[starts + lengths].tolist()
            ids = sub["id"].to_numpy(np.int64).tolist()
            xs = np.round(sub["x"].to_numpy(np.float64), 2).tolist()
            ys = np.round(sub["y"].to_numpy(np.float64), 2).tolist()
            bb = sub[["bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"]].to_numpy(np.int64).tolist()
            types = sub["type"].to_numpy(np.int64).tolist()
            probs = sub["type_prob"].to_numpy(np.float64).tolist()
            parts = []
            for i in range(len(sub)):
                p = probs[i]
                r0, c0, r1, c1 = bb[i]
                contour = text[a_list[i] : e_list[i] - 1] if e_list[i] > a_list[i] else ""
                parts.append(
                    f'{"" if first else ","}"{ids[i]}":{{"bbox":[[{r0},{c0}],[{r1},{c1}]],"centroid":[{xs[i]!r},{ys[i]!r}],'
                    f'"contour":[{contour}],"type_prob":{repr(p) if math.isfinite(p) else "null"},"type":{types[i]}}}'
                )
                first = False
            fh.write("".join(parts))
        fh.write("}}\n")
    return path


def read_hovernet_json(
    path: str | os.PathLike,
    type_info: dict | None = None,
    base_mag: float | None = None,
    mpp: float | None = None,
) -> pd.DataFrame:
    """Read HoVer-Net JSON into a nucleus table (level-0 px).

    Parameters
    ----------
    type_info : dict, optional
        HoVer-Net ``type_info.json`` dict; default: the file's own ``type_info`` key, else PanNuke.
    base_mag : float, optional
        Scan magnification. When given and the file's ``mag`` differs, coordinates are scaled by
        ``base_mag / mag`` to reach level 0.
    mpp : float, optional
        µm/px at level 0 (default: the file's ``mpp`` key, if any).
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("nuc"), dict):
        raise AnnotationFormatError(path, "not HoVer-Net JSON: no 'nuc' object")
    mag = data.get("mag")
    scale = 1.0
    if base_mag and isinstance(mag, (int, float)) and mag > 0 and not math.isclose(mag, base_mag):
        scale = float(base_mag) / float(mag)
    own = clean_type_info(data.get("type_info"))  # malformed entries dropped
    info = type_info or own or PANNUKE_TYPE_INFO
    file_mpp = data.get("mpp") if isinstance(data.get("mpp"), (int, float)) else None
    mpp = mpp if mpp is not None else file_mpp
    contours, types, probs, ids = [], [], [], []
    for key, nuc in data["nuc"].items():
        try:
            if not isinstance(nuc, dict):
                raise ValueError("entry is not an object")
            contour = np.asarray(nuc.get("contour"), dtype=np.float64)
            if contour.ndim != 2 or contour.shape[1] != 2 or len(contour) < 3 or not np.isfinite(contour).all():
                continue  # HoVer-Net writes degenerate (<3 vertex) contours for tiny objects; skip them
            t = nuc.get("type")
            p = nuc.get("type_prob", nuc.get("prob"))
            contours.append(contour * scale)
            types.append(int(t) if t is not None else 0)
            probs.append(float(p) if p is not None else 1.0)
            try:
                ids.append(int(key))
            except ValueError:
                ids.append(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise AnnotationFormatError(path, f"nucleus {key!r}: {exc}") from None
    use_ids = ids if ids and min(ids) > 0 and len(set(ids)) == len(ids) else None
    return table_from_contours(contours, types, probs, mpp=mpp, type_info=info, ids=use_ids)
