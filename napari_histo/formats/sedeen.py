"""Sedeen Viewer session XML (``<slide stem>.session.xml``): reader, writer and merge.

Writer profile (the session files Sedeen Viewer itself writes, https://pathcore.com/sedeen):
nuclei as ``polygon`` graphics coloured by type through a
:class:`~napari_histo.formats.colours.SedeenColourTable`, hotspots as ``rectangle`` (box mode) or
``ellipse`` (circle mode) graphics coloured by rank, ROIs as ``polygon`` graphics (exterior ring:
Sedeen has no holes, so holes are dropped). Every napari-histo graphic's description ends in
``[napari-histo]`` for the reader of the session.

Merging into an existing session is lossless: every element, attribute, comment and processing
instruction of the file, every other ``<image>`` and every graphic napari-histo did not write is
kept. napari-histo's own graphics are recognised by the ``napari-histo-id`` attribute they
carry, ``"<kind>:<signature>"``, where the signature is a hash of the graphic's type, name,
description, pen colour and points: a graphic is replaced by a new export of the same kind
(nuclei, hotspots or regions) only while it is exactly as written, so a nucleus corrected by
hand in Sedeen stays. Writes are atomic, go through symbolic links to their target and keep the
file's permissions (:func:`napari_histo.utils.atomic_write`).
"""

from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from napari_histo.formats._common import (
    Annotation,
    AnnotationFormatError,
    closed_ring,
    decode_text,
    open_maybe_gzip,
    parse_xml,
    table_from_contours,
    table_type_info,
)
from napari_histo.formats.colours import SedeenColourTable, hex_to_rgb, normalise_colour, rgb_to_hex
from napari_histo.formats.rasterize import Shape, rasterize_shapes
from napari_histo.utils import atomic_write

# Lazy imports: shapely is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["SedeenGraphic", "SedeenSession", "read_sedeen", "write_sedeen", "session_path_for", "sedeen_to_masks", "MARK"]

#: Suffix of the description of every graphic napari-histo writes (used to replace on re-export).
MARK = "[napari-histo]"
_MASK_KINDS = ("polygon", "rectangle", "ellipse", "point")


@dataclass
class SedeenGraphic:
    """One ``<graphic>``: type, name, description, pen colour '#rrggbbaa', points (N, 2) x, y level-0 px."""

    type: str
    name: str
    description: str
    colour: str
    points: np.ndarray


