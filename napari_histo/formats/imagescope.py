"""Aperio ImageScope XML annotations (MoNuSeg, MoNuSAC) -- reader and rasteriser.

There is no public schema; the reader follows what ImageScope writes and
what the public datasets contain: root ``<Annotations MicronsPerPixel=...>`` (optional), one
``<Annotation>`` per layer whose class is the ``Name`` of its first ``Attributes/Attribute``
("Description" or nothing = no class), one ``<Region>`` per object with ``Vertices/Vertex``
X (column), Y (row) floats in level-0 px, ``NegativeROA="1"`` for holes. Vertices are read as
viewer coordinates (origin at the top-left pixel's corner) and returned in this package's
pixel-centre coordinates (:data:`~napari_histo.formats._common.VIEWER_PIXEL_OFFSET`).

Public functions
----------------
- :func:`read_imagescope` -- parse a file into :class:`ImageScopeAnnotations`.
- :func:`rasterize_regions` -- regions -> instance map (+ type map from class names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_histo.formats._common import from_viewer
from napari_histo.formats.rasterize import paint_polygons
from napari_histo.utils import InputFileError

# Lazy imports: defusedxml is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["ImageScopeRegion", "ImageScopeAnnotations", "read_imagescope", "rasterize_regions"]

#: Attribute names that label a layer generically rather than with a class.
_NOT_A_CLASS = {"", "description"}


@dataclass
class ImageScopeRegion:
    """One ``<Region>``: an object outline.

    Attributes
    ----------
    vertices : (N, 2) float64 array of x, y in pixel-centre coordinates (the file's value - 0.5;
        open ring: a repeated first vertex is removed)
    class_name : str or None -- class of the enclosing Annotation
    annotation_id, region_id : str
    negative : bool -- ``NegativeROA="1"`` (a hole / exclusion)
    region_type : str -- ImageScope ``Type`` code ("0" = freehand polygon)
    line_color : (R, G, B) or None -- Annotation ``LineColor`` decoded as COLORREF 0x00BBGGRR
    attributes : dict -- Region's XML attributes
    """

    vertices: np.ndarray
    class_name: str | None
    annotation_id: str = ""
    region_id: str = ""
    negative: bool = False
    region_type: str = "0"
    line_color: tuple[int, int, int] | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageScopeAnnotations:
    """Contents of an ImageScope XML file: ``regions`` and the root ``mpp`` (None if absent)."""

    regions: list[ImageScopeRegion]
    mpp: float | None
    path: str = ""

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self):
        return iter(self.regions)

    @property
    def class_names(self) -> list[str]:
        """Distinct class names in file order."""
        seen: dict[str, None] = {}
        for r in self.regions:
            if r.class_name:
                seen.setdefault(r.class_name, None)
        return list(seen)


def _colorref(value: str | None) -> tuple[int, int, int] | None:
    try:
        v = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return (v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_imagescope(path: str | Path, min_vertices: int = 3) -> ImageScopeAnnotations:
    """Parse an Aperio ImageScope XML file.

    Rings with fewer than ``min_vertices`` distinct vertices are skipped; a closing vertex equal
    to the first is dropped (ring closure varies between writers).

    Raises
    ------
    InputFileError
        Missing/unreadable file, malformed XML, or a root that is not ``<Annotations>``.
    """
    from defusedxml import ElementTree as ET
    from defusedxml.common import DefusedXmlException

    path = Path(path)
    try:
        tree = ET.parse(str(path))
    except FileNotFoundError as exc:
        raise InputFileError(path, "file not found") from exc
    except DefusedXmlException as exc:
        raise InputFileError(path, f"refused unsafe XML ({exc.__class__.__name__})") from exc
    except Exception as exc:  # xml.etree.ElementTree.ParseError and OSError
        raise InputFileError(path, f"not a readable XML file: {exc}") from exc
    root = tree.getroot()
    if _local(root.tag) != "Annotations":
        raise InputFileError(path, f"not an ImageScope annotation file (root <{_local(root.tag)}>, expected <Annotations>)")
    mpp = None
    raw_mpp = root.get("MicronsPerPixel")
    if raw_mpp not in (None, ""):
        try:
            mpp = float(raw_mpp)
        except ValueError:
            mpp = None
        if mpp is not None and not mpp > 0:
            mpp = None

    regions: list[ImageScopeRegion] = []
    for ann in root:
        if _local(ann.tag) != "Annotation":
            continue
        class_name = None
        for attrs in ann:
            if _local(attrs.tag) == "Attributes":
                for attr in attrs:
                    if _local(attr.tag) == "Attribute":
                        name = (attr.get("Name") or "").strip()
                        class_name = None if name.lower() in _NOT_A_CLASS else name
                        break
                break
        colour = _colorref(ann.get("LineColor"))
        for regions_el in ann:
            if _local(regions_el.tag) != "Regions":
                continue
            for reg in regions_el:
                if _local(reg.tag) != "Region":
                    continue
                verts = [v for v in reg.iter() if _local(v.tag) == "Vertex"]
                try:
                    arr = np.array([(v.get("X"), v.get("Y")) for v in verts], dtype=np.float64).reshape(-1, 2)
                except (TypeError, ValueError) as exc:
                    raise InputFileError(path, f"Region {reg.get('Id')} has a vertex without numeric X/Y") from exc
                if len(arr) > 1 and np.array_equal(arr[0], arr[-1]):
                    arr = arr[:-1]
                if len(arr) < min_vertices:
                    continue
                regions.append(
                    ImageScopeRegion(
                        vertices=from_viewer(arr),
                        class_name=class_name,
                        annotation_id=ann.get("Id", ""),
                        region_id=reg.get("Id", ""),
                        negative=reg.get("NegativeROA", "0").strip() == "1",
                        region_type=reg.get("Type", "0"),
                        line_color=colour,
                        attributes=dict(reg.attrib),
                    )
                )
    return ImageScopeAnnotations(regions=regions, mpp=mpp, path=str(path))


def _drop_collinear(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove repeated and exactly collinear vertices of a closed ring (same polygon, fewer edges)."""
    dx_prev, dy_prev = x - np.roll(x, 1), y - np.roll(y, 1)
    keep = (dx_prev != 0) | (dy_prev != 0)
    x, y = x[keep], y[keep]
    if len(x) < 4:
        return x, y
    ax, ay = x - np.roll(x, 1), y - np.roll(y, 1)
    bx, by = np.roll(x, -1) - x, np.roll(y, -1) - y
    turn = np.abs(ax * by - ay * bx) > 1e-9 * (np.abs(ax) + np.abs(ay)) * (np.abs(bx) + np.abs(by))
    if turn.sum() < 3:
        return x, y
    return x[turn], y[turn]


