"""QuPath GeoJSON: streamed writer (nuclei as detections/cells, ROIs and hotspots as annotations)
and a tolerant reader (FeatureCollection, Feature, bare array, ``.gz``).

Writer profile (``docs``: FORMATS.md §1): UUID ids, ``classification`` always ``{name, color}``,
numeric finite measurements only (map, or list with ``qupath03=True``), coordinates rounded to
2 decimals and the geometry re-validated after rounding, compact UTF-8 output, written feature by
feature through a temporary file renamed into place (bounded memory, no partial file on failure).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.formats._common import (
    Annotation,
    AnnotationFormatError,
    load_json,
    table_from_contours,
    table_type_info,
)

__all__ = ["Annotation", "QuPathObjects", "write_geojson", "read_geojson", "iter_nucleus_feature_bytes"]

#: Per-nucleus measurement names: table column -> QuPath measurement name.
MEASUREMENT_COLUMNS: dict[str, str] = {
    "area_px": "Area px^2",
    "area_um2": "Area \u00b5m^2",
    "perimeter_px": "Perimeter px",
    "circularity": "Circularity",
    "eccentricity": "Eccentricity",
    "solidity": "Solidity",
    "type_prob": "Class probability",
    "dab_od": "DAB OD mean",
}

_CHUNK = 8192
_DUMPS = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=True).encode


# ----------------------------------------------------------------------------------------- writer
def _r2(v: float) -> float:
    return round(float(v), 2)


def _geometry_dict(geom) -> dict | None:
    """GeoJSON dict for a shapely geometry, coordinates rounded to 2 decimals (valid afterwards)."""
    import shapely

    if geom is None or geom.is_empty:
        return None
    kind = geom.geom_type
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        geom = _valid_polygonal(geom)
        if geom is None:
            return None
        kind = geom.geom_type
    else:
        geom = shapely.set_precision(geom, 0.01)
    mapping = shapely.geometry.mapping(geom)
    return {"type": mapping["type"], "coordinates": _round_nested(mapping["coordinates"])}


def _round_nested(obj):
    if isinstance(obj, (list, tuple)):
        if obj and isinstance(obj[0], (int, float)):
            return [_r2(v) for v in obj]
        return [_round_nested(o) for o in obj]
    return _r2(obj)


def _valid_polygonal(geom):
    """Snap to the 0.01 px grid and keep the polygonal part of a valid geometry (None if empty)."""
    import shapely

    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    try:
        snapped = shapely.set_precision(geom, 0.01)
    except shapely.errors.GEOSException:
        snapped = shapely.set_precision(shapely.buffer(geom, 0), 0.01)
    parts = [p for p in shapely.get_parts(snapped) if p.geom_type == "Polygon" and not p.is_empty]
    if not parts:
        for p in shapely.get_parts(snapped):
            if p.geom_type in ("MultiPolygon", "GeometryCollection"):
                parts += [q for q in shapely.get_parts(p) if q.geom_type == "Polygon" and not q.is_empty]
    if not parts:
        return None
    out = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    rounded = shapely.from_geojson(json.dumps({"type": out.geom_type, "coordinates": _round_nested(shapely.geometry.mapping(out)["coordinates"])}))
    if not rounded.is_valid:  # defensive: rounding of an on-grid geometry should not break it
        rounded = shapely.buffer(rounded, 0)
    return rounded if not rounded.is_empty else None


def _bbox_ring(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    x0, y0, x1, y1 = _r2(x0), _r2(y0), _r2(x1), _r2(y1)
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _polygon_bytes(contours: Sequence[np.ndarray], bboxes: np.ndarray) -> list[tuple]:
    """GeoJSON Polygon text per contour of a chunk, as a tuple of bytes-like pieces.

    Fast path (vectorised): rings rounded to 2 decimals that are still valid with area > 0 are
    formatted with :mod:`._fastjson`. Others are repaired through shapely (make_valid, keep the
    polygonal part); degenerate ones (< 3 vertices, zero area) fall back to their bounding box so
    no nucleus is lost.
    """
    import shapely

    from napari_histo.formats._fastjson import vertex_rows

    n = len(contours)
    lengths = np.fromiter((len(c) for c in contours), dtype=np.int64, count=n)
    try:
        coords = np.concatenate(contours, axis=0, dtype=np.float64) if lengths.sum() else np.zeros((0, 2))
    except (ValueError, TypeError):  # ragged or 1-D items: normalise one by one
        coords = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in contours])
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError("contours must be (N, 2) arrays of x, y")
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    has = lengths > 1
    closing = np.zeros(n, bool)
    closing[has] = (coords[starts[has]] == coords[starts[has] + lengths[has] - 1]).all(axis=1)
    if closing.any():  # a repeated closing vertex: drop it (rings are closed when written)
        drop = np.zeros(len(coords), bool)
        drop[starts[closing] + lengths[closing] - 1] = True
        coords = coords[~drop]
        lengths = lengths - closing
        starts = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
    if not np.isfinite(coords).all():
        raise ValueError("contour with non-finite coordinates")
    rounded = np.round(coords, 2)
    fast = lengths >= 3
    if fast.any():
        sel = np.flatnonzero(fast)
        rows = np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in sel]) if len(sel) < 64 else _ranges(starts[sel], lengths[sel])
        polys = shapely.polygons(shapely.linearrings(rounded[rows], indices=np.repeat(np.arange(len(sel)), lengths[sel])))
        fast[sel] = shapely.is_valid(polys) & (shapely.area(polys) > 0)
    blob, off = vertex_rows(rounded, 2)
    mv = memoryview(blob)
    if len(off) > 1:
        first_vertex = np.minimum(starts, len(off) - 2)
        a_list = off[first_vertex].tolist()
        b_list = off[first_vertex + 1].tolist()
        e_list = off[np.minimum(starts + lengths, len(off) - 1)].tolist()
    else:  # no vertex at all in this chunk: every contour takes the slow path
        a_list = b_list = e_list = [0] * n
    fast_list = fast.tolist()
    out: list[tuple] = []
    head, tail = b'{"type":"Polygon","coordinates":[[', b"]]}"
    for i in range(n):
        if fast_list[i]:
            a = a_list[i]
            out.append((head, mv[a : e_list[i]], mv[a : b_list[i] - 1], tail))
            continue
        geom = None
        if lengths[i] >= 3:
            geom = _geometry_dict(shapely.Polygon(coords[starts[i] : starts[i] + lengths[i]]))
        if geom is None:
            x0, y0, x1, y1 = bboxes[i]
            geom = {"type": "Polygon", "coordinates": [_bbox_ring(x0, y0, max(x1, x0 + 0.01), max(y1, y0 + 0.01))]}
        out.append((_DUMPS(geom).encode(),))
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l), vectorised."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - offsets + np.repeat(starts, lengths)


def _measurement_bytes(columns: dict[str, np.ndarray], qupath03: bool) -> tuple[bytes, np.ndarray]:
    """Measurement entries of every row (finite values only, 4 decimals) -> (blob, offsets)."""
    from napari_histo.formats._fastjson import const_field, join_rows, number_field

    n = len(next(iter(columns.values())))
    fields = []
    for name, values in columns.items():
        finite = np.isfinite(values)
        key = json.dumps(name).encode()
        pre = const_field(n, b'{"name":' + key + b',"value":' if qupath03 else key + b":")
        num = number_field(np.where(finite, values, 0.0), 4)
        post = const_field(n, b"}," if qupath03 else b",")
        for f in (pre, num, post):
            fields.append((f[0], f[1] & finite[:, None]))
    return join_rows(fields)


def _measurements(values: dict[str, float], qupath03: bool) -> dict | list:
    clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)}
    if qupath03:
        return [{"name": k, "value": v} for k, v in clean.items()]
    return clean


def _classification(name: str, colour: Sequence[int]) -> dict:
    return {"name": str(name).replace(":", " ").replace("\n", " "), "color": [int(c) for c in colour[:3]]}


def iter_nucleus_feature_bytes(
    table: pd.DataFrame,
    *,
    object_type: str = "detection",
    qupath03: bool = False,
    include_measurements: bool = True,
    chunk_size: int = _CHUNK,
    prefetch: bool = True,
) -> Iterator[bytes]:
    """Yield the UTF-8 JSON text of one GeoJSON Feature per nucleus (chunked, bounded memory)."""
    for chunk in _iter_feature_chunks(table, object_type=object_type, qupath03=qupath03,
                                      include_measurements=include_measurements,
                                      chunk_size=chunk_size, prefetch=prefetch):
        yield from chunk


def _iter_feature_chunks(
    table: pd.DataFrame,
    *,
    object_type: str = "detection",
    qupath03: bool = False,
    include_measurements: bool = True,
    chunk_size: int = _CHUNK,
    prefetch: bool = True,
) -> Iterator[list[bytes]]:
    """Yield the Feature texts of ``chunk_size`` nuclei at a time (the writer joins a chunk at once;
    per-feature generator steps cost more than the formatting itself at a million nuclei).

    With ``prefetch`` the next chunk's numbers, geometry checks and ids are prepared in a worker
    thread (numpy and shapely release the GIL) while this chunk's features are assembled; at most
    two chunks are in memory.
    """
    from napari_histo.formats._fastjson import uuid4_block

    if object_type not in ("detection", "cell"):
        raise ValueError(f"object_type must be 'detection' or 'cell', not {object_type!r}")
    info = table_type_info(table)
    classes = {t: _DUMPS(_classification(info.name(t), info.colour(t))).encode() for t in np.unique(table["type"]).tolist()} if len(table) else {}
    mpp = table.attrs.get("mpp")
    meas_cols = [c for c in MEASUREMENT_COLUMNS if c in table.columns] if include_measurements else []
    has_cell = object_type == "cell" and "cell_contour" in table.columns
    kind = object_type.encode()
    props_head = b'"properties":{"objectType":"' + kind + b'",' + (b'"object_type":"' + kind + b'",' if qupath03 else b"") + b'"classification":'
    m_open, m_close = (b',"measurements":[', b"]") if qupath03 else (b',"measurements":{', b"}")

    def prepare(start: int) -> tuple:
        """The numpy/shapely-heavy part of a chunk (runs one chunk ahead in a worker thread)."""
        sub = table.iloc[start : start + chunk_size]
        n = len(sub)
        bboxes = sub[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].to_numpy(dtype=np.float64)
        geoms = _polygon_bytes(sub["contour"].tolist(), bboxes)
        cell_geoms = _polygon_bytes(sub["cell_contour"].tolist(), bboxes) if has_cell else geoms
        ids = memoryview(uuid4_block(n))
        types = sub["type"].tolist()
        mview, m_start, m_end = None, [], []
        if meas_cols:
            cols = {MEASUREMENT_COLUMNS[c]: sub[c].to_numpy(dtype=np.float64) for c in meas_cols}
            if mpp and "perimeter_px" in sub.columns:
                cols["Perimeter \u00b5m"] = sub["perimeter_px"].to_numpy(dtype=np.float64) * float(mpp)
            mblob, moff = _measurement_bytes(cols, qupath03)
            mview = memoryview(mblob)
            m_start = moff[:-1].tolist()
            m_end = (moff[1:] - (moff[1:] > moff[:-1])).tolist()  # drop the trailing comma
        return n, geoms, cell_geoms, ids, types, mview, m_start, m_end

    chunk_starts = list(range(0, len(table), chunk_size))
    pool = ThreadPoolExecutor(max_workers=1) if prefetch and len(chunk_starts) > 1 else None
    try:
        pending = None
        for k, start in enumerate(chunk_starts):
            if pool is None:
                prepared = prepare(start)
            else:
                prepared = (pending or pool.submit(prepare, start)).result()
                pending = pool.submit(prepare, chunk_starts[k + 1]) if k + 1 < len(chunk_starts) else None
            n, geoms, cell_geoms, ids, types, mview, m_start, m_end = prepared
            texts: list[bytes] = []
            for j in range(n):
                parts = [b'{"type":"Feature","id":"', ids[36 * j : 36 * j + 36], b'","geometry":', *cell_geoms[j]]
                if object_type == "cell":
                    parts += [b',"nucleusGeometry":', *geoms[j]]
                parts += [b",", props_head, classes[types[j]]]
                if meas_cols:
                    parts += [m_open, mview[m_start[j] : m_end[j]], m_close]
                parts.append(b"}}")
                texts.append(b"".join(parts))
            yield texts
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def annotation_feature(ann: Annotation, *, qupath03: bool = False) -> dict | None:
    """GeoJSON Feature dict for an :class:`Annotation` (None when its geometry is empty)."""
    geom = _geometry_dict(ann.geometry)
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
        zlib level for ``.gz`` output (1 = fastest).
    prefetch : bool
        Prepare the next chunk of nuclei in a worker thread while writing the current one.

    Returns
    -------
    Path of the written file. The file is streamed to a temporary sibling and renamed on success.
    """
    import gzip as gz

    from napari_histo.utils import atomic_path

    path = Path(path)
    use_gz = path.name.lower().endswith(".gz") if gzip is None else bool(gzip)
    if table is not None:
        from napari_histo.nuclei.table import validate_table

        validate_table(table)
    with atomic_path(path) as tmp:
        fh = gz.open(tmp, "wb", compresslevel=compresslevel) if use_gz else open(tmp, "wb")
        with fh:
            fh.write(b'{"type":"FeatureCollection","features":[\n')
            first = True

            def emit_many(texts: list[bytes]) -> None:
                nonlocal first
                if not texts:
                    return
                if not first:
                    fh.write(b",\n")
                fh.write(b",\n".join(texts))
                first = False

            if table is not None and len(table):
                for texts in _iter_feature_chunks(table, object_type=object_type, qupath03=qupath03, include_measurements=include_measurements, prefetch=prefetch):
                    emit_many(texts)
            features = (annotation_feature(ann, qupath03=qupath03) for ann in annotations or ())
            emit_many([_DUMPS(f).encode() for f in features if f is not None])
            fh.write(b"\n]}\n")
    return path


