"""Image helpers of the Hagnifinder predictor: reading an image file,
reflection padding and ImageNet normalisation, and the magnification <-> pixel-size rule
(``magnification = 10 / mpp``, 40x = 0.25 µm/px)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_histo.utils import InputFileError

# Lazy imports: PIL, openslide, tifffile, torch are imported inside the functions that use them
# (directly or through the modules named there): importing this module stays light for the CLI and
# the napari manifest.

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


def mag_to_mpp(magnification: float) -> float:
    """Objective magnification -> µm/px with the convention ``mag = 10 / mpp``."""
    return 10.0 / float(magnification)


def mpp_to_mag(mpp: float) -> float:
    """µm/px -> objective magnification (``10 / mpp``)."""
    return 10.0 / float(mpp)


def read_rgb(path: str | Path, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Read an image (TIFF, PNG, BMP, JPEG or an OpenSlide slide's level 0) as (h, w, 3) uint8."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif"):
        import openslide

        with openslide.OpenSlide(str(path)) as slide:
            x, y, w, h = region or (0, 0, *slide.dimensions)
            rgba = np.asarray(slide.read_region((x, y), 0, (w, h)))
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = 255
        return rgb
    if suffix in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(str(path))
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except Image.DecompressionBombError as exc:
            raise InputFileError(path, f"image too large to read whole ({exc})") from None
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = arr[..., :3]
    if region is not None:
        x, y, w, h = region
        arr = arr[y:y + h, x:x + w]
    return np.ascontiguousarray(arr.astype(np.uint8, copy=False))


def reflect_pad(rgb: np.ndarray, size: int) -> np.ndarray:
    """Pad (h, w, 3) to at least ``size`` per side by (repeated) reflection, then crop to size."""
    out = rgb
    while out.shape[0] < size or out.shape[1] < size:
        ph = min(max(0, size - out.shape[0]), out.shape[0] - 1)
        pw = min(max(0, size - out.shape[1]), out.shape[1] - 1)
        if ph == 0 and pw == 0:  # 1-px image: fall back to edge replication
            out = np.pad(out, ((0, max(0, size - out.shape[0])), (0, max(0, size - out.shape[1])), (0, 0)),
                         mode="edge")
            break
        out = np.pad(out, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
    return out[:size, :size]


def to_tensor(patches: np.ndarray):
    """(B, H, W, 3) uint8 -> ImageNet-normalised float tensor (B, 3, H, W)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()  # NCHW-contiguous (channels-last input crashed backward)
