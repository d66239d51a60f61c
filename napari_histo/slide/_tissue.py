"""Tissue detection, in one place.

- :func:`detect_tissue` / :func:`tissue_mask`: the slide-level mask (thumbnail): Otsu on optical
  density and saturation with floors, then morphology sized in µm; used by the engine's tile
  plan and the viewer.
- :func:`tissue_pixels` / :func:`tissue_fraction`: a fixed colour rule for small crops and tiles
  (not white glass, not black padding, some saturation), where a per-image Otsu threshold would
  be unstable; used to pick magnification crops and classification tiles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from napari_histo.slide._slide import Slide
from napari_histo.utils import HistoError, InputFileError

# Lazy imports: PIL, scipy, skimage are imported inside the functions that use them (directly or
# through the modules named there): importing this module stays light for the CLI and the napari
# manifest.

#: Floors under the Otsu thresholds, so a slide with no tissue yields an (almost) empty mask.
MIN_OD = 0.15  # summed RGB optical density; clean glass is about 0.0-0.1
MIN_SATURATION = 0.07


@dataclass(frozen=True)
class TissueMask:
    """Boolean tissue mask at low resolution.

    ``mask[row, col]`` covers level-0 pixels ``[col * downsample, (col + 1) * downsample)``
    horizontally (same vertically), so it aligns with level 0 by scaling alone.
    """

    mask: np.ndarray
    downsample: float
    source: str = "auto"

    @property
    def fraction(self) -> float:
        """Share of the slide covered by tissue (0-1)."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def region_fraction(self, location: tuple[float, float], size: tuple[float, float]) -> float:
        """Share of tissue inside a level-0 box ``location`` (x, y), ``size`` (w, h)."""
        x0 = int(np.floor(location[0] / self.downsample))
        y0 = int(np.floor(location[1] / self.downsample))
        x1 = int(np.ceil((location[0] + size[0]) / self.downsample))
        y1 = int(np.ceil((location[1] + size[1]) / self.downsample))
        window = self.mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
        area = max(x1 - x0, 1) * max(y1 - y0, 1)
        return float(window.sum()) / area

    def contains(self, x: float, y: float) -> bool:
        """True when level-0 point (x, y) lies on tissue."""
        row, col = int(y // self.downsample), int(x // self.downsample)
        if 0 <= row < self.mask.shape[0] and 0 <= col < self.mask.shape[1]:
            return bool(self.mask[row, col])
        return False


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    if values.size == 0 or float(values.max()) == float(values.min()):
        return float(values.max()) if values.size else 0.0
    return float(threshold_otsu(values))


def tissue_pixels(rgb: np.ndarray) -> np.ndarray:
    """Boolean map of stained pixels of an RGB crop: R+G+B between 60 and 660 (neither black
    nor white) and max - min channel above 12 (some colour)."""
    small = np.asarray(rgb)[..., :3].astype(np.int16)
    grey = small.sum(axis=2)
    sat = small.max(axis=2) - small.min(axis=2)
    return (grey < 660) & (grey > 60) & (sat > 12)


def tissue_fraction(rgb: np.ndarray, step: int = 4) -> float:
    """Fraction of stained pixels (:func:`tissue_pixels`) on every ``step``-th row and column."""
    return float(tissue_pixels(np.asarray(rgb)[::step, ::step]).mean())


def detect_tissue(rgb: np.ndarray, pixel_um: float | None = None) -> np.ndarray:
    """Boolean tissue mask of an RGB image (white glass background, stained tissue).

    Otsu thresholds on summed optical density and on saturation (each with a floor so blank
    glass stays empty), then closing, small-object removal and small-hole filling. Object and
    hole sizes scale with ``pixel_um`` (µm per pixel) when known.
    """
    from scipy import ndimage
    from skimage import morphology

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise HistoError(f"tissue detection needs an RGB image, got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.float32)
    od = -np.log((rgb + 1.0) / 256.0).sum(axis=2)
    high = rgb.max(axis=2)
    saturation = np.where(high > 0, (high - rgb.min(axis=2)) / np.maximum(high, 1.0), 0.0)
    dark = high < 25  # black padding or scanner artefacts, not tissue
    od_threshold = max(_otsu(od[~dark]) if (~dark).any() else MIN_OD, MIN_OD)
    sat_threshold = max(min(_otsu(saturation[~dark]) if (~dark).any() else 1.0, 0.25), MIN_SATURATION)
    tissue = (od > od_threshold) & (saturation > sat_threshold) & ~dark
    # Morphology in mask pixels: about 20 µm closing, 1e4 µm² minimum object, 5e4 µm² holes.
    px_um = pixel_um if pixel_um and pixel_um > 0 else max(1.0, 4.0)
    radius = max(1, int(round(20.0 / px_um)))
    tissue = _closing(tissue, radius)
    tissue = ndimage.binary_opening(tissue, structure=morphology.disk(1))
    min_object = max(4, int(round(1e4 / px_um**2)))
    max_hole = max(4, int(round(5e4 / px_um**2)))
    tissue = morphology.remove_small_objects(tissue, max_size=min_object)
    tissue = morphology.remove_small_holes(tissue, max_size=max_hole)
    return tissue.astype(bool)


def _closing(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary closing with a disk of ``radius`` via distance transforms (O(n) for any radius)."""
    from scipy import ndimage

    if not mask.any():
        return mask
    pad = int(np.ceil(radius)) + 1
    padded = np.pad(mask, pad)
    dilated = ndimage.distance_transform_edt(~padded) <= radius
    closed = ndimage.distance_transform_edt(dilated) > radius
    return closed[pad:-pad, pad:-pad]


def _load_user_mask(mask: np.ndarray | str | os.PathLike) -> np.ndarray:
    if isinstance(mask, (str, os.PathLike)):
        from PIL import Image

        try:
            with Image.open(mask) as image:
                array = np.asarray(image.convert("L"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputFileError(mask, f"cannot read the tissue mask image ({exc})") from None
    else:
        array = np.asarray(mask)
    if array.ndim == 3:
        array = array[..., :3].max(axis=2)
    if array.ndim != 2 or array.size == 0:
        raise HistoError(f"a tissue mask must be a 2-D image, got shape {array.shape}")
    return array > 0


def tissue_mask(
    source: Slide | np.ndarray,
    *,
    mask: np.ndarray | str | os.PathLike | None = None,
    max_size: int = 1024,
    downsample: float = 1.0,
) -> TissueMask:
    """Tissue mask of a slide (or of an RGB array), aligned with level 0 via ``downsample``.

    Parameters
    ----------
    source
        A :class:`Slide` (detected on a thumbnail at most ``max_size`` px) or an RGB array
        whose pixels are ``downsample`` level-0 pixels wide.
    mask
        User-supplied mask (array or image file; non-zero = tissue) used instead of detection;
        it must cover the whole slide with the slide's aspect ratio.
    """
    if isinstance(source, Slide):
        width0, height0 = source.dimensions
        if mask is not None:
            user = _load_user_mask(mask)
            ds_x, ds_y = width0 / user.shape[1], height0 / user.shape[0]
            if abs(ds_x - ds_y) > 0.02 * max(ds_x, ds_y) + 1.0:
                raise InputFileError(
                    str(mask) if isinstance(mask, (str, os.PathLike)) else "<mask array>",
                    f"mask {user.shape[1]}x{user.shape[0]} does not match the slide's aspect "
                    f"ratio ({width0}x{height0})",
                )
            return TissueMask(user, float(ds_x), source="user")
        thumb = source.thumbnail(max_size)
        ds = width0 / thumb.shape[1]
        pixel_um = source.mpp[0] * ds if source.mpp else None
        return TissueMask(detect_tissue(thumb, pixel_um), float(ds), source="auto")
    if mask is not None:
        return TissueMask(_load_user_mask(mask), float(downsample), source="user")
    return TissueMask(detect_tissue(np.asarray(source)), float(downsample), source="auto")


def tissue_region_origin(slide: Slide, region_size: int) -> tuple[int, int]:
    """Level-0 top-left of a ``region_size`` square of ``slide`` centred on its densest tissue."""
    from scipy import ndimage

    width0, height0 = slide.dimensions
    mask = tissue_mask(slide)
    window = max(1, int(round(region_size / mask.downsample)))
    if mask.mask.any():
        density = ndimage.uniform_filter(mask.mask.astype(np.float32), size=window, mode="constant")
        row, col = np.unravel_index(int(np.argmax(density)), density.shape)
        cx, cy = (col + 0.5) * mask.downsample, (row + 0.5) * mask.downsample
    else:
        cx, cy = width0 / 2, height0 / 2
    x = int(min(max(cx - region_size / 2, 0), max(width0 - region_size, 0)))
    y = int(min(max(cy - region_size / 2, 0), max(height0 - region_size, 0)))
    return x, y