@dataclass
class SedeenSession:
    """A parsed session: image identifier, dimensions (w, h) or None, mpp (x, y) or None, graphics."""

    path: Path
    identifier: str | None
    dimensions: tuple[int, int] | None
    mpp: tuple[float, float] | None
    graphics: list[SedeenGraphic] = field(default_factory=list)

    def _types(self, colour_table: SedeenColourTable | None) -> tuple[list[int | None], dict[int, tuple[str, str]]]:
        """Type id per graphic (None for region-class colours); unknown colours get new ids (never reused)."""
        table = colour_table or SedeenColourTable.default()
        classes = dict(table.classes)
        out: list[int | None] = []
        for g in self.graphics:
            t = table.type_of(g.colour)
            if t is None and table.region_of(g.colour) is not None:
                out.append(None)
                continue
            if t is None:
                rgb = g.colour[:7].lower()
                t = next((k for k, (_, c) in classes.items() if c[:7] == rgb), None)
                if t is None:
                    t = max(classes, default=0) + 1
                    classes[t] = (rgb, g.colour)
            out.append(t)
        return out, classes

    def to_table(self, colour_table: SedeenColourTable | None = None) -> pd.DataFrame:
        """Nucleus table from the ``polygon`` graphics whose colour is a nucleus class."""
        types, classes = self._types(colour_table)
        sel = [i for i, g in enumerate(self.graphics) if g.type == "polygon" and types[i] is not None and len(g.points) >= 3]
        info = {"0": ["background", [0, 0, 0]]} | {str(k): [n, list(hex_to_rgb(c))] for k, (n, c) in sorted(classes.items())}
        mpp = self.mpp[0] if self.mpp else None
        return table_from_contours([self.graphics[i].points for i in sel], [types[i] for i in sel], mpp=mpp, type_info=info)

    def to_masks(
        self,
        region: tuple[int, int, int, int],
        colour_table: SedeenColourTable | None = None,
        point_radius: float = 2.0,
        include_regions: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, list]]:
        """Instance map, type map and the type_info used, for ``region = (x, y, w, h)`` in level-0 px.

        Polygon, rectangle, ellipse and point graphics are painted (text, rulers, arrows and
        polylines are not); region-class colours (e.g. tumour bed) only when ``include_regions``.
        """
        types, classes = self._types(colour_table)
        shapes = []
        for i, g in enumerate(self.graphics):
            if g.type not in _MASK_KINDS or (types[i] is None and not include_regions):
                continue
            shapes.append(Shape(g.type, g.points, types[i] or 0, len(shapes) + 1))
        inst, typ = rasterize_shapes(shapes, region, point_radius=point_radius)
        info = {"0": ["background", [0, 0, 0]]} | {str(k): [n, list(hex_to_rgb(c))] for k, (n, c) in sorted(classes.items())}
        return inst, typ, info

    def to_annotations(self, colour_table: SedeenColourTable | None = None) -> list[Annotation]:
        """Every graphic with >= 1 point as an :class:`Annotation` (shapely geometry)."""
        import shapely

        table = colour_table or SedeenColourTable.default()
        out = []
        for g in self.graphics:
            p = g.points
            if not len(p):
                continue
            if g.type in ("polygon", "rectangle", "text") and len(p) >= 3:
                geom = shapely.Polygon(p)
            elif g.type == "ellipse" and len(p) >= 2:
                (x0, y0), (x1, y1) = p.min(0), p.max(0)
                geom = shapely.affinity.scale(shapely.Point((x0 + x1) / 2, (y0 + y1) / 2).buffer(1.0, 32), (x1 - x0) / 2, (y1 - y0) / 2)
            elif g.type == "point" or len(p) == 1:
                geom = shapely.MultiPoint(p) if len(p) > 1 else shapely.Point(p[0])
            else:
                geom = shapely.LineString(p)
            t = table.type_of(g.colour)
            cls = table.classes[t][0] if t is not None else table.region_of(g.colour)
            out.append(Annotation(geom, name=g.name, class_name=cls, colour=hex_to_rgb(g.colour), is_ellipse=g.type == "ellipse", shape=g.type))
        return out


# ----------------------------------------------------------------------------------------- reader
def _pair(text: str | None, what: str) -> tuple[float, float]:
    parts = (text or "").strip().split(",")
    if len(parts) != 2:
        raise ValueError(f"{what} must be 'a,b', got {text!r}")
    return float(parts[0]), float(parts[1])


def read_sedeen(path: str | os.PathLike) -> SedeenSession:
    """Parse a Sedeen session (UTF-8 BOM and CRLF tolerated; DTD entities rejected)."""
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "session":
        raise AnnotationFormatError(path, f"not a Sedeen session: root element is <{root.tag}>, expected <session>")
    image = root.find("image")
    if image is None:
        raise AnnotationFormatError(path, "Sedeen session has no <image> element")
    try:
        dims = image.find("dimensions")
        dimensions = tuple(int(float(v)) for v in _pair(dims.text, "dimensions")) if dims is not None and dims.text else None
    except ValueError:
        dimensions = None  # writers disagree on dimensions; never rely on it
    mpp = None
    ps = image.find("pixel-size")
    if ps is not None and ps.text:
        try:
            mpp = _pair(ps.text, "pixel-size")
        except ValueError as exc:
            raise AnnotationFormatError(path, f"<pixel-size>: {exc}") from None
    graphics = []
    overlays = image.find("overlays")
    for index, g in enumerate(overlays.findall("graphic") if overlays is not None else []):
        try:
            pen = g.find("pen")
            colour = normalise_colour(pen.get("color", "#000000ff")) if pen is not None else "#000000ff"
            pts = [_pair(p.text, "point") for p in g.iterfind("point-list/point")]
            arr = np.asarray(pts, np.float64).reshape(-1, 2)
            if not np.isfinite(arr).all():
                raise ValueError("non-finite point coordinate")
        except ValueError as exc:
            raise AnnotationFormatError(path, f"graphic {index} ({g.get('name', '')!r}): {exc}") from None
        graphics.append(SedeenGraphic(str(g.get("type", "polygon")).lower(), g.get("name", f"Region {index}"), g.get("description", ""), colour, arr))
    return SedeenSession(path, image.get("identifier"), dimensions, mpp, graphics)  # type: ignore[arg-type]


