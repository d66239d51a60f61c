"""Classical (weight-free) nucleus detector in the spirit of QuPath's watershed cell detection.

Pipeline (after QuPath's ``WatershedCellDetection``, https://qupath.readthedocs.io), every size in µm so it works at any resolution:

1. optical density ``OD = -log10(I / 255)`` and colour deconvolution (Ruifrok & Johnston stain
   vectors, as QuPath's defaults) -> haematoxylin OD (and DAB OD for H-DAB);
2. background subtraction by opening-by-reconstruction with a disk of ``background_radius_um``;
3. optional median, then Gaussian smoothing (``sigma_um``);
4. threshold (``threshold`` OD, or Otsu on the smoothed haematoxylin when ``threshold="auto"``,
   never below ``min_threshold``) combined with a local threshold (above the mean OD of the
   surrounding ``local_radius_um`` window, so pale borders between dark touching nuclei drop out
   and one global level need not fit pale and dark nuclei alike), a small closing
   (``close_um``, bridges the pale gaps of vesicular chromatin) and hole filling;
5. split touching nuclei by a watershed from h-maxima of the smoothed distance transform plus the
   scaled stain intensity ("split by shape" and intensity); objects much larger than the tile's
   median nucleus (``large_split_factor``) are split again by shape alone with a lower h
   (``large_split_h_um``), as merged pairs of nuclei are what makes them large;
6. boundary refinement: each nucleus' outline is smoothed on its own (Gaussian of its indicator,
   ``smooth_boundary_um``; ragged threshold edges become the smooth outlines nuclei have, and
   neighbours never merge);
7. size filters (``min_area_um2``/``max_area_um2``) and a minimum mean OD per nucleus; objects
   above ``max_area_um2`` (merged clusters) are re-thresholded at their own Otsu level and split
   again instead of being dropped (``resplit_oversize``), and small objects down to
   ``rescue_min_area_um2`` are kept when they stand out from their surroundings
   (``rescue_contrast``).

For H-DAB images the table also gets ``dab_od`` (mean DAB OD per nucleus) and ``positive``
(``dab_od >= positive_threshold``).

Public API
----------
- :class:`ClassicalParams` -- parameters in µm.
- :class:`ClassicalSegmenter` -- implements :class:`napari_histo.nuclei.base.Segmenter`.
- :func:`stain_od` -- per-stain optical densities of an RGB image.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from napari_histo.nuclei.measure import compact_ids, mean_per_instance, measure_instances
from napari_histo.schema.types import NUCLEUS_ONLY, TypeInfo

# Lazy imports: scipy, skimage are imported inside the functions that use them (directly or
# through the modules named there): importing this module stays light for the CLI and the napari
# manifest.

__all__ = ["ClassicalParams", "ClassicalSegmenter", "stain_od", "STAIN_VECTORS"]

#: Stain OD vectors (rows: stain 1, stain 2; RGB), QuPath / Ruifrok defaults.
STAIN_VECTORS: dict[str, np.ndarray] = {
    "he": np.array([[0.651, 0.701, 0.290], [0.216, 0.801, 0.558]]),
    "hdab": np.array([[0.650, 0.704, 0.286], [0.268, 0.570, 0.776]]),
}


_OD_LUT = (-np.log10(np.maximum(np.arange(256, dtype=np.float64), 1.0) / 255.0)).astype(np.float32)


def _stain_matrix(name: str) -> np.ndarray:
    """3×3 stain matrix (rows normalised; third = cross product residual, as QuPath)."""
    v = STAIN_VECTORS[name].astype(np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    third = np.cross(v[0], v[1])
    third /= np.linalg.norm(third)
    return np.vstack([v, third])


def stain_od(rgb: np.ndarray, stains: str = "he") -> np.ndarray:
    """(H, W, 3) float32 stain optical densities: [stain 1 (haematoxylin), stain 2, residual].

    ``stains`` is "he" (haematoxylin, eosin) or "hdab" (haematoxylin, DAB).
    """
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        od = _OD_LUT[rgb]
    else:
        od = -np.log10(np.clip(rgb.astype(np.float32), 1.0, 255.0) / 255.0)
    inv = np.linalg.inv(_stain_matrix(stains)).astype(np.float32)
    return (od.reshape(-1, 3) @ inv).reshape(od.shape).astype(np.float32)


@dataclass(frozen=True)
class ClassicalParams:
    """Detector parameters (µm and OD units). Defaults tuned on MoNuSeg (see docs/benchmarks).

    Attributes
    ----------
    pixel_size_um : float
        Analysis resolution (``Segmenter.mpp``); input is resampled to it by ``segment_image``.
    stains : str
        "he", "hdab" or "auto" (H-DAB when a clear DAB signal is present).
    background_radius_um : float
        Opening-by-reconstruction radius for background subtraction (≤ 0: off).
    median_radius_um : float
        Median filter radius (0: off).
    sigma_um : float
        Gaussian smoothing σ.
    threshold : float or "auto"
        Haematoxylin OD threshold; "auto" = Otsu of the smoothed image within tissue.
    min_threshold : float
        Lower bound for the automatic threshold.
    min_area_um2, max_area_um2 : float
        Nucleus size range.
    local_radius_um : float
        Half-width of the square window of the local threshold: a pixel is foreground only if its
        OD is also above the window's mean (≤ 0: global threshold only).
    split_h_um : float
        Seed prominence: h-maxima height (µm of distance) of the splitting landscape.
    split_od_um : float
        Weight of the stain in the splitting landscape: the smoothed OD, scaled by its 99th
        percentile inside the mask, adds up to this many µm to the distance transform (0: shape only).
    min_mean_od : float
        Minimum mean haematoxylin OD (after background subtraction) of a nucleus.
    positive_threshold : float
        Mean DAB OD at or above which a nucleus is called positive (H-DAB).
    threshold_scale : float
        Factor applied to the automatic (Otsu) threshold (below 1 keeps pale, vesicular nuclei).
    otsu_floor : float
        The automatic threshold is Otsu's over pixels above this OD (background excluded).
    boundary_expand_um : float
        Grow every nucleus by this distance without merging (``expand_labels``).
    close_um : float
        Radius of the binary closing of the foreground before hole filling (0: off).
    smooth_boundary_um : float
        σ of the per-nucleus outline smoothing after the watershed (0: off).
    detection_image : str
        Channel nuclei are detected in: "haematoxylin" (deconvolved), "od_sum" (mean OD of
        the three channels, QuPath's alternative) or "od_red" (red-channel OD).
    large_split_factor : float
        Objects larger than this many times the median object area of the image are split again
        by shape alone (h-maxima of the smoothed distance transform, ``large_split_h_um``; 0: off).
    large_split_h_um : float
        h-maxima height (µm of distance) of that second split.
    resplit_oversize : bool
        Re-threshold objects above ``max_area_um2`` at the Otsu level of their own OD and split
        them again (pieces within the size range are kept) instead of dropping them.
    rescue_min_area_um2 : float
        Objects between this area and ``min_area_um2`` are kept when their mean OD exceeds that of
        the surrounding ring (``rescue_ring_um`` wide) by ``rescue_contrast`` × the threshold
        (≥ ``min_area_um2``: off).
    rescue_contrast : float
        Contrast (in units of the threshold) a small object needs to be kept.
    rescue_ring_um : float
        Width of the ring around an object its contrast is measured against.
    """

    pixel_size_um: float = 0.25
    stains: str = "auto"
    background_radius_um: float = 8.0
    median_radius_um: float = 0.0
    sigma_um: float = 0.35
    threshold: float | str = "auto"
    min_threshold: float = 0.1
    min_area_um2: float = 12.0
    max_area_um2: float = 200.0
    local_radius_um: float = 4.0
    split_h_um: float = 0.35
    split_od_um: float = 1.0
    min_mean_od: float = 0.1
    positive_threshold: float = 0.2
    detection_image: str = "haematoxylin"
    threshold_scale: float = 0.8
    otsu_floor: float = 0.0
    boundary_expand_um: float = 0.0
    close_um: float = 0.5
    smooth_boundary_um: float = 1.75
    large_split_factor: float = 1.75
    large_split_h_um: float = 0.15
    resplit_oversize: bool = True
    rescue_min_area_um2: float = 8.0
    rescue_contrast: float = 1.0
    rescue_ring_um: float = 1.5


def _disk(radius_px: float) -> np.ndarray:
    r = max(int(round(radius_px)), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy) <= r * r


@functools.lru_cache(maxsize=1)
def _hed_matrix() -> np.ndarray:
    """Inverse of the haematoxylin / eosin / DAB unit OD vectors (rows): OD -> three stain amounts."""
    vectors = np.stack([STAIN_VECTORS["he"][0], STAIN_VECTORS["he"][1], STAIN_VECTORS["hdab"][1]]).astype(np.float64)
    return np.linalg.inv(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _stain_evidence(rgb: np.ndarray) -> tuple[bool, bool]:
    """(H-DAB-like, clearly eosin-stained) for an RGB image, from a joint haematoxylin / eosin /
    DAB unmixing of its tissue.

    H-DAB-like: DAB present (99th percentile > 0.5 OD, > 2 % of tissue above 0.3 OD) and eosin
    nearly absent (99th percentile < 0.3 OD and < half the DAB's). Clearly eosin-stained: eosin
    99th percentile >= 0.3 OD. (False, False) without enough tissue.
    """
    small = rgb[::4, ::4, :3]
    od = _OD_LUT[small] if small.dtype == np.uint8 else -np.log10(np.clip(small.astype(np.float32), 1.0, 255.0) / 255.0)
    od = od.reshape(-1, 3)
    tissue = od.sum(axis=-1) > 0.15
    if tissue.sum() < 50:
        return False, False
    amounts = od[tissue] @ _hed_matrix()
    eosin, dab = amounts[:, 1], amounts[:, 2]
    dab_p99, eosin_p99 = float(np.percentile(dab, 99)), float(np.percentile(eosin, 99))
    dab_present = float((dab > 0.3).mean()) > 0.02 and dab_p99 > 0.5
    return dab_present and eosin_p99 < min(0.3, 0.5 * dab_p99), eosin_p99 >= 0.3


def _detect_stains(rgb: np.ndarray) -> str:
    """"hdab" when a clear brown (DAB) signal is present and eosin is not, else "he".

    The tissue is unmixed into haematoxylin, eosin and DAB at once (:func:`_stain_evidence`). In
    strongly stained H&E the eosin/haematoxylin mix and dark pigment also project onto the DAB axis
    of an H-DAB unmixing, which alone called 19 of 82 real H&E images H-DAB.
    """
    return "hdab" if _stain_evidence(rgb)[0] else "he"


class ClassicalSegmenter:
    """QuPath-like watershed nucleus detector (no weights), a :class:`Segmenter`.

    ``predict`` returns the stain ODs (the per-pixel work), ``postprocess`` the instances.
    """

    def __init__(self, params: ClassicalParams | None = None, **overrides):
        p = params or ClassicalParams()
        self.params = replace(p, **overrides) if overrides else p
        self.name = "classical"
        self.mpp = float(self.params.pixel_size_um)
        self.type_info: TypeInfo = NUCLEUS_ONLY
        max_diam_um = 2.0 * np.sqrt(self.params.max_area_um2 / np.pi)
        self.halo_px = int(np.ceil((max_diam_um + 2 * self.params.background_radius_um) / self.mpp))

    def __repr__(self) -> str:
        return f"ClassicalSegmenter({self.params})"

    def for_slide(self, samples: list[np.ndarray]) -> ClassicalSegmenter:
        """This detector with ``stains`` decided once from sample regions of a slide (when "auto"),
        so all its tiles use the same deconvolution and carry the same columns: H-DAB when some
        region looks H-DAB and none is clearly eosin-stained."""
        if self.params.stains != "auto" or not samples:
            return self
        evidence = [_stain_evidence(np.asarray(sample)) for sample in samples]
        # H-DAB when some region looks H-DAB (positive cells can be sparse) and none shows eosin
        hdab = any(like for like, _ in evidence) and not any(eosin for _, eosin in evidence)
        return ClassicalSegmenter(replace(self.params, stains="hdab" if hdab else "he"))

    def config(self) -> dict:
        """Parameters as a JSON-able dict (for run.json)."""
        return asdict(self.params)

    # -- Segmenter protocol -------------------------------------------------
    def predict(self, rgb: np.ndarray) -> dict | list[dict]:
        """Stain ODs of one (H, W, 3) tile or a (B, H, W, 3) batch."""
        rgb = np.asarray(rgb)
        if rgb.ndim == 4:
            return [self.predict(t) for t in rgb]
        if rgb.ndim != 3 or rgb.shape[-1] < 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        rgb = rgb[..., :3]
        stains = self.params.stains
        if stains == "auto":
            stains = _detect_stains(rgb)
        od = stain_od(rgb, stains)
        if self.params.detection_image == "od_sum":
            detect = _OD_LUT[rgb].sum(axis=-1) / 3.0 if rgb.dtype == np.uint8 else od.sum(axis=-1) / 3.0
        elif self.params.detection_image == "od_red":
            detect = _OD_LUT[rgb[..., 0]] if rgb.dtype == np.uint8 else od[..., 0]
        else:
            detect = od[..., 0]
        return {"haem": detect, "second": od[..., 1], "stains": stains}

    def postprocess(self, raw: dict, rgb: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Instances and the nucleus table (tile px) from :meth:`predict`'s ODs."""
        labels, haem_bg = self._instances(raw["haem"])
        table = measure_instances(labels, mpp=self.mpp, type_info=self.type_info)
        if len(table) and raw["stains"] == "hdab":
            dab = mean_per_instance(labels, raw["second"], table["id"].to_numpy())
            table["dab_od"] = dab.astype(np.float64)
            table["positive"] = dab >= self.params.positive_threshold
        table.attrs["stains"] = raw["stains"]
        return labels, table

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        """Detect nuclei in an RGB image at :attr:`mpp`."""
        return self.postprocess(self.predict(rgb), rgb)

    # -- internals ----------------------------------------------------------
    def _instances(self, haem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage as ndi
        from skimage.filters import threshold_otsu

        p = self.params
        px = self.mpp
        img = np.clip(haem, 0, None).astype(np.float32)
        if p.background_radius_um > 0:
            img = img - _background(img, p.background_radius_um / px)
        if p.median_radius_um > 0:
            img = ndi.median_filter(img, footprint=_disk(p.median_radius_um / px))
        if p.sigma_um > 0:
            img = ndi.gaussian_filter(img, p.sigma_um / px)

        if p.threshold == "auto":
            vals = img[img > p.otsu_floor] if p.otsu_floor > -np.inf else img.ravel()
            thr = float(threshold_otsu(vals)) * p.threshold_scale if vals.size > 100 else p.min_threshold
            thr = max(thr, p.min_threshold)
        else:
            thr = float(p.threshold)
        mask = img > thr
        if p.local_radius_um > 0:  # local contrast: above the mean of the surrounding window
            mask &= img > ndi.uniform_filter(img, 2 * int(round(p.local_radius_um / px)) + 1)
        if p.close_um > 0:  # pad by edge replication: no erosion of nuclei cut by the tile border
            r = max(int(round(p.close_um / px)), 1)
            closed = ndi.binary_closing(np.pad(mask, r, mode="edge"), _disk(p.close_um / px))
            mask = closed[r:-r, r:-r]
        mask = ndi.binary_fill_holes(mask)
        min_px = p.min_area_um2 / (px * px)
        max_px = p.max_area_um2 / (px * px)
        comp, n = ndi.label(mask)
        if n == 0:
            return np.zeros(img.shape, np.int32), img
        sizes = np.bincount(comp.ravel())
        small = sizes < min_px / 2
        small[0] = False
        mask[small[comp]] = False

        labels, shape = _split_mask(mask, img, p, px)
        # components that got no seed keep their own id
        orphan = mask & (labels == 0)
        if orphan.any():
            extra, _ = ndi.label(orphan)
            labels = np.where(orphan, extra + labels.max(), labels)
        if p.large_split_factor > 0 and labels.max() > 0:  # merged nuclei: split again by shape
            area = np.bincount(labels.ravel())
            sized = area[1:][area[1:] >= min_px]
            median = float(np.median(sized)) if sized.size else min_px
            large = np.nonzero(area > p.large_split_factor * median)[0]
            labels = _split_objects(labels, large[large > 0], shape, p.large_split_h_um / px)

        _, labels = compact_ids(labels)
        if p.smooth_boundary_um > 0:
            labels = _smooth_labels(labels, p.smooth_boundary_um / px)
        labels = _largest_piece(labels)  # one connected region (one outline) per nucleus
        _, labels = compact_ids(labels)
        n = int(labels.max())
        if n == 0:
            return labels.astype(np.int32), img
        area = np.bincount(labels.ravel(), minlength=n + 1)
        mean_od = np.bincount(labels.ravel(), weights=img.ravel(), minlength=n + 1) / np.maximum(area, 1)
        pale = mean_od < p.min_mean_od
        drop = (area < min_px) | (area > max_px) | pale
        if p.rescue_min_area_um2 < p.min_area_um2:  # small but clearly standing out: keep
            small = (area >= p.rescue_min_area_um2 / (px * px)) & (area < min_px) & ~pale
            if small.any():
                contrast = _ring_contrast(labels, img, mean_od, p.rescue_ring_um / px)
                drop &= ~(small & (contrast >= p.rescue_contrast * max(thr, 1e-6)))
        drop[0] = False
        oversize = np.nonzero((area > max_px) & ~pale)[0]
        before = labels.copy() if p.resplit_oversize and oversize.size else labels
        labels[drop[labels]] = 0
        if p.resplit_oversize and oversize.size:
            labels = _resplit(labels, before, oversize[oversize > 0], img, p, px)
        if p.boundary_expand_um > 0:
            from skimage.segmentation import expand_labels

            labels = expand_labels(labels, p.boundary_expand_um / px)
        _, labels = compact_ids(labels)
        return labels.astype(np.int32), img


def _smooth_labels(labels: np.ndarray, sigma_px: float) -> np.ndarray:
    """Smooth every instance's outline on its own: Gaussian of its indicator, kept where > 0.5.

    Works on each nucleus' bounding box (plus 3σ), so the cost grows with the nuclei's area, not
    with their number times the image; where two smoothed nuclei overlap the higher value wins,
    so touching nuclei stay apart. σ is capped at 0.3 × the nucleus' equivalent radius, so small
    round nuclei are not shrunk away.
    """
    from scipy import ndimage as ndi

    out = np.zeros_like(labels)
    best = np.zeros(labels.shape, np.float32)
    pad = int(np.ceil(3 * sigma_px))
    h, w = labels.shape
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, h)
        x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, w)
        # "nearest" replicates an outline cut by the image border instead of eroding it
        own = labels[y0:y1, x0:x1] == i
        sig = min(sigma_px, 0.3 * np.sqrt(own.sum() / np.pi))
        smooth = ndi.gaussian_filter(own.astype(np.float32), sig, mode="nearest")
        best_crop = best[y0:y1, x0:x1]
        win = (smooth > 0.5) & (smooth > best_crop)
        best_crop[win] = smooth[win]
        out[y0:y1, x0:x1][win] = i
    return out


def _split_mask(mask: np.ndarray, img: np.ndarray, p: ClassicalParams, px: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Split a nucleus mask by shape and stain: watershed from h-maxima (``split_h_um``) of the
    smoothed distance transform plus the OD scaled by its 99th percentile (``split_od_um``; dark
    cores, paler borders between touching nuclei). Returns the labels and the smoothed distance
    transform alone."""
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    shape = ndi.gaussian_filter(ndi.distance_transform_edt(mask), 0.25 / px)
    land = shape
    if p.split_od_um > 0 and mask.any():
        od_scale = max(float(np.percentile(img[mask], 99)), 1e-6)
        land = land + (p.split_od_um / px / od_scale) * img
    markers, _ = ndi.label(h_maxima(land, max(p.split_h_um / px, 1e-3)) & mask)
    return watershed(-land, markers, mask=mask), shape


def _object_masks(labels: np.ndarray, ids: np.ndarray) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """(bounding-box slice, object mask in it) for every id in ``ids`` present in ``labels``."""
    from scipy import ndimage as ndi

    objs = ndi.find_objects(labels)
    for i in ids:
        sl = objs[int(i) - 1] if int(i) <= len(objs) else None
        if sl is not None:
            yield sl, labels[sl] == i


def _split_objects(labels: np.ndarray, ids: np.ndarray, land: np.ndarray, h: float) -> np.ndarray:
    """Split each object in ``ids`` by a watershed of ``-land`` from its own h-maxima (height ``h``).

    The first piece keeps the object's id; the others get new ids. Objects with fewer than two
    maxima are left as they are.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    if len(ids) == 0:
        return labels
    labels = labels.copy()
    nxt = int(labels.max()) + 1
    for sl, own in _object_masks(labels, ids):
        d = np.where(own, land[sl], 0.0)
        seeds, n = ndi.label(h_maxima(d, max(h, 1e-3)) & own)
        if n < 2:
            continue
        pieces = watershed(-d, seeds, mask=own)
        crop = labels[sl]
        for j in range(2, n + 1):
            crop[pieces == j] = nxt
            nxt += 1
    return labels


def _resplit(
    labels: np.ndarray, before: np.ndarray, ids: np.ndarray, img: np.ndarray, p: ClassicalParams, px: float
) -> np.ndarray:
    """Re-segment the oversized objects ``ids`` of ``before`` (removed from ``labels``): threshold
    each at the Otsu level of its own OD, open, fill holes and split as the main watershed; pieces
    within the size range are added to ``labels``."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    min_px = p.min_area_um2 / (px * px)
    max_px = p.max_area_um2 / (px * px)
    nxt = int(labels.max()) + 1
    for sl, own in _object_masks(before, ids):
        crop = img[sl]
        core = ndi.binary_fill_holes(own & (crop > threshold_otsu(crop[own])))
        core = ndi.binary_opening(core, _disk(0.5 / px))
        if not core.any():
            continue
        pieces, _ = _split_mask(core, crop, p, px)
        size = np.bincount(pieces.ravel())
        out = labels[sl]
        for j in range(1, len(size)):
            if min_px <= size[j] <= max_px:
                out[(pieces == j) & (out == 0)] = nxt
                nxt += 1
    return labels


def _ring_contrast(labels: np.ndarray, img: np.ndarray, mean_od: np.ndarray, ring_px: float) -> np.ndarray:
    """Per id: mean OD minus the mean OD of the background ring ``ring_px`` wide around it (the
    ring's pixels go to their nearest object); ``inf`` where an object has no background ring."""
    from skimage.segmentation import expand_labels

    n = len(mean_od) - 1
    ring = expand_labels(labels, ring_px)
    ring[labels > 0] = 0
    count = np.bincount(ring.ravel(), minlength=n + 1)
    ring_mean = np.bincount(ring.ravel(), weights=img.ravel(), minlength=n + 1) / np.maximum(count, 1)
    return np.where(count > 0, mean_od - ring_mean, np.inf)


def _largest_piece(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest 4-connected piece of every instance (its table row has one contour)."""
    from skimage.measure import label as connected

    pieces = connected(labels, background=0, connectivity=1)
    n = int(pieces.max())
    if n == 0:
        return labels
    flat_p, flat_l = pieces.ravel(), labels.ravel()
    owner = np.zeros(n + 1, np.int64)
    owner[flat_p] = flat_l  # every pixel of a piece has the same instance id
    size = np.bincount(flat_p, minlength=n + 1)
    size[0] = 0
    # per instance, the piece with the largest size: sort by (owner, size) and take the last
    order = np.lexsort((size, owner))
    last = np.r_[owner[order][1:] != owner[order][:-1], True]
    keep = np.zeros(n + 1, bool)
    keep[order[last]] = True
    keep[0] = False
    return np.where(keep[pieces], labels, 0).astype(labels.dtype)


def _background(img: np.ndarray, radius_px: float) -> np.ndarray:
    """Opening by reconstruction with a disk, computed on a downsample (the background is smooth)."""
    from scipy import ndimage as ndi
    from skimage.morphology import erosion, reconstruction

    f = int(max(1, min(4, radius_px // 4)))
    small = img[::f, ::f] if f > 1 else img
    if f > 1:  # block minimum keeps thin dark structures from leaking into the background
        h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
        small = img[:h, :w].reshape(h // f, f, w // f, f).min(axis=(1, 3))
    seed = erosion(small, _disk(radius_px / f))
    bg = reconstruction(np.minimum(seed, small), small, method="dilation").astype(np.float32)
    if f > 1:
        zoom = (img.shape[0] / bg.shape[0], img.shape[1] / bg.shape[1])
        bg = ndi.zoom(bg, zoom, order=1, grid_mode=True, mode="nearest")[: img.shape[0], : img.shape[1]]
    return np.minimum(bg, img)
