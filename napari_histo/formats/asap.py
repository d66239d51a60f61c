"""ASAP annotation XML reader (``<ASAP_Annotations>``, the format of CAMELYON-style region sets).

Every ``<Annotation>`` becomes an :class:`~napari_histo.formats._common.Annotation` in level-0 px:
``Dot`` -> Point, ``PointSet`` -> MultiPoint, ``Polygon``/``Rectangle`` -> Polygon, ``Spline`` ->
Polygon through its control points sampled as a closed Catmull-Rom curve (how ASAP draws it),
``Measurement`` -> LineString. The class is ``PartOfGroup`` (``"None"`` -> no class); the colour is
the group's when it has one, else the annotation's own.

Public API
----------
- :func:`read_asap` -- list of annotations.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_histo.formats._common import Annotation, AnnotationFormatError, parse_xml
from napari_histo.formats.colours import hex_to_rgb

# Lazy imports: shapely is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["read_asap"]

_SPLINE_STEPS = 8  # curve points per control-point interval


def _colour(value: str | None) -> tuple[int, int, int] | None:
    try:
        return hex_to_rgb(value) if value else None
    except (ValueError, TypeError):
        return None


def _catmull_rom_closed(points: np.ndarray, steps: int = _SPLINE_STEPS) -> np.ndarray:
    """Closed uniform Catmull-Rom curve through ``points`` (N, 2), ``steps`` samples per interval."""
    p0, p1, p2, p3 = (np.roll(points, k, axis=0) for k in (1, 0, -1, -2))
    t = (np.arange(steps) / steps)[None, :, None]
    curve = 0.5 * (2 * p1[:, None] + (p2 - p0)[:, None] * t + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None] * t**2
                   + (3 * p1 - p0 - 3 * p2 + p3)[:, None] * t**3)
    return curve.reshape(-1, 2)


def read_asap(path: str | os.PathLike) -> list[Annotation]:
    """Parse an ASAP XML file into annotations (level-0 px).

    Raises
    ------
    AnnotationFormatError
        Malformed XML, a root other than ``<ASAP_Annotations>``, or a coordinate that is not a number.
    """
    import shapely

    path = Path(path)
    root = parse_xml(path)
    if root.tag != "ASAP_Annotations":
        raise AnnotationFormatError(path, f"not an ASAP annotation file (root <{root.tag}>, expected <ASAP_Annotations>)")
    groups = {g.get("Name"): _colour(g.get("Color")) for g in root.iter("Group")}
    out: list[Annotation] = []
    for ann in root.iter("Annotation"):
        kind = (ann.get("Type") or "Polygon").strip()
        rows = []
        for c in ann.iter("Coordinate"):
            try:
                rows.append((float(c.get("Order", len(rows))), float(c.get("X")), float(c.get("Y"))))
            except (TypeError, ValueError):
                raise AnnotationFormatError(path, f"annotation {ann.get('Name')!r}: coordinate without numeric Order/X/Y") from None
        if not rows:
            continue
        pts = np.asarray(sorted(rows), np.float64)[:, 1:]
        group = ann.get("PartOfGroup")
        class_name = None if group in (None, "", "None") else group
        colour = groups.get(group) or _colour(ann.get("Color"))
        if kind == "Dot" or len(pts) == 1:
            geom = shapely.Point(pts[0])
        elif kind == "PointSet":
            geom = shapely.MultiPoint(pts)
        elif kind == "Measurement" or len(pts) == 2:
            geom = shapely.LineString(pts)
        elif kind == "Spline":
            geom = shapely.Polygon(_catmull_rom_closed(pts))
        else:  # Polygon, Rectangle, None
            geom = shapely.Polygon(pts)
        out.append(Annotation(geom, name=ann.get("Name"), class_name=class_name, colour=colour,
                              shape={"Dot": "point", "PointSet": "point", "Measurement": "line"}.get(kind, kind.lower())))
    return out