def sedeen_to_masks(path: str | os.PathLike, region: tuple[int, int, int, int], colour_table: SedeenColourTable | None = None,
                    point_radius: float = 2.0) -> tuple[np.ndarray, np.ndarray, dict[str, list]]:
    """Read a session and rasterise it: ``(inst, type, type_info)`` for ``region`` (x, y, w, h)."""
    return read_sedeen(path).to_masks(region, colour_table, point_radius)


# ----------------------------------------------------------------------------------------- writer
def session_path_for(slide_path: str | os.PathLike) -> Path:
    """``CMU-1.svs`` -> ``CMU-1.session.xml`` in the slide's folder (where Sedeen looks for it)."""
    slide_path = Path(slide_path)
    return slide_path.parent / f"{slide_path.stem}.session.xml"


#: Attribute naming napari-histo's own graphics: ``"<kind>:<signature>"``.
ID_ATTRIBUTE = "napari-histo-id"
#: What a graphic was written for: an export replaces only earlier graphics of its own kinds.
GRAPHIC_KINDS = ("nucleus", "hotspot", "roi")


def graphic_signature(kind: str, name: str, description: str, colour: str, points: Sequence[str]) -> str:
    """Hash of what a graphic shows (``points`` as written, ``"x,y"`` with 6 decimals)."""
    text = "\x1f".join([kind.lower(), name, description, normalise_colour(colour), *points])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _graphic_xml(kind: str, name: str, description: str, colour: str, points: Iterable[Sequence[float]],
                 role: str) -> str:
    texts = [f"{x:.6f},{y:.6f}" for x, y in points]
    pts = "".join(f"\n          <point>{t}</point>" for t in texts)
    ident = f"{role}:{graphic_signature(kind, name, description, colour, texts)}"
    return (
        f"\n      <graphic type={quoteattr(kind)} name={quoteattr(name)} description={quoteattr(description)}"
        f" {ID_ATTRIBUTE}={quoteattr(ident)}>"
        f'\n        <pen color="{colour}" width="3" style="Solid"/>'
        "\n        <font>Arial;12</font>"
        f"\n        <point-list>{pts}\n        </point-list>"
        "\n      </graphic>"
    )


def _hotspot_graphics(hotspots: pd.DataFrame, colours: SedeenColourTable) -> Iterable[str]:
    for k, (_, h) in enumerate(hotspots.iterrows(), start=1):
        rank = int(h.get("rank", k))
        if {"x0", "y0", "x1", "y1"} <= set(h.index) and h.get("mode", "box") == "box":
            x0, y0, x1, y1 = float(h["x0"]), float(h["y0"]), float(h["x1"]), float(h["y1"])
            kind = "rectangle"
        else:
            r = float(h["radius_px"])
            x0, y0, x1, y1 = float(h["x"]) - r, float(h["y"]) - r, float(h["x"]) + r, float(h["y"]) + r
            kind = "ellipse"
        desc = f"top{rank} count={int(h['count'])}" if "count" in h.index else f"top{rank}"
        name = str(h.get("name", f"Hotspot {rank}"))
        yield _graphic_xml(kind, name, f"{desc} {MARK}", colours.hotspot_colour(rank), [(x0, y0), (x1, y0), (x1, y1), (x0, y1)],
                           "hotspot")


