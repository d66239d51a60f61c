"""Where tiles come from: a slide opened by path, an existing ``Slide``, or an in-memory array.

The engine only needs ``dimensions``, ``mpp`` and ``read_region`` from a slide, plus ``spec()``
when tiles fan out to other processes. :class:`ArraySlide` gives a numpy image the same
interface (a one-level slide), so images already in memory (a napari layer, a test image) run
through exactly the same tiling, merging and output code as whole-slide images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.slide import open_slide
from napari_histo.utils import HistoError, InputFileError


class ArraySlide:
    """A one-level, picklable slide over an (H, W, 3) uint8 array.

    Parameters
    ----------
    array : numpy.ndarray
        RGB image (H, W, 3) uint8; grey (H, W) and RGBA are converted.
    mpp : float, optional
        µm per pixel; None when unknown.
    name : str
        Label used for provenance and output names.
    """

    backend = "array"
    vendor = "array"
    level_count = 1
    objective_power = None

    def __init__(self, array: np.ndarray, mpp: float | None = None, name: str = "image"):
        array = np.asarray(array)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise HistoError(f"{name}: expected an RGB image (H, W, 3), got shape {array.shape}")
        if array.dtype != np.uint8:
            raise HistoError(f"{name}: expected uint8 pixels, got {array.dtype}")
        self.array = np.ascontiguousarray(array[..., :3])
        self.mpp = None if mpp is None else (float(mpp), float(mpp))
        self.path = name
        self.properties: dict[str, Any] = {}
        self.associated_images: dict[str, np.ndarray] = {}

    @property
    def dimensions(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[0])

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [self.dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [1.0]

    def read_region(self, location, size, resolution: float = 0, units: str = "level") -> np.ndarray:
        """Read ``size`` (w, h) output px at ``location`` (level-0 x, y); white outside the image.

        Only ``units="level"`` (level 0) and ``units="baseline"`` (scale factor vs level 0,
        nearest-neighbour sampling) are supported.
        """
        x0, y0 = int(location[0]), int(location[1])
        w, h = int(size[0]), int(size[1])
        if units == "level" and resolution == 0:
            factor = 1.0
        elif units == "baseline":
            factor = float(resolution)
        else:
            raise HistoError(f"{self.path}: ArraySlide cannot read at {resolution} {units}")
        H, W = self.array.shape[:2]
        if factor == 1.0:
            out = np.full((h, w, 3), 255, np.uint8)
            sx0, sy0 = max(x0, 0), max(y0, 0)
            sx1, sy1 = min(x0 + w, W), min(y0 + h, H)
            if sx1 > sx0 and sy1 > sy0:
                out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = self.array[sy0:sy1, sx0:sx1]
            return out
        xs = np.floor(x0 + (np.arange(w) + 0.5) / factor).astype(np.int64)
        ys = np.floor(y0 + (np.arange(h) + 0.5) / factor).astype(np.int64)
        okx, oky = (xs >= 0) & (xs < W), (ys >= 0) & (ys < H)
        out = np.full((h, w, 3), 255, np.uint8)
        out[np.ix_(oky, okx)] = self.array[np.ix_(ys[oky], xs[okx])]
        return out

    def spec(self) -> ArraySlide:
        """Picklable description for other processes: the array itself (small images only)."""
        return self

    def close(self) -> None:
        pass

    def __enter__(self) -> ArraySlide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_source(slide_or_path: Any, backend: str | None = None) -> tuple[Any, bool]:
    """Return ``(slide, owned)``: open a path with ``open_slide`` (owned=True, caller closes).

    An ``np.ndarray`` becomes an :class:`ArraySlide`; a slide object is used as is.
    """
    if isinstance(slide_or_path, np.ndarray):
        return ArraySlide(slide_or_path), True
    if isinstance(slide_or_path, str | os.PathLike):
        path = Path(slide_or_path)
        if not path.exists():
            raise InputFileError(path, "file not found")

        return open_slide(path, backend=backend), True
    if not hasattr(slide_or_path, "read_region") or not hasattr(slide_or_path, "dimensions"):
        raise HistoError(f"cannot segment a {type(slide_or_path).__name__}: expected a path, slide or array")
    return slide_or_path, False


def slide_mpp(slide: Any, override: float | None = None) -> float | None:
    """Level-0 µm/px: the override when given, else the slide's (mean of x and y), else None."""
    if override is not None:
        if not override > 0:
            raise HistoError(f"mpp must be > 0, got {override}")
        return float(override)
    mpp = getattr(slide, "mpp", None)
    if mpp is None:
        return None
    if isinstance(mpp, tuple | list):
        vals = [float(v) for v in mpp if v]
        return sum(vals) / len(vals) if vals else None
    return float(mpp)


def slide_spec(slide: Any) -> Any:
    """What a task carries to name a slide in another process (never an open handle)."""
    spec = getattr(slide, "spec", None)
    if spec is None:
        raise HistoError(f"{getattr(slide, 'path', slide)}: this slide cannot be sent to other processes")
    return spec()


def slide_name(slide_or_path: Any, slide: Any) -> str:
    """A short name for outputs and provenance."""
    if isinstance(slide_or_path, str | os.PathLike):
        return Path(slide_or_path).name
    return Path(str(getattr(slide, "path", "image"))).name
