"""Top-k non-overlapping hotspots, recounted exactly from the nucleus table.

``circle`` mode (QuPath's ``DensityMaps.findHotspots``, https://github.com/qupath/qupath):
  1. the ROI (default: the whole image) is eroded by r, so every circle lies inside it;
  2. candidates are map pixels inside the eroded ROI whose count within r is **> min_count**
     (strict, as QuPath) and, with ``peaks_only``, regional maxima of the density (plateaus
     shrunk to one pixel);
  3. sorted by density descending (ties: row, then column ascending), greedily accepted when
     their distance to every accepted centre is >= 2r (circles never overlap);
  4. named "Hotspot 1".."Hotspot k" by rank.

``box`` mode (the most-positive window of tiles used for Ki-67 / IHC hotspot counting): windows of
W x W tiles of N px slide with stride one tile; score = number of selected nuclei inside;
greedy by score (ties: row, column ascending) rejecting a window that overlaps an accepted one
(|dr| < W and |dc| < W). ``box_rule="fork"`` reproduces the seed's stricter OR rule
(|dr| <= W or |dc| <= W). Boxes are [c*N, (c+W)*N) x [r*N, (r+W)*N) — the seed's one-tile and
one-pixel shifts are not copied. Windows must lie inside the ROI (every tile centre inside).

Every hotspot is then recounted from the table: circle = centroids with distance <= r, box =
centroids with x0 <= x < x1 and y0 <= y < y1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.analysis.density import DensityMap, _grid_counts, density_map, select_nuclei
from napari_histo.formats._common import Annotation, table_type_info
from napari_histo.jsonconfig import JsonConfig

# Lazy imports: scipy, shapely, skimage are imported inside the functions that use them (directly
# or through the modules named there): importing this module stays light for the CLI and the
# napari manifest.

__all__ = ["find_hotspots", "hotspot_annotations", "circle_candidates"]


def _roi_geometry(roi: Any, extent: tuple[float, float]):
    """shapely geometry for ``roi``: None (whole image), (x, y, w, h), shapely geometry or Annotation."""
    import shapely

    if roi is None:
        w, h = extent
        return shapely.box(-0.5, -0.5, w - 0.5, h - 0.5)
    if hasattr(roi, "geometry") and not hasattr(roi, "geom_type"):
        roi = roi.geometry
    if isinstance(roi, (tuple, list)) and len(roi) == 4:
        x, y, w, h = (float(v) for v in roi)
        return shapely.box(x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5)
    if isinstance(roi, (list, tuple)):
        return shapely.union_all([_roi_geometry(r, extent) for r in roi])
    return roi


def _extent(table: pd.DataFrame, shape) -> tuple[float, float]:
    if shape is not None:
        return float(shape[0]), float(shape[1])
    if not len(table):
        return 1.0, 1.0
    return float(np.ceil(table["x"].max()) + 1), float(np.ceil(table["y"].max()) + 1)


def _regional_maxima_single(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Regional maxima of ``values`` (8-connected plateaus higher than all their neighbours), one pixel each
    (the plateau pixel nearest the plateau centroid)."""
    from scipy import ndimage
    from skimage.morphology import local_maxima

    finite = np.where(np.isfinite(values), values, -np.inf)
    peaks = local_maxima(finite, connectivity=2, allow_borders=True)
    peaks &= np.isfinite(values)
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros_like(mask)
    # one pixel per plateau: the plateau pixel nearest its centroid (ties: raster order)
    rr, cc = np.nonzero(labels)
    lab = labels[rr, cc]
    size = np.bincount(lab, minlength=n + 1).astype(np.float64)
    cy = np.bincount(lab, rr, minlength=n + 1) / np.maximum(size, 1)
    cx = np.bincount(lab, cc, minlength=n + 1) / np.maximum(size, 1)
    d2 = (rr - cy[lab]) ** 2 + (cc - cx[lab]) ** 2
    order = np.lexsort((cc, rr, d2, lab))
    first = np.ones(len(order), bool)
    first[1:] = lab[order][1:] != lab[order][:-1]
    out = np.zeros(values.shape, bool)
    out[rr[order][first], cc[order][first]] = True
    return out & mask


