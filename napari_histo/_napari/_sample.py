"""napari sample data: the shipped CMU-1 small region (Aperio SVS, 20x, CC0)."""

from __future__ import annotations

from typing import Any


def cmu_small_region() -> list[tuple[Any, ...]]:
    """Open the packaged ``cmu-1-small-region.svs`` through the plugin's own reader."""
    from napari_histo._napari._reader import get_reader
    from napari_histo.utils import HistoError, sample_slide_path

    path = str(sample_slide_path())
    reader = get_reader(path)
    if reader is None:
        raise HistoError(f"{path}: the shipped sample slide is missing or unreadable")
    return reader(path)
