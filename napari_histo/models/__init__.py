"""Nucleus model registry: names or paths -> cached :class:`~napari_histo.nuclei.base.Segmenter`.

Public functions
----------------
- :func:`get_segmenter` -- "classical", "default" (shipped compact HoVer-Net), a weights folder
  (``config.json`` + ``model.pt``) or an official HoVer-Net checkpoint (``.tar``/``.pth``).
- :func:`default_type_info` -- shipped type tables (pannuke, consep, monusac).
- :func:`clear_cache` -- forget loaded models.
"""

from napari_histo.models.registry import (
    DEFAULT_WEIGHTS,
    clear_cache,
    default_type_info,
    get_segmenter,
    list_models,
)

__all__ = ["DEFAULT_WEIGHTS", "clear_cache", "default_type_info", "get_segmenter", "list_models"]
