"""Lazy whole-slide reading: ``open_slide`` -> :class:`Slide`, and tissue detection.

Backends: OpenSlide (vendor formats), tifffile + zarr 3 (OME-TIFF with SubIFD pyramids and
TIFFs OpenSlide declines), Pillow (PNG/JPEG/BMP). The choice is automatic from the file
header and can be overridden with ``open_slide(path, backend=...)``.
"""

from napari_histo.slide._slide import (
    BACKENDS,
    SUPPORTED_EXTENSIONS,
    UNITS,
    Slide,
    SlideSpec,
    choose_backend,
    open_slide,
)
from napari_histo.slide._tissue import (
    TissueMask,
    detect_tissue,
    tissue_fraction,
    tissue_mask,
    tissue_pixels,
    tissue_region_origin,
)

__all__ = [
    "BACKENDS",
    "SUPPORTED_EXTENSIONS",
    "UNITS",
    "Slide",
    "SlideSpec",
    "TissueMask",
    "choose_backend",
    "detect_tissue",
    "open_slide",
    "tissue_fraction",
    "tissue_mask",
    "tissue_pixels",
    "tissue_region_origin",
]
