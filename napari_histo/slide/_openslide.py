"""OpenSlide backend: vendor formats (Aperio, Hamamatsu, MIRAX, Leica, Ventana, Philips...)."""

from __future__ import annotations

import os

import numpy as np

from napari_histo.slide._describe import openslide_vendor  # noqa: F401  (re-exported)
from napari_histo.slide._metadata import mpp_from_openslide, power_from_openslide
from napari_histo.utils import InputFileError

# Lazy imports: openslide is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.


def rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite OpenSlide's (non-premultiplied) RGBA on white; transparent = outside the scan."""
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    weight = alpha[..., None].astype(np.float32) / 255.0
    blended = rgba[..., :3].astype(np.float32) * weight + 255.0 * (1.0 - weight)
    return np.round(blended).astype(np.uint8)


class OpenSlideBackend:
    """Pixels and metadata through openslide-python (thread-safe reads on one handle)."""

    name = "openslide"

    def __init__(self, path: str | os.PathLike):
        import openslide

        self.path = str(path)
        try:
            self._slide = openslide.OpenSlide(self.path)
        except Exception as exc:  # OpenSlideUnsupportedFormatError, OpenSlideError
            raise InputFileError(self.path, f"OpenSlide cannot open it ({exc})") from exc
        slide = self._slide
        try:
            self.properties = dict(slide.properties)
            self.vendor = self.properties.get("openslide.vendor", "unknown")
            self.level_dimensions = [tuple(int(v) for v in d) for d in slide.level_dimensions]
            self.level_downsamples = [float(d) for d in slide.level_downsamples]
            self.tile_sizes = []
            for level in range(slide.level_count):
                tw = self.properties.get(f"openslide.level[{level}].tile-width")
                th = self.properties.get(f"openslide.level[{level}].tile-height")
                self.tile_sizes.append((int(tw), int(th)) if tw and th else None)
            self.mpp = mpp_from_openslide(self.properties)
            self.objective_power = power_from_openslide(self.properties)
            self._associated = list(slide.associated_images.keys())
        except Exception as exc:
            self.close()
            raise InputFileError(self.path, f"cannot read slide metadata ({exc})") from exc

    def associated_names(self) -> list[str]:
        return list(self._associated)

    def associated(self, name: str) -> np.ndarray:
        image = self._slide.associated_images[name]
        return rgba_to_rgb_on_white(np.asarray(image.convert("RGBA")))

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) at level pixels; the box lies inside the level."""
        downsample = self.level_downsamples[level]
        if level == 0:
            location = (x, y)
        else:
            # OpenSlide wants level-0 coordinates and maps them back with the same downsample.
            location = (int(round(x * downsample)), int(round(y * downsample)))
        try:
            image = self._slide.read_region(location, level, (width, height))
        except Exception as exc:
            raise InputFileError(self.path, f"cannot decode pixels at level {level} ({exc})") from exc
        return rgba_to_rgb_on_white(np.asarray(image))

    def close(self) -> None:
        slide = getattr(self, "_slide", None)
        if slide is not None:
            slide.close()
            self._slide = None


