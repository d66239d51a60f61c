"""Lazy whole-slide reading: ``open_slide`` -> :class:`Slide`, and tissue detection.

Backends: OpenSlide (vendor formats), tifffile + zarr 3 (OME-TIFF with SubIFD pyramids and
TIFFs OpenSlide declines), Pillow (PNG/JPEG/BMP). The choice is automatic from the file
header and can be overridden with ``open_slide(path, backend=...)``.

The names below load their modules on first use (PEP 562), so that ``napari_histo.slide._describe``
(a slide's metadata without numpy, for ``napari-histo info``) can be imported alone.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BACKENDS": "_slide",
    "UNITS": "_slide",
    "Slide": "_slide",
    "SlideSpec": "_slide",
    "choose_backend": "_slide",
    "open_slide": "_slide",
    "SUPPORTED_EXTENSIONS": "_describe",
    "describe_slide": "_describe",
    "TissueMask": "_tissue",
    "detect_tissue": "_tissue",
    "tissue_fraction": "_tissue",
    "tissue_mask": "_tissue",
    "tissue_pixels": "_tissue",
    "tissue_region_origin": "_tissue",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_histo.slide' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"napari_histo.slide.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
