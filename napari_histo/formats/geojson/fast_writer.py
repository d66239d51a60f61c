"""The vectorised nucleus writer: a chunk of nuclei becomes GeoJSON text without a Python step
per nucleus (:mod:`napari_histo.formats._fastjson`), chunks built in parallel threads.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from napari_histo.formats._common import (
    table_type_info,
)
from napari_histo.formats._fastjson import (
    WORD,
    assemble_rows,
    grid_words,
    integer_groups,
    text_words,
    texts_to_rows,
    to_rows,
    uuid4_block,
    vertex_words,
)
from napari_histo.formats.geojson._geometry import _DUMPS, _prepare_rings, _Rings

#: Per-nucleus measurement names: table column -> QuPath measurement name.
MEASUREMENT_COLUMNS: dict[str, str] = {
    "area_px": "Area px^2",
    "area_um2": "Area \u00b5m^2",
    "perimeter_px": "Perimeter px",
    "circularity": "Circularity",
    "eccentricity": "Eccentricity",
    "solidity": "Solidity",
    "type_prob": "Class probability",
    "dab_od": "DAB OD mean",
}


_CHUNK = 8192


_WORKERS = 2  # chunks built in parallel (numpy releases the GIL); the caller writes


_POLYGON_HEAD = b'{"type":"Polygon","coordinates":[['


def _ring_segments(rings: _Rings, lead: np.ndarray, vertex: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row segments of one geometry (``lead`` words per feature before it) for ``assemble_rows``.

    Fast rings: lead + polygon head, their vertex rows, the first vertex again (no comma). Others:
    lead, then their text. Every geometry is left open at ``]]}`` for the next segment to close.
    """
    n, width = len(rings.fast), vertex.shape[1]
    fast = rings.fast
    head = text_words(_POLYGON_HEAD)
    lead_fast = np.empty((int(fast.sum()), lead.shape[1] + len(head)), WORD)
    lead_fast[:, : lead.shape[1]] = lead[fast] if not fast.all() else lead
    lead_fast[:, lead.shape[1] :] = head
    lead_fast = to_rows(lead_fast, width)
    lead_slow = to_rows(np.ascontiguousarray(lead[~fast]), width)
    firsts = np.cumsum(rings.lengths) - rings.lengths
    closing = vertex[firsts]
    closing[:, -1] = 0
    slow_rows, slow_per = texts_to_rows(rings.slow_texts, width)

    def per_feature(mask: np.ndarray, count) -> np.ndarray:
        out = np.zeros(n, np.int64)
        out[mask] = count
        return out

    n_fast = int(fast.sum())
    return [(lead_fast, per_feature(fast, len(lead_fast) // max(n_fast, 1))),
            (lead_slow, per_feature(~fast, len(lead_slow) // max(n - n_fast, 1))),
            (vertex, per_feature(fast, rings.lengths)),
            (closing, fast.astype(np.int64)),
            (slow_rows, per_feature(~fast, slow_per))]


def _tail_words(props: np.ndarray, columns: dict[str, np.ndarray], qupath03: bool, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Words after the geometry: ``props`` (n, p) per row, the measurements, ``}}`` and ``,\\n``.

    Measurements (``,"measurements":{...}`` or the 0.3 list) keep finite values only, 4 decimals.
    Written straight into one (n, k * width) matrix, so its rows are ready for ``assemble_rows``.
    Returns (words, ok): rows whose values are too large for the grid (|v| >= 1e11) are not ``ok``
    and must be written another way.
    """
    n = len(props)
    opening = text_words(b',"measurements":[' if qupath03 else b',"measurements":{')
    closing = text_words(b"]" if qupath03 else b"}")
    ok = np.ones(n, bool)
    plan = []  # per field: key words, value grid, negative mask, finite mask, integer groups
    for name, values in columns.items():
        finite = np.isfinite(values)
        v = np.where(finite, values, 0.0)
        big = np.abs(v) >= 1e11
        if big.any():
            ok &= ~big
            finite &= ~big
            v[big] = 0.0
        key = json.dumps(name).encode()
        key_words = text_words(b'{"name":' + key + b',"value":' if qupath03 else key + b":")
        q = np.abs(v)
        q *= 1e4
        np.rint(q, out=q)
        q = q.astype(np.int64)
        plan.append((key_words, q, (v < 0) if (v < 0).any() else None, finite, integer_groups(int(q.max()) // 10000 if n else 0)))
    n_frac = 2
    used = props.shape[1] + 1 + (len(opening) + len(closing) + sum(len(k) + 1 + g + n_frac for k, _, _, _, g in plan) if plan else 0)
    words = np.zeros((n, -(-used // width) * width), WORD)
    words[:, : props.shape[1]] = props
    col = props.shape[1]
    if plan:
        words[:, col : col + len(opening)] = opening
        col += len(opening)
        comma_at = []  # per field: (word column, byte) of its comma
        for key_words, q, negative, finite, groups in plan:
            field = words[:, col : col + len(key_words) + 1 + groups + n_frac]
            field[:, : len(key_words)] = key_words
            grid_words(q, negative, 4, suffix=b"}," if qupath03 else b",", groups=groups, out=field[:, len(key_words) :])
            if not finite.all():
                field[~finite] = 0
            col += field.shape[1]
            comma_at.append((col - 1, 2 if qupath03 else 1))
        present = np.stack([p[3] for p in plan], axis=1)
        last = present.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)  # last finite field per row
        rows = np.flatnonzero(present.any(axis=1))
        cols = np.array([c for c, _ in comma_at], np.int64)[last[rows]]
        shifts = np.array([8 * b for _, b in comma_at], np.uint32)[last[rows]]
        words[rows, cols] &= ~(np.uint32(0xFF) << shifts)  # no comma after the last entry
        words[:, col : col + len(closing)] = closing
        col += len(closing)
    words[:, col] = text_words(b"}},\n")[0]
    words[-1, col] = text_words(b"}}")[0]  # no separator after the chunk's last feature
    return words, ok


def _classification(name: str, colour: Sequence[int]) -> dict:
    return {"name": str(name).replace(":", " ").replace("\n", " "), "color": [int(c) for c in colour[:3]]}


def iter_nucleus_feature_bytes(
    table: pd.DataFrame,
    *,
    object_type: str = "detection",
    qupath03: bool = False,
    include_measurements: bool = True,
    chunk_size: int | None = None,
    prefetch: bool = True,
) -> Iterator[bytes]:
    """Yield the UTF-8 JSON text of one GeoJSON Feature per nucleus (chunked, bounded memory)."""
    for text in _iter_chunk_texts(table, object_type=object_type, qupath03=qupath03,
                                  include_measurements=include_measurements,
                                  chunk_size=chunk_size, prefetch=prefetch):
        yield from map(bytes, text.split(b",\n"))  # compact JSON has no raw newline inside a feature


def _iter_chunk_texts(
    table: pd.DataFrame,
    *,
    object_type: str = "detection",
    qupath03: bool = False,
    include_measurements: bool = True,
    chunk_size: int | None = None,
    prefetch: bool = True,
) -> Iterator[bytearray]:
    """Yield the Features of ``chunk_size`` nuclei at a time as one text (joined by ``,\\n``).

    A chunk is built without a Python step per nucleus: numbers, UUIDs and constant pieces are
    words of :mod:`napari_histo.formats._fastjson` assembled in one pass. With ``prefetch`` chunks are built ahead in
    ``_WORKERS`` threads (numpy releases the GIL) while the caller writes; at most ``_WORKERS + 1``
    chunks are in memory.
    """
    if object_type not in ("detection", "cell"):
        raise ValueError(f"object_type must be 'detection' or 'cell', not {object_type!r}")
    chunk_size = chunk_size or _CHUNK
    info = table_type_info(table)
    kind = object_type.encode()
    props_head = b']]},"properties":{"objectType":"' + kind + b'",' + (b'"object_type":"' + kind + b'",' if qupath03 else b"") + b'"classification":'
    type_ids = np.unique(table["type"].to_numpy()) if len(table) else np.zeros(0, np.int64)
    props = [props_head + _DUMPS(_classification(info.name(t), info.colour(t))).encode() for t in type_ids.tolist()]
    mpp = table.attrs.get("mpp")
    meas_cols = [c for c in MEASUREMENT_COLUMNS if c in table.columns] if include_measurements else []
    has_cell = object_type == "cell" and "cell_contour" in table.columns

    names = ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "contour", "type", *meas_cols]
    names += ["cell_contour"] if has_cell else []
    names += ["perimeter_px"] if mpp and "perimeter_px" in table.columns else []
    columns = {c: table[c].to_numpy() for c in dict.fromkeys(names)}  # views: no copy, no attrs

    def build(start: int) -> bytearray:
        sub = {c: v[start : start + chunk_size] for c, v in columns.items()}
        text = _chunk_text(sub, object_type=object_type, has_cell=has_cell, type_ids=type_ids, props=props,
                           meas_cols=meas_cols, mpp=mpp, qupath03=qupath03)
        return text

    chunk_starts = list(range(0, len(table), chunk_size))
    if not prefetch or len(chunk_starts) < 2:
        for start in chunk_starts:
            yield build(start)
        return

    workers = max(1, min(_WORKERS, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque = deque()
    try:
        for start in chunk_starts:
            pending.append(pool.submit(build, start))
            if len(pending) > workers:  # at most workers + 1 chunks in memory
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _chunk_text(sub: dict[str, np.ndarray], *, object_type: str, has_cell: bool, type_ids: np.ndarray, props: list[bytes],
                meas_cols: list[str], mpp: float | None, qupath03: bool) -> bytearray:
    """GeoJSON text of the Features of ``sub`` (column -> array) joined by ``,\\n`` (no trailing separator)."""
    n = len(sub["type"])
    bboxes = np.stack([sub[c] for c in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")], axis=1).astype(np.float64)
    nucleus = _prepare_rings(sub["contour"].tolist(), bboxes)
    outer = _prepare_rings(sub["cell_contour"].tolist(), bboxes) if has_cell else nucleus
    if outer is nucleus:
        vertex_outer = vertex_nucleus = vertex_words(nucleus.qx, nucleus.qy)
    else:  # one row width for the whole chunk
        both = vertex_words(np.concatenate([outer.qx, nucleus.qx]), np.concatenate([outer.qy, nucleus.qy]))
        vertex_outer, vertex_nucleus = both[: len(outer.qx)], both[len(outer.qx) :]
    width = vertex_outer.shape[1]

    pre = np.empty((n, 76), np.uint8)  # {"type":"Feature","id":"<uuid>","geometry":  (73 bytes + NUL)
    pre[:, :24] = np.frombuffer(b'{"type":"Feature","id":"', np.uint8)
    pre[:, 24:60] = np.frombuffer(uuid4_block(n), np.uint8).reshape(n, 36)
    pre[:, 60:] = np.frombuffer(b'","geometry":\0\0\0', np.uint8)
    segments = _ring_segments(outer, pre.view(WORD), vertex_outer)
    if object_type == "cell":
        mid = text_words(b']]},"nucleusGeometry":')
        segments += _ring_segments(nucleus, np.broadcast_to(mid, (n, len(mid))), vertex_nucleus)

    prop_words = np.zeros((len(props), max((len(p) + 3) // 4 for p in props)), WORD)
    for i, p in enumerate(props):
        w = text_words(p)
        prop_words[i, : len(w)] = w
    type_index = np.searchsorted(type_ids, sub["type"])
    cols = {}
    if meas_cols:
        cols = {MEASUREMENT_COLUMNS[c]: np.asarray(sub[c], dtype=np.float64) for c in meas_cols}
        if "perimeter_px" in sub and mpp:
            cols["Perimeter \u00b5m"] = np.asarray(sub["perimeter_px"], dtype=np.float64) * float(mpp)
    tail_words, tail_ok = _tail_words(prop_words[type_index], cols, qupath03, width)
    slow_tails: list[bytes] = []
    for i in np.flatnonzero(~tail_ok).tolist():  # values beyond the grid (rare): plain json
        values = {k: float(np.round(v[i], 4)) for k, v in cols.items()}
        end = b"}}" if i == n - 1 else b"}},\n"
        slow_tails.append(props[type_index[i]] + b',"measurements":' + _DUMPS(_measurements(values, qupath03)).encode() + end)
        tail_words[i] = 0  # written as text instead
    tail_rows = tail_words.reshape(-1, width)
    segments.append((tail_rows, np.full(n, len(tail_rows) // n, np.int64)))
    slow_rows, slow_per = texts_to_rows(slow_tails, width)
    slow_counts = np.zeros(n, np.int64)
    slow_counts[~tail_ok] = slow_per
    segments.append((slow_rows, slow_counts))
    return assemble_rows(segments, width)


def _measurements(values: dict[str, float], qupath03: bool) -> dict | list:
    clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)}
    if qupath03:
        return [{"name": k, "value": v} for k, v in clean.items()]
    return clean
