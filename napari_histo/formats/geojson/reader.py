"""``read_geojson``: a tolerant QuPath GeoJSON reader (FeatureCollection, Feature, bare array,
``.gz``; detections, cells and annotations; classifications, measurements, child objects).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.formats._common import (
    Annotation,
    AnnotationFormatError,
    from_viewer,
    geometry_from_viewer,
    no_gc,
    table_from_flat,
)
from napari_histo.formats.geojson.stream import _feature_chunks
from napari_histo.schema.types import TypeInfo

# Lazy imports: shapely is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.


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


def read_geojson(path: str | os.PathLike, type_info: Any = None, mpp: float | None = None,
                 strict: bool = False) -> QuPathObjects:
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
    strict : bool
        Refuse the file at its first malformed feature. By default a malformed feature is
        skipped: the count is in ``table.attrs["skipped"]`` and a warning names the first one.
    """
    with no_gc():  # the parsed tree is freed (by reference counting) before collection resumes
        return _read_geojson(Path(path), type_info, mpp, strict)


class _Skips:
    """Malformed features met while reading: refused (strict) or counted."""

    def __init__(self, path: Path, strict: bool):
        self.path, self.strict, self.count, self.first = path, strict, 0, ""

    def feature(self, index: int, exc: Exception) -> None:
        error = _feature_error(self.path, index, exc)
        if self.strict or not isinstance(error, AnnotationFormatError):
            raise error from None
        self.count += 1
        self.first = self.first or error.reason


def _read_geojson(path: Path, type_info: Any, mpp: float | None, strict: bool = False) -> QuPathObjects:
    """:func:`read_geojson` with the garbage collector paused."""
    path = Path(path)
    if isinstance(type_info, dict):
        type_info = TypeInfo.from_json_dict(type_info)
    names: dict[int, str] = dict(type_info.names) if type_info else {0: "background"}
    colours: dict[int, tuple[int, int, int]] = dict(type_info.colours) if type_info else {0: (0, 0, 0)}

    type_by_name: dict[str, int] = {}
    for k, v in names.items():
        type_by_name.setdefault(str(v).lower(), k)

    def type_of(name: str | None, colour) -> int:
        if name is None:
            return 0
        found = type_by_name.get(name.lower())
        if found is not None:
            return found
        new = max(names) + 1 if names else 1
        names[new] = name
        colours[new] = tuple(colour) if colour else (255, 255, 0)
        type_by_name[name.lower()] = new
        return new

    coord_parts: list[np.ndarray] = []
    length_parts: list[np.ndarray] = []
    types: list[int] = []
    probs: list[float] = []
    annotations: list[Annotation] = []
    skips = _Skips(path, strict)
    index = -1
    for features in _feature_chunks(path):
        contours: list[np.ndarray | None] = []  # None: a plain ring converted below, all at once
        plain: list[tuple] = []  # (nucleus, feature index, feature, properties, object type, geometry)
        chunk_types: list[int] = []
        chunk_probs: list[float] = []
        for feature in _flatten(features):
            index += 1
            try:
                if not isinstance(feature, dict) or "type" not in feature:
                    continue  # QuPath skips anything without a "type"
                if feature.get("type") != "Feature":
                    continue
                props = feature.get("properties") or {}
                if not isinstance(props, dict):
                    raise ValueError("'properties' must be an object")
                kind = _object_type(feature)
                if kind in ("detection", "cell"):
                    cls = props.get("classification")
                    name = cls.get("name") if isinstance(cls, dict) else None
                    t = type_by_name.get(name.lower()) if isinstance(name, str) else None  # a class seen before
                    if t is None:
                        t = type_of(*_parse_classification(cls))
                    gdict = feature["nucleusGeometry"] if kind == "cell" and isinstance(feature.get("nucleusGeometry"), dict) else feature.get("geometry")
                    coords = gdict.get("coordinates") if isinstance(gdict, dict) and gdict.get("type") == "Polygon" else None
                    if isinstance(coords, list) and coords and isinstance(coords[0], list) and len(coords[0]) >= 4:
                        prob = _class_probability(props.get("measurements"))
                        plain.append((len(contours), index, feature, props, kind, gdict))  # plain Polygon: no shapely
                        contours.append(None)
                        chunk_types.append(t)
                        chunk_probs.append(prob)
                        continue
                    ring = _polygon_exterior(gdict)
                    if ring is not None:
                        prob = _class_probability(props.get("measurements"))
                        contours.append(ring)
                        chunk_types.append(t)
                        chunk_probs.append(prob)
                        continue
                    # point detections or empty geometries are kept as annotations
                annotations.append(_annotation(feature, props, kind))
            except AnnotationFormatError:
                raise
            except Exception as exc:
                skips.feature(index, exc)
        chunk_coords, chunk_lengths = _plain_rings(path, plain, contours, chunk_types, chunk_probs, annotations, skips)
        coord_parts.append(chunk_coords)
        length_parts.append(chunk_lengths)
        types += chunk_types
        probs += chunk_probs
    coords = from_viewer(np.concatenate(coord_parts)) if coord_parts else np.zeros((0, 2))
    lengths = np.concatenate(length_parts) if length_parts else np.zeros(0, np.int64)
    info = TypeInfo(names, colours)
    table = table_from_flat(coords, lengths, types, probs, mpp=mpp, type_info=info.to_json_dict())
    if skips.count:
        table.attrs["skipped"] = {**table.attrs.get("skipped", {}), "malformed features": skips.count}
        warnings.warn(f"{path}: skipped {skips.count} malformed feature(s), the first: {skips.first} "
                      "(read it strictly to refuse the file instead)", stacklevel=3)
    return QuPathObjects(table=table, annotations=annotations, type_info=info)


