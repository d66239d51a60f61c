"""Whole-slide nucleus segmentation: tile plan, exactly-once merging, resumable runs, outputs.

Public entry points (imported lazily so ``import napari_histo.engine`` stays cheap):
:func:`~napari_histo.engine.run.run_segmentation` and
:func:`~napari_histo.engine.outputs.load_result`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_segmentation", "load_result", "ProgressEvent", "RunResult", "ArraySlide"]

_LAZY = {
    "run_segmentation": "napari_histo.engine.run",
    "ProgressEvent": "napari_histo.engine.run",
    "RunResult": "napari_histo.engine.run",
    "load_result": "napari_histo.engine.outputs",
    "ArraySlide": "napari_histo.engine.source",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_histo.engine' has no attribute {name!r}")
