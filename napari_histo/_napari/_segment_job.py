"""What the Nuclei panel runs in its worker: the engine's progress events turned into tile
updates (labels painted into the preview off the Qt thread), the crop of a view or drawn region
with context, and the default output folder.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_histo._napari import _layers
from napari_histo._napari._preview import LabelPreview
from napari_histo.engine.options import SegmentationOptions

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Context (level-0 px at 0.5 µm/px, scaled with the mpp) read around a view/shape region so
#: that nuclei on its border are segmented whole.
CONTEXT_UM = 24.0


def format_eta(seconds: float | None) -> str:
    """'ETA 1 min 05 s' style text (empty when unknown)."""
    if seconds is None or not np.isfinite(seconds):
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"ETA {seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"ETA {seconds // 60} min {seconds % 60:02d} s"
    return f"ETA {seconds} s"


def default_outdir(slide_path: str | None) -> Path:
    """A fresh folder for a panel run's result (``nuclei.parquet``, labels, ``run.json``) in the
    per-user ``runs`` folder (:func:`napari_histo.utils.user_data_dir`); the Export panel writes
    the exchange files where the user chooses."""
    from napari_histo.utils import user_data_dir

    stem = Path(slide_path).name.split(".")[0] if slide_path else "image"
    root = user_data_dir("runs")
    return Path(tempfile.mkdtemp(prefix=f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=root))


def crop_region(layer: Any, roi: Any, mpp: float | None) -> tuple[np.ndarray, tuple[int, int], Any]:
    """Read the ROI's bounding box plus context from ``layer``'s level 0.

    Returns ``(rgb crop, (x0, y0) level-0 origin, ROI in crop coordinates)``, so small regions
    are segmented as a small image instead of the slide tiles they touch.
    """
    if len(roi) == 4 and np.ndim(roi) == 1:
        x, y, w, h = (float(v) for v in roi)
        box = (x, y, x + w, y + h)
    else:
        xy = np.asarray(roi, float)
        box = (xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max())
    margin = int(np.ceil(CONTEXT_UM / (mpp or 0.5)))
    height, width = _layers.level0_shape(layer)
    x0, y0 = max(0, int(np.floor(box[0])) - margin), max(0, int(np.floor(box[1])) - margin)
    x1, y1 = min(width, int(np.ceil(box[2])) + margin), min(height, int(np.ceil(box[3])) + margin)
    data = layer.data[0] if layer.multiscale else layer.data
    rgb = np.ascontiguousarray(np.asarray(data[y0:y1, x0:x1])[..., :3])
    if len(roi) == 4 and np.ndim(roi) == 1:
        local = (roi[0] - x0, roi[1] - y0, roi[2], roi[3])
    else:
        local = np.asarray(roi, float) - np.array([x0, y0], float)
    return rgb, (x0, y0), local


@dataclass
class TileUpdate:
    """What the worker hands the Qt thread for one progress event.

    Attributes
    ----------
    event : napari_histo.engine.run.ProgressEvent
    table : pandas.DataFrame or None
        The finished tile's nuclei (``x``, ``y``, ``type``; level-0 px of the slide).
    box : tuple or None
        ``(x0, y0, x1, y1)`` painted into the preview (level-0 px of the run's source).
    """

    event: Any
    table: pd.DataFrame | None = None
    box: tuple[int, int, int, int] | None = None


def segmentation_events(
    source: Any, model: str, outdir: Path, roi: Any = None, origin: tuple[int, int] = (0, 0),
    preview: LabelPreview | None = None, options: SegmentationOptions | None = None,
    scheduler: Any = None
) -> Generator[TileUpdate, None, tuple[Any, Any]]:
    """Drive the engine; yield a :class:`TileUpdate` per event; return ``(RunResult, loaded result)``.

    Runs in the worker thread. ``origin`` (x, y) is the level-0 position of ``source[0, 0]``
    when the source is a crop; tables are shifted to level-0 coordinates. Each finished tile's
    labels are painted into ``preview`` here, off the Qt thread. A run that does not complete
    (cancelled, failed) has its work folder removed, and the output folder too when it is left
    empty.
    """
    from napari_histo.engine.outputs import load_result
    from napari_histo.engine.run import run_segmentation
    from napari_histo.schema.table import offset_table

    outdir = Path(outdir)
    existed = outdir.exists() and any(outdir.iterdir())
    completed = False
    gen = run_segmentation(source, model, outdir, roi, options, scheduler=scheduler)
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                run = stop.value
                break
            update = TileUpdate(event)
            result = getattr(event, "tile_result", None)
            if result is not None and result.n:
                table = result.table
                part = table[["x", "y", "type"]].copy()
                part.attrs = dict(table.attrs)
                part["x"] += origin[0]
                part["y"] += origin[1]
                update.table = part
                if preview is not None:
                    update.box = preview.paint(result.labels, result.origin, table["type"].to_numpy(),
                                               table.attrs.get("type_info"))
            yield update
        completed = bool(run.completed)
        loaded = load_result(run.folder) if completed else None
        if loaded is not None and origin != (0, 0):
            loaded.table = offset_table(loaded.table, float(origin[0]), float(origin[1]))
        return run, loaded
    finally:
        gen.close()
        if not completed:
            shutil.rmtree(outdir / ".partial", ignore_errors=True)
            if not existed and outdir.exists() and not any(outdir.iterdir()):
                outdir.rmdir()