def _feature_error(path: Path, index: int, exc: Exception) -> Exception:
    """A clean error for a broken feature (or ``exc`` itself when it is not about the input)."""
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)):
        return AnnotationFormatError(path, f"feature {index}: {exc}")
    if type(exc).__name__ in ("GEOSException", "ShapelyError"):  # shapely's GEOSException and friends
        return AnnotationFormatError(path, f"feature {index}: invalid geometry ({exc})")
    return exc


def _class_probability(meas: Any) -> float:
    """The nucleus class probability from a measurements map or list (1.0 when absent or not finite)."""
    if isinstance(meas, dict):
        for key in ("Class probability", "type_prob"):
            value = meas.get(key)
            if value is None or isinstance(value, bool):
                continue
            try:
                p = float(value)
            except (TypeError, ValueError):
                continue
            return p if math.isfinite(p) else 1.0
        return 1.0
    parsed = _parse_measurements(meas)
    p = parsed.get("Class probability", parsed.get("type_prob", 1.0))
    return p if math.isfinite(p) else 1.0


def _polygon_exterior(gdict: Any) -> np.ndarray | None:
    """Open exterior ring of a (largest) polygon through shapely, or None when it has none."""
    ring = _fast_exterior(gdict)
    if ring is not None:
        return ring
    geom = _shape(gdict)
    poly = _largest_polygon(geom) if not geom.is_empty else None
    if poly is not None and len(poly.exterior.coords) >= 4:
        return np.asarray(poly.exterior.coords, dtype=np.float64)[:-1, :2]  # x, y of 3-D positions
    return None


def _annotation(feature: dict, props: dict, kind: str) -> Annotation:
    cls_name, cls_colour = _parse_classification(props.get("classification"))
    geom = geometry_from_viewer(_shape(feature.get("geometry")))
    colour = props.get("color")
    rgb = tuple(int(c) for c in colour[:3]) if isinstance(colour, list) and len(colour) >= 3 else (
        _argb_to_rgb(colour) if isinstance(colour, int) and not isinstance(colour, bool) else cls_colour)
    name = props.get("name")
    return Annotation(
        geometry=geom,
        name=str(name) if name is not None else None,
        class_name=cls_name,
        colour=rgb,  # type: ignore[arg-type]
        object_type=kind,
        measurements=_parse_measurements(props.get("measurements")),
        is_ellipse=bool((feature.get("geometry") or {}).get("isEllipse", False)),
        shape=geom.geom_type.lower(),
    )


def _plain_rings(path: Path, plain: list, contours: list, types: list, probs: list,
                 annotations: list, skips: _Skips) -> tuple[np.ndarray, np.ndarray]:
    """Convert the plain Polygon rings in one numpy call -> (coords (N, 2), vertices per nucleus).

    Rings numpy cannot take as a whole (ragged, 3-D, non-numeric or non-finite positions) go
    through shapely one by one, as before; ones without a polygon then become annotations.
    """
    rings = [p[-1]["coordinates"][0] for p in plain]
    lens = np.fromiter(map(len, rings), np.int64, count=len(rings))
    flat = None
    try:
        points = list(chain.from_iterable(rings))
        if (np.fromiter(map(len, points), np.int64, count=len(points)) == 2).all():
            flat = np.fromiter(chain.from_iterable(points), np.float64, count=2 * len(points)).reshape(-1, 2)
    except (ValueError, TypeError, OverflowError):
        pass
    if flat is not None and flat.ndim == 2 and flat.shape[1] == 2 and len(flat) == lens.sum():
        bad = ~np.isfinite(flat).all(axis=1)
        good = np.ones(len(rings), bool) if not bad.any() else np.add.reduceat(bad, np.cumsum(lens) - lens) == 0
    else:
        good = np.zeros(len(rings), bool)
    if good.all() and len(plain) == len(contours):  # the usual case: nothing else to merge
        return (flat if flat is not None else np.zeros((0, 2))), lens
    starts = np.cumsum(lens) - lens
    dropped = set()
    for k, (slot, index, feature, props, kind, gdict) in enumerate(plain):
        if good[k]:
            contours[slot] = flat[starts[k] : starts[k] + lens[k]]
            continue
        try:
            ring = _polygon_exterior(gdict)
            if ring is None:  # kept as an annotation, as QuPath would
                annotations.append(_annotation(feature, props, kind))
        except Exception as exc:
            skips.feature(index, exc)
            ring = None
        if ring is None:
            dropped.add(slot)
        contours[slot] = ring
    if dropped:
        keep = [i for i in range(len(contours)) if i not in dropped]
        contours[:] = [contours[i] for i in keep]
        types[:] = [types[i] for i in keep]
        probs[:] = [probs[i] for i in keep]
    lengths = np.fromiter((len(c) for c in contours), np.int64, count=len(contours))
    coords = np.concatenate([np.asarray(c, np.float64).reshape(-1, 2) for c in contours]) if len(contours) else np.zeros((0, 2))
    return coords, lengths


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
