"""Any supported annotation file -> nuclei + regions, the format found from the file's content.

One entry point for every consumer (``napari-histo import``, ``density``/``hotspots`` on an
annotation file, the napari import button), so a HoVer-Net JSON named ``*.json`` or an
ImageScope ``*.xml`` is never handed to the wrong parser because of its suffix.

Public API
----------
- :func:`detect_format` -- "sedeen", "imagescope", "asap", "geojson" or "hovernet".
- :func:`looks_like_annotations` -- cheap check for readers of many file kinds (napari).
- :func:`read_regions` -- the polygon regions (ROIs) of a file, optionally of one class.
- :func:`describe_annotations` -- what a file holds (``napari-histo info FILE``).
- :class:`AnnotationFile` -- nucleus table + region annotations of one file.
- :func:`read_annotation_file` -- read any supported file.
- :func:`read_nuclei` -- the nucleus table of a file, point annotations counted as nuclei when the
  file holds no nucleus outlines (manual counts; :func:`points_as_nuclei`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.formats._common import (
    Annotation,
    AnnotationFormatError,
    open_maybe_gzip,
    table_from_contours,
)
from napari_histo.formats.asap import read_asap
from napari_histo.formats.geojson import read_geojson
from napari_histo.formats.hovernet_json import read_hovernet_json
from napari_histo.formats.imagescope import read_imagescope
from napari_histo.formats.sedeen import read_sedeen
from napari_histo.schema.table import empty_table

__all__ = ["AnnotationFile", "class_ids", "describe_annotations", "detect_format", "looks_like_annotations", "read_annotation_file", "read_regions", "read_nuclei", "points_as_nuclei", "FORMAT_NAMES"]

#: Human-readable names of the formats :func:`detect_format` returns.
FORMAT_NAMES = {
    "geojson": "QuPath GeoJSON",
    "hovernet": "HoVer-Net JSON",
    "sedeen": "Sedeen session XML",
    "imagescope": "Aperio ImageScope XML",
    "asap": "ASAP XML",
}


def _head(path: str | os.PathLike) -> str:
    """The first 4 KiB of the (un-gzipped) file as text; a multi-byte character cut at the end
    is ignored (the readers check the whole file)."""
    return open_maybe_gzip(path, limit=4096).decode("utf-8-sig", "ignore").lstrip()


def _format_of(path: str | os.PathLike, head: str) -> str:
    if head.startswith("<"):
        # ASAP first: its root <ASAP_Annotations> holds an <Annotations> element too
        for tag, kind in (("<ASAP_Annotations", "asap"), ("<session", "sedeen"), ("<Annotations", "imagescope")):
            if tag in head:
                return kind
        raise AnnotationFormatError(path, "unknown XML annotation format (expected a Sedeen <session>, ImageScope <Annotations> or <ASAP_Annotations>)")
    if head.startswith(("{", "[")):
        return "hovernet" if '"nuc"' in head and '"FeatureCollection"' not in head else "geojson"
    raise AnnotationFormatError(path, "unknown annotation format (neither XML nor JSON)")


def detect_format(path: str | os.PathLike) -> str:
    """'sedeen', 'imagescope', 'asap', 'geojson' or 'hovernet' from the first 4 KiB of the file.

    Raises
    ------
    AnnotationFormatError
        Neither XML nor JSON, or an XML root that is none of the supported ones.
    """
    return _format_of(path, _head(path))


def looks_like_annotations(path: str | os.PathLike) -> bool:
    """Cheap, never-raising check (first 4 KiB) that ``path`` is an annotation file this package
    reads: stricter than :func:`detect_format`, so other JSON/XML files (configs, manifests) are
    left to other programs."""
    try:
        head = _head(path)
        kind = _format_of(path, head)
    except Exception:
        return False
    return kind != "geojson" or any(token in head for token in ('"FeatureCollection"', '"Feature"', '"geometry"'))


@dataclass
class AnnotationFile:
    """Contents of one annotation file.

    Attributes
    ----------
    path : Path
    kind : str
        Format (:data:`FORMAT_NAMES` key).
    table : DataFrame
        Nuclei (``napari_histo.schema.table``), possibly empty; ``attrs['type_info']`` names the types.
    annotations : list of Annotation
        Everything that is not a nucleus outline: regions, point annotations, lines.
    """

    path: Path
    kind: str
    table: pd.DataFrame
    annotations: list[Annotation] = field(default_factory=list)

    @property
    def format_name(self) -> str:
        return FORMAT_NAMES.get(self.kind, self.kind)


def read_annotation_file(
    path: str | os.PathLike,
    *,
    mpp: float | None = None,
    colours: Any = None,
    type_info: dict | None = None,
    strict: bool = False,
) -> AnnotationFile:
    """Read a QuPath GeoJSON, HoVer-Net JSON, Sedeen session, ImageScope or ASAP XML file.

    ImageScope regions are nucleus outlines (MoNuSeg, MoNuSAC); ASAP polygons are regions
    (CAMELYON-style), its dots and point sets points.

    Parameters
    ----------
    mpp : float, optional
        Level-0 µm/px for the table when the file does not carry it (GeoJSON, HoVer-Net JSON).
    colours : SedeenColourTable, optional
        Sedeen class <-> pen colour table (default: the shipped one).
    type_info : dict, optional
        ``type_info.json``-style {id: [name, rgb]} mapping class names to type ids
        (GeoJSON, HoVer-Net JSON, ImageScope).

    Raises
    ------
    AnnotationFormatError, InputFileError
        Unreadable or unsupported file (the message names it).
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == "geojson":
        objs = read_geojson(path, type_info=type_info, mpp=mpp, strict=strict)
        table = objs.table
        if not table.attrs.get("type_info"):
            table.attrs["type_info"] = objs.type_info.to_json_dict()
        return AnnotationFile(path, kind, table, list(objs.annotations))
    if kind == "hovernet":
        return AnnotationFile(path, kind, read_hovernet_json(path, type_info=type_info, mpp=mpp))
    if kind == "sedeen":
        session = read_sedeen(path)
        table = session.to_table(colours)
        nucleus_classes = _type_names(table)
        regions = [a for a in session.to_annotations(colours)
                   if not (a.class_name in nucleus_classes and a.shape == "polygon")]
        return AnnotationFile(path, kind, table, regions)
    if kind == "imagescope":
        return AnnotationFile(path, kind, _imagescope_table(path, type_info, mpp))

    return AnnotationFile(path, kind, empty_table(mpp), read_asap(path))


