"""Tile plan: which level-0 boxes to segment, at which resolution, with which halo.

The slide is cut into disjoint **core** tiles on a level-0 grid (so the label image's chunks
align with the cores). Each tile is segmented on its core plus a **halo** on every side, read at
the model's working resolution. All windows have the same working-pixel size (windows that run
past the slide are padded white by ``read_region``), so tiles batch on the device.
Background tiles are skipped with a low-resolution tissue mask; region runs keep only the tiles
whose core meets the ROI.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_histo.utils import HistoError

# Lazy imports: shapely is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

#: Relative mpp mismatch under which the slide is read at a whole downsample, not resampled.
SNAP_TOLERANCE = 0.02


@dataclass(frozen=True)
class Tile:
    """One unit of work. Boxes are level-0 px, half-open ``(x0, y0, x1, y1)``.

    ``core`` is the part this tile owns (clipped to the slide); ``window`` is what is read
    (core ± halo, not clipped: the outside is white).
    """

    index: int
    row: int
    col: int
    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]


@dataclass(frozen=True)
class TilePlan:
    """The tiling of one slide for one segmenter.

    Attributes
    ----------
    width, height : int
        Level-0 size of the slide.
    slide_mpp : float or None
        Level-0 µm/px (None: unknown, the image is processed at its native resolution).
    work_mpp : float
        The segmenter's working µm/px.
    scale : float
        Level-0 px per working px (``work_mpp / slide_mpp``; 1.0 when the mpp is unknown).
    tile0, halo0 : int
        Core size and halo in level-0 px.
    window_px : int
        Side of every window in working px.
    n_rows, n_cols : int
        Size of the core grid (including skipped tiles).
    tiles : tuple[Tile, ...]
        The tiles to process, in row-major order; ``index = row * n_cols + col``.
    roi_wkt : str or None
        Region of interest (level-0 px) as WKT, or None for the whole slide.
    max_area_px : float or None
        Largest plausible nucleus in level-0 px²; larger objects (debris, folds, keratin) are
        dropped and counted. None: no bound (also when the pixel size is unknown).
    """

    width: int
    height: int
    slide_mpp: float | None
    work_mpp: float
    scale: float
    tile0: int
    halo0: int
    window_px: int
    n_rows: int
    n_cols: int
    tiles: tuple[Tile, ...]
    roi_wkt: str | None = None
    max_area_px: float | None = None

    @property
    def n_grid(self) -> int:
        return self.n_rows * self.n_cols

    def tile_core(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Level-0 core box of grid cell (row, col), clipped to the slide."""
        x0, y0 = col * self.tile0, row * self.tile0
        return x0, y0, min(x0 + self.tile0, self.width), min(y0 + self.tile0, self.height)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for ``run.json`` and the resume fingerprint."""
        d = {k: v for k, v in asdict(self).items() if k != "tiles"}
        d["n_tiles"] = len(self.tiles)
        d["tile_indices_hash"] = _hash_ints([t.index for t in self.tiles])
        return d

    def roi(self):
        """The ROI as a shapely geometry, or None."""
        if self.roi_wkt is None:
            return None
        import shapely

        return shapely.from_wkt(self.roi_wkt)


def _hash_ints(values: list[int]) -> str:
    return hashlib.sha1(np.asarray(values, np.int64).tobytes()).hexdigest()[:16]


def roi_geometry(roi: Any):
    """Normalise a region: ``(x, y, w, h)`` box, (N, 2) polygon vertices, or a shapely geometry."""
    if roi is None:
        return None
    import shapely
    from shapely.geometry import Polygon, box

    if isinstance(roi, shapely.Geometry):
        geom = roi
    else:
        arr = np.asarray(roi, dtype=float)
        if arr.shape == (4,):
            x, y, w, h = arr
            if w <= 0 or h <= 0:
                raise HistoError(f"ROI width and height must be > 0, got {tuple(arr)}")
            geom = box(x, y, x + w, y + h)
        elif arr.ndim == 2 and arr.shape[1] == 2 and len(arr) >= 3:
            geom = Polygon(arr)
        else:
            raise HistoError("ROI must be (x, y, w, h), polygon vertices (N, 2) or a shapely geometry")
    if geom.is_empty or geom.area <= 0:
        raise HistoError("ROI is empty")
    if not geom.is_valid:
        geom = geom.buffer(0)
    return geom


def _integer_step(scale: float) -> int:
    """Level-0 px step that keeps every window on the same working-pixel grid, when possible."""
    k = round(scale)
    return k if k >= 1 and abs(scale - k) < 1e-3 else 1


def _scale(work_mpp: float | None, slide_mpp: float | None) -> float:
    """Level-0 px per working px (1.0 when either mpp is unknown)."""
    if not (work_mpp and slide_mpp):
        return 1.0
    scale = float(work_mpp) / float(slide_mpp)
    # within 2 % of a whole factor (0.499 vs 0.5 µm/px): read natively rather than blur by
    # resampling; the table keeps the slide's true mpp
    if round(scale) >= 1 and abs(scale - round(scale)) <= SNAP_TOLERANCE * scale:
        scale = float(round(scale))
    return scale


def make_plan(
    slide: Any,
    work_mpp: float | None,
    halo_px: int,
    *,
    tile_size: int = 1024,
    slide_mpp: float | None = None,
    roi: Any = None,
    tissue: Any = None,
) -> TilePlan:
    """Plan the tiles of ``slide`` for a segmenter working at ``work_mpp`` µm/px.

    Parameters
    ----------
    slide
        Anything with ``dimensions`` (level-0 w, h).
    work_mpp : float or None
        Segmenter resolution. With ``slide_mpp`` unknown, the slide is processed as is.
    halo_px : int
        Halo in working px; must exceed the largest nucleus (objects touching the window
        edge are dropped) and be < tile_size / 2.
    tile_size : int
        Core side in working px.
    slide_mpp : float, optional
        Level-0 µm/px (already resolved by the caller, overrides included).
    roi
        Region (see :func:`roi_geometry`), level-0 px.
    tissue
        A tissue mask (``.mask`` bool array, ``.downsample`` level-0 px per mask px) or None
        to process every tile.
    """
    width, height = (int(v) for v in slide.dimensions)
    if width <= 0 or height <= 0:
        raise HistoError(f"{getattr(slide, 'path', 'slide')}: empty image ({width}x{height})")
    if tile_size < 64:
        raise HistoError(f"tile size must be >= 64 px, got {tile_size}")
    halo_px = int(halo_px)
    if halo_px < 0 or 2 * halo_px >= tile_size:
        raise HistoError(f"halo ({halo_px} px) must be >= 0 and < half the tile size ({tile_size} px)")
    scale = _scale(work_mpp, slide_mpp)
    # an image smaller than one tile gets one tile just big enough (windows are not larger
    # than the image needs)
    fit = int(math.ceil(max(width, height) / scale / 16.0)) * 16
    tile_size = min(tile_size, max(fit, 2 * halo_px + 16, 64))
    step = _integer_step(scale)
    tile0 = max(step, int(round(tile_size * scale / step)) * step)
    halo0 = int(math.ceil(halo_px * scale / step)) * step
    window_px = int(math.ceil((tile0 + 2 * halo0) / scale - 1e-6))
    n_cols, n_rows = math.ceil(width / tile0), math.ceil(height / tile0)

    geom = roi_geometry(roi)
    if geom is not None:
        from shapely.geometry import box

        geom = geom.intersection(box(0, 0, width, height))
        if geom.is_empty or geom.area <= 0:
            raise HistoError(f"ROI lies outside the image ({width}x{height} px)")
    keep = np.ones((n_rows, n_cols), bool)
    if tissue is not None:
        keep &= _tiles_with_tissue(tissue, n_rows, n_cols, tile0, halo0)
    # a nucleus whose centroid is in the ROI may be owned by a tile up to one halo away
    reach = None if geom is None else geom.buffer(halo0, join_style="mitre")
    tiles = []
    for row in range(n_rows):
        for col in range(n_cols):
            if not keep[row, col]:
                continue
            x0, y0 = col * tile0, row * tile0
            core = (x0, y0, min(x0 + tile0, width), min(y0 + tile0, height))
            if reach is not None:
                from shapely.geometry import box

                if not reach.intersects(box(*core)):
                    continue
            wx0, wy0 = x0 - halo0, y0 - halo0
            wext = int(round(window_px * scale))
            tiles.append(Tile(row * n_cols + col, row, col, core, (wx0, wy0, wx0 + wext, wy0 + wext)))
    return TilePlan(
        width=width,
        height=height,
        slide_mpp=slide_mpp,
        work_mpp=float(work_mpp) if work_mpp else float(slide_mpp or 0.0),
        scale=scale,
        tile0=tile0,
        halo0=halo0,
        window_px=window_px,
        n_rows=n_rows,
        n_cols=n_cols,
        tiles=tuple(tiles),
        roi_wkt=None if geom is None else geom.wkt,
    )


def _tiles_with_tissue(tissue: Any, n_rows: int, n_cols: int, tile0: int, halo0: int) -> np.ndarray:
    """Grid cells whose core (grown by the halo) contains any tissue-mask pixel."""
    mask = np.asarray(tissue.mask, bool)
    ds = float(tissue.downsample)
    keep = np.zeros((n_rows, n_cols), bool)
    mh, mw = mask.shape
    # prefix sums answer "any tissue in box" in O(1) per tile
    integral = np.zeros((mh + 1, mw + 1), np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    for row in range(n_rows):
        y0 = max(0, int(math.floor((row * tile0 - halo0) / ds)))
        y1 = min(mh, int(math.ceil(((row + 1) * tile0 + halo0) / ds)))
        for col in range(n_cols):
            x0 = max(0, int(math.floor((col * tile0 - halo0) / ds)))
            x1 = min(mw, int(math.ceil(((col + 1) * tile0 + halo0) / ds)))
            if y1 > y0 and x1 > x0:
                total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
                keep[row, col] = total > 0
    return keep


def read_window(slide: Any, tile: Tile, plan: TilePlan) -> np.ndarray:
    """The tile's window at working resolution, (window_px, window_px, 3) uint8."""
    size = (plan.window_px, plan.window_px)
    loc = (tile.window[0], tile.window[1])
    if abs(plan.scale - 1.0) < 1e-6:
        rgb = slide.read_region(loc, size, 0, "level")
    else:
        rgb = slide.read_region(loc, size, 1.0 / plan.scale, "baseline")
    rgb = np.asarray(rgb)
    if rgb.shape[:2] != (plan.window_px, plan.window_px):
        raise HistoError(
            f"{getattr(slide, 'path', 'slide')}: read_region returned {rgb.shape[:2]}, expected {size}"
        )
    return np.ascontiguousarray(rgb[..., :3])
