"""Report figures (PNG) of a density map and hotspots: slide thumbnail, heatmap, colour bar,
numbered hotspot outlines. Rendered with Pillow (no matplotlib needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from napari_histo.analysis.density import DensityMap
from napari_histo.utils import atomic_path

# Lazy imports: PIL is imported inside the functions that use it (directly or through the modules
# named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["render_density_png", "colourise"]

#: Perceptually uniform "viridis" anchors (matplotlib's), linearly interpolated.
_VIRIDIS = np.array([
    [68, 1, 84], [72, 35, 116], [64, 67, 135], [52, 94, 141], [41, 120, 142], [32, 144, 140],
    [34, 167, 132], [68, 190, 112], [121, 209, 81], [189, 222, 38], [253, 231, 37]], np.float64)


def colourise(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Values -> (h, w, 3) uint8 viridis colours (NaN -> black; caller masks them)."""
    v = np.nan_to_num((np.asarray(values, np.float64) - vmin) / max(vmax - vmin, 1e-12), nan=0.0)
    v = np.clip(v, 0, 1) * (len(_VIRIDIS) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_VIRIDIS) - 1)
    f = (v - lo)[..., None]
    return (_VIRIDIS[lo] * (1 - f) + _VIRIDIS[hi] * f).round().astype(np.uint8)


def render_density_png(
    dmap: DensityMap,
    path: str | os.PathLike,
    *,
    thumbnail: np.ndarray | None = None,
    thumbnail_downsample: float | None = None,
    hotspots: pd.DataFrame | None = None,
    title: str | None = None,
    max_size: int = 1024,
    alpha: float = 0.6,
) -> Path:
    """Write a PNG: thumbnail (optional) under the heatmap, colour bar with units, hotspots numbered by rank.

    Parameters
    ----------
    thumbnail : (h, w, 3) uint8, optional
        Slide overview; ``thumbnail_downsample`` = level-0 px per thumbnail px (default: fitted
        to the map's level-0 extent).
    hotspots : DataFrame, optional
        :func:`~napari_histo.analysis.hotspots.find_hotspots` output (circles or boxes).
    """
    from PIL import Image, ImageDraw, ImageFont

    h, w = dmap.array.shape
    extent_w, extent_h = w * dmap.pixel_size, h * dmap.pixel_size
    scale = max(extent_w, extent_h) / max_size  # level-0 px per output px
    out_w, out_h = max(1, int(round(extent_w / scale))), max(1, int(round(extent_h / scale)))
    values = dmap.array.astype(np.float64)
    finite = np.isfinite(values)
    vmax = float(values[finite].max()) if finite.any() else 1.0
    vmin = 0.0 if not finite.any() else min(0.0, float(values[finite].min()))
    rgb = Image.fromarray(colourise(values, vmin, vmax)).resize((out_w, out_h), Image.NEAREST)
    show = Image.fromarray(((finite & (values > vmin)) * 255).astype(np.uint8)).resize((out_w, out_h), Image.NEAREST)
    if thumbnail is not None:
        thumb = np.asarray(thumbnail)[..., :3].astype(np.uint8)
        ds = thumbnail_downsample or max(extent_w / thumb.shape[1], extent_h / thumb.shape[0])
        tw, th = int(round(thumb.shape[1] * ds / scale)), int(round(thumb.shape[0] * ds / scale))
        base = Image.new("RGB", (out_w, out_h), "white")
        base.paste(Image.fromarray(thumb).resize((max(tw, 1), max(th, 1)), Image.BILINEAR), (0, 0))
        mask = show.point(lambda p: int(p * alpha))
    else:
        base = Image.new("RGB", (out_w, out_h), "white")
        mask = show
    base.paste(rgb, (0, 0), mask)

    font = ImageFont.load_default()
    bar_w, pad, top = 18, 10, 26 if title else 8
    label_w = 70
    canvas = Image.new("RGB", (out_w + pad * 3 + bar_w + label_w, out_h + top + pad + 14), "white")
    canvas.paste(base, (pad, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 6), title, fill="black", font=font)
    draw.rectangle([pad - 1, top - 1, pad + out_w, top + out_h], outline="black")
    # colour bar
    bx = pad * 2 + out_w
    ramp = colourise(np.linspace(vmax, vmin, out_h)[:, None].repeat(bar_w, 1), vmin, vmax)
    canvas.paste(Image.fromarray(ramp), (bx, top))
    draw.rectangle([bx - 1, top - 1, bx + bar_w, top + out_h], outline="black")
    for frac in (0.0, 0.5, 1.0):
        v = vmax - frac * (vmax - vmin)
        y = top + int(frac * (out_h - 1))
        draw.line([bx + bar_w, y, bx + bar_w + 4, y], fill="black")
        draw.text((bx + bar_w + 6, max(0, y - 6)), f"{v:.3g}", fill="black", font=font)
    draw.text((bx, top + out_h + 4), dmap.units, fill="black", font=font)
    # hotspots (level-0 -> output px; map pixel edges start at level-0 -0.5)
    # outlines and rank labels are black on white, readable on any heatmap colour
    if hotspots is not None:
        for _, hs in hotspots.iterrows():
            x0, y0 = (hs["x0"] + 0.5) / scale + pad, (hs["y0"] + 0.5) / scale + top
            x1, y1 = (hs["x1"] + 0.5) / scale + pad, (hs["y1"] + 0.5) / scale + top
            shape = draw.ellipse if hs["mode"] == "circle" else draw.rectangle
            shape([x0, y0, x1, y1], outline="white", width=4)
            shape([x0 + 1, y0 + 1, x1 - 1, y1 - 1], outline="black", width=2)
            label = str(int(hs["rank"]))
            lx0, ly0, lx1, ly1 = draw.textbbox((0, 0), label, font=font)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            w, h = lx1 - lx0, ly1 - ly0
            draw.rectangle([cx - w / 2 - 3, cy - h / 2 - 3, cx + w / 2 + 3, cy + h / 2 + 3], fill="white",
                           outline="black")
            draw.text((cx - w / 2 - lx0, cy - h / 2 - ly0), label, fill="black", font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def render_overlay_png(rgb: np.ndarray, table: pd.DataFrame, path: str | os.PathLike,
                       origin: tuple[int, int] = (0, 0), line_width: int = 1) -> Path:
    """The image with every nucleus outline drawn in its type's colour (HoVer-Net's overlay PNG;
    colours from the table's type table, :mod:`napari_histo.schema.vocabulary` for types without one).
    ``origin`` is the level-0 position of ``rgb[0, 0]``."""
    from PIL import Image, ImageDraw

    from napari_histo.formats._common import table_type_info

    info = table_type_info(table)
    canvas = Image.fromarray(np.ascontiguousarray(np.asarray(rgb)[..., :3]).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    ox, oy = origin
    for contour, type_id in zip(table["contour"], table["type"], strict=True):
        pts = np.asarray(contour, float).reshape(-1, 2)
        if len(pts) < 2:
            continue
        xy = [(float(x) - ox, float(y) - oy) for x, y in pts]
        draw.line([*xy, xy[0]], fill=tuple(info.colour(int(type_id))), width=line_width)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
