"""The Slide: one lazy, thread-safe view of a whole-slide image over interchangeable backends.

Backends (OpenSlide, tifffile + zarr, plain image) only read RGB boxes inside one native
level; everything resolution-aware lives here: white padding outside the slide, unit
conversion (level / mpp / objective power / baseline scale, as in TIAToolbox), best-level
selection with resampling, the dask pyramid for napari (with computed levels when the file
has too few) and thumbnails.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from napari_histo.slide._describe import (
    PLAIN_EXTENSIONS,
    TIFF_EXTENSIONS,
    TIFFFILE_PREFERRED_VENDORS,
    check_declared_size,
    openslide_vendor,
    tiff_header_ok,
)
from napari_histo.slide._image import ImageBackend
from napari_histo.slide._openslide import OpenSlideBackend
from napari_histo.slide._tiff import TiffBackend, tiff_probe
from napari_histo.utils import HistoError, InputFileError, check_input_file

# Lazy imports: PIL, dask are imported inside the functions that use them (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

if TYPE_CHECKING:
    import dask.array

Units = Literal["level", "mpp", "power", "baseline"]
UNITS: tuple[str, ...] = ("level", "mpp", "power", "baseline")
BACKENDS: tuple[str, ...] = ("openslide", "tifffile", "image")


#: Computed pyramid levels are added until the coarsest level fits in this many pixels.
PYRAMID_MIN_SIZE = 1024
#: Target dask chunk edge: an integer multiple of the native tile, at most this (512-1024 px).
CHUNK_TARGET = 1024


@dataclass(frozen=True)
class SlideSpec:
    """Picklable recipe to reopen a slide in another process: a path and a backend name."""

    path: str
    backend: str

    def open(self) -> Slide:
        return Slide(self.path, backend=self.backend)


def _extension(path: str | os.PathLike) -> str:
    return Path(path).suffix.lower()


def check_readable_file(path: str | os.PathLike) -> Path:
    """Raise InputFileError unless ``path`` is a readable, non-empty regular file."""
    return check_input_file(path, "slide file")




def choose_backend(path: str | os.PathLike) -> str:
    """Pick the backend for ``path`` from cheap header probes.

    1. Plain images (PNG/JPEG/BMP) go to Pillow ("image").
    2. OME-TIFF and SubIFD pyramids go to tifffile (OpenSlide would see only one level).
    3. Aperio SVS and generic tiled TIFFs that OpenSlide recognises, stored as tiled 8-bit
       RGB, go to tifffile: same pixels, same metadata, about twice as fast.
    4. Other formats OpenSlide recognises (NDPI, MRXS, SCN, BIF, VMS, ...) go to OpenSlide.
    5. Any other TIFF goes to tifffile. Anything else raises InputFileError.
    """
    path = check_readable_file(path)
    ext = _extension(path)
    is_tiff = tiff_header_ok(path)
    if ext in PLAIN_EXTENSIONS and not is_tiff:
        return "image"
    probe = tiff_probe(path) if is_tiff else {}
    if probe.get("ome_or_subifd"):
        return "tifffile"
    vendor = openslide_vendor(path)
    if vendor is not None:
        if vendor in TIFFFILE_PREFERRED_VENDORS and probe.get("tiled_rgb8"):
            return "tifffile"
        return "openslide"
    if is_tiff:
        return "tifffile"
    if ext in PLAIN_EXTENSIONS or ext in TIFF_EXTENSIONS:
        return "image"
    raise InputFileError(
        path,
        "unsupported or unrecognised format (expected a whole-slide image such as .svs, .ndpi, "
        ".mrxs, .scn, .bif, .vms, an (OME-)TIFF, or a PNG/JPEG/BMP image)",
    )


def _make_backend(path: Path, backend: str):
    if backend == "openslide":
        return OpenSlideBackend(path)
    if backend == "tifffile":
        return TiffBackend(path)
    if backend == "image":
        return ImageBackend(path)
    raise HistoError(f"unknown slide backend {backend!r}; choose one of {', '.join(BACKENDS)}")


class _AssociatedImages(Mapping):
    """Label, macro, thumbnail... decoded on first access and cached."""

    def __init__(self, backend, lock: threading.RLock):
        self._backend = backend
        self._lock = lock
        self._names = sorted(backend.associated_names())
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        with self._lock:
            if name not in self._cache:
                self._cache[name] = self._backend.associated(name)
            return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class _LevelAdapter:
    """Array-like over one slide level for ``dask.array.from_array`` (reads via the backend).

    Dask fuses the chunk getter with later slicing (only with ``fancy=True``, its default), so
    a field of view reads only the pixels it needs from each chunk.
    """

    def __init__(self, slide: Slide, level: int):
        self.slide = slide
        self.level = level
        width, height = slide.level_dimensions[level]
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    @staticmethod
    def _bounds(index: Any, length: int) -> tuple[int, int, Any]:
        if isinstance(index, (int, np.integer)):
            i = int(index) + length if index < 0 else int(index)
            return i, i + 1, 0
        if not isinstance(index, slice):
            positions = np.asarray(index, dtype=np.int64).ravel()
            positions = np.where(positions < 0, positions + length, positions)
            if positions.size == 0:
                return 0, 0, slice(0, 0)
            lo = int(positions.min())
            return lo, int(positions.max()) + 1, positions - lo
        positions = range(*index.indices(length))
        if len(positions) == 0:
            return 0, 0, slice(0, 0)
        lo, hi = min(positions[0], positions[-1]), max(positions[0], positions[-1]) + 1
        if positions.step > 0:
            return lo, hi, slice(0, hi - lo, positions.step)
        return lo, hi, slice(hi - lo - 1, None, positions.step)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        y0, y1, ysub = self._bounds(key[0], self.shape[0])
        x0, x1, xsub = self._bounds(key[1], self.shape[1])
        if y1 <= y0 or x1 <= x0:
            region = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0), 3), np.uint8)
        else:
            region = self.slide.read_level(self.level, x0, y0, x1 - x0, y1 - y0)
        return region[ysub, xsub, key[2]]


def _halve(level: dask.array.Array) -> dask.array.Array:
    """2x2 mean downsample (rounded) of an RGB uint8 dask array, lazily, block by block."""
    height, width = (level.shape[0] // 2) * 2, (level.shape[1] // 2) * 2
    trimmed = level[:height, :width]
    if any(c % 2 for axis in trimmed.chunks[:2] for c in axis):
        edge = max(2, (trimmed.chunksize[0] // 2) * 2)
        trimmed = trimmed.rechunk((edge, edge, 3))

    def block_mean(block: np.ndarray) -> np.ndarray:
        total = (
            block[0::2, 0::2].astype(np.uint16)
            + block[1::2, 0::2]
            + block[0::2, 1::2]
            + block[1::2, 1::2]
            + 2
        )
        return (total // 4).astype(np.uint8)

    out_chunks = (
        tuple(c // 2 for c in trimmed.chunks[0]),
        tuple(c // 2 for c in trimmed.chunks[1]),
        trimmed.chunks[2],
    )
    half = trimmed.map_blocks(block_mean, chunks=out_chunks, dtype=np.uint8)
    target = max(level.chunksize[0], level.chunksize[1])
    return half.rechunk((target, target, 3))


class Slide:
    """A whole-slide image opened lazily; see :func:`open_slide`.

    Coordinates follow OpenSlide: ``location`` is (x, y) in level-0 pixels, sizes are
    (width, height). Arrays are (height, width, 3) RGB uint8. Reads are thread-safe; pass
    :meth:`spec` (not the object) to other processes.
    """

    def __init__(self, path: str | os.PathLike, backend: str | None = None):
        path = check_readable_file(path)
        if backend is not None and backend not in BACKENDS:
            raise HistoError(f"unknown slide backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        chosen = backend or choose_backend(path)
        self.path: Path = path
        self._lock = threading.RLock()
        self._pyramid: list | None = None
        self._closed = False
        try:
            self._impl = _make_backend(path, chosen)
        except InputFileError:
            if backend is not None or chosen != "tifffile":
                raise

            if openslide_vendor(path) is None:
                raise
            chosen = "openslide"  # tifffile could not parse what OpenSlide recognises
            self._impl = _make_backend(path, chosen)
        self.backend: str = chosen
        try:
            self._check_levels()
            self.properties: dict[str, str] = dict(self._impl.properties)
            self.associated_images: Mapping[str, np.ndarray] = _AssociatedImages(self._impl, self._lock)
            self._probe()
        except BaseException:
            self._impl.close()
            raise

    # -- metadata -------------------------------------------------------------------------
    def _check_levels(self) -> None:
        dims = self._impl.level_dimensions
        if not dims or any(w <= 0 or h <= 0 for w, h in dims):
            raise InputFileError(self.path, f"invalid level dimensions {dims}")
        check_declared_size(self.path, tuple(dims[0]))

    def _probe(self) -> None:
        """Decode one pixel of the coarsest level so broken files fail at open, not in napari."""
        level = self.level_count - 1
        width, height = self.level_dimensions[level]
        try:
            probe = getattr(self._impl, "probe", None)
            if probe is not None:
                probe(level)
            else:
                self._impl.read_level(level, width // 2, height // 2, 1, 1)
        except InputFileError:
            raise
        except Exception as exc:
            raise InputFileError(self.path, f"cannot decode pixels ({exc})") from exc

    @property
    def vendor(self) -> str:
        return self._impl.vendor

    @property
    def level_count(self) -> int:
        return len(self._impl.level_dimensions)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        """(width, height) of each native level, largest first."""
        return list(self._impl.level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        return list(self._impl.level_downsamples)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) at level 0."""
        return tuple(self._impl.level_dimensions[0])

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Level-0 pixel size (x, y) in µm from the file's metadata, or None when not stated."""
        return self._impl.mpp

    @property
    def objective_power(self) -> float | None:
        """Scan objective power (e.g. 20.0, 40.0) from metadata, or None when not stated."""
        return self._impl.objective_power

    @property
    def tile_sizes(self) -> list[tuple[int, int] | None]:
        """Native (width, height) tile of each level, None for striped or plain images."""
        return list(self._impl.tile_sizes)

    def level_mpp(self, level: int) -> tuple[float, float] | None:
        """Pixel size (x, y) in µm at a native level, or None when mpp is unknown."""
        if self.mpp is None:
            return None
        downsample = self.level_downsamples[level]
        return (self.mpp[0] * downsample, self.mpp[1] * downsample)

    def spec(self) -> SlideSpec:
        """Picklable (path, backend) for work in other processes."""
        return SlideSpec(str(self.path), self.backend)

    def metadata(self) -> dict[str, Any]:
        """Summary for layer metadata, the ``info`` command and provenance records."""
        return {
            "path": str(self.path),
            "backend": self.backend,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": self.level_downsamples,
            "tile_sizes": [list(t) if t else None for t in self.tile_sizes],
            "mpp": list(self.mpp) if self.mpp else None,
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_images),
        }

    # -- resolution -----------------------------------------------------------------------
    def baseline_scale(self, resolution: float | Sequence[float], units: str) -> tuple[float, float]:
        """Output pixels per level-0 pixel (x, y) for a resolution in ``units``.

        ``level``: a native level index; ``mpp``: µm per output pixel; ``power``: objective
        power (e.g. 10 on a 40x slide is 0.25); ``baseline``: the scale itself (1.0 = full).
        """
        if units not in UNITS:
            raise HistoError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
        if units == "level":
            level = int(resolution)  # type: ignore[arg-type]
            if level != resolution or not 0 <= level < self.level_count:
                raise HistoError(f"{self.path}: level {resolution!r} not in 0..{self.level_count - 1}")
            scale = 1.0 / self.level_downsamples[level]
            return scale, scale
        if isinstance(resolution, (tuple, list, np.ndarray)):
            res_x, res_y = float(resolution[0]), float(resolution[1])
        else:
            res_x = res_y = float(resolution)
        if not (res_x > 0 and res_y > 0 and math.isfinite(res_x) and math.isfinite(res_y)):
            raise HistoError(f"resolution must be positive, got {resolution!r}")
        if units == "baseline":
            return res_x, res_y
        if units == "mpp":
            if self.mpp is None:
                raise HistoError(
                    f"{self.path}: the slide states no pixel size (mpp); read by level or "
                    "baseline, or supply the mpp yourself"
                )
            return self.mpp[0] / res_x, self.mpp[1] / res_y
        if self.objective_power is None:
            raise HistoError(
                f"{self.path}: the slide states no objective power; read by level, mpp or baseline"
            )
        return res_x / self.objective_power, res_y / self.objective_power

    def best_level(self, scale: float) -> int:
        """The coarsest native level whose resolution is still at least ``scale`` (no upsampling)."""
        wanted = 1.0 / scale
        best = 0
        for level, downsample in enumerate(self.level_downsamples):
            if downsample <= wanted * (1 + 1e-6):
                best = level
        return best

    # -- pixels ---------------------------------------------------------------------------
    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB box at native ``level`` in that level's pixels; outside the slide is white."""
        self._check_open()
        level_width, level_height = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_width), min(y + height, level_height)
        if x0 == x and y0 == y and x1 == x + width and y1 == y + height:
            return self._impl.read_level(level, x, y, width, height)
        out = np.full((height, width, 3), 255, np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._impl.read_level(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def read_region(
        self,
        location: tuple[int, int],
        size: tuple[int, int],
        resolution: float | Sequence[float] = 0,
        units: Units = "level",
    ) -> np.ndarray:
        """RGB (height, width, 3) uint8 of ``size`` output pixels at ``resolution``.

        ``location`` is the top-left (x, y) in level-0 pixels. Reads the best native level
        and resamples (area average when shrinking, bilinear when enlarging); regions partly
        or wholly outside the slide are padded with white.
        """
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise HistoError(f"region size must be positive, got {size!r}")
        scale_x, scale_y = self.baseline_scale(resolution, units)
        level = int(resolution) if units == "level" else self.best_level(min(scale_x, scale_y))
        downsample = self.level_downsamples[level]
        x0 = location[0] / downsample
        y0 = location[1] / downsample
        level_w = width / (scale_x * downsample)
        level_h = height / (scale_y * downsample)
        if abs(level_w - width) < 1e-6 * width and abs(level_h - height) < 1e-6 * height:
            return self.read_level(level, int(round(x0)), int(round(y0)), width, height)
        from PIL import Image

        margin = 1
        ix0, iy0 = math.floor(x0) - margin, math.floor(y0) - margin
        ix1, iy1 = math.ceil(x0 + level_w) + margin, math.ceil(y0 + level_h) + margin
        patch = self.read_level(level, ix0, iy0, ix1 - ix0, iy1 - iy0)
        box = (x0 - ix0, y0 - iy0, x0 - ix0 + level_w, y0 - iy0 + level_h)
        shrinking = level_w > width or level_h > height
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        resized = Image.fromarray(patch).resize((width, height), resample=resample, box=box)
        return np.asarray(resized)

    def chunk_size(self, level: int) -> tuple[int, int]:
        """Dask chunk (height, width) for a level: native tiles times k, about 512-1024 px."""
        tile = self.tile_sizes[level] if level < self.level_count else None
        if not tile:
            return CHUNK_TARGET, CHUNK_TARGET
        tile_w, tile_h = tile
        return tile_h * max(1, CHUNK_TARGET // tile_h), tile_w * max(1, CHUNK_TARGET // tile_w)

    def pyramid(self) -> list[dask.array.Array]:
        """Lazy RGB uint8 dask arrays (height, width, 3), largest first, for napari multiscale.

        Native levels are chunked at a multiple of their tiles; computed 2x levels (2x2 mean)
        follow until the coarsest fits in about 1k px, so slides with 1-2 levels still
        display smoothly. The arrays pickle by path (the slide reopens on unpickling).
        """
        with self._lock:
            self._check_open()
            if self._pyramid is None:
                self._pyramid = self._build_pyramid()
            return list(self._pyramid)

    def _build_pyramid(self) -> list:
        import dask.array as da
        from dask.base import tokenize

        stat = self.path.stat()
        levels = []
        for level in range(self.level_count):
            chunk_h, chunk_w = self.chunk_size(level)
            name = "slide-" + tokenize(str(self.path), stat.st_mtime_ns, stat.st_size, self.backend, level)
            # One adapter for every backend (tifffile levels read their zarr array inside it):
            # as fast as ``da.from_zarr`` and, unlike a graph holding the ZarrTiffStore, it
            # pickles (by path) for dask.distributed.
            array = da.from_array(
                _LevelAdapter(self, level),
                chunks=(chunk_h, chunk_w, 3),
                asarray=False,
                lock=False,
                name=name,
            )
            levels.append(array)
        while max(levels[-1].shape[:2]) > PYRAMID_MIN_SIZE and min(levels[-1].shape[:2]) >= 2:
            levels.append(_halve(levels[-1]))
        return levels

    def pyramid_downsamples(self) -> list[float]:
        """Level-0 pixels per pixel of each :meth:`pyramid` array (native then computed)."""
        width0 = self.dimensions[0]
        return [width0 / array.shape[1] for array in self.pyramid()]

    def thumbnail(self, max_size: int | tuple[int, int] = 1024) -> np.ndarray:
        """Whole-slide RGB image fitting in ``max_size`` (int or (width, height)), aspect kept."""
        from PIL import Image

        box_w, box_h = (max_size, max_size) if isinstance(max_size, (int, np.integer)) else max_size
        width0, height0 = self.dimensions
        scale = min(box_w / width0, box_h / height0)
        out_w, out_h = max(1, round(width0 * scale)), max(1, round(height0 * scale))
        levels = self.pyramid()
        source = levels[0]
        for array in levels:
            if array.shape[1] >= out_w and array.shape[0] >= out_h:
                source = array
        pixels = np.asarray(source.compute(scheduler="threads"))
        if pixels.shape[1] == out_w and pixels.shape[0] == out_h:
            return pixels
        return np.asarray(Image.fromarray(pixels).resize((out_w, out_h), Image.Resampling.BOX))

    # -- lifecycle ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise HistoError(f"{self.path}: slide is closed")

    def close(self) -> None:
        """Release the file handle (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pyramid = None
                self._impl.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __reduce__(self):
        # Crossing a process boundary reopens from the path; handles are never pickled.
        return (Slide, (str(self.path), self.backend))

    def __repr__(self) -> str:
        mpp = f"{self.mpp[0]:.4g}" if self.mpp else "unknown"
        return (
            f"Slide({str(self.path)!r}, backend={self.backend!r}, vendor={self.vendor!r}, "
            f"dimensions={self.dimensions}, levels={self.level_count}, mpp={mpp})"
        )


def open_slide(path: str | os.PathLike, backend: str | None = None) -> Slide:
    """Open a whole-slide image lazily.

    Parameters
    ----------
    path
        Slide file (.svs, .ndpi, .mrxs, .scn, .bif, .vms, (OME-)TIFF, PNG/JPEG/BMP).
    backend
        "openslide", "tifffile" or "image"; None chooses from the file's header.

    Raises
    ------
    InputFileError
        Missing, empty, truncated or unsupported file (the message names file and reason).
    """
    return Slide(path, backend=backend)
