"""The one rasteriser: polygons, ellipses and points (pixel-centre coordinates) into instance
and type maps.

A pixel (row r, col c) belongs to a polygon when its centre (x = c, y = r) lies inside (even-odd
rule). Two explicit rules say what happens at the edges and where polygons overlap:

- **edge rule** (:data:`EDGE_RULES`): ``"top-left"`` -- a centre on a left or top edge is inside,
  on a right or bottom edge outside, so polygons sharing an edge never share a pixel (the rule
  of QuPath's Java2D geometry and of most scanline fills; vectorised here); ``"closed"`` -- a
  centre on any edge is inside (``skimage.draw.polygon``; the rule the dataset masks of MoNuSeg,
  MoNuSAC and the training targets were drawn with, kept so that their figures do not move);
- **overlap rule** (:data:`OVERLAP_RULES`): ``"later"`` -- a later polygon overwrites earlier
  ones (annotation files in file order); ``"earlier"`` -- the first polygon keeps a shared pixel
  (MATLAB's ``poly2mask`` loop of the MoNuSeg challenge script). :func:`rasterize_shapes` paints
  in **descending area** with ``"later"``, so a small object inside a large one stays visible.

:func:`paint_polygons` is the polygon painter every reader and training loader uses;
:func:`rasterize_shapes` adds rectangles, ellipses and points for annotation files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Lazy imports: skimage is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["EDGE_RULES", "OVERLAP_RULES", "Shape", "fill_polygon", "paint_polygons", "parse_region",
           "polygon_pixels", "rasterize_shapes", "rasterize_table"]

#: Which pixel centres on a polygon's boundary belong to it (see the module docstring).
EDGE_RULES = ("top-left", "closed")
#: Which polygon keeps a pixel that two polygons cover.
OVERLAP_RULES = ("later", "earlier")


@dataclass
class Shape:
    """One object to paint: ``kind`` in {"polygon", "rectangle", "ellipse", "point"}; points (N, 2) x, y."""

    kind: str
    points: np.ndarray
    type_id: int = 0
    instance_id: int = 0


def parse_region(text: str) -> tuple[int, int, int, int]:
    """'x,y,w,h' -> ints (ValueError with the reason when malformed)."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4:
        raise ValueError(f"region must be x,y,w,h, got {text!r}")
    x, y, w, h = (int(float(p)) for p in parts)
    if w <= 0 or h <= 0:
        raise ValueError(f"region width and height must be > 0, got {text!r}")
    return x, y, w, h