def _roi_graphics(rois: Iterable, colours: SedeenColourTable) -> Iterable[str]:
    import shapely

    for i, roi in enumerate(rois, start=1):
        ann = roi if isinstance(roi, Annotation) else Annotation(roi)
        geom = ann.geometry
        if geom is None or geom.is_empty:
            continue
        colour = rgb_to_hex(ann.colour) if ann.colour else colours.roi
        for part in shapely.get_parts(geom):
            if part.geom_type == "Polygon":
                yield _graphic_xml("polygon", ann.name or f"ROI {i}", f"{ann.class_name or 'ROI'} {MARK}", colour,
                                   [c[:2] for c in part.exterior.coords][:-1], "roi")
            elif part.geom_type == "Point":
                yield _graphic_xml("point", ann.name or f"ROI {i}", f"{ann.class_name or 'ROI'} {MARK}", colour,
                                   [(part.x, part.y)], "roi")


def _nucleus_graphics(table: pd.DataFrame, colours: SedeenColourTable) -> Iterable[str]:
    info = table_type_info(table)
    for nid, t, p, contour in zip(table["id"], table["type"], table["type_prob"], table["contour"], strict=True):
        ring = closed_ring(contour)
        if len(ring) < 3:
            continue
        yield _graphic_xml("polygon", f"Nucleus {int(nid)}", f"{info.name(int(t))} p={float(p):.3f} {MARK}",
                           colours.colour_of(int(t)), ring, "nucleus")


def write_sedeen(
    table: pd.DataFrame | None,
    path: str | os.PathLike,
    *,
    hotspots: pd.DataFrame | None = None,
    rois: Iterable | None = None,
    merge: bool = True,
    replace_previous: bool = True,
    slide_name: str | None = None,
    dimensions: tuple[int, int] | None = None,
    mpp: tuple[float, float] | float | None = None,
    colour_table: SedeenColourTable | None = None,
) -> Path:
    """Write (or merge into) a Sedeen session.

    Parameters
    ----------
    table : DataFrame or None
        Nuclei written as polygons (pen colour = type through ``colour_table``; default: the
        table's ``type_info`` colours).
    path : path
        The session file (``*.xml``) or the slide file (session written beside it as
        ``<stem>.session.xml``).
    hotspots : DataFrame, optional
        Output of :func:`napari_histo.analysis.hotspots.find_hotspots`: rectangles (box mode) or
        ellipses (circle mode), named "Hotspot k", coloured by rank.
    rois : iterable of Annotation or shapely geometries, optional
    merge : bool
        When the session exists, keep all of it and add ours to the overlays of the image named
        ``slide_name`` (else the first image).
    replace_previous : bool
        When merging, drop napari-histo's earlier graphics of the kinds written now (nuclei,
        hotspots, regions) that are still exactly as written; edited ones stay.
    slide_name, dimensions, mpp
        Header for a new session (default: the slide file name, the table extent, the table mpp).
    """
    path = Path(path)
    if not path.name.lower().endswith(".xml"):
        slide_name = slide_name or path.name
        path = session_path_for(path)
    if colour_table is None:
        colour_table = SedeenColourTable.from_type_info(table_type_info(table)) if table is not None and len(table) else SedeenColourTable.default()
        if table is None or not len(table):
            colour_table.classes = {}
        defaults = SedeenColourTable.default()
        colour_table.hotspot_rank_colours, colour_table.roi = defaults.hotspot_rank_colours, defaults.roi

    sources: list[Iterable[str]] = []
    kinds: set[str] = set()
    if table is not None and len(table):
        sources.append(_nucleus_graphics(table, colour_table))
        kinds.add("nucleus")
    if rois is not None:
        sources.append(_roi_graphics(rois, colour_table))
        kinds.add("roi")
    if hotspots is not None and len(hotspots):
        sources.append(_hotspot_graphics(hotspots, colour_table))
        kinds.add("hotspot")
    if merge and path.exists():
        prolog, before, after, epilog = _merge_frame(path, slide_name, kinds if replace_previous else set())
    else:
        if mpp is None and table is not None and table.attrs.get("mpp"):
            mpp = float(table.attrs["mpp"])
        mx, my = (mpp, mpp) if isinstance(mpp, (int, float)) else (mpp or (1.0, 1.0))
        if dimensions is None:
            w = int(table["bbox_x1"].max()) if table is not None and len(table) else 0
            h = int(table["bbox_y1"].max()) if table is not None and len(table) else 0
            dimensions = (w, h)
        w, h = dimensions
        ident = slide_name or path.name.removesuffix(".session.xml")
        prolog, epilog = '<?xml version="1.0" encoding="UTF-8"?>\n', "\n"
        before = (
            '<session software="napari-histo" version="0.1.0">'
            f"\n  <image identifier={quoteattr(ident)}>"
            f"\n    <dimensions>{int(w)},{int(h)}</dimensions>"
            f'\n    <pixel-size units="um">{mx:.6f},{my:.6f}</pixel-size>'
            "\n    <transform>"
            '\n      <translation units="um">0.000000,0.000000</translation>'
            f'\n      <center units="um">{w * mx / 2:.6f},{h * my / 2:.6f}</center>'
            '\n      <rotation unit="degrees">0.000000</rotation>'
            "\n      <scale>1.000000,1.000000</scale>"
            "\n    </transform>"
            "\n    <overlays>"
        )
        after = "\n    </overlays>\n  </image>\n</session>"
    with atomic_write(path, encoding="utf-8", newline="\n") as fh:
        fh.write(prolog)
        fh.write(before)
        buf: list[str] = []
        for src in sources:
            for text in src:
                buf.append(text)
                if len(buf) >= 2048:
                    fh.write("".join(buf))
                    buf.clear()
        fh.write("".join(buf))
        fh.write(after)
        fh.write(epilog)
    return path


