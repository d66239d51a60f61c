"""HoVer-Net post-processing: np/hv(/tp) maps -> instance labels and a typed nucleus table.

Clean-room reimplementation of the official ``models/hovernet/post_proc.py``
(https://github.com/vqdang/hover_net) without OpenCV: the Sobel ``ksize=21`` kernels, the 3×3 Gaussian and the 5×5 elliptical
opening are rebuilt exactly as OpenCV defines them (reflect-101 borders).

Public functions
----------------
- :func:`instances_from_maps` -- the official watershed (§3.2); every constant is a parameter.
- :func:`type_instances` -- per-instance typing: official pixel vote + ``type_prob`` and the
  mean softmax probability vector.
- :func:`postprocess_maps` -- both of the above plus :func:`napari_histo.nuclei.measure.measure_instances`,
  returning ``(labels int32, nucleus table)``.
- :func:`sobel_kernels` -- OpenCV-compatible separable Sobel kernels (any odd size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_histo.nuclei.measure import measure_instances
from napari_histo.schema.types import TypeInfo

# Lazy imports: scipy, skimage are imported inside the functions that use them (directly or
# through the modules named there): importing this module stays light for the CLI and the napari
# manifest.

__all__ = [
    "HoverPostParams",
    "instances_from_maps",
    "type_instances",
    "postprocess_maps",
    "sobel_kernels",
    "remove_small_labels",
]


@dataclass(frozen=True)
class HoverPostParams:
    """Constants of the official post-processing (tuned upstream for 40× / ~0.25 µm/px).

    Attributes
    ----------
    np_threshold : float
        Foreground threshold on the nucleus probability (0.5).
    min_blob_px : int
        Foreground components smaller than this are removed (10; the IHC fork uses 3).
    sobel_ksize : int
        Sobel aperture on the normalised HV maps (21).
    marker_threshold : float
        Edge energy at or above which a pixel is not a marker (0.4).
    min_marker_px : int
        Markers smaller than this are removed (10; the IHC fork uses 2).
    opening_size : int
        Side of the elliptical structuring element opening the markers (5).
    """

    np_threshold: float = 0.5
    min_blob_px: int = 10
    sobel_ksize: int = 21
    marker_threshold: float = 0.4
    min_marker_px: int = 10
    opening_size: int = 5

    @classmethod
    def for_mpp(cls, mpp: float, reference_mpp: float = 0.25) -> HoverPostParams:
        """Official constants rescaled from 40× (0.25 µm/px) to ``mpp``: lengths by the ratio,
        areas by its square (odd kernel sizes kept). ``for_mpp(0.25)`` is the official set."""
        f = reference_mpp / float(mpp)
        if abs(f - 1.0) < 1e-6:
            return cls()

        def odd(v: float, lo: int) -> int:
            n = max(lo, int(round(v)))
            return n if n % 2 else n + 1

        return cls(
            min_blob_px=max(1, int(round(10 * f * f))),
            sobel_ksize=odd(21 * f, 3),
            min_marker_px=max(1, int(round(10 * f * f))),
            opening_size=odd(5 * f, 1),
        )


def sobel_kernels(ksize: int) -> tuple[np.ndarray, np.ndarray]:
    """(derivative, smoothing) 1-D kernels as OpenCV ``getDerivKernels(1, 0, ksize)`` builds them.

    Smoothing = binomial of length ``ksize``; derivative = binomial of length ``ksize - 1``
    convolved with ``[-1, 1]`` (so ``[-1, 0, 1]`` for ``ksize = 3``). Not normalised.
    """
    if ksize < 3 or ksize % 2 == 0:
        raise ValueError(f"Sobel ksize must be odd and >= 3, got {ksize}")

    def binomial(n: int) -> np.ndarray:
        k = np.array([1.0])
        for _ in range(n - 1):
            k = np.convolve(k, [1.0, 1.0])
        return k

    smooth = binomial(ksize)
    deriv = np.convolve(binomial(ksize - 1), [-1.0, 1.0])
    return deriv, smooth


def _minmax(a: np.ndarray) -> np.ndarray:
    """cv2.normalize(NORM_MINMAX, 0..1); a constant array maps to 0."""
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= np.finfo(np.float64).eps:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def remove_small_labels(labels: np.ndarray, min_px: int) -> np.ndarray:
    """Zero every label with fewer than ``min_px`` pixels (skimage's old ``min_size`` semantics)."""
    if min_px <= 1 or labels.max() == 0:
        return labels
    counts = np.bincount(labels.ravel())
    small = counts < min_px
    small[0] = False
    if small.any():
        labels = labels.copy()
        labels[small[labels]] = 0
    return labels


def cv_ellipse(size: int) -> np.ndarray:
    """``cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))`` as a bool array."""
    if size <= 1:
        return np.ones((1, 1), bool)
    r = size // 2
    out = np.zeros((size, size), bool)
    inv_r2 = 1.0 / (r * r)
    for i in range(size):
        dy = i - r
        if abs(dy) <= r:
            dx = int(round(r * np.sqrt(max(0.0, (r * r - dy * dy) * inv_r2))))
            out[i, max(0, r - dx) : min(size, r + dx + 1)] = True
    return out


def instances_from_maps(
    np_prob: np.ndarray, hv: np.ndarray, params: HoverPostParams | None = None
) -> np.ndarray:
    """Official marker-controlled watershed from the nucleus probability and HV maps.

    Parameters
    ----------
    np_prob : (H, W) float
        Foreground probability (softmax channel 1 of the ``np`` branch).
    hv : (H, W, 2) or (2, H, W) float
        Horizontal (x) map then vertical (y) map, each regressed to [-1, 1].
    params : HoverPostParams, optional
        Constants; defaults are the official 40× values.

    Returns
    -------
    labels : (H, W) int32
        Instance ids 1..N (watershed order; blobs without a marker are dropped).
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    p = params or HoverPostParams()
    np_prob = np.asarray(np_prob, dtype=np.float32)
    hv = np.asarray(hv, dtype=np.float32)
    if hv.ndim != 3:
        raise ValueError(f"hv must be (H, W, 2) or (2, H, W), got shape {hv.shape}")
    if hv.shape[0] == 2 and hv.shape[-1] != 2:
        hv = np.moveaxis(hv, 0, -1)
    if hv.shape[:2] != np_prob.shape:
        raise ValueError(f"np {np_prob.shape} and hv {hv.shape} maps differ in size")

    blb = ndi.label(np_prob >= p.np_threshold)[0]
    blb = remove_small_labels(blb, p.min_blob_px) > 0
    if not blb.any():
        return np.zeros(np_prob.shape, np.int32)

    h_dir = _minmax(hv[..., 0].astype(np.float64)).astype(np.float32)
    v_dir = _minmax(hv[..., 1].astype(np.float64)).astype(np.float32)
    deriv, smooth = sobel_kernels(p.sobel_ksize)
    # cv2.Sobel(h, CV_64F, 1, 0): derivative along x (axis 1), smoothing along y (axis 0)
    sobel_h = ndi.correlate1d(h_dir.astype(np.float64), deriv, axis=1, mode="mirror")
    sobel_h = ndi.correlate1d(sobel_h, smooth, axis=0, mode="mirror")
    sobel_v = ndi.correlate1d(v_dir.astype(np.float64), deriv, axis=0, mode="mirror")
    sobel_v = ndi.correlate1d(sobel_v, smooth, axis=1, mode="mirror")
    sobel_h = 1.0 - _minmax(sobel_h).astype(np.float32)
    sobel_v = 1.0 - _minmax(sobel_v).astype(np.float32)

    blb_f = blb.astype(np.float32)
    overall = np.maximum(sobel_h, sobel_v) - (1.0 - blb_f)
    overall[overall < 0] = 0
    dist = (1.0 - overall) * blb_f
    # cv2.GaussianBlur(dist, (3, 3), 0): fixed kernel [1/4, 1/2, 1/4]
    g = np.array([0.25, 0.5, 0.25])
    dist = ndi.correlate1d(ndi.correlate1d(dist.astype(np.float64), g, axis=0, mode="mirror"), g, axis=1, mode="mirror")
    dist = -dist

    marker = blb & ~(overall >= p.marker_threshold)
    marker = ndi.binary_fill_holes(marker)
    # cv2.MORPH_OPEN: erosion treats outside as foreground, dilation as background
    footprint = cv_ellipse(p.opening_size)
    marker = ndi.binary_erosion(marker, footprint, border_value=1)
    marker = ndi.binary_dilation(marker, footprint, border_value=0)
    markers = ndi.label(marker)[0]
    markers = remove_small_labels(markers, p.min_marker_px)
    labels = watershed(dist, markers=markers, mask=blb)
    return labels.astype(np.int32, copy=False)


#: Typing rules of :func:`type_instances`.
TYPE_RULES = ("official", "nucleus")


def type_instances(
    labels: np.ndarray,
    tp: np.ndarray,
    ids: np.ndarray | None = None,
    rule: str = "official",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Type every instance by the official pixel vote (or ``rule="nucleus"``), plus the mean class
    probabilities.

    Parameters
    ----------
    labels : (H, W) int
        Instance map.
    tp : (H, W) int or (H, W, C) / (C, H, W) float
        Per-pixel type argmax, or per-class probabilities (softmax of the ``tp`` branch). With
        probabilities the vote uses their argmax and the mean probability vector is returned too.
    ids : (N,) int, optional
        Instance ids to report, default every id > 0 in ascending order.
    rule : {"official", "nucleus"}
        "official": HoVer-Net's vote. "nucleus": the instance *is* a nucleus (the np branch said
        so), so class 0 (background) never wins: the most probable other class of the mean
        softmax (of the votes, for argmax input). For type heads trained on few typed images,
        whose background channel also covers nuclei of unseen tissue.

    Returns
    -------
    types : (N,) int64
        "official": majority class; when it is 0 (background) and another class occurs, the
        runner-up. "nucleus": the best class > 0 (0 only when no class > 0 has any vote).
    type_prob : (N,) float64
        "official": votes for ``types`` / (pixels + 1e-6) -- a vote fraction. "nucleus": the mean
        probability of ``types`` renormalised over the classes > 0 (vote fraction among them
        for argmax input).
    probs : (N, C) float32 or None
        Mean softmax over the instance pixels (real class probabilities), None for argmax input.
    """
    labels = np.asarray(labels)
    if ids is None:
        ids = np.unique(labels)
        ids = ids[ids > 0]
    ids = np.asarray(ids, dtype=np.int64)
    tp = np.asarray(tp)
    probs_map = None
    if tp.ndim == 3:
        if tp.shape[:2] != labels.shape and tp.shape[1:] == labels.shape:
            tp = np.moveaxis(tp, 0, -1)
        probs_map = tp.astype(np.float32, copy=False)
        argmax = probs_map.argmax(axis=-1)
        n_cls = probs_map.shape[-1]
    else:
        argmax = tp.astype(np.int64, copy=False)
        n_cls = int(argmax.max()) + 1 if argmax.size else 1
    if argmax.shape != labels.shape:
        raise ValueError(f"type map {argmax.shape} and labels {labels.shape} differ in size")
    if len(ids) == 0:
        empty_probs = np.zeros((0, n_cls), np.float32) if probs_map is not None else None
        return np.zeros(0, np.int64), np.zeros(0, np.float64), empty_probs

    # compact id space: position of each label in `ids` (+1), 0 elsewhere
    flat = labels.ravel()
    fg = flat > 0
    lab = flat[fg]
    pos = np.searchsorted(ids, lab)
    pos = np.clip(pos, 0, len(ids) - 1)
    keep = ids[pos] == lab
    pos = pos[keep]
    cls = argmax.ravel()[fg][keep].astype(np.int64)
    votes = np.bincount(pos * n_cls + cls, minlength=len(ids) * n_cls).reshape(len(ids), n_cls)
    npix = votes.sum(axis=1)
    probs = None
    if probs_map is not None:
        pm = probs_map.reshape(-1, n_cls)[fg][keep]
        sums = np.stack([np.bincount(pos, weights=pm[:, c], minlength=len(ids)) for c in range(n_cls)], axis=1)
        probs = (sums / np.maximum(npix, 1)[:, None]).astype(np.float32)
    rows = np.arange(len(ids))
    if rule == "nucleus" and n_cls > 1:
        score = probs if probs is not None else votes.astype(np.float64)
        types = (score[:, 1:].argmax(axis=1) + 1).astype(np.int64)
        total = score[:, 1:].sum(axis=1)
        type_prob = np.where(total > 0, score[rows, types] / np.maximum(total, 1e-12), 0.0)
        types[total <= 0] = 0
        return types, type_prob.astype(np.float64), probs
    if rule not in TYPE_RULES:
        raise ValueError(f"unknown typing rule {rule!r}; expected one of {TYPE_RULES}")
    order = np.argsort(-votes, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1] if n_cls > 1 else order[:, 0]
    second_count = votes[rows, second]
    use_second = (first == 0) & (second_count > 0) & (n_cls > 1)
    types = np.where(use_second, second, first).astype(np.int64)
    type_prob = votes[rows, types] / (npix + 1.0e-6)
    return types, type_prob.astype(np.float64), probs


def postprocess_maps(
    np_prob: np.ndarray,
    hv: np.ndarray,
    tp: np.ndarray | None = None,
    *,
    mpp: float | None = None,
    type_info: TypeInfo | None = None,
    params: HoverPostParams | None = None,
    type_rule: str = "official",
) -> tuple[np.ndarray, pd.DataFrame]:
    """Maps of one tile -> ``(labels int32, nucleus table in tile px)``.

    ``tp`` may be the per-class probabilities (H, W, C) -- giving the ``probs`` column -- or an
    argmax map (H, W) as the official pipeline stores; None for untyped models
    (``type`` = 1 "nucleus", ``type_prob`` = 1.0).
    """
    labels = instances_from_maps(np_prob, hv, params)
    table = measure_instances(labels, mpp=mpp, type_info=type_info)
    assign_types(table, labels, tp, type_rule)
    return labels, table


def assign_types(table: pd.DataFrame, labels: np.ndarray, tp: np.ndarray | None, rule: str = "official") -> None:
    """Fill ``type``, ``type_prob`` (and ``probs`` for probability maps) of ``table`` in place.

    ``labels`` is the instance map on ``tp``'s grid; nothing happens for untyped models.
    ``rule``: see :func:`type_instances`.
    """
    if tp is None or not len(table):
        return
    types, type_prob, probs = type_instances(labels, tp, table["id"].to_numpy(), rule)
    table["type"] = types
    table["type_prob"] = type_prob
    if probs is not None:
        table["probs"] = list(probs)