# ----------------------------------------------------------------------------------------- reader
@dataclass
class QuPathObjects:
    """What :func:`read_geojson` found.

    Attributes
    ----------
    table : DataFrame
        Nucleus table built from ``detection`` and ``cell`` objects (cells use ``nucleusGeometry``
        when present, else their outer geometry). Type ids follow ``type_info``.
    annotations : list of Annotation
        Every other object (annotations, points, tiles, ...), geometry as shapely.
    type_info : TypeInfo
        Class name <-> type id used for the table (given, or built from the classes seen).
    """

    table: pd.DataFrame
    annotations: list[Annotation] = field(default_factory=list)
    type_info: Any = None


_TYPE_ALIASES = {
    "pathdetectionobject": "detection",
    "pathcellobject": "cell",
    "pathannotationobject": "annotation",
    "pathtileobject": "tile",
    "tmacoreobject": "tmaCore",
    "tma_core": "tmaCore",
    "tmacore": "tmaCore",
    "pathrootobject": "root",
}


def _object_type(feature: dict) -> str:
    props = feature.get("properties") or {}
    value = props.get("objectType") or props.get("object_type") or props.get("type") or feature.get("id")
    if not isinstance(value, str):
        return "annotation"
    low = value.strip().lower()
    if low in ("annotation", "detection", "cell", "tile", "root"):
        return low
    return _TYPE_ALIASES.get(low, "annotation")


