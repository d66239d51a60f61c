"""Whole-slide outputs: nucleus table, label pyramid, exchange formats, and the loader.

Folder layout (``OUTDIR/<stem>/``)::

    nuclei.parquet   the nucleus table (ids 1..N unique across the slide, level-0 px)
    labels.zarr/     zarr v3 group; arrays "0" (level 0, same grid as the slide), "1", ... (x2 strides)
    run.json         provenance
    <stem>.geojson   QuPath detections (optional)
    <stem>.json      HoVer-Net JSON (optional)

Everything is assembled from the journal's per-tile files with bounded memory: the table is
streamed row group by row group and each label chunk (one tile core) is painted from at most
the 3x3 neighbouring tiles. Each output appears under its final name only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.engine.faults import crash_point
from napari_histo.engine.journal import Journal
from napari_histo.engine.plan import TilePlan
from napari_histo.formats.geojson import write_geojson
from napari_histo.formats.hovernet_json import write_hovernet_json
from napari_histo.schema.table import (
    _META_KEY,
    _json_default,
    empty_table,
    read_table_parquet,
    write_table_parquet,
)
from napari_histo.utils import HistoError, InputFileError, atomic_path

# Lazy imports: pyarrow, zarr are imported inside the functions that use them (directly or through
# the modules named there): importing this module stays light for the CLI and the napari manifest.

TABLE_NAME = "nuclei.parquet"
LABELS_NAME = "labels.zarr"
RUN_NAME = "run.json"
MIN_PYRAMID_SIDE = 512


def id_offsets(plan: TilePlan, journal: Journal) -> dict[int, int]:
    """Global id offset of every tile: ids are 1..N in tile-index order (deterministic)."""
    offsets, total = {}, 0
    for tile in plan.tiles:
        offsets[tile.index] = total
        total += int(journal.done.get(tile.index, {}).get("n", 0))
    return offsets


def write_table(plan: TilePlan, journal: Journal, offsets: dict[int, int], path: Path, attrs: dict) -> int:
    """Stream the per-tile tables into one Parquet file with global ids; returns N."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with_nuclei = [t.index for t in plan.tiles if journal.done.get(t.index, {}).get("n", 0) > 0]
    if not with_nuclei:
        empty = empty_table(attrs.get("mpp"), attrs.get("type_info"))
        empty.attrs.update(attrs)
        write_table_parquet(empty, path)
        return 0
    meta_value = json.dumps(attrs, default=_json_default).encode()
    writer = None
    schema = None
    total = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as sink:  # file objects: any file name
        try:
            for index in with_nuclei:
                with open(journal.table_path(index), "rb") as fh:
                    table = pq.read_table(fh)
                ids = pa.compute.add(table.column("id"), pa.scalar(offsets[index], pa.int64()))
                table = table.set_column(table.schema.get_field_index("id"), "id", ids)
                if writer is None:
                    meta = dict(table.schema.metadata or {})
                    meta[_META_KEY] = meta_value
                    schema = table.schema.with_metadata(meta)
                    writer = pq.ParquetWriter(sink, schema, compression="zstd")
                table = table.select(schema.names).cast(schema)
                writer.write_table(table)
                total += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return total