def rasterize_regions(
    regions: list[ImageScopeRegion] | ImageScopeAnnotations,
    shape: tuple[int, int],
    class_ids: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Paint regions into an instance map (ids 1..N in file order; later regions overwrite).

    Vertices are clipped to the image; pixel centres inside a polygon or on its boundary are
    painted (the ``"closed"`` edge rule of :mod:`napari_histo.formats.rasterize`). Negative (hole)
    regions are cleared from every instance painted before them.

    Parameters
    ----------
    regions : regions or the whole file
    shape : (H, W) of the image
    class_ids : mapping class name (case-insensitive) -> type id; when given a type map is
        returned too (unknown / missing classes -> 0).

    Returns
    -------
    inst : (H, W) int32, types : (H, W) int32 or None
    """
    regs = list(regions)
    h, w = shape
    lookup = {k.lower(): v for k, v in (class_ids or {}).items()}
    polygons = []
    for reg in regs:
        x = np.clip(reg.vertices[:, 0], 0, w - 1)
        y = np.clip(reg.vertices[:, 1], 0, h - 1)
        if len(x) > 8:  # dense outlines (MoNuSeg: 0.2 px steps): drop exactly collinear vertices
            x, y = _drop_collinear(x, y)
        polygons.append(np.column_stack([x, y]))
    values = [lookup.get((reg.class_name or "").lower(), 0) for reg in regs] if class_ids is not None else None
    return paint_polygons(polygons, (h, w), edges="closed", overlap="later", values=values,
                          erase=[reg.negative for reg in regs], ids="painted")
