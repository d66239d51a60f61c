"""napari-histo: computational pathology for napari.

The package is a Qt-free core (``engine``, ``analysis``, ``models``, ``nuclei``, ``slide``,
``datasets``, ``formats``, ``schema``, and the ``cli`` front end) plus a thin napari adapter in
``napari_histo._napari``; docs/ARCHITECTURE.md shows the layers. Training code lives beside
the package in ``src_models`` and is never imported by it.
Heavy libraries (torch, dask, scipy) are imported inside functions so that ``import
napari_histo`` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "open_slide"]


def __getattr__(name: str):
    # Lazy re-exports keep `import napari_histo` light (napari imports the manifest module).
    if name == "open_slide":
        from napari_histo.slide import open_slide

        return open_slide
    raise AttributeError(f"module 'napari_histo' has no attribute {name!r}")