def _level_shapes(height: int, width: int) -> list[tuple[int, int]]:
    shapes = [(height, width)]
    while max(shapes[-1]) > MIN_PYRAMID_SIDE:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def write_labels(plan: TilePlan, journal: Journal, offsets: dict[int, int], path: Path,
                 cache_size: int = 12) -> None:
    """Write the zarr v3 label pyramid at ``path`` (written under a temporary name first)."""
    import zarr

    tmp = path.with_name(path.name + ".partial")
    old = path.with_name(path.name + ".old")
    for leftover in (tmp, old):  # a killed assembly's
        if leftover.exists():
            shutil.rmtree(leftover)
    chunk = plan.tile0
    shapes = _level_shapes(plan.height, plan.width)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    arrays = [
        group.create_array(str(k), shape=shape, chunks=(min(chunk, shape[0]), min(chunk, shape[1])),
                           dtype="int32", fill_value=0)
        for k, shape in enumerate(shapes)
    ]
    has = {t.index for t in plan.tiles if journal.done.get(t.index, {}).get("n", 0) > 0}
    cache: OrderedDict[int, tuple[np.ndarray, tuple[int, int]]] = OrderedDict()

    def crop(index: int):
        if index in cache:
            cache.move_to_end(index)
            return cache[index]
        value = journal.load_labels(index)
        cache[index] = value
        if len(cache) > cache_size:
            cache.popitem(last=False)
        return value

    written: set[tuple[int, int]] = set()  # chunks holding labels; the pyramid visits only these
    for row in range(plan.n_rows):
        for col in range(plan.n_cols):
            sources = [
                r * plan.n_cols + c
                for r in (row - 1, row, row + 1) for c in (col - 1, col, col + 1)
                if 0 <= r < plan.n_rows and 0 <= c < plan.n_cols and r * plan.n_cols + c in has
            ]
            if not sources:
                continue
            x0, y0, x1, y1 = plan.tile_core(row, col)
            buf = np.zeros((y1 - y0, x1 - x0), np.int32)
            for index in sorted(sources):
                lab, (ox, oy) = crop(index)
                ix0, iy0 = max(x0, ox), max(y0, oy)
                ix1, iy1 = min(x1, ox + lab.shape[1]), min(y1, oy + lab.shape[0])
                if ix1 <= ix0 or iy1 <= iy0:
                    continue
                part = lab[iy0 - oy:iy1 - oy, ix0 - ox:ix1 - ox]
                dst = buf[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
                fg = part > 0
                dst[fg] = part[fg] + offsets[index]
            if buf.any():
                arrays[0][y0:y1, x0:x1] = buf
                written.add((row, col))
    for k in range(1, len(arrays)):
        written = _downsample_level(arrays[k - 1], arrays[k], written)
    group.attrs.update(_multiscales_attrs(len(arrays), plan))
    if path.exists():
        os.replace(path, old)
        crash_point("previous labels.zarr set aside")
        os.replace(tmp, path)
        crash_point("labels.zarr in place")
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _downsample_level(src, dst, written: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """dst = src[::2, ::2] over the chunks that hold labels (labels: stride, never interpolate).

    ``written`` are the chunk indices of ``src`` with labels; both levels use the same chunk
    side, so work grows with the labelled area, not with the slide.
    """
    ch, cw = dst.chunks
    H, W = dst.shape
    out: set[tuple[int, int]] = set()
    for i, j in sorted({(r // 2, c // 2) for r, c in written}):
        y, x = i * ch, j * cw
        if y >= H or x >= W:
            continue
        block = src[2 * y:2 * min(y + ch, H), 2 * x:2 * min(x + cw, W)][::2, ::2]
        if block.any():
            dst[y:y + block.shape[0], x:x + block.shape[1]] = block
            out.add((i, j))
    return out


def _multiscales_attrs(n_levels: int, plan: TilePlan) -> dict[str, Any]:
    datasets = [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [2.0**k, 2.0**k]}]}
        for k in range(n_levels)
    ]
    return {
        "ome": {
            "version": "0.5",
            "multiscales": [{
                "name": "nuclei",
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": datasets,
            }],
        },
        "napari_histo": {"units": "level-0 px", "mpp": plan.slide_mpp, "chunk": plan.tile0},
    }


def write_exchange_formats(table_path: Path, folder: Path, stem: str, geojson: bool,
                           hovernet_json: bool, mag: float | None) -> list[str]:
    """QuPath GeoJSON and/or HoVer-Net JSON next to the table; returns written file names."""
    if not (geojson or hovernet_json):
        return []

    table = read_table_parquet(table_path)
    written = []
    if geojson:
        write_geojson(table, folder / f"{stem}.geojson")
        written.append(f"{stem}.geojson")
        crash_point("geojson")
    if hovernet_json:
        write_hovernet_json(table, folder / f"{stem}.json", mag=mag)
        written.append(f"{stem}.json")
    return written


@dataclass
class SegmentationResult:
    """A finished run loaded from disk.

    Attributes
    ----------
    folder : Path
    table : pandas.DataFrame
        The nucleus table.
    labels : list
        zarr arrays, level 0 first (napari multiscale Labels data).
    run : dict
        Contents of ``run.json``.
    """

    folder: Path
    table: pd.DataFrame
    labels: list = field(default_factory=list)
    run: dict = field(default_factory=dict)


def load_result(folder: str | os.PathLike, columns: list[str] | None = None) -> SegmentationResult:
    """Load ``nuclei.parquet``, the ``labels.zarr`` pyramid and ``run.json`` from ``folder``."""
    import zarr

    folder = Path(folder)
    table_path, labels_path, run_path = folder / TABLE_NAME, folder / LABELS_NAME, folder / RUN_NAME
    if (folder / ".partial").exists() and not run_path.exists():
        raise InputFileError(folder, "the segmentation run did not finish (resume it with --resume)")
    if not table_path.exists():
        raise InputFileError(folder, f"no {TABLE_NAME}: not a segmentation output folder")
    table = read_table_parquet(table_path, columns=columns)
    labels = []
    if labels_path.exists():
        group = zarr.open_group(str(labels_path), mode="r")
        k = 0
        while str(k) in group:
            labels.append(group[str(k)])
            k += 1
    run = {}
    if run_path.exists():
        try:
            run = json.loads(run_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HistoError(f"{run_path}: invalid JSON ({exc})") from exc
    return SegmentationResult(folder, table, labels, run)
