"""Nucleus instances from DeepCMorph's nucleus maps.

DeepCMorph's segmentation module gives a nucleus probability map and per-class maps, not
instances. :func:`maps_to_instances` splits the thresholded nucleus map into nuclei with a
marker-controlled watershed on its distance transform (markers: distance maxima at least
``min_distance`` px apart) and gives each nucleus the class whose map is highest on average
inside it. Used to score the nucleus module per nucleus (detection and class F1, as HoVer-Net's
``compute_stats``) and to draw nuclei from ``classify``'s nucleus maps.
"""

from __future__ import annotations

import numpy as np


def maps_to_instances(nucleus: np.ndarray, class_maps: np.ndarray, *, threshold: float = 0.5,
                      min_distance: int = 3, min_area: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(instance map (H, W) int32, class index per instance (N,), centroids (N, 2) x, y).

    ``class_maps`` is (C, H, W); class indices are 0-based into its channels. Instances are
    numbered 1..N in raster order of their markers; pieces smaller than ``min_area`` px are dropped.
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    foreground = np.asarray(nucleus) >= threshold
    if not foreground.any():
        return np.zeros(foreground.shape, np.int32), np.zeros(0, np.int64), np.zeros((0, 2))
    distance = ndimage.distance_transform_edt(foreground)
    components, _ = ndimage.label(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # a component without a marker (a thin sliver) still becomes one nucleus
    missing = np.setdiff1d(np.unique(components[foreground]), np.unique(components[markers > 0]))
    for k, comp in enumerate(missing, start=len(peaks) + 1):
        ys, xs = np.nonzero(components == comp)
        markers[ys[len(ys) // 2], xs[len(xs) // 2]] = k
    labels = watershed(-distance, markers, mask=foreground).astype(np.int32)
    areas = np.bincount(labels.ravel())
    small = np.flatnonzero(areas < min_area)
    small = small[small > 0]
    if len(small):
        labels[np.isin(labels, small)] = 0
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    labels = lut[labels]
    n = len(ids)
    if n == 0:
        return labels, np.zeros(0, np.int64), np.zeros((0, 2))
    index = np.arange(1, n + 1)
    means = np.stack([ndimage.mean(np.asarray(c, np.float64), labels, index) for c in class_maps], 1)
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(labels), labels, index), np.float64)[:, ::-1]
    return labels, means.argmax(1).astype(np.int64), centres
