"""tifffile + zarr 3 backend: the ONLY module that touches tifffile's zarr store.

Pinned pair (see pyproject): tifffile < 2026.5.2 and zarr < 3.2. In this range
``TiffPageSeries.aszarr()`` returns a ``ZarrTiffStore`` that ``zarr.open`` reads as a group
with one array per pyramid level (keys "0", "1", ... in no guaranteed order, so they are
sorted numerically) or, for a single level, as one array. Chunks are the native tiles.
Round-trip tests (tests/test_slide_formats.py: OME SubIFD and Aperio pyramids through
zarr vs the source pixels) fail loudly if an upgrade changes this.

Covers OME-TIFF (SubIFD pyramids), Aperio SVS read without OpenSlide, and any tiled or
striped TIFF that OpenSlide declines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

import numpy as np

from napari_histo.slide._describe import tiff_header_ok  # noqa: F401  (re-exported)
from napari_histo.slide._metadata import (
    mpp_from_tiff_resolution,
    mpp_power_from_aperio,
    mpp_power_from_ome,
    parse_aperio_description,
)
from napari_histo.utils import InputFileError

# Lazy imports: tifffile, zarr are imported inside the functions that use them (directly or
# through the modules named there): importing this module stays light for the CLI and the napari
# manifest.

_ASSOCIATED_NAMES = {"label": "label", "macro": "macro", "thumbnail": "thumbnail"}


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's structure warnings while probing; problems surface as InputFileError."""
    logger = logging.getLogger("tifffile")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _rgb(array: np.ndarray) -> np.ndarray:
    """Coerce a decoded TIFF array (Y, X[, S]) to RGB uint8."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        elif np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize == 2:
            array = (array >> 8).astype(np.uint8)
        else:
            array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        blended = array[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(blended).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


class TiffBackend:
    """Pixels and metadata of a (pyramidal) TIFF through tifffile and zarr 3."""

    name = "tifffile"

    def __init__(self, path: str | os.PathLike):
        import tifffile

        self.path = str(path)
        self._store = None
        self._arrays: list | None = None  # zarr arrays, opened on the first pixel read
        try:
            with _quiet_tifffile():
                self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # tifffile raises many types for broken files
            raise InputFileError(self.path, f"not a readable TIFF ({exc})") from exc
        try:
            self._tif.filehandle.set_lock(True)  # zarr reads may come from several threads
            with _quiet_tifffile():
                series = self._tif.series
            if not series:
                raise InputFileError(self.path, "the TIFF holds no image")
            self._series = series[0]
            if self._series.ndim < 2 or self._series.ndim > 3 or (
                self._series.ndim == 3 and self._series.shape[-1] not in (1, 3, 4)
            ):
                raise InputFileError(
                    self.path,
                    f"image shape {self._series.shape} ({self._series.axes}) is not a 2-D "
                    "grey or RGB slide",
                )
            if not self._series.levels:
                raise InputFileError(self.path, "the TIFF holds no pyramid level")
            self._lock = threading.Lock()
            self._check_data_inside_file()
            self._init_metadata()
        except InputFileError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise InputFileError(self.path, f"cannot read TIFF structure ({exc})") from exc

    def _check_data_inside_file(self) -> None:
        """Refuse a truncated file: every level's tiles or strips must end inside the file."""
        size = os.path.getsize(self.path)
        for number, level in enumerate(self._series.levels):
            page = level.keyframe
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
            if ends and max(ends) > size:
                raise InputFileError(self.path, f"truncated: the pixels of level {number} run to byte "
                                                f"{max(ends):,} but the file has {size:,} bytes")

    # -- metadata -------------------------------------------------------------------------
    def _init_metadata(self) -> None:
        tif = self._tif
        page = self._series.levels[0].keyframe if hasattr(self._series.levels[0], "keyframe") else tif.pages[0]
        self.level_dimensions = [(int(level.shape[1]), int(level.shape[0])) for level in self._series.levels]
        width0 = self.level_dimensions[0][0]
        height0 = self.level_dimensions[0][1]
        self.level_downsamples = [
            float((width0 / w + height0 / h) / 2.0) for (w, h) in self.level_dimensions
        ]
        self.tile_sizes = []
        for level in self._series.levels:
            key = level.keyframe
            if key.is_tiled:
                self.tile_sizes.append((int(key.tilewidth), int(key.tilelength)))
            else:
                self.tile_sizes.append(None)
        description = page.description or ""
        self.properties: dict[str, str] = {
            "tiff.ImageDescription": description,
            "tifffile.series": self._series.name or "",
            "tifffile.axes": self._series.axes,
            "tifffile.compression": str(getattr(page.compression, "name", page.compression)),
        }
        self.mpp = None
        self.objective_power = None
        if tif.is_ome:
            self.vendor = "ome"
            self.mpp, self.objective_power = mpp_power_from_ome(tif.ome_metadata or "")
        elif description.startswith("Aperio"):
            self.vendor = "aperio"
            self.mpp, self.objective_power = mpp_power_from_aperio(description)
            for key, value in parse_aperio_description(description).items():
                self.properties[f"aperio.{key}"] = value
        else:
            self.vendor = "generic-tiff"
        if self.mpp is None and not tif.is_ome:
            tags = page.tags
            x_res, y_res, unit = tags.get("XResolution"), tags.get("YResolution"), tags.get("ResolutionUnit")
            if x_res is not None and y_res is not None and unit is not None:
                self.mpp = mpp_from_tiff_resolution(x_res.value, y_res.value, int(unit.value))
        if self.mpp:
            self.properties["mpp-x"], self.properties["mpp-y"] = str(self.mpp[0]), str(self.mpp[1])
        if self.objective_power:
            self.properties["objective-power"] = str(self.objective_power)

    def associated_names(self) -> list[str]:
        names = []
        for series in self._tif.series[1:]:
            name = (series.name or "").lower()
            if name in _ASSOCIATED_NAMES:
                names.append(_ASSOCIATED_NAMES[name])
        return names

    def associated(self, name: str) -> np.ndarray:
        for series in self._tif.series[1:]:
            if (series.name or "").lower() == name:
                with self._lock:
                    return _rgb(series.asarray())
        raise KeyError(name)

    # -- pixels ---------------------------------------------------------------------------
    def _level_arrays(self) -> list:
        """The levels as zarr arrays over tifffile's store, opened once, on the first pixel read
        (metadata alone, e.g. ``napari-histo info``, never loads zarr: see :meth:`probe`)."""
        if self._arrays is not None:
            return self._arrays
        import zarr

        with self._lock:
            if self._arrays is None:
                try:
                    self._store = self._series.aszarr()
                    node = zarr.open(self._store, mode="r")
                except Exception as exc:
                    raise InputFileError(self.path, f"cannot read TIFF structure ({exc})") from exc
                if isinstance(node, zarr.Group):
                    keys = sorted((k for k in node.array_keys() if k.isdigit()), key=int)
                    arrays = [node[k] for k in keys]
                else:
                    arrays = [node]
                if len(arrays) != len(self._series.levels):
                    raise InputFileError(self.path, f"the TIFF's zarr view has {len(arrays)} levels, its "
                                                    f"series {len(self._series.levels)}")
                self._arrays = arrays
        return self._arrays

    def probe(self, level: int) -> None:
        """Decode the tile (or strip) at the middle of ``level`` with tifffile alone: a broken
        file fails when it is opened, and opening for metadata (``napari-histo info``) never
        loads zarr. Layouts other than one chunky page per level fall back to a pixel read."""
        page = self._series.levels[level].keyframe
        width, height = self.level_dimensions[level]
        try:
            if getattr(page, "planarconfig", 1) != 1 or not page.dataoffsets:
                raise LookupError("not one chunky page")
            if page.is_tiled:
                across = -(-int(page.imagewidth) // int(page.tilewidth))
                index = (height // 2 // int(page.tilelength)) * across + width // 2 // int(page.tilewidth)
            else:
                index = height // 2 // max(1, int(page.rowsperstrip or page.imagelength))
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
            decode = page.decode
        except Exception:  # an unusual layout: let the pixel path judge it
            self.read_level(level, width // 2, height // 2, 1, 1)
            return
        if count == 0:
            return  # an empty (sparse) tile reads as fill, as the pixel path does
        try:
            with self._lock:
                handle = self._tif.filehandle
                handle.seek(offset)
                data = handle.read(count)
            decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)
        except Exception as exc:  # imagecodecs and tifffile raise many kinds for broken tiles
            raise InputFileError(self.path, f"cannot decode level {level} at x={width // 2}, y={height // 2} "
                                            f"({type(exc).__name__}: {exc})") from None

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) at level pixels; the box lies inside the level. A tile that
        cannot be decoded is an :class:`InputFileError` naming the file and the place."""
        array = self._level_arrays()[level]
        try:
            if array.ndim == 2:
                return _rgb(array[y : y + height, x : x + width])
            return _rgb(array[y : y + height, x : x + width, :])
        except Exception as exc:  # imagecodecs, zarr and tifffile raise many kinds for broken tiles
            raise InputFileError(self.path, f"cannot decode level {level} at x={x}, y={y} "
                                            f"({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None:
            try:
                store.close()
            except Exception:
                pass
            self._store = None
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
            self._tif = None




def tiff_probe(path: str | os.PathLike) -> dict[str, bool]:
    """Cheap structure probe (IFDs only, no pixels).

    ``ome_or_subifd``: OME-TIFF or a first page with SubIFDs (a pyramid OpenSlide would see as
    one level). ``tiled_rgb8``: the main series is tiled 8-bit RGB at every level, so the zarr
    path serves it with native tiles.
    """
    import tifffile

    result = {"ome_or_subifd": False, "tiled_rgb8": False}
    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            result["ome_or_subifd"] = bool(tif.is_ome or page.subifds)
            series = tif.series[0] if tif.series else None
            if series is not None and series.ndim == 3 and series.shape[-1] == 3:
                result["tiled_rgb8"] = series.dtype == np.uint8 and all(
                    level.keyframe.is_tiled for level in series.levels
                )
    except Exception:
        pass
    return result
