"""Synthetic whole-slide images for the slide tests (tifffile writers, known content).

Content: white glass with one H&E-like elliptical tissue section (pink stroma with purple
nuclei), so tissue detection has a known answer and JPEG behaves like on real slides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_he(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 (h, w, 3), tissue truth bool (h, w)) with an elliptical section."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * 0.5, width * 0.45
    ry, rx = height * 0.32, width * 0.28
    truth = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    rgb = np.empty((height, width, 3), np.float32)
    rgb[:] = (244, 243, 246)
    rgb += 2.0 * rng.standard_normal(size=rgb.shape, dtype=np.float32)
    stroma = np.array([222, 150, 190], np.float32)
    texture = 10.0 * rng.standard_normal(size=(height, width, 1), dtype=np.float32)
    rgb[truth] = stroma + texture[truth]
    # nuclei: small dark purple discs inside the tissue
    n_nuclei = max(10, int(truth.sum() / 1500))
    ys = rng.integers(0, height, n_nuclei)
    xs = rng.integers(0, width, n_nuclei)
    for y, x in zip(ys, xs):
        if not truth[y, x]:
            continue
        r = int(rng.integers(3, 7))
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, height), max(x - r, 0), min(x + r + 1, width)
        disc = (yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2 <= r * r
        rgb[y0:y1, x0:x1][disc] = (95, 60, 150)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), truth


def mean_downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean downsample (rounded half up), the reference pyramid of the synthetic writers."""
    h, w = (rgb.shape[0] // factor) * factor, (rgb.shape[1] // factor) * factor
    blocks = rgb[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).astype(np.uint32)
    n = factor * factor
    return ((blocks.sum(axis=(1, 3)) + n // 2) // n).astype(np.uint8)


def pyramid_levels(rgb: np.ndarray, n_levels: int) -> list[np.ndarray]:
    return [rgb] + [mean_downsample(rgb, 2**i) for i in range(1, n_levels)]


def _fast(compression: str) -> dict:
    return {"level": 1} if compression in ("zlib", "adobe_deflate") else {}


def write_aperio_svs(
    path: Path,
    levels: list[np.ndarray],
    *,
    mpp: float | None = 0.25,
    app_mag: float | None = 40,
    compression: str = "jpeg",
    tile: int = 256,
) -> Path:
    """Tiled pyramidal TIFF with Aperio-style ImageDescriptions (as OpenSlide's 'aperio')."""
    import tifffile

    height0, width0 = levels[0].shape[:2]
    fields = ""
    if app_mag is not None:
        fields += f"|AppMag = {app_mag:g}"
    if mpp is not None:
        fields += f"|MPP = {mpp:.4f}"
    codec = {"jpeg": "JPEG/RGB Q=90", "zlib": "Deflate", "adobe_deflate": "Deflate"}.get(compression, compression)
    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate(levels):
            h, w = level.shape[:2]
            if i == 0:
                desc = f"Aperio Image Library v12.0.15 \r\n{width0}x{height0} ({tile}x{tile}) {codec}{fields}"
            else:
                desc = (
                    f"Aperio Image Library v12.0.15 \r\n{width0}x{height0} -> {w}x{h} - "
                    f"({tile}x{tile}) {codec}{fields}"
                )
            tif.write(
                level,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                compressionargs=_fast(compression),
                description=desc,
                metadata=None,
            )
            if i == 0:  # Aperio: the second IFD is a stripped thumbnail
                thumb = levels[-1][::2, ::2]
                tif.write(
                    thumb,
                    photometric="rgb",
                    description=f"Aperio Image Library v12.0.15 \r\n{width0}x{height0} -> "
                    f"{thumb.shape[1]}x{thumb.shape[0]} - |AppMag = 40",
                    metadata=None,
                )
    return path


def write_ome_subifd(
    path: Path,
    levels: list[np.ndarray],
    *,
    mpp: float | None = 0.5,
    compression: str = "zlib",
    tile: int = 256,
) -> Path:
    """OME-TIFF with the reduced levels as SubIFDs of the full-resolution page."""
    import tifffile

    metadata: dict = {"axes": "YXS"}
    if mpp is not None:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(
            levels[0],
            subifds=len(levels) - 1,
            tile=(tile, tile),
            photometric="rgb",
            compression=compression,
            compressionargs=_fast(compression),
            metadata=metadata,
        )
        for level in levels[1:]:
            tif.write(
                level,
                subfiletype=1,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                compressionargs=_fast(compression),
            )
    return path


def write_generic_tiff(path: Path, levels: list[np.ndarray], *, compression: str = "zlib", tile: int = 256) -> Path:
    """Plain tiled pyramidal TIFF (one page per level), no physical size anywhere."""
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate(levels):
            tif.write(
                level,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                compressionargs=_fast(compression),
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                resolutionunit=1,
            )
    return path
