"""Readers for public nucleus datasets (MoNuSeg, MoNuSAC, CPM-15, CRCHistoPhenotypes).

Every reader returns :class:`NucleusSample` objects: the RGB image, the instance map (or
centroid points), per-pixel / per-point types and the µm/px. Layouts are those of the
original releases as described in ``shared/data/README.md``.

Public functions
----------------
- :func:`read_monuseg`, :func:`iter_monuseg` -- tif + ImageScope xml -> instances, mpp; masks
  drawn this package's way or the challenge script's (:data:`MONUSEG_MASKS`,
  :func:`rasterize_monuseg_official`).
- :func:`read_monusac`, :func:`iter_monusac` -- svs + xml -> instances + types (by class name).
- :func:`read_cpm15`, :func:`iter_cpm15` -- png + ASCII mask; mpp from the manifest's
  magnification; the image/mask size mismatch (image04) is detected and reported.
- :func:`read_crchisto`, :func:`iter_crchisto` -- bmp + .mat typed centroids (0.55 µm/px assumed).
- :func:`iter_dataset`, :func:`detect_dataset` -- by name, or guessed from a folder's contents.
"""

from napari_histo.datasets.dispatch import detect_dataset, iter_dataset
from napari_histo.datasets.readers import (
    CRCHISTO_TYPES,
    MONUSAC_TYPES,
    MONUSEG_MASKS,
    NucleusSample,
    iter_cpm15,
    iter_crchisto,
    iter_monusac,
    iter_monuseg,
    rasterize_monuseg_official,
    read_cpm15,
    read_crchisto,
    read_monusac,
    read_monuseg,
)

__all__ = [
    "CRCHISTO_TYPES",
    "MONUSAC_TYPES",
    "MONUSEG_MASKS",
    "NucleusSample",
    "detect_dataset",
    "iter_cpm15",
    "iter_crchisto",
    "iter_dataset",
    "iter_monusac",
    "iter_monuseg",
    "read_cpm15",
    "read_crchisto",
    "read_monusac",
    "read_monuseg",
    "rasterize_monuseg_official",
]