def circle_candidates(dmap: DensityMap, roi_geom, radius_px: float, min_count: float, peaks_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate centres (x, y level-0) and their density, sorted best first."""
    import shapely

    h, w = dmap.shape
    rows, cols = np.mgrid[0:h, 0:w]
    xs, ys = dmap.to_level0(rows, cols)
    eroded = shapely.buffer(roi_geom, -radius_px) if roi_geom is not None else None
    if eroded is None or eroded.is_empty:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    mask = shapely.contains_xy(eroded, xs.ravel(), ys.ravel()).reshape(h, w)
    values = dmap.array.astype(np.float64)
    counts = dmap.counts if dmap.counts is not None else dmap.array
    if min_count > 0:
        mask &= counts > min_count
    mask &= np.isfinite(values)
    if peaks_only:
        mask = _regional_maxima_single(values, mask)
    r, c = np.nonzero(mask)
    v = values[r, c]
    order = np.lexsort((c, r, -v))
    return xs[r[order], c[order]], ys[r[order], c[order]], v[order]


def _greedy_circles(x: np.ndarray, y: np.ndarray, k: int, radius_px: float) -> list[int]:
    chosen: list[int] = []
    alive = np.arange(len(x))
    lim = 4.0 * radius_px * radius_px
    while len(chosen) < k and len(alive):
        i = int(alive[0])
        chosen.append(i)
        d2 = (x[alive] - x[i]) ** 2 + (y[alive] - y[i]) ** 2
        alive = alive[d2 >= lim]
    return chosen


def _window_sums(grid: np.ndarray, win: int) -> np.ndarray:
    c = np.pad(grid, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[win:, win:] - c[:-win, win:] - c[win:, :-win] + c[:-win, :-win]


def _greedy_boxes(r: np.ndarray, c: np.ndarray, k: int, win: int, rule: str) -> list[int]:
    chosen: list[int] = []
    alive = np.arange(len(r))
    while len(chosen) < k and len(alive):
        i = int(alive[0])
        chosen.append(i)
        dr = np.abs(r[alive] - r[i])
        dc = np.abs(c[alive] - c[i])
        clash = (dr <= win) | (dc <= win) if rule == "fork" else (dr < win) & (dc < win)
        alive = alive[~clash]
    return chosen


def _recount(table: pd.DataFrame, inside: np.ndarray, type_mask: np.ndarray, names: dict[int, str]) -> dict[str, Any]:
    types = table["type"].to_numpy()[inside]
    row: dict[str, Any] = {"count": int(type_mask[inside].sum()), "count_all": int(inside.sum())}
    for t, name in names.items():
        row[f"count_{name}"] = int((types == t).sum())
    if "positive" in table.columns:
        pos = table["positive"].to_numpy(bool)[inside]
        row["count_positive"] = int(pos.sum())
        row["positive_pct"] = 100.0 * pos.sum() / len(pos) if len(pos) else float("nan")
    return row


@dataclass
class HotspotOptions(JsonConfig):
    """How hotspots are searched (the CLI's ``hotspots`` flags and the Density panel build one).

    Attributes
    ----------
    mode : {"circle", "box"}
    radius_um, radius_px : float
        Circle radius (also the density radius). Default 50 µm (200 px without mpp).
    type : int, str or None
        Nuclei counted (a type id or name; None: all).
    min_count : float
        Circle mode: keep centres whose count within r is **strictly greater** (QuPath).
        Box mode: windows whose count is strictly greater.
    peaks_only : bool
        Circle mode: only regional maxima of the density are candidates (QuPath default).
    density : {"count", "gaussian"}
        Circle mode: density that ranks the candidates.
    tile, window : int
        Box mode: tile side N (px) and window side W (tiles).
    box_rule : {"overlap", "fork"}
        Box mode: reject only overlapping windows, or the stricter rule that also rejects
        windows sharing a row or column band with an accepted one.
    """

    mode: str = "circle"
    radius_um: float | None = None
    radius_px: float | None = None
    type: int | str | None = None
    min_count: float = 1
    peaks_only: bool = True
    density: str = "count"
    tile: int = 50
    window: int = 20
    box_rule: str = "overlap"


def find_hotspots(
    table: pd.DataFrame,
    k: int = 1,
    options: HotspotOptions | None = None,
    *,
    mpp: float | None = None,
    roi: Any = None,
    shape: tuple[int, int] | None = None,
    dmap: DensityMap | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Find the top-``k`` non-overlapping hotspots of the nuclei of ``type`` (None = all).

    Parameters
    ----------
    options : HotspotOptions, optional
        How to search (default options when None).
    mpp : float, optional
        µm/px of the table's coordinates (default: ``table.attrs["mpp"]``).
    roi : None, (x, y, w, h), shapely geometry, Annotation or a list of them
        Region searched (default: the whole image, ``shape`` or the table extent).
    shape : (width, height), optional
        Image extent in level-0 px (default: the table's extent).
    dmap : DensityMap, optional
        Precomputed map (circle mode) to reuse.
    **overrides
        Single options replacing those of ``options`` (e.g. ``mode="box"``).

    Returns
    -------
    DataFrame, one row per hotspot in rank order: rank, name, mode, x, y (centre, level-0 px),
    radius_px (circle), x0, y0, x1, y1 (bounds), score (map value / window count), count (exact
    count of the selected nuclei), count_all, count_<type name> per type, and count_positive /
    positive_pct when the table has a ``positive`` column. ``df.attrs`` holds the parameters and
    ``requested``/``found``.
    """
    opts = replace(options or HotspotOptions(), **overrides)
    mode, radius_um, radius_px, type = opts.mode, opts.radius_um, opts.radius_px, opts.type
    min_count, peaks_only, density = opts.min_count, opts.peaks_only, opts.density
    tile, window, box_rule = opts.tile, opts.window, opts.box_rule
    if mode not in ("circle", "box"):
        raise ValueError(f"mode must be 'circle' or 'box', not {mode!r}")
    if k < 1:
        raise ValueError("k must be >= 1")
    mpp = mpp if mpp is not None else table.attrs.get("mpp")
    extent = _extent(table, shape)
    roi_geom = _roi_geometry(roi, extent)
    if shape is None and roi is not None and not roi_geom.is_empty:  # the map must cover the ROI
        _, _, bx, by = roi_geom.bounds
        extent = (max(extent[0], float(np.ceil(bx + 0.5))), max(extent[1], float(np.ceil(by + 0.5))))
    type_mask = select_nuclei(table, type)
    names = {t: table_type_info(table).name(t) for t in sorted(np.unique(table["type"]).tolist())} if len(table) else {}
    x = table["x"].to_numpy(np.float64)
    y = table["y"].to_numpy(np.float64)
    rows: list[dict[str, Any]] = []
    if mode == "circle":
        if radius_px is None:
            if radius_um is None:
                radius_px = 50.0 / mpp if mpp else 200.0
            elif not mpp:
                raise ValueError("radius in µm needs the pixel size (mpp); give radius_px instead")
            else:
                radius_px = float(radius_um) / float(mpp)
        radius_px = float(radius_px)
        if dmap is None:
            dmap = density_map(table, density, radius_px=radius_px, type=type, shape=(int(extent[0]), int(extent[1])))
        cx, cy, cv = circle_candidates(dmap, roi_geom, radius_px, min_count, peaks_only)
        for rank, i in enumerate(_greedy_circles(cx, cy, k, radius_px), start=1):
            inside = (x - cx[i]) ** 2 + (y - cy[i]) ** 2 <= radius_px * radius_px
            rows.append({"rank": rank, "name": f"Hotspot {rank}", "mode": "circle", "x": cx[i], "y": cy[i],
                         "radius_px": radius_px, "x0": cx[i] - radius_px, "y0": cy[i] - radius_px,
                         "x1": cx[i] + radius_px, "y1": cy[i] + radius_px, "score": cv[i]}
                        | _recount(table, inside, type_mask, names))
    else:
        n, win = int(tile), int(window)
        if n < 1 or win < 1:
            raise ValueError("tile and window must be >= 1")
        grid_shape = (max(1, int(np.ceil(extent[1] / n))), max(1, int(np.ceil(extent[0] / n))))
        grid = _grid_counts(x[type_mask], y[type_mask], n, grid_shape)
        if grid.shape[0] >= win and grid.shape[1] >= win:
            import shapely

            sums = _window_sums(grid, win)
            gr, gc = np.mgrid[0 : grid.shape[0], 0 : grid.shape[1]]
            centres_in = shapely.contains_xy(roi_geom, (gc * n + (n - 1) / 2).ravel(), (gr * n + (n - 1) / 2).ravel())
            inside_tiles = _window_sums(centres_in.reshape(grid.shape).astype(np.float64), win)
            ok = (inside_tiles >= win * win - 0.5) & (sums > min_count)
            r, c = np.nonzero(ok)
            s = sums[r, c]
            order = np.lexsort((c, r, -s))
            r, c, s = r[order], c[order], s[order]
            for rank, i in enumerate(_greedy_boxes(r, c, k, win, box_rule), start=1):
                x0, y0 = float(c[i] * n), float(r[i] * n)
                x1, y1 = x0 + win * n, y0 + win * n
                inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
                rows.append({"rank": rank, "name": f"Hotspot {rank}", "mode": "box", "x": (x0 + x1) / 2, "y": (y0 + y1) / 2,
                             "radius_px": np.nan, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "score": float(s[i])}
                            | _recount(table, inside, type_mask, names))
    base = ["rank", "name", "mode", "x", "y", "radius_px", "x0", "y0", "x1", "y1", "score", "count", "count_all"]
    extra = [f"count_{v}" for v in names.values()] + (["count_positive", "positive_pct"] if "positive" in table.columns else [])
    out = pd.DataFrame(rows, columns=base + extra)
    out.attrs = {"requested": int(k), "found": len(out), "mode": mode, "type": None if type is None else str(type),
                 "min_count": min_count, "radius_px": radius_px if mode == "circle" else None,
                 "tile": tile if mode == "box" else None, "window": window if mode == "box" else None, "mpp": mpp}
    if len(out) < k:
        warnings.warn(f"found {len(out)} of {k} requested hotspots", stacklevel=2)
    return out


def hotspot_annotations(hotspots: pd.DataFrame, class_name: str = "Hotspot", colour: tuple[int, int, int] = (255, 200, 0)) -> list:
    """Hotspot rows -> :class:`~napari_histo.formats._common.Annotation` (circle or box polygons)."""
    import shapely

    out = []
    for _, h in hotspots.iterrows():
        if h["mode"] == "circle":
            geom = shapely.Point(h["x"], h["y"]).buffer(h["radius_px"], quad_segs=16)
        else:
            geom = shapely.box(h["x0"], h["y0"], h["x1"], h["y1"])
        meas = {"Rank": float(h["rank"]), "Count": float(h["count"]), "Count all": float(h["count_all"]), "Score": float(h["score"])}
        if "positive_pct" in h.index:
            meas["Positive %"] = float(h["positive_pct"])
        out.append(Annotation(geom, name=str(h["name"]), class_name=class_name, colour=colour, measurements=meas,
                              is_ellipse=h["mode"] == "circle", shape="ellipse" if h["mode"] == "circle" else "rectangle"))
    return out