def read_nuclei(path: str | os.PathLike, *, mpp: float | None = None, colours: Any = None,
                type_info: dict | None = None) -> pd.DataFrame:
    """The nuclei of an annotation file as a nucleus table (level-0 px).

    Nucleus outlines (QuPath detections/cells, HoVer-Net ``nuc``, Sedeen nucleus-class polygons,
    ImageScope regions) when the file has any; otherwise its **point annotations** (QuPath
    Points tool, Sedeen points), one nucleus per point with its class as type and area 0, as
    left by manual counting. Regions (tumour outlines, ROIs) are never counted as nuclei.

    Raises
    ------
    AnnotationFormatError
        The file holds neither nucleus outlines nor points.
    """
    content = read_annotation_file(path, mpp=mpp, colours=colours, type_info=type_info)
    if len(content.table):
        return content.table
    table = points_as_nuclei(content, mpp)
    if table is None:
        raise AnnotationFormatError(path, f"{content.format_name} file holds no nuclei (no detections, "
                                          "nucleus outlines or point annotations)")
    return table


def read_regions(path: str | os.PathLike, class_name: str | None = None, *, colours: Any = None) -> list[Annotation]:
    """The polygon regions (ROIs: tumour outlines, annotated areas) of an annotation file, never
    its nuclei; with ``class_name`` only those of that class (case-insensitive).

    Raises
    ------
    AnnotationFormatError
        The file has no polygon region (of that class); the message lists the classes it has.
    """
    content = read_annotation_file(path, colours=colours)
    polygonal = [a for a in content.annotations
                 if a.geometry is not None and a.geometry.geom_type in ("Polygon", "MultiPolygon") and not a.geometry.is_empty]
    if class_name is None:
        chosen = polygonal
    else:
        chosen = [a for a in polygonal if (a.class_name or "").lower() == class_name.lower()]
    if not chosen:
        classes = sorted({a.class_name or "(none)" for a in polygonal})
        what = f" of class {class_name!r}" if class_name is not None else ""
        have = f"; its region classes: {', '.join(classes)}" if classes else ""
        raise AnnotationFormatError(path, f"{content.format_name} file has no polygon region{what}{have}")
    return chosen


