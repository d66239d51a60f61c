"""Plain images (PNG, JPEG, BMP, small TIFF): one level held in memory."""

from __future__ import annotations

import os

import numpy as np

from napari_histo.utils import InputFileError

# Lazy imports: PIL is imported inside the functions that use it (directly or through the modules
# named there): importing this module stays light for the CLI and the napari manifest.

#: Refuse to decode plain images above this many pixels (a 16k x 16k RGB image is 768 MiB).
MAX_PIXELS = 16384 * 16384


class ImageBackend:
    """A single-level image decoded once with Pillow; the pyramid is computed lazily above it."""

    name = "image"

    def __init__(self, path: str | os.PathLike):
        from PIL import Image, UnidentifiedImageError

        self.path = str(path)
        try:
            with Image.open(self.path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise InputFileError(
                        self.path,
                        f"{image.width}x{image.height} px is too large for a plain image; "
                        "convert it to a tiled pyramidal TIFF",
                    )
                image.load()
                fmt = image.format or "image"
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    rgba = np.asarray(image.convert("RGBA"))
                    weight = rgba[..., 3:4].astype(np.float32) / 255.0
                    rgb = np.round(rgba[..., :3] * weight + 255.0 * (1 - weight)).astype(np.uint8)
                elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
                    data = np.asarray(image)
                    scale = 255.0 / max(float(data.max()), 1.0)
                    grey = np.round(data * scale).astype(np.uint8)
                    rgb = np.repeat(grey[..., None], 3, axis=2)
                else:
                    rgb = np.asarray(image.convert("RGB"))
        except InputFileError:
            raise
        except Image.DecompressionBombError as exc:  # Pillow's own limit, below ours
            raise InputFileError(self.path, f"too large for a plain image ({exc}); convert it to a tiled "
                                            "pyramidal TIFF") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InputFileError(self.path, f"not a readable image ({exc})") from exc
        self._rgb = np.ascontiguousarray(rgb)
        height, width = self._rgb.shape[:2]
        self.level_dimensions = [(int(width), int(height))]
        self.level_downsamples = [1.0]
        self.tile_sizes = [None]
        self.properties = {"image.format": fmt}
        self.vendor = "image"
        self.mpp = None
        self.objective_power = None

    def associated_names(self) -> list[str]:
        return []

    def associated(self, name: str) -> np.ndarray:
        raise KeyError(name)

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._rgb[y : y + height, x : x + width].copy()

    def close(self) -> None:
        self._rgb = np.zeros((0, 0, 3), np.uint8)
