"""``write_geojson``: nuclei (detections or cells), ROIs and hotspots (annotations) as QuPath
GeoJSON, streamed through a temporary file renamed into place (bounded memory, no partial
file on failure), optionally gzipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from napari_histo.formats._common import (
    Annotation,
    geometry_to_viewer,
)
from napari_histo.formats.geojson._geometry import _DUMPS, _geometry_dict
from napari_histo.formats.geojson.fast_writer import (
    _classification,
    _iter_chunk_texts,
    _measurements,
)
from napari_histo.schema.table import validate_table
from napari_histo.utils import atomic_path


def annotation_feature(ann: Annotation, *, qupath03: bool = False) -> dict | None:
    """GeoJSON Feature dict for an :class:`Annotation` (None when its geometry is empty)."""
    geom = _geometry_dict(geometry_to_viewer(ann.geometry))
    if geom is None:
        return None
    if ann.is_ellipse and geom["type"] == "Polygon":
        geom["isEllipse"] = True
    props: dict[str, Any] = {"objectType": ann.object_type}
    if qupath03:
        props["object_type"] = ann.object_type
    if ann.name:
        props["name"] = str(ann.name)
    if ann.class_name:
        props["classification"] = _classification(ann.class_name, ann.colour or (255, 200, 0))
    if ann.colour is not None:
        props["color"] = [int(c) for c in ann.colour[:3]]
    if ann.measurements:
        props["measurements"] = _measurements(ann.measurements, qupath03)
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geom, "properties": props}


def write_geojson(
    table: pd.DataFrame | None,
    path: str | os.PathLike,
    *,
    annotations: Iterable[Annotation] | None = None,
    object_type: str = "detection",
    qupath03: bool = False,
    gzip: bool | None = None,
    include_measurements: bool = True,
    compresslevel: int = 1,
    prefetch: bool = True,
) -> Path:
    """Write nuclei (and optional ROI/hotspot annotations) as a QuPath GeoJSON FeatureCollection.

    Parameters
    ----------
    table : DataFrame or None
        Nucleus table (level-0 px); each row becomes a ``detection`` (or ``cell`` whose
        ``nucleusGeometry`` is the nucleus; ``geometry`` is ``cell_contour`` when that column exists).
    path : path
        Output file; ``.gz`` suffix (or ``gzip=True``) writes gzip-compressed JSON.
    annotations : iterable of Annotation
        ROIs/hotspots written as ``annotation`` objects after the nuclei.
    qupath03 : bool
        QuPath 0.3 compatibility: measurements as a list and ``object_type`` as well.
    include_measurements : bool
        Leave out measurements for very large exports (QuPath's "Exclude measurements").
    compresslevel : int
        Level of the ``.gz`` output, 0-3 (ISA-L's deflate through ``isal.igzip_threaded``: at level
        1 about 3.5x less CPU than zlib level 1 and a smaller file, ``benchmarks/bench_geojson_libs.py``).
    prefetch : bool
        Prepare the next chunk of nuclei in a worker thread while writing the current one.

    Returns
    -------
    Path of the written file. The file is streamed to a temporary sibling and renamed on success.
    """

    path = Path(path)
    use_gz = path.name.lower().endswith(".gz") if gzip is None else bool(gzip)
    if table is not None:
        validate_table(table)
    if use_gz and not 0 <= int(compresslevel) <= 3:
        raise ValueError(f"compresslevel must be 0-3 for .gz output, not {compresslevel}")
    with atomic_path(path) as tmp, _open_output(tmp, use_gz, int(compresslevel)) as fh:
        fh.write(b'{"type":"FeatureCollection","features":[\n')
        first = True

        def emit(text: bytes | bytearray) -> None:
            nonlocal first
            if not text:
                return
            if not first:
                fh.write(b",\n")
            fh.write(text)
            first = False

        if table is not None and len(table):
            for text in _iter_chunk_texts(table, object_type=object_type, qupath03=qupath03,
                                          include_measurements=include_measurements, prefetch=prefetch):
                emit(text)
        features = (annotation_feature(ann, qupath03=qupath03) for ann in annotations or ())
        emit(b",\n".join(_DUMPS(f).encode() for f in features if f is not None))
        fh.write(b"\n]}\n")
    return path


def _open_output(tmp: Path, gzipped: bool, level: int):
    """The file the writer streams into: plain, or one gzip member compressed by ISA-L in two
    threads while the chunks of nuclei are built."""
    if not gzipped:
        return open(tmp, "wb")
    from isal import igzip_threaded

    return igzip_threaded.open(tmp, "wb", compresslevel=level, threads=2)