def points_as_nuclei(content: AnnotationFile, mpp: float | None = None) -> pd.DataFrame | None:
    """Nucleus table with one row per point of the file's Point/MultiPoint annotations (area 0,
    class -> type), or None when it has none."""
    points, names, rgbs = [], [], []
    for ann in content.annotations:
        geom = ann.geometry
        for part in getattr(geom, "geoms", [geom]):
            if part.geom_type == "Point":
                points.append(np.asarray(part.coords, np.float64)[:, :2])
                names.append(ann.class_name)
                rgbs.append(ann.colour)
    if not points:
        return None
    known = content.table.attrs.get("type_info")
    known = {k: v for k, v in known.items() if str(k) == "0"} if known else None
    types, info = class_ids(names, known, rgbs)
    return table_from_contours(points, types, mpp=content.table.attrs.get("mpp") or mpp, type_info=info)


def describe_annotations(path: str | os.PathLike) -> dict[str, Any]:
    """What an annotation file holds: format, nuclei per type, regions per class and shape,
    points, the level-0 extent and the mpp when the file states one (JSON-able)."""
    content = read_annotation_file(path)
    table = content.table
    names = {int(k): str(v[0]) for k, v in (table.attrs.get("type_info") or {}).items()}
    nuclei = {names.get(int(t), str(t)): int(n) for t, n in table["type"].value_counts().sort_index().items()}
    regions: dict[str, dict[str, int]] = {}
    bounds = [table[["bbox_x0", "bbox_y0"]].min().tolist() + table[["bbox_x1", "bbox_y1"]].max().tolist()] if len(table) else []
    points = 0
    for ann in content.annotations:
        geom = ann.geometry
        if geom is None or geom.is_empty:
            continue
        bounds.append(list(geom.bounds))
        kind = {"Point": "points", "MultiPoint": "points", "LineString": "lines", "MultiLineString": "lines"}.get(geom.geom_type, "polygons")
        count = len(getattr(geom, "geoms", [geom])) if kind == "points" else 1
        points += count if kind == "points" else 0
        per_class = regions.setdefault(ann.class_name or "(no class)", {})
        per_class[kind] = per_class.get(kind, 0) + count
    extent = None
    if bounds:
        b = np.asarray(bounds, float)
        extent = [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())]
    return {"path": str(content.path), "format": content.format_name, "nuclei": int(len(table)),
            "nuclei_by_type": nuclei, "regions_by_class": regions, "points": points,
            "extent_xyxy": extent, "mpp": table.attrs.get("mpp")}


# ------------------------------------------------------------------------------------- internals
def _type_names(table: pd.DataFrame) -> set[str]:
    info = table.attrs.get("type_info") or {}
    return {str(v[0]) for k, v in info.items() if str(k) != "0"}


def class_ids(names: list[str | None], type_info: dict | None,
              rgbs: list[tuple[int, int, int] | None] | None = None,
              unnamed: str | None = "nucleus") -> tuple[list[int], dict]:
    """Type id per class name, and the resulting ``type_info`` dict ({id: [name, rgb]}).

    Known names (``type_info``, case-insensitive) keep their id, new ones get the next free id and
    the first colour given for them (``rgbs``). A missing name counts as ``unnamed``; with
    ``unnamed=None`` it gets id 0 (no class, as in rasterised masks).
    """
    known = {0: "background"}
    if type_info:
        known |= {int(k): str(v[0]) for k, v in type_info.items()}
    colours = {int(k): list(v[1]) for k, v in (type_info or {}).items() if len(v) > 1}
    by_name = {v.lower(): k for k, v in known.items()}
    ids = []
    for i, name in enumerate(names):
        if name is None and unnamed is None:
            ids.append(0)
            continue
        name = name or unnamed
        key = name.lower()
        if key not in by_name:
            new = max(known) + 1
            known[new] = name
            by_name[key] = new
            if rgbs is not None and rgbs[i] is not None:
                colours[new] = [int(c) for c in rgbs[i]]
        ids.append(by_name[key])
    info = {str(k): [v, colours.get(k, [0, 0, 0] if k == 0 else [255, 255, 0])] for k, v in sorted(known.items())}
    return ids, info


def _imagescope_table(path: Path, type_info: dict | None, mpp: float | None) -> pd.DataFrame:
    ann = read_imagescope(path)
    regions = [r for r in ann.regions if not r.negative]
    types, info = class_ids([r.class_name for r in regions], type_info)
    return table_from_contours([r.vertices for r in regions], types, mpp=ann.mpp or mpp, type_info=info)