def fill_polygon(xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels whose centres lie inside the polygon (xs, ys), clipped to ``shape``."""
    h, w = shape
    xs = np.asarray(xs, np.float64)
    ys = np.asarray(ys, np.float64)
    empty = (np.zeros(0, np.intp), np.zeros(0, np.intp))
    if len(xs) < 3:
        return empty
    r0, r1 = max(int(np.ceil(ys.min())), 0), min(int(np.ceil(ys.max())) - 1, h - 1)
    if r1 < r0:
        return empty
    rows = np.arange(r0, r1 + 1, dtype=np.float64)[:, None]
    x1, y1, x2, y2 = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
    active = (rows >= np.minimum(y1, y2)) & (rows < np.maximum(y1, y2))
    dy = np.where(y2 != y1, y2 - y1, 1.0)
    cross = np.where(active, x1 + (rows - y1) / dy * (x2 - x1), np.inf)
    cross.sort(axis=1)
    n_pairs = active.sum(axis=1) // 2
    max_pairs = int(n_pairs.max()) if len(n_pairs) else 0
    if max_pairs == 0:
        return empty
    row_idx, pair_idx = np.nonzero(np.arange(max_pairs)[None, :] < n_pairs[:, None])
    start = np.clip(np.ceil(cross[row_idx, 2 * pair_idx]), 0, w).astype(np.intp)
    stop = np.clip(np.ceil(cross[row_idx, 2 * pair_idx + 1]), 0, w).astype(np.intp)
    length = np.maximum(stop - start, 0)
    total = int(length.sum())
    if total == 0:
        return empty
    rr = np.repeat(row_idx + r0, length)
    offsets = np.repeat(np.cumsum(length) - length, length)
    cc = np.arange(total) - offsets + np.repeat(start, length)
    return rr.astype(np.intp), cc.astype(np.intp)


def polygon_pixels(xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int],
                   edges: str = "top-left") -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels of polygon (xs, ys) under the edge rule ``edges``."""
    if edges == "top-left":
        return fill_polygon(xs, ys, shape)
    if edges == "closed":
        from skimage.draw import polygon

        if len(xs) == 0:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        return polygon(np.asarray(ys, np.float64), np.asarray(xs, np.float64), shape=shape)
    raise ValueError(f"unknown edge rule {edges!r} (one of {EDGE_RULES})")


def paint_polygons(
    polygons: Sequence[np.ndarray],
    shape: tuple[int, int],
    *,
    edges: str,
    overlap: str = "later",
    values: Sequence[int] | None = None,
    value_dtype: type = np.int32,
    erase: Sequence[bool] | None = None,
    ids: str = "position",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Instance map (and a value map, e.g. types) of (N, 2) x, y polygons, in list order.

    Parameters
    ----------
    edges, overlap
        The edge rule and overlap rule (module docstring); ``edges`` has no default so every
        caller states its rule.
    values
        One value per polygon painted into a second map (None: no value map).
    erase
        Per polygon: True clears its pixels in both maps (holes) instead of painting them.
    ids
        ``"position"``: polygon ``i`` gets id ``i + 1``; ``"painted"``: consecutive ids 1..K over
        the polygons that paint at least one pixel.
    """
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"unknown overlap rule {overlap!r} (one of {OVERLAP_RULES})")
    inst = np.zeros(shape, np.int32)
    value_map = np.zeros(shape, value_dtype) if values is not None else None
    next_id = 1
    for i, poly in enumerate(polygons):
        p = np.asarray(poly, np.float64).reshape(-1, 2)
        rr, cc = polygon_pixels(p[:, 0], p[:, 1], shape, edges)
        if erase is not None and erase[i]:
            inst[rr, cc] = 0
            if value_map is not None:
                value_map[rr, cc] = 0
            continue
        if overlap == "earlier":
            free = inst[rr, cc] == 0
            rr, cc = rr[free], cc[free]
        if ids == "painted":
            if len(rr) == 0:
                continue
            instance_id, next_id = next_id, next_id + 1
        else:
            instance_id = i + 1
        inst[rr, cc] = instance_id
        if value_map is not None:
            value_map[rr, cc] = values[i]
    return inst, value_map


def _area(shape: Shape) -> float:
    p = np.asarray(shape.points, np.float64)
    if shape.kind == "point" or len(p) < 3:
        return 0.0
    if shape.kind in ("rectangle", "ellipse"):
        w = p[:, 0].max() - p[:, 0].min()
        h = p[:, 1].max() - p[:, 1].min()
        return float(w * h * (np.pi / 4 if shape.kind == "ellipse" else 1.0))
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def rasterize_shapes(
    shapes: Sequence[Shape],
    region: tuple[int, int, int, int],
    point_radius: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint shapes into ``(inst, type)`` int32 maps of size (h, w) for ``region = (x, y, w, h)``.

    Instance ids are ``shape.instance_id`` when > 0, else 1-based positions in ``shapes``. Points
    are discs of ``point_radius`` px (each point of a point set is its own instance id when the
    shape's id is 0 — they then share the id of the shape).
    """
    from skimage.draw import disk, ellipse

    x0, y0, w, h = (int(v) for v in region)
    inst = np.zeros((h, w), np.int32)
    typ = np.zeros((h, w), np.int32)
    order = sorted(range(len(shapes)), key=lambda i: -_area(shapes[i]))
    for i in order:
        s = shapes[i]
        p = np.asarray(s.points, np.float64).reshape(-1, 2)
        if not len(p) or not np.isfinite(p).all():
            continue
        sid = s.instance_id if s.instance_id > 0 else i + 1
        if s.kind == "point":
            for px, py in p:
                rr, cc = disk((py - y0, px - x0), point_radius, shape=(h, w))
                inst[rr, cc] = sid
                typ[rr, cc] = s.type_id
            continue
        if p[:, 0].max() < x0 - 1 or p[:, 0].min() > x0 + w or p[:, 1].max() < y0 - 1 or p[:, 1].min() > y0 + h:
            continue
        if s.kind == "ellipse":
            cx, cy = (p[:, 0].min() + p[:, 0].max()) / 2, (p[:, 1].min() + p[:, 1].max()) / 2
            rx, ry = (p[:, 0].max() - p[:, 0].min()) / 2, (p[:, 1].max() - p[:, 1].min()) / 2
            if rx <= 0 or ry <= 0:
                continue
            rr, cc = ellipse(cy - y0, cx - x0, ry, rx, shape=(h, w))
        elif s.kind == "rectangle":
            xa, xb = p[:, 0].min() - x0, p[:, 0].max() - x0
            ya, yb = p[:, 1].min() - y0, p[:, 1].max() - y0
            rr, cc = polygon_pixels(np.array([xa, xb, xb, xa]), np.array([ya, ya, yb, yb]), (h, w), "top-left")
        else:
            if len(p) < 3:
                continue
            rr, cc = polygon_pixels(p[:, 0] - x0, p[:, 1] - y0, (h, w), "top-left")
        inst[rr, cc] = sid
        typ[rr, cc] = s.type_id
    return inst, typ


def rasterize_table(table: pd.DataFrame, region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Instance (= table ``id``) and type maps of a nucleus table over ``region`` (default: its extent)."""
    if region is None:
        if len(table) == 0:
            return np.zeros((0, 0), np.int32), np.zeros((0, 0), np.int32)
        x0, y0 = int(table["bbox_x0"].min()), int(table["bbox_y0"].min())
        region = (x0, y0, int(table["bbox_x1"].max()) - x0 + 1, int(table["bbox_y1"].max()) - y0 + 1)
    x, y, w, h = region
    hit = (table["bbox_x1"] >= x) & (table["bbox_x0"] <= x + w) & (table["bbox_y1"] >= y) & (table["bbox_y0"] <= y + h)
    sub = table[hit]
    shapes = [Shape("polygon", np.asarray(c), int(t), int(i)) for c, t, i in zip(sub["contour"], sub["type"], sub["id"], strict=True)]
    return rasterize_shapes(shapes, region)
