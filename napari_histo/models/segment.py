"""Segment nuclei in one in-memory RGB image, at any size and resolution.

Public functions
----------------
- :func:`segment_image` -- ``(rgb, mpp, model) -> (labels int32, nucleus table)`` in input pixels.
- :func:`resize_labels` -- nearest-neighbour resize of a label map (pixel-centre aligned).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from napari_histo.nuclei.base import Segmenter
from napari_histo.nuclei.measure import measure_instances
from napari_histo.utils import HistoError

# Lazy imports: skimage is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["segment_image", "resize_labels", "RESAMPLE_TOLERANCE"]

#: Relative mpp difference below which the image is processed as is.
RESAMPLE_TOLERANCE = 0.05

#: Columns carried over (by id) when the table is re-measured at input resolution.
_CARRY = ("type", "type_prob", "probs", "dab_od", "positive")


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize: output pixel centre ``(i + 0.5) * in / out - 0.5`` (no new ids)."""
    h, w = labels.shape
    oh, ow = int(shape[0]), int(shape[1])
    ri = np.minimum(((np.arange(oh) + 0.5) * h / oh).astype(np.int64), h - 1)
    ci = np.minimum(((np.arange(ow) + 0.5) * w / ow).astype(np.int64), w - 1)
    return labels[ri[:, None], ci[None, :]]


def _resize_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    down = shape[0] < rgb.shape[0] or shape[1] < rgb.shape[1]
    out = resize(rgb, (shape[0], shape[1], rgb.shape[2]), order=1, preserve_range=True,
                 anti_aliasing=down, mode="reflect")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _as_segmenter(model, device: str | None) -> Segmenter:
    if isinstance(model, Segmenter) and not isinstance(model, str):
        return model
    from napari_histo.models import get_segmenter

    return get_segmenter(model, device=device)


def segment_image(
    rgb: np.ndarray,
    mpp: float | None,
    model: str | Segmenter = "default",
    device: str | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Detect nuclei in an RGB image and return them in the image's own pixels.

    Parameters
    ----------
    rgb : (H, W, 3|4) uint8
        Image (alpha dropped). Any size, including smaller than a model patch.
    mpp : float or None
        µm/px of ``rgb``. When it differs from the model's working resolution by more than
        5 % the image is resampled to it and the results mapped back; None = assume the
        model's resolution (a warning is issued).
    model : "classical", "default", a checkpoint/weights path, or a :class:`Segmenter`
    device : torch device for neural models (default: cuda > mps > cpu).

    Returns
    -------
    labels : (H, W) int32 instance map at input resolution
    table : nucleus table in input px (``attrs["mpp"] = mpp``)
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise HistoError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise HistoError(f"empty image (shape {rgb.shape})")
    rgb = rgb[..., :3]
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    seg = _as_segmenter(model, device)
    if mpp is None:
        warnings.warn(
            f"image resolution unknown: assuming the model's {seg.mpp:g} µm/px", stacklevel=2
        )
        mpp = float(seg.mpp)
    if not mpp > 0:
        raise HistoError(f"invalid resolution {mpp!r} µm/px")
    choose = getattr(seg, "for_resolution", None)
    if choose is not None:  # a model whose network runs on a coarser grid: no upsampling to it
        seg = choose(float(mpp))

    h, w = rgb.shape[:2]
    ratio = float(mpp) / float(seg.mpp)  # working px per input px
    resample = abs(ratio - 1.0) > RESAMPLE_TOLERANCE
    if not resample:
        labels, table = seg.segment(rgb)
        labels = np.asarray(labels, dtype=np.int32)
        if table.attrs.get("mpp") != mpp:
            area = table["area_px"].to_numpy(np.float64)
            table["area_um2"] = area * mpp * mpp
            table.attrs["mpp"] = float(mpp)
        return labels, table

    wh, ww = max(1, int(round(h * ratio))), max(1, int(round(w * ratio)))
    work = _resize_rgb(rgb, (wh, ww))
    work_labels, work_table = seg.segment(work)
    labels = resize_labels(np.asarray(work_labels), (h, w)).astype(np.int32)
    table = measure_instances(labels, mpp=float(mpp), type_info=None)
    table.attrs.update({k: v for k, v in work_table.attrs.items() if k != "mpp"})
    table.attrs["mpp"] = float(mpp)
    if len(table) and len(work_table):
        src = work_table.set_index("id")
        for col in _CARRY:
            if col in src.columns:
                table[col] = src[col].reindex(table["id"].to_numpy()).to_numpy()
        table["type"] = table["type"].fillna(0).astype("int64")
        table["type_prob"] = table["type_prob"].astype("float64")
    return labels, table