_PLACEHOLDER = "napari-histo-insert-here"


def _merge_frame(path: Path, slide_name: str | None, replace_kinds: set[str]) -> tuple[str, str, str, str]:
    """The existing session around the place new graphics go: ``(prolog, before, after, epilog)``.

    The file is parsed with its comments and processing instructions; the image is the one
    whose ``identifier`` is ``slide_name`` (else the first); our unchanged graphics of
    ``replace_kinds`` are removed from its overlays; everything else is serialised back, and the
    text before and after the root element is kept as it was.
    """
    raw = open_maybe_gzip(path)
    root = parse_xml(path, raw, keep_comments=True)
    images = root.findall("image")
    if root.tag != "session" or not images:
        raise AnnotationFormatError(path, "existing file is not a Sedeen session; refusing to overwrite it")
    image = next((im for im in images if slide_name and im.get("identifier") == slide_name), images[0])
    overlays = image.find("overlays")
    if overlays is None:
        overlays = ET.SubElement(image, "overlays")
    for g in list(overlays.findall("graphic")):
        if _ours_unchanged(g, replace_kinds):
            overlays.remove(g)
    ET.SubElement(overlays, _PLACEHOLDER)
    before, after = ET.tostring(root, encoding="unicode").split(f"<{_PLACEHOLDER} />", 1)
    text = decode_text(path, raw)
    start, end = _root_span(text, root.tag)
    return text[:start], before, after, text[end:]


def _ours_unchanged(graphic: ET.Element, kinds: set[str]) -> bool:
    """A graphic napari-histo wrote for one of ``kinds`` and nobody changed since."""
    ident = graphic.get(ID_ATTRIBUTE, "")
    kind, _, signature = ident.partition(":")
    if kind not in kinds or not signature:
        return False
    pen = graphic.find("pen")
    try:
        colour = pen.get("color", "") if pen is not None else ""
        points = [",".join(f"{float(v):.6f}" for v in _pair(p.text, "point")) for p in graphic.iterfind("point-list/point")]
        return signature == graphic_signature(graphic.get("type", ""), graphic.get("name", ""),
                                              graphic.get("description", ""), colour, points)
    except (ValueError, TypeError):
        return False


_PROLOG_ITEM = re.compile(r"\s*(<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)", re.S)


def _root_span(text: str, tag: str) -> tuple[int, int]:
    """(start, end) of the root element in ``text``: what precedes it (declaration, comments,
    processing instructions) and what follows it are kept verbatim."""
    pos = 0
    while (m := _PROLOG_ITEM.match(text, pos)) is not None:
        pos = m.end()
    start = text.index("<", pos)
    close = f"</{tag}>"
    end = text.rfind(close)
    end = end + len(close) if end >= 0 else len(text)
    return start, end


