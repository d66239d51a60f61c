"""Nuclei shown while a run goes on: each finished tile's instance labels, coloured by type.

The engine yields every finished tile's owned nuclei (``ProgressEvent.tile_result``: a label
crop with tile-local ids, its level-0 origin and the tile's table). :class:`LabelPreview`
paints them, **in the worker thread**, into

- an in-memory ``int32`` array the size of the segmented crop for view/shape runs (the crop's
  RGB is in memory already), shown as a single-scale Labels layer and refreshed on the Qt
  thread only over the painted region;
- a zarr v3 pyramid on disk for whole-slide runs (level-0 grid of the slide, 2× strided levels
  down to 512 px, like the run's ``labels.zarr``), shown as a multiscale Labels layer of the
  zarr arrays themselves (no dask cache, so a refresh reads the freshly written chunks; zarr's
  local store replaces chunk files atomically, so a read never sees half a chunk). Memory stays
  at one tile crop whatever the slide size.

Display values instead of global ids: global ids are only known at assembly, and napari's
direct label colormap needs numba beyond 65,536 keys. A painted pixel holds
``type * CYCLE + (running id - 1) % CYCLE + 1``: neighbouring nuclei keep distinct values
(their outlines separate), and one fixed colormap of ``len(types) * CYCLE`` entries colours
every value by its type, so nothing on the Qt thread grows with the number of nuclei. The
finished run's layer (true ids, measurements) replaces the preview.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# Lazy imports: dask, napari, zarr are imported inside the functions that use them (directly or
# through the modules named there): napari-histo --help and napari's plugin discovery import this
# module.

#: Distinct display values per type (two touching nuclei of one type whose running ids differ
#: by a multiple of this would share an outline in the preview only).
CYCLE = 1023
#: Type ids above this share the last slot (drawn in its colour).
MAX_TYPES = 64
#: Side of the coarsest whole-slide preview level and of the zarr chunks.
PREVIEW_CHUNK = 512


def pyramid_shapes(height: int, width: int, min_side: int = PREVIEW_CHUNK) -> list[tuple[int, int]]:
    """Level shapes (level 0 first), halving (rounding up) until the longer side <= ``min_side``."""
    shapes = [(int(height), int(width))]
    while max(shapes[-1]) > min_side:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def display_values(types: np.ndarray, first_id: int) -> np.ndarray:
    """Display value of nuclei with running ids ``first_id, first_id + 1, …`` and ``types``."""
    slots = np.clip(np.asarray(types, np.int64), 0, MAX_TYPES - 1)
    ids = first_id + np.arange(len(slots), dtype=np.int64)
    return (slots * CYCLE + (ids - 1) % CYCLE + 1).astype(np.int32)


def type_of_display_value(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`display_values` for the type (0 stays background, -1)."""
    values = np.asarray(values, np.int64)
    return np.where(values > 0, (values - 1) // CYCLE, -1)


def type_colormap(type_info: Any = None) -> Any:
    """A fixed :class:`DirectLabelColormap` colouring every display value by its type.

    ``len(types) * CYCLE`` entries whatever the number of nuclei (napari's numpy label mapping
    stops at 65,536 keys).
    """
    from napari.utils.colormaps import DirectLabelColormap

    from napari_histo.schema.types import NUCLEUS_ONLY, TypeInfo

    info = type_info
    if info is None:
        info = NUCLEUS_ONLY
    elif not isinstance(info, TypeInfo):
        info = TypeInfo.from_json_dict(info)
    colour_dict: dict[int | None, Any] = {None: np.array([1.0, 1.0, 0.0, 1.0]), 0: np.zeros(4)}
    cycle = np.arange(1, CYCLE + 1)
    for type_id in info.ids:
        slot = min(max(int(type_id), 0), MAX_TYPES - 1)
        rgba = np.array([*info.colour(type_id), 255], float) / 255.0
        colour_dict.update(dict.fromkeys((slot * CYCLE + cycle).tolist(), rgba))
    return DirectLabelColormap(color_dict=colour_dict)


def _encode_block(ids: np.ndarray, slots: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, np.int64)
    safe = np.clip(ids, 0, len(slots) - 1)
    return np.where(ids > 0, slots[safe] * CYCLE + (ids - 1) % CYCLE + 1, 0).astype(np.int32)


def type_coded(levels: list[Any], ids: np.ndarray, types: np.ndarray) -> list[Any]:
    """Lazy display values of a label pyramid of true nucleus ids (see :func:`display_values`).

    For results with more ids than a direct colormap can hold: each chunk maps id -> type slot
    through a lookup table of one byte per nucleus when napari reads it.
    """
    import dask.array as da

    ids = np.asarray(ids, np.int64)
    slots = np.zeros(int(ids.max(initial=0)) + 1, np.int64)
    slots[ids] = np.clip(np.asarray(types, np.int64), 0, MAX_TYPES - 1)
    out = []
    for level in levels:
        array = level if isinstance(level, da.Array) else (
            da.from_zarr(level) if not isinstance(level, np.ndarray) else da.from_array(level, chunks=1024))
        out.append(array.map_blocks(_encode_block, slots, dtype=np.int32))
    return out


class LabelPreview:
    """Label image painted tile by tile while a run goes on (see the module docstring).

    Parameters
    ----------
    shape
        (height, width) in level-0 px of the run's source (the crop for view/shape runs).
    multiscale
        True for whole-slide runs: a zarr pyramid in ``root`` (a fresh temporary folder when
        None), deleted by :meth:`close`.
    """

    def __init__(self, shape: tuple[int, int], *, multiscale: bool, root: str | Path | None = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.multiscale = bool(multiscale)
        self.root: Path | None = None
        self.n_nuclei = 0
        self.type_info: Any = None
        self._lock = threading.Lock()
        if not self.multiscale:
            self.levels: list[Any] = [np.zeros(self.shape, np.int32)]
            return
        import tempfile

        import zarr

        if root is None:
            base = Path(tempfile.gettempdir()) / "napari-histo-runs"
            base.mkdir(parents=True, exist_ok=True)
            root = tempfile.mkdtemp(prefix="preview-", suffix=".zarr", dir=base)
        self.root = Path(root)
        group = zarr.open_group(str(self.root), mode="w", zarr_format=3)
        self.levels = [
            group.create_array(str(k), shape=s, chunks=(min(PREVIEW_CHUNK, s[0]), min(PREVIEW_CHUNK, s[1])),
                               dtype="int32", fill_value=0)
            for k, s in enumerate(pyramid_shapes(*self.shape))
        ]

    @property
    def data(self) -> Any:
        """Labels layer data: the array, or the list of levels (multiscale)."""
        return list(self.levels) if self.multiscale else self.levels[0]

    def paint(self, labels: np.ndarray, origin: tuple[int, int], types: np.ndarray,
              type_info: Any = None) -> tuple[int, int, int, int] | None:
        """Paint one tile's label crop (local ids 1..n, ``types[i-1]`` the type of id i).

        ``origin`` is the (x, y) level-0 position of ``labels[0, 0]`` in this preview. Only
        labelled pixels are written, so crops that overlap a neighbour's never erase it.
        Returns the painted level-0 box ``(x0, y0, x1, y1)``, or None when nothing was painted.
        Called from the worker thread.
        """
        with self._lock:
            if self.type_info is None and type_info is not None:
                self.type_info = type_info
            types = np.asarray(types)
            if labels is None or len(types) == 0 or not self.levels:
                return None
            lut = np.zeros(len(types) + 1, np.int32)
            lut[1:] = display_values(types, self.n_nuclei + 1)
            self.n_nuclei += len(types)
            ox, oy = int(origin[0]), int(origin[1])
            height, width = self.shape
            x0, y0 = max(0, ox), max(0, oy)
            x1, y1 = min(width, ox + labels.shape[1]), min(height, oy + labels.shape[0])
            if x1 <= x0 or y1 <= y0:
                return None
            local = np.asarray(labels)[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            local = np.clip(local, 0, len(types))
            values = lut[local]
            fg = values > 0
            if not fg.any():
                return None
            level0 = self.levels[0]
            if self.multiscale:
                region = np.array(level0[y0:y1, x0:x1])
                region[fg] = values[fg]
                level0[y0:y1, x0:x1] = region
                for k, level in enumerate(self.levels[1:], 1):
                    step = 2**k
                    r0, r1 = -(-y0 // step), -(-y1 // step)
                    c0, c1 = -(-x0 // step), -(-x1 // step)
                    r1, c1 = min(r1, level.shape[0]), min(c1, level.shape[1])
                    if r1 > r0 and c1 > c0:  # level k pixel (r, c) is level-0 pixel (r*step, c*step)
                        level[r0:r1, c0:c1] = region[r0 * step - y0::step, c0 * step - x0::step][:r1 - r0, :c1 - c0]
            else:
                view = level0[y0:y1, x0:x1]
                view[fg] = values[fg]
            return x0, y0, x1, y1

    def colormap(self) -> Any:
        """A fixed :class:`DirectLabelColormap` colouring every display value by its type."""
        return type_colormap(self.type_info)

    def close(self) -> None:
        """Drop the painted data (and the on-disk pyramid)."""
        with self._lock:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
            self.levels = []


def refresh_region(layer: Any, box: tuple[int, int, int, int], view: tuple[int, int, int, int] | None = None) -> bool:
    """Show freshly painted preview pixels in ``box`` (level-0 px of the layer's data).

    Single-scale layers redraw only that region (napari's partial labels refresh, the path it
    uses for brush strokes); multiscale layers re-slice the view, and only when ``box`` meets
    ``view`` (the visible level-0 box), so the Qt thread never touches more than the screen.
    Returns True when something was redrawn.
    """
    x0, y0, x1, y1 = box
    if view is not None:
        vx0, vy0, vx1, vy1 = view
        if x1 <= vx0 or vx1 <= x0 or y1 <= vy0 or vy1 <= y0:
            return False
    if not layer.multiscale and layer.contour > 0:
        # napari's region-only redraw is private API (napari 0.9 warns on plugin access); when it
        # is gone, the whole (crop-sized) layer is redrawn instead
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            accumulate = getattr(layer, "_accumulate_updated_slice", None)
            partial_refresh = getattr(layer, "_partial_labels_refresh", None)
            if accumulate is not None and partial_refresh is not None:
                accumulate((slice(y0, y1), slice(x0, x1)))
                partial_refresh()
                return True
    layer.refresh(extent=False, highlight=False)
    return True
