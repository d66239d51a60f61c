"""Shared CLI plumbing: provenance (``run.json``) and progress bars over core generators."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Lazy imports: pandas, tqdm are imported inside the functions that use them (directly or through
# the modules named there): napari-histo --help and napari's plugin discovery import this module.


def drain_with_progress(events: Iterable[Any], total: int | None = None, desc: str = "") -> Iterator[Any]:
    """Show a tqdm bar while passing through a core progress generator's events."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="tile", disable=not sys.stderr.isatty() and total is None) as bar:
        for event in events:
            done = getattr(event, "done", None)
            new_total = getattr(event, "total", None)
            if new_total is not None and bar.total != new_total:
                bar.total = new_total
            if done is not None:
                bar.n = done
                bar.refresh()
            yield event


ROI_HELP = ("x,y,w,h in level-0 px, or an annotation file whose polygon regions are the region "
            "(e.g. a tumour outline drawn in QuPath / Sedeen / ASAP)")


def parse_roi(value: str | None, class_name: str | None = None):
    """``--roi`` / ``--roi-class`` -> None, an (x, y, w, h) box, or the file's polygon regions
    (:class:`~napari_histo.formats._common.Annotation` list, only ``class_name``'s when given)."""
    from napari_histo.utils import HistoError

    if value is None:
        if class_name:
            raise HistoError("--roi-class needs --roi ANNOTATION_FILE")
        return None
    if Path(value).exists():
        from napari_histo.formats.auto import read_regions

        return read_regions(value, class_name)
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4 or parts[2] <= 0 or parts[3] <= 0:
        raise HistoError(f"--roi must be X,Y,W,H in level-0 pixels (W, H > 0) or an existing annotation file, got {value!r}")
    return tuple(parts)