def _argb_to_rgb(value: int) -> tuple[int, int, int]:
    v = int(value) & 0xFFFFFFFF
    return ((v >> 16) & 255, (v >> 8) & 255, v & 255)


def _parse_classification(cls: Any) -> tuple[str | None, tuple[int, int, int] | None]:
    if cls is None:
        return None, None
    if isinstance(cls, str):
        return cls.strip() or None, None
    if not isinstance(cls, dict):
        raise ValueError("classification must be null, a string or an object")
    name = cls.get("name")
    if name is None and isinstance(cls.get("names"), list):
        name = ": ".join(str(n) for n in cls["names"])
    colour = None
    col = cls.get("color", cls.get("colour"))
    if isinstance(col, list) and len(col) >= 3:
        colour = tuple(int(c) for c in col[:3])
    elif isinstance(col, (int, float)) and not isinstance(col, bool):
        colour = _argb_to_rgb(int(col))
    elif isinstance(cls.get("colorRGB"), (int, float)):
        colour = _argb_to_rgb(int(cls["colorRGB"]))
    if name is None and isinstance(cls.get("parentClass"), dict):
        name, colour = _parse_classification(cls["parentClass"])
    return (str(name) if name is not None else None), colour  # type: ignore[return-value]


def _parse_measurements(meas: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    items: Iterable = ()
    if isinstance(meas, dict):
        items = meas.items()
    elif isinstance(meas, list):
        items = ((m.get("name"), m.get("value")) for m in meas if isinstance(m, dict))
    for key, value in items:
        if key is None or isinstance(value, bool):
            continue
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _shape(geom: Any):
    """shapely geometry from a GeoJSON geometry dict (ValueError when unusable)."""
    import shapely

    if not isinstance(geom, dict) or "type" not in geom:
        raise ValueError("feature has no geometry")
    clean = {"type": geom["type"], "coordinates": geom.get("coordinates")}
    if geom["type"] == "GeometryCollection":
        clean = {"type": "GeometryCollection", "geometries": geom.get("geometries", [])}
    return shapely.from_geojson(json.dumps(clean, allow_nan=True))


def _fast_exterior(geom: Any) -> np.ndarray | None:
    """Exterior ring (N, 2) of a plain GeoJSON Polygon dict, or None when it needs shapely."""
    if not isinstance(geom, dict) or geom.get("type") != "Polygon":
        return None
    coords = geom.get("coordinates")
    if not isinstance(coords, list) or not coords or not isinstance(coords[0], list):
        return None
    try:
        ring = np.asarray(coords[0], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if ring.ndim != 2 or ring.shape[1] < 2 or len(ring) < 4 or not np.isfinite(ring[:, :2]).all():
        return None
    return ring[:, :2]


def _largest_polygon(geom):
    if geom.geom_type == "Polygon":
        return geom
    polys = [p for p in getattr(geom, "geoms", []) if p.geom_type == "Polygon"]
    return max(polys, key=lambda p: p.area) if polys else None


def read_geojson(path: str | os.PathLike, type_info: Any = None, mpp: float | None = None) -> QuPathObjects:
    """Read a QuPath GeoJSON file (``.geojson``/``.json``, optionally gzipped) into nuclei + annotations.

    Accepts a FeatureCollection, a single Feature, a bare JSON array of Features, or a bare geometry
    (read as one annotation). Classification as string, ``{name|names, color}`` or legacy
    ``{name, colorRGB}``; measurements as map or list. Polygons with holes keep their holes in the
    annotation geometry; nuclei keep the exterior ring (the table stores one ring per nucleus).

    Parameters
    ----------
    type_info : TypeInfo or dict, optional
        Class name -> type id for nuclei. Default: ids 1..n in order of first appearance
        (unclassified nuclei get type 0).
    mpp : float, optional
        µm/px at level 0 recorded in the table (GeoJSON carries none).
    """
    from napari_histo.nuclei.types import TypeInfo

    path = Path(path)
    data = load_json(path)
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise AnnotationFormatError(path, "FeatureCollection has no 'features' list")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    elif isinstance(data, dict) and data.get("type") in ("Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", "MultiLineString"):
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        raise AnnotationFormatError(path, "not GeoJSON: expected a FeatureCollection, a Feature or an array of Features")

    if isinstance(type_info, dict):
        type_info = TypeInfo.from_json_dict(type_info)
    names: dict[int, str] = dict(type_info.names) if type_info else {0: "background"}
    colours: dict[int, tuple[int, int, int]] = dict(type_info.colours) if type_info else {0: (0, 0, 0)}

    def type_of(name: str | None, colour) -> int:
        if name is None:
            return 0
        for k, v in names.items():
            if v.lower() == name.lower():
                return k
        new = max(names) + 1 if names else 1
        names[new] = name
        colours[new] = tuple(colour) if colour else (255, 255, 0)
        return new

    contours: list[np.ndarray] = []
    types: list[int] = []
    probs: list[float] = []
    annotations: list[Annotation] = []
    for index, feature in enumerate(_flatten(features)):
        try:
            if not isinstance(feature, dict) or "type" not in feature:
                continue  # QuPath skips anything without a "type"
            if feature.get("type") != "Feature":
                continue
            props = feature.get("properties") or {}
            if not isinstance(props, dict):
                raise ValueError("'properties' must be an object")
            kind = _object_type(feature)
            cls_name, cls_colour = _parse_classification(props.get("classification"))
            meas = _parse_measurements(props.get("measurements"))
            if kind in ("detection", "cell"):
                gdict = feature["nucleusGeometry"] if kind == "cell" and isinstance(feature.get("nucleusGeometry"), dict) else feature.get("geometry")
                ring = _fast_exterior(gdict)
                if ring is not None:  # plain Polygon: no shapely round trip needed
                    contours.append(ring)
                    types.append(type_of(cls_name, cls_colour))
                    p = meas.get("Class probability", meas.get("type_prob", 1.0))
                    probs.append(p if math.isfinite(p) else 1.0)
                    continue
                geom = _shape(gdict)
                poly = _largest_polygon(geom) if not geom.is_empty else None
                if poly is not None and len(poly.exterior.coords) >= 4:
                    contours.append(np.asarray(poly.exterior.coords, dtype=np.float64)[:-1])
                    types.append(type_of(cls_name, cls_colour))
                    p = meas.get("Class probability", meas.get("type_prob", 1.0))
                    probs.append(p if math.isfinite(p) else 1.0)
                    continue
                # point detections or empty geometries are kept as annotations
            geom = _shape(feature.get("geometry"))
            colour = props.get("color")
            rgb = tuple(int(c) for c in colour[:3]) if isinstance(colour, list) and len(colour) >= 3 else (
                _argb_to_rgb(colour) if isinstance(colour, int) and not isinstance(colour, bool) else cls_colour)
            name = props.get("name")
            annotations.append(
                Annotation(
                    geometry=geom,
                    name=str(name) if name is not None else None,
                    class_name=cls_name,
                    colour=rgb,  # type: ignore[arg-type]
                    object_type=kind,
                    measurements=meas,
                    is_ellipse=bool((feature.get("geometry") or {}).get("isEllipse", False)),
                    shape=geom.geom_type.lower(),
                )
            )
        except AnnotationFormatError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            raise AnnotationFormatError(path, f"feature {index}: {exc}") from None
        except Exception as exc:  # shapely's GEOSException and friends
            if type(exc).__name__ in ("GEOSException", "ShapelyError"):
                raise AnnotationFormatError(path, f"feature {index}: invalid geometry ({exc})") from None
            raise
    info = TypeInfo(names, colours)
    table = table_from_contours(contours, types, probs, mpp=mpp, type_info=info.to_json_dict())
    return QuPathObjects(table=table, annotations=annotations, type_info=info)


def _flatten(features: Iterable[Any]) -> Iterator[Any]:
    """Features, plus nested ``childObjects``/``children`` (QuPath hierarchy exports)."""
    stack = list(features)[::-1]
    while stack:
        f = stack.pop()
        yield f
        if isinstance(f, dict):
            props = f.get("properties") if isinstance(f.get("properties"), dict) else {}
            kids = f.get("childObjects") or f.get("children") or props.get("childObjects")
            if isinstance(kids, list):
                stack.extend(kids[::-1])
