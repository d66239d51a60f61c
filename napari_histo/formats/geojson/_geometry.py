"""Geometry for the GeoJSON writer: coordinates rounded to 2 decimals that stay valid
(a vectorised proof for star-shaped rings, shapely's check and repair for the others).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_histo.formats._common import (
    VIEWER_PIXEL_OFFSET,
    to_viewer,
)
from napari_histo.formats._fastjson import ranges

# Lazy imports: orjson, shapely are imported inside the functions that use them (directly or
# through the modules named there): importing this module stays light for the CLI and the napari
# manifest.

_DUMPS = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=True).encode


def _dumps_bytes(obj: Any) -> bytes:
    """Compact strict JSON (no NaN) as bytes: ``orjson`` when installed (faster on long
    coordinate lists), else the standard library."""
    try:
        import orjson
    except ImportError:
        return _DUMPS(obj).encode()
    return orjson.dumps(obj)


def _r2(v: float) -> float:
    return round(float(v), 2)


def _geometry_dict(geom) -> dict | None:
    """GeoJSON dict for a shapely geometry, coordinates rounded to 2 decimals (valid afterwards)."""
    import shapely

    if geom is None or geom.is_empty:
        return None
    kind = geom.geom_type
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        geom = _valid_polygonal(geom)
        if geom is None:
            return None
        return {"type": geom.geom_type, "coordinates": _polygon_lists(geom)}
    geom = shapely.set_precision(geom, 0.01)
    mapping = shapely.geometry.mapping(geom)
    return {"type": mapping["type"], "coordinates": _round_nested(mapping["coordinates"])}


def _polygon_lists(geom) -> list:
    """GeoJSON coordinates of a Polygon or MultiPolygon, rounded to 2 decimals in numpy."""
    import shapely

    def rings(poly) -> list:
        return [np.round(shapely.get_coordinates(r), 2).tolist() for r in (poly.exterior, *poly.interiors)]

    return rings(geom) if geom.geom_type == "Polygon" else [rings(p) for p in geom.geoms]


def _round_nested(obj):
    if isinstance(obj, (list, tuple)):
        if obj and isinstance(obj[0], (int, float)):
            return [_r2(v) for v in obj]
        return [_round_nested(o) for o in obj]
    return _r2(obj)


def _make_valid(geom):
    """``make_valid`` with the "structure" method (rings' enclosed areas, collapsed parts dropped).

    It is about 15x faster than the default "linework" method on hand-drawn nucleus outlines that
    touch themselves (MoNuSeg), and suits filled shapes; older GEOS/shapely fall back to the default.
    """
    import shapely

    try:
        return shapely.make_valid(geom, method="structure", keep_collapsed=False)
    except (TypeError, ValueError, shapely.errors.GEOSException, shapely.errors.UnsupportedGEOSVersionError):
        return shapely.make_valid(geom)


def _polygon_parts(geom) -> list:
    """The non-empty polygons of a (collection) geometry."""
    import shapely

    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]
    if not parts:
        for p in shapely.get_parts(geom):
            if p.geom_type in ("MultiPolygon", "GeometryCollection"):
                parts += [q for q in shapely.get_parts(p) if q.geom_type == "Polygon" and not q.is_empty]
    return parts


def _valid_polygonal(geom):
    """The polygonal part of a valid geometry, rounded to 0.01 px and still valid (None if empty).

    The valid (or repaired) geometry is rounded and checked; only when rounding breaks it is it
    snapped to the 0.01 px grid with ``set_precision`` (which costs more) and rounded again.
    """
    import shapely

    if not geom.is_valid:
        geom = _make_valid(geom)
    parts = _polygon_parts(geom)
    if parts:
        out = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        rounded = shapely.transform(out, lambda xy: np.round(xy, 2))
        if rounded.is_valid and not rounded.is_empty:
            return rounded
    try:
        snapped = shapely.set_precision(geom, 0.01)
    except shapely.errors.GEOSException:
        snapped = shapely.set_precision(shapely.buffer(geom, 0), 0.01)
    parts = _polygon_parts(snapped)
    if not parts:
        return None
    out = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    rounded = shapely.transform(out, lambda xy: np.round(xy, 2))
    if not rounded.is_valid:  # defensive: rounding of an on-grid geometry should not break it
        rounded = shapely.buffer(rounded, 0)
    return rounded if not rounded.is_empty else None


def _bbox_ring(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    x0, y0, x1, y1 = _r2(x0), _r2(y0), _r2(x1), _r2(y1)
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


@dataclass
class _Rings:
    """One contour column of a chunk, split into the fast path and the repaired/degenerate rest.

    ``fast`` rings (rounded to the 0.01 px grid, still simple with area > 0) carry their grid
    vertices ``qx``, ``qy`` (int32/int64, value x 100; ``lengths`` per fast ring, not closed); the others
    carry their GeoJSON geometry text up to, not including, the final ``]]}``.
    """

    fast: np.ndarray
    qx: np.ndarray
    qy: np.ndarray
    lengths: np.ndarray
    slow_texts: list[bytes]


def _star_simple(qx: np.ndarray, qy: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per ring (>= 3 vertices, integer grid): True when it is provably simple with area > 0.

    Proof used: seen from the (floored) vertex mean c, every edge turns strictly the same way
    (all cross products (v_i - c) x (v_i+1 - c) > 0, or all < 0) and the ring winds around c
    exactly once. Then the edges occupy disjoint angular sectors around c, so no two edges meet
    except consecutive ones at their shared vertex: the ring is simple (star-shaped) and its area
    is positive. Exact integer arithmetic; rings failing it (concave, repeated vertices, huge)
    are only "doubtful" and go to shapely.
    """
    ends = starts + lengths - 1
    dx = qx - np.repeat((np.add.reduceat(qx, starts, dtype=np.int64) // lengths).astype(qx.dtype), lengths)
    dy = qy - np.repeat((np.add.reduceat(qy, starts, dtype=np.int64) // lengths).astype(qy.dtype), lengths)
    top = max(int(np.abs(dx).max()), int(np.abs(dy).max())) if len(dx) else 0
    small = np.ones(len(starts), bool)
    if top >= 2**30:  # rare: rings whose products would leave int64 stay doubtful
        big = np.maximum(np.abs(dx.astype(np.int64)), np.abs(dy.astype(np.int64)))
        small = np.maximum.reduceat(big, starts) < 2**30
        dx, dy = dx.astype(np.int64), dy.astype(np.int64)
    elif top < 2**15:  # products and their difference fit int32
        dx, dy = dx.astype(np.int32, copy=False), dy.astype(np.int32, copy=False)
    else:
        dx, dy = dx.astype(np.int64, copy=False), dy.astype(np.int64, copy=False)
    dxn = np.empty_like(dx)
    dyn = np.empty_like(dy)
    dxn[:-1], dyn[:-1] = dx[1:], dy[1:]
    dxn[ends], dyn[ends] = dx[starts], dy[starts]
    cross = dx * dyn
    cross -= dy * dxn
    turn_pos = np.minimum.reduceat(cross, starts) > 0
    turn_neg = np.maximum.reduceat(cross, starts) < 0
    # crossings of the ray from c along +x: upward ones (dy < 0 -> dy >= 0) count for a positive
    # turn, downward ones (dy > 0 -> dy <= 0) for a negative turn; packed into one sum
    code = ((dy < 0) & (dyn >= 0)).astype(np.int64)
    code += ((dy > 0) & (dyn <= 0)).astype(np.int64) << 32
    winds = np.add.reduceat(code, starts)
    return ((turn_pos & (winds & 0xFFFFFFFF == 1)) | (turn_neg & (winds >> 32 == 1))) & small


def _prepare_rings(contours: Sequence[np.ndarray], bboxes: np.ndarray) -> _Rings:
    """Round a chunk's contours to 2 decimals and prove or restore their validity.

    Rings that pass :func:`_star_simple` (convex-ish nuclei: all synthetic ellipses, about half of
    real segmentation contours) need no geometry library. The doubtful ones are checked with
    shapely (valid with area > 0 after rounding keeps the fast path, as before); the rest are
    repaired through shapely (make_valid, polygonal part kept), and degenerate ones (< 3 vertices,
    zero area) fall back to their bounding box so no nucleus is lost.
    """
    import shapely

    n = len(contours)
    lengths = np.fromiter(map(len, contours), dtype=np.int64, count=n)
    try:  # float32 contours stay float32 here (half the copy); the grid below is float64
        coords = np.concatenate(contours, axis=0) if lengths.sum() else np.zeros((0, 2))
        if coords.dtype.kind != "f":
            coords = coords.astype(np.float64)
    except (ValueError, TypeError):  # ragged or 1-D items: normalise one by one
        coords = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in contours])
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != lengths.sum():
        raise ValueError("contours must be (N, 2) arrays of x, y")
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    has = lengths > 1
    closing = np.zeros(n, bool)
    closing[has] = (coords[starts[has]] == coords[starts[has] + lengths[has] - 1]).all(axis=1)
    if closing.any():  # a repeated closing vertex: drop it (rings are closed when written)
        drop = np.zeros(len(coords), bool)
        drop[starts[closing] + lengths[closing] - 1] = True
        coords = coords[~drop]
        lengths = lengths - closing
        starts = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
    grid = np.multiply(coords, 100.0, dtype=np.float64)
    grid += 100.0 * VIEWER_PIXEL_OFFSET  # pixel centres -> QuPath's pixel-corner coordinates
    np.rint(grid, out=grid)
    extreme = float(np.abs(grid).max()) if len(grid) else 0.0
    if not extreme < 2**53:  # also catches NaN and inf
        raise ValueError("contour with non-finite or too large coordinates")
    small = extreme < 2**31 - 1  # an int32 grid: cheaper arithmetic
    gx = grid[:, 0].astype(np.int32 if small else np.int64)
    gy = grid[:, 1].astype(np.int32 if small else np.int64)
    fast = lengths >= 3
    if fast.all():
        proven = _star_simple(gx, gy, starts, lengths)
    else:
        proven = np.zeros(n, bool)
        sel = np.flatnonzero(fast)
        if len(sel):
            keep = np.repeat(fast, lengths)
            proven[sel] = _star_simple(gx[keep], gy[keep], np.cumsum(lengths[sel]) - lengths[sel], lengths[sel])
    doubtful = np.flatnonzero(fast & ~proven)
    if len(doubtful):  # shapely decides on the rest, on the rings as they will be read
        rows = _ranges(starts[doubtful], lengths[doubtful])
        xy = np.stack([gx[rows], gy[rows]], axis=1) / 100.0
        polys = shapely.polygons(shapely.linearrings(xy, indices=np.repeat(np.arange(len(doubtful)), lengths[doubtful])))
        fast[doubtful] = shapely.is_valid(polys) & (shapely.area(polys) > 0)
    slow_texts: list[bytes] = []
    for i in np.flatnonzero(~fast).tolist():
        geom = None
        if lengths[i] >= 3:
            geom = _geometry_dict(shapely.Polygon(to_viewer(coords[starts[i] : starts[i] + lengths[i]])))
        if geom is None:
            x0, y0, x1, y1 = to_viewer(bboxes[i])
            geom = {"type": "Polygon", "coordinates": [_bbox_ring(x0, y0, max(x1, x0 + 0.01), max(y1, y0 + 0.01))]}
        text = _dumps_bytes(geom)
        if not text.endswith(b"]]}"):
            raise ValueError(f"unexpected geometry {geom['type']}")
        slow_texts.append(text[:-3])
    if not fast.all():
        keep = np.repeat(fast, lengths)
        gx, gy = gx[keep], gy[keep]
    return _Rings(fast=fast, qx=gx, qy=gy, lengths=lengths[fast], slow_texts=slow_texts)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l), vectorised."""
    return ranges(starts, lengths)
