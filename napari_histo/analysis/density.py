"""Nucleus density maps from a nucleus table, in QuPath's kinds and the tile-rate kind.

Kinds (QuPath's density maps, https://qupath.readthedocs.io/en/stable/docs/tutorials/density_maps.html):

``count``     number of nucleus centroids within radius r (QuPath "By area (raw counts)"):
              a disc sum over the centroid-count raster.
``gaussian``  Gaussian blur (sigma = r) of the centroid raster times 2*pi*sigma^2, so an
              isolated nucleus peaks at 1 (QuPath GAUSSIAN).
``percent``   100 * (secondary-class count) / (main-class count), both within r (QuPath
              "Objects %"); ``counts`` holds the main-class count (QuPath's last channel).
``tile``      N x N level-0 px tiles (floor binning), value = count / N^2 (nuclei per px^2),
              optionally Gaussian-smoothed (the seed pipeline's grid; its round() binning is not
              copied).

Geometry: map pixel size s = max(1, round(r_px / 10)) level-0 px (QuPath), made coarser if needed
so that the map is at most ``max_size`` (1536) px per side. Map pixel (i, j) covers level-0 px
columns [j*s, (j+1)*s) and rows [i*s, (i+1)*s); with pixel centres at integer coordinates its
centre is at level-0 ``(j*s + (s-1)/2, i*s + (s-1)/2)`` = ``offset + (j, i) * s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_histo.formats._common import table_type_info
from napari_histo.schema.vocabulary import ids_for

# Lazy imports: scipy is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["DensityMap", "density_map", "density_maps", "KINDS", "select_nuclei", "map_geometry"]

KINDS = ("count", "gaussian", "percent", "tile")


@dataclass
class DensityMap:
    """A density image that overlays the slide exactly.

    Attributes
    ----------
    array : (h, w) float32
        Map values.
    pixel_size : float
        Level-0 px per map px (napari ``scale``).
    offset : (x, y)
        Level-0 px coordinates of the centre of map pixel (0, 0) (napari ``translate``).
    units : str
        Unit of the values ("nuclei", "%", "nuclei/px^2" ...).
    kind : str
        One of :data:`KINDS`.
    type : str or None
        Which nuclei were counted ("all", a type name, ...).
    radius_px : float or None
        Radius (level-0 px) for count/gaussian/percent kinds.
    counts : (h, w) float32 or None
        Main-class count within r (percent kind; the count map itself for ``count``).
    """

    array: np.ndarray
    pixel_size: float
    offset: tuple[float, float]
    units: str
    kind: str
    type: str | None = None
    radius_px: float | None = None
    counts: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape  # type: ignore[return-value]

    def to_level0(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map pixel indices -> level-0 (x, y) of their centres."""
        return self.offset[0] + np.asarray(cols) * self.pixel_size, self.offset[1] + np.asarray(rows) * self.pixel_size

    def napari_scale_translate(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(scale, translate) in (y, x) order for a napari Image layer in level-0 px world coordinates."""
        return (self.pixel_size, self.pixel_size), (self.offset[1], self.offset[0])


def select_nuclei(table: pd.DataFrame, type_: int | str | None = None) -> np.ndarray:
    """Boolean mask of the rows of ``type_``.

    ``type_`` is None/"all" (every nucleus), an id, a type name, a coarse class of the product's
    vocabulary (``inflammatory`` selects lymphocytes, neutrophils, macrophages ...; see
    :mod:`napari_histo.schema.vocabulary`), a comma-separated set of any of these (``"2,3,4"``),
    or "positive": the ``positive`` column of DAB measurement when present, else every type whose
    name starts with "positive" (IHC models: negative / positive weak / moderate / strong).
    """
    n = len(table)
    if type_ is None or (isinstance(type_, str) and type_.strip().lower() in ("all", "")):
        return np.ones(n, bool)
    if isinstance(type_, str) and type_.strip().lower() == "positive":
        if "positive" in table.columns:
            return table["positive"].to_numpy(bool)
        names = table_type_info(table).names
        ids = [t for t, name in names.items() if name.strip().lower().startswith("positive")]
        if not ids:
            raise ValueError("the table has no 'positive' column (DAB positivity was not measured) and no type "
                             f"named 'positive ...'; known types: {sorted(names.values())}")
        return np.isin(table["type"].to_numpy(), ids)
    if isinstance(type_, (int, np.integer)):
        return table["type"].to_numpy() == int(type_)
    ids = ids_for(str(type_), table_type_info(table).names)
    return np.isin(table["type"].to_numpy(), sorted(ids))


def _type_label(table: pd.DataFrame, type_) -> str:
    if type_ is None:
        return "all"
    if isinstance(type_, (int, np.integer)) or (isinstance(type_, str) and type_.lstrip("-").isdigit()):
        return table_type_info(table).name(int(type_))
    return str(type_)


def map_geometry(extent: tuple[float, float], radius_px: float, max_size: int = 1536) -> tuple[int, tuple[int, int]]:
    """QuPath's map pixel size for ``radius_px`` over ``extent`` (w, h level-0 px) -> (s, (h, w))."""
    w, h = extent
    s = max(1, int(round(radius_px / 10)))
    s = max(s, int(np.ceil(max(w, h) / max_size)))
    return s, (max(1, int(np.ceil(h / s))), max(1, int(np.ceil(w / s))))


def _extent(table: pd.DataFrame, shape: tuple[int, int] | None) -> tuple[float, float]:
    if shape is not None:
        return float(shape[0]), float(shape[1])
    if not len(table):
        return 1.0, 1.0
    return float(np.ceil(table["x"].max()) + 1), float(np.ceil(table["y"].max()) + 1)


def _raster(x: np.ndarray, y: np.ndarray, s: float, shape: tuple[int, int]) -> np.ndarray:
    """Count of centroids per map pixel (floor binning, pixel k covers [k*s - 0.5, (k+1)*s - 0.5))."""
    h, w = shape
    col = np.floor((x + 0.5) / s).astype(np.int64)
    row = np.floor((y + 0.5) / s).astype(np.int64)
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return np.bincount(row[ok] * w + col[ok], minlength=h * w).reshape(h, w).astype(np.float64)


def _disc_sum(raster: np.ndarray, radius_map: float) -> np.ndarray:
    """Sum over a disc of ``radius_map`` map px around each pixel (exact integers, FFT convolution)."""
    from scipy.signal import fftconvolve

    r = int(np.floor(radius_map))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (xx * xx + yy * yy <= radius_map * radius_map + 1e-9).astype(np.float64)
    if raster.size * kernel.size < 4_000_000:
        from scipy.ndimage import convolve

        return convolve(raster, kernel, mode="constant", cval=0.0)
    return np.rint(np.maximum(fftconvolve(raster, kernel, mode="same"), 0.0))


def density_map(
    table: pd.DataFrame,
    kind: str = "count",
    *,
    radius_um: float | None = None,
    radius_px: float | None = None,
    mpp: float | None = None,
    type: int | str | None = None,  # noqa: A002 - mirrors the table column
    secondary: int | str | None = "positive",
    shape: tuple[int, int] | None = None,
    tile: int = 50,
    tile_sigma: float = 0.0,
    max_size: int = 1536,
) -> DensityMap:
    """Compute a density map of the nuclei of ``type`` (None = all).

    Parameters
    ----------
    kind : {"count", "gaussian", "percent", "tile"}
    radius_um, radius_px : float
        Radius r (µm needs ``mpp`` or ``table.attrs["mpp"]``). Default 50 µm, or 200 px without mpp.
    type : int or str, optional
        Nuclei counted (percent kind: the main class).
    secondary : int or str
        Percent kind: the class whose share is mapped (default "positive": the ``positive`` column).
    shape : (w, h), optional
        Level-0 image size; default: the table's extent.
    tile : int
        Tile kind: tile side N in level-0 px (default 50, the seed pipeline's grid).
    tile_sigma : float
        Tile kind: optional Gaussian smoothing in tiles (0 = none; 0.8 reproduces the seed map).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    mpp = mpp if mpp is not None else table.attrs.get("mpp")
    main = select_nuclei(table, type)
    x = table["x"].to_numpy(np.float64)
    y = table["y"].to_numpy(np.float64)
    extent = _extent(table, shape)
    label = _type_label(table, type)
    if kind == "tile":
        n = int(tile)
        if n < 1:
            raise ValueError("tile must be >= 1 px")
        grid = (max(1, int(np.ceil(extent[1] / n))), max(1, int(np.ceil(extent[0] / n))))
        counts = _grid_counts(x[main], y[main], n, grid)
        values = counts.copy()
        if tile_sigma > 0:
            from scipy.ndimage import gaussian_filter

            values = gaussian_filter(values, tile_sigma, mode="constant")
        return DensityMap((values / (n * n)).astype(np.float32), float(n), ((n - 1) / 2, (n - 1) / 2), "nuclei/px^2",
                          kind, label, None, counts.astype(np.float32))
    if radius_px is None:
        if radius_um is None:
            radius_um = 50.0 if mpp else None
            radius_px = 200.0 if not mpp else None
        if radius_px is None:
            if not mpp:
                raise ValueError("radius in µm needs the pixel size (mpp); give radius_px instead")
            radius_px = float(radius_um) / float(mpp)
    radius_px = float(radius_px)
    if radius_px <= 0:
        raise ValueError("radius must be > 0")
    s, grid = map_geometry(extent, radius_px, max_size)
    r_map = radius_px / s
    offset = ((s - 1) / 2, (s - 1) / 2)
    raster = _raster(x[main], y[main], s, grid)
    if kind == "count":
        counts = _disc_sum(raster, r_map)
        return DensityMap(counts.astype(np.float32), float(s), offset, "nuclei", kind, label, radius_px, counts.astype(np.float32))
    if kind == "gaussian":
        from scipy.ndimage import gaussian_filter

        values = gaussian_filter(raster, r_map, mode="constant") * (2 * np.pi * r_map * r_map)
        return DensityMap(values.astype(np.float32), float(s), offset, "nuclei", kind, label, radius_px, _disc_sum(raster, r_map).astype(np.float32))
    sec = main & select_nuclei(table, secondary)
    counts = _disc_sum(raster, r_map)
    sec_counts = _disc_sum(_raster(x[sec], y[sec], s, grid), r_map)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(counts > 0, 100.0 * sec_counts / np.maximum(counts, 1), np.nan)
    return DensityMap(pct.astype(np.float32), float(s), offset, "%", kind, f"{_type_label(table, secondary)} of {label}",
                      radius_px, counts.astype(np.float32))


def _grid_counts(x: np.ndarray, y: np.ndarray, n: int, grid: tuple[int, int]) -> np.ndarray:
    """Counts per N x N tile, tile (r, c) = floor(y / N), floor(x / N) (points outside dropped)."""
    h, w = grid
    col = np.floor(x / n).astype(np.int64)
    row = np.floor(y / n).astype(np.int64)
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return np.bincount(row[ok] * w + col[ok], minlength=h * w).reshape(h, w).astype(np.float64)


def density_maps(table: pd.DataFrame, kind: str = "count", **kwargs) -> dict[str, DensityMap]:
    """One map for all nuclei ("all") and one per type present in the table (keyed by type name).

    Keyword arguments are passed to :func:`density_map` (radius, tile, shape, ...).
    """
    info = table_type_info(table)
    out = {"all": density_map(table, kind, type=None, **kwargs)}
    for t in sorted(np.unique(table["type"]).tolist()) if len(table) else []:
        out[info.name(int(t))] = density_map(table, kind, type=int(t), **kwargs)
    return out
