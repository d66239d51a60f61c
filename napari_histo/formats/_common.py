"""Shared plumbing for the annotation readers and writers: errors, safe XML, geometry -> table."""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import os
import warnings
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.schema.table import empty_table
from napari_histo.schema.types import NUCLEUS_ONLY, TypeInfo
from napari_histo.utils import InputFileError, check_input_file, env_limit

# Lazy imports: defusedxml, orjson, shapely are imported inside the functions that use them
# (directly or through the modules named there): importing this module stays light for the CLI and
# the napari manifest.


class AnnotationFormatError(InputFileError):
    """An annotation file that cannot be read: names the file, the problem and, when known, where.

    Attributes
    ----------
    line, column : int or None
        1-based position of the problem in the file, when the parser reports one.
    """

    def __init__(self, path: str | os.PathLike, reason: str, line: int | None = None, column: int | None = None):
        self.line = line
        self.column = column
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(path, f"{reason}{where}")


@dataclass
class Annotation:
    """A region object (ROI, hotspot, imported annotation) in level-0 px.

    Attributes
    ----------
    geometry : shapely geometry
        Polygon, MultiPolygon, Point, MultiPoint or LineString in level-0 px (x right, y down).
    name : str or None
        Display name, e.g. "Hotspot 1".
    class_name : str or None
        Classification name.
    colour : (r, g, b) or None
        Display colour 0-255.
    object_type : str
        QuPath object type ("annotation", "detection", "cell", ...).
    measurements : dict
        Numeric measurements (non-finite values are dropped on export).
    is_ellipse : bool
        The polygon is an ellipse/circle polygonisation (QuPath ``isEllipse``; Sedeen ``ellipse``).
    shape : str or None
        Source shape kind when known ("polygon", "rectangle", "ellipse", "point", ...).
    """

    geometry: Any
    name: str | None = None
    class_name: str | None = None
    colour: tuple[int, int, int] | None = None
    object_type: str = "annotation"
    measurements: dict[str, float] = field(default_factory=dict)
    is_ellipse: bool = False
    shape: str | None = None


#: Decompressed bytes a ``.gz`` annotation file may expand to, as a multiple of its size on disk
#: (GeoJSON exports compress about 4x; a decompression bomb thousands of times), and at least
#: :data:`MIN_INFLATE_BYTES`. ``NAPARI_HISTO_MAX_INFLATE_RATIO`` in the environment changes it.
MAX_INFLATE_RATIO = 100
MIN_INFLATE_BYTES = 64 * 2**20
_READ_BLOCK = 8 * 2**20


def inflate_limit(path: str | os.PathLike) -> int:
    """Most bytes the gzip file ``path`` may decompress to (see :data:`MAX_INFLATE_RATIO`)."""
    ratio = env_limit("MAX_INFLATE_RATIO", MAX_INFLATE_RATIO)
    return int(max(MIN_INFLATE_BYTES, ratio * os.path.getsize(path)))


def inflate_error(path: str | os.PathLike, limit: int) -> AnnotationFormatError:
    """The error for gzip data that expands beyond :func:`inflate_limit`."""
    return AnnotationFormatError(
        path, f"gzip data expands beyond {limit:,} bytes, more than "
        f"{env_limit('MAX_INFLATE_RATIO', MAX_INFLATE_RATIO):g}x the file (a decompression bomb?); "
        "set NAPARI_HISTO_MAX_INFLATE_RATIO to read it anyway")


def open_maybe_gzip(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """Read a text file as bytes, gunzipping ``.gz`` files (or any file with the gzip magic).

    ``limit`` reads only the first ``limit`` (uncompressed) bytes: enough to recognise a format
    without reading a large file. Only regular files are opened (a named pipe would block). The
    file is read a block at a time and refused at the first NUL byte (no JSON or XML text holds
    one: a sparse or binary file is not read whole) or when gzip data expands beyond
    :func:`inflate_limit`.
    """
    path = Path(path)
    try:
        check_input_file(path, "annotation file")
    except InputFileError as exc:
        raise AnnotationFormatError(path, exc.reason) from None
    try:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            if gzipped:
                try:
                    with gzip.GzipFile(fileobj=fh) as gz:
                        raw = _read_text_bytes(path, gz, limit, inflate_limit(path))
                except AnnotationFormatError:
                    raise
                except (EOFError, ValueError, gzip.BadGzipFile, zlib.error) as exc:
                    raise AnnotationFormatError(path, f"corrupt gzip data ({exc})") from None
            else:
                raw = _read_text_bytes(path, fh, limit, None)
    except AnnotationFormatError:
        raise
    except OSError as exc:
        raise AnnotationFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not raw.strip():
        raise AnnotationFormatError(path, "file is empty")
    return raw


def _read_text_bytes(path: Path, fh: Any, limit: int | None, max_bytes: int | None) -> bytes:
    parts: list[bytes] = []
    total = 0
    while limit is None or total < limit:
        block = fh.read(_READ_BLOCK if limit is None else min(_READ_BLOCK, limit - total))
        if not block:
            break
        if limit is None and b"\x00" in block:
            raise AnnotationFormatError(path, f"not a text file (NUL byte at offset {total + block.index(0)})")
        total += len(block)
        if max_bytes is not None and total > max_bytes:
            raise inflate_error(path, max_bytes)
        parts.append(block)
    return b"".join(parts)


def decode_text(path: str | os.PathLike, raw: bytes) -> str:
    """Decode UTF-8 (a BOM is allowed); CRLF is normalised to LF."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise AnnotationFormatError(path, "not valid UTF-8 text", line, col) from None
    return text.replace("\r\n", "\n")


def parse_xml(path: str | os.PathLike, raw: bytes | None = None, keep_comments: bool = False):
    """Parse an XML file safely (no DTD entities, no external entities) -> ElementTree root.

    Billion-laughs and external-entity files are rejected with :class:`AnnotationFormatError`;
    malformed XML reports the line and column. ``keep_comments`` keeps comments and processing
    instructions inside the root as tree nodes (for writers that must give them back).
    """
    import defusedxml
    import defusedxml.ElementTree as DET

    if raw is None:
        raw = open_maybe_gzip(path)
    text = decode_text(path, raw)
    try:
        if not keep_comments:
            return DET.fromstring(text, forbid_dtd=False, forbid_entities=True, forbid_external=True)
        parser = DET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True),
                               forbid_dtd=False, forbid_entities=True, forbid_external=True)
        parser.feed(text)
        return parser.close()
    except defusedxml.EntitiesForbidden:
        raise AnnotationFormatError(path, "XML entity declarations are not allowed (possible entity-expansion attack)") from None
    except (defusedxml.ExternalReferenceForbidden, defusedxml.DTDForbidden):
        raise AnnotationFormatError(path, "XML external entities/references are not allowed") from None
    except defusedxml.DefusedXmlException as exc:
        raise AnnotationFormatError(path, f"unsafe XML rejected ({type(exc).__name__})") from None
    except ET.ParseError as exc:
        line, col = getattr(exc, "position", (None, None))
        msg = str(exc).split(":")[0] or "malformed XML"
        raise AnnotationFormatError(path, f"malformed XML: {msg}", line, None if col is None else col + 1) from None


def json_error(path: str | os.PathLike, exc: Exception) -> AnnotationFormatError:
    """Convert a :class:`json.JSONDecodeError` into an error with line and column."""
    if isinstance(exc, json.JSONDecodeError):
        return AnnotationFormatError(path, f"malformed JSON: {exc.msg}", exc.lineno, exc.colno)
    if isinstance(exc, RecursionError):
        return AnnotationFormatError(path, "JSON nested too deeply")
    return AnnotationFormatError(path, f"malformed JSON: {exc}")


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a big JSON tree is built and walked.

    Parsing a large export creates millions of lists and dicts; every few hundred allocations
    the collector would traverse all of them again (about 4/5 of the parse time at 50 000
    features). Reference counting still frees everything; the previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_json(path: str | os.PathLike) -> Any:
    """Load a (possibly gzipped, BOM-prefixed, CRLF) JSON file with clear errors.

    Parsed with ``orjson`` (several times faster on big exports); anything it refuses (bare
    ``NaN``/``Infinity`` as Python writes them, huge integers, very deep nesting) goes through the
    standard library, which also gives the line and column of a real syntax error.
    """
    return parse_json_bytes(path, open_maybe_gzip(path))


def parse_json_bytes(path: str | os.PathLike, raw: bytes) -> Any:
    """:func:`load_json` on bytes already read from ``path`` (named in errors)."""
    try:
        import orjson
    except ImportError:  # optional speed-up only
        orjson = None
    if orjson is not None:
        try:
            with no_gc():
                return orjson.loads(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
        except orjson.JSONDecodeError:
            pass
    text = decode_text(path, raw)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise json_error(path, exc) from None


#: Where a file's coordinates put a pixel. QuPath (GeoJSON) and Aperio ImageScope (XML) use
#: continuous image coordinates with the origin at the top-left corner of the top-left pixel,
#: so pixel (row i, column j) spans [j, j + 1) x [i, i + 1) and its centre is (j + 0.5, i + 0.5).
#: This package's arrays, tables and napari layers put pixel centres at integer coordinates
#: (NumPy indices, scikit-image, HoVer-Net JSON). The QuPath and ImageScope readers subtract this
#: offset from every coordinate and the GeoJSON writer adds it, so a nucleus keeps its pixels
#: through a round trip through QuPath. ASAP XML stays in pixel-centre coordinates (ASAP's own
#: ``AnnotationToMask`` tests integer points, so CAMELYON masks treat them as pixel centres), and
#: so does Sedeen session XML (integer pixel positions; no evidence of another convention).
VIEWER_PIXEL_OFFSET = 0.5


def from_viewer(coords: np.ndarray) -> np.ndarray:
    """Viewer (pixel-corner) coordinates -> this package's pixel-centre coordinates."""
    return np.asarray(coords, dtype=np.float64) - VIEWER_PIXEL_OFFSET


def to_viewer(coords: np.ndarray) -> np.ndarray:
    """This package's pixel-centre coordinates -> viewer (pixel-corner) coordinates."""
    return np.asarray(coords, dtype=np.float64) + VIEWER_PIXEL_OFFSET


def geometry_from_viewer(geom: Any) -> Any:
    """A shapely geometry read from a viewer file, moved to pixel-centre coordinates."""
    return _translate(geom, -VIEWER_PIXEL_OFFSET)


def geometry_to_viewer(geom: Any) -> Any:
    """A shapely geometry in pixel-centre coordinates, moved to viewer coordinates for writing."""
    return _translate(geom, VIEWER_PIXEL_OFFSET)


def _translate(geom: Any, offset: float) -> Any:
    if geom is None:
        return None
    import shapely

    return shapely.transform(geom, lambda xy: xy + offset)


def closed_ring(points: np.ndarray) -> np.ndarray:
    """Drop a repeated closing vertex: napari-histo contours are open rings."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    return pts


def table_from_contours(
    contours: Sequence[np.ndarray],
    types: Sequence[int] | None = None,
    type_probs: Sequence[float] | None = None,
    *,
    mpp: float | None = None,
    type_info: dict | None = None,
    ids: Sequence[int] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> pd.DataFrame:
    """Build a nucleus table (``napari_histo.schema.table``) from polygon contours in level-0 px.

    Area, perimeter, centroid and bbox are computed from the polygons (shapely). Contours with
    fewer than 3 distinct vertices get area 0 and the mean vertex as centroid.
    """
    rings = [np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in contours]
    lengths = np.fromiter(map(len, rings), np.int64, count=len(rings))
    coords = np.concatenate(rings) if lengths.sum() else np.zeros((0, 2))
    return table_from_flat(coords, lengths, types, type_probs, mpp=mpp, type_info=type_info, ids=ids, extra=extra)


#: Rings measured through GEOS at a time by :func:`table_from_flat` (bounds its memory: about
#: 1 KB of GEOS objects per ring).
_GEOS_BLOCK = 32768


def table_from_flat(
    coords: np.ndarray,
    lengths: np.ndarray,
    types: Sequence[int] | None = None,
    type_probs: Sequence[float] | None = None,
    *,
    mpp: float | None = None,
    type_info: dict | None = None,
    ids: Sequence[int] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> pd.DataFrame:
    """:func:`table_from_contours` for rings given as one (N, 2) array and per-ring vertex counts.

    A repeated closing vertex is dropped (contours are open rings); everything is vectorised, so
    readers of big files avoid a Python step per nucleus. A ring with a coordinate that is not
    finite or beyond :data:`MAX_COORDINATE_PX`, or with more than :data:`MAX_RING_VERTICES`
    vertices, is skipped: the count per reason is in ``attrs["skipped"]`` and a warning says it.
    """
    import shapely

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    lengths = np.asarray(lengths, dtype=np.int64)
    keep, skipped = _plausible_rings(coords, lengths)
    if skipped:
        coords = coords[np.repeat(keep, lengths)]
        lengths = lengths[keep]
        types = None if types is None else np.asarray(types)[keep]
        type_probs = None if type_probs is None else np.asarray(type_probs)[keep]
        ids = None if ids is None else np.asarray(ids)[keep]
        extra = {k: [v for v, flag in zip(values, keep) if flag] for k, values in (extra or {}).items()}
        warnings.warn("skipped " + ", ".join(f"{n} nuclei with {why}" for why, n in skipped.items()), stacklevel=3)
    n = len(lengths)
    if n == 0:
        table = empty_table(mpp, type_info)
        table.attrs["skipped"] = skipped
        return table
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    has = lengths > 1
    closing = np.zeros(n, bool)
    closing[has] = (coords[starts[has]] == coords[starts[has] + lengths[has] - 1]).all(axis=1)
    if closing.any():
        drop = np.zeros(len(coords), bool)
        drop[starts[closing] + lengths[closing] - 1] = True
        coords = coords[~drop]
        lengths = lengths - closing
        np.cumsum(lengths[:-1], out=starts[1:])
    ok = lengths >= 3
    area = np.zeros(n)
    perim = np.zeros(n)
    nonempty = lengths > 0
    cx = np.full(n, np.nan)
    cy = np.full(n, np.nan)
    x0 = np.zeros(n, np.int64)
    y0 = np.zeros(n, np.int64)
    x1 = np.zeros(n, np.int64)
    y1 = np.zeros(n, np.int64)
    if nonempty.any():
        s = starts[nonempty]
        cnt = lengths[nonempty]
        cx[nonempty] = np.add.reduceat(coords[:, 0], s) / cnt
        cy[nonempty] = np.add.reduceat(coords[:, 1], s) / cnt
        x0[nonempty] = np.floor(np.minimum.reduceat(coords[:, 0], s))
        y0[nonempty] = np.floor(np.minimum.reduceat(coords[:, 1], s))
        x1[nonempty] = np.floor(np.maximum.reduceat(coords[:, 0], s)) + 1
        y1[nonempty] = np.floor(np.maximum.reduceat(coords[:, 1], s)) + 1
    valid = np.flatnonzero(ok)
    for b in range(0, len(valid), _GEOS_BLOCK):  # GEOS polygons for a block of rings at a time
        sel = valid[b : b + _GEOS_BLOCK]
        total = int(lengths[sel].sum())
        rows = np.arange(total) - np.repeat(np.cumsum(lengths[sel]) - lengths[sel] - starts[sel], lengths[sel])
        polys = shapely.polygons(shapely.linearrings(coords[rows], indices=np.repeat(np.arange(len(sel)), lengths[sel])))
        del rows
        a = shapely.area(polys)
        area[sel] = a
        perim[sel] = shapely.length(polys)
        cen = shapely.centroid(polys)
        del polys
        gx, gy = shapely.get_x(cen), shapely.get_y(cen)
        use = np.isfinite(gx) & (a > 0)
        cx[sel[use]], cy[sel[use]] = gx[use], gy[use]
    df = pd.DataFrame(
        {
            "id": np.asarray(ids, dtype=np.int64) if ids is not None else np.arange(1, n + 1, dtype=np.int64),
            "x": cx.astype(np.float64),
            "y": cy.astype(np.float64),
            "bbox_x0": x0,
            "bbox_y0": y0,
            "bbox_x1": x1,
            "bbox_y1": y1,
            "area_px": area,
            "area_um2": area * mpp * mpp if mpp else np.full(n, np.nan),
            "perimeter_px": perim,
            "type": np.asarray(types, dtype=np.int64) if types is not None else np.zeros(n, np.int64),
            "type_prob": np.asarray(type_probs, dtype=np.float64) if type_probs is not None else np.ones(n),
            "contour": _split_rows(coords.astype(np.float32), starts, lengths),
        }
    )
    for name, values in (extra or {}).items():
        df[name] = list(values) if name == "probs" else np.asarray(values)
    df.attrs["mpp"] = mpp
    df.attrs["type_info"] = type_info
    if skipped:
        df.attrs["skipped"] = skipped
    return df


#: Largest coordinate (level-0 px) a nucleus may have: 2^31, far beyond any slide.
MAX_COORDINATE_PX = float(2**31)
#: Most vertices one nucleus outline may have (``NAPARI_HISTO_MAX_RING_VERTICES`` changes it);
#: traced outlines have tens to hundreds, a 10-million-vertex "nucleus" is not one.
MAX_RING_VERTICES = 100_000


def _plausible_rings(coords: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """(rings to keep, skipped count per reason) for rings of ``lengths`` vertices in ``coords``."""
    n = len(lengths)
    if n == 0:
        return np.ones(0, bool), {}
    bad_vertex = ~(np.isfinite(coords).all(axis=1) & (np.abs(coords) <= MAX_COORDINATE_PX).all(axis=1))
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    nonempty = lengths > 0
    bad_coords = np.zeros(n, bool)
    if bad_vertex.any() and nonempty.any():
        bad_coords[nonempty] = np.add.reduceat(bad_vertex.astype(np.int64), starts[nonempty]) > 0
    max_vertices = int(env_limit("MAX_RING_VERTICES", MAX_RING_VERTICES))
    too_long = (lengths > max_vertices) & ~bad_coords
    skipped = {}
    if bad_coords.any():
        skipped["non-finite or out-of-range coordinates"] = int(bad_coords.sum())
    if too_long.any():
        skipped[f"more than {max_vertices:,} vertices"] = int(too_long.sum())
    return ~(bad_coords | too_long), skipped


def _split_rows(coords: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """One view of ``coords`` per ring (a cheaper ``np.split``)."""
    return [coords[a:b] for a, b in zip(starts.tolist(), (starts + lengths).tolist(), strict=True)]


def table_type_info(table: pd.DataFrame):
    """The table's :class:`TypeInfo` (from ``attrs["type_info"]``), or a generic one for its type ids."""
    data = table.attrs.get("type_info") if hasattr(table, "attrs") else None
    if data:
        if isinstance(data, TypeInfo):
            return data
        try:
            return TypeInfo.from_json_dict(data)
        except (TypeError, ValueError, IndexError, KeyError):
            pass
    ids = sorted({int(t) for t in np.unique(table["type"])}) if len(table) else []
    if set(ids) <= {0, 1}:
        return NUCLEUS_ONLY
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 165, 0), (0, 255, 255), (255, 0, 255)]
    names = {0: "background"} | {t: f"type {t}" for t in ids if t}
    colours = {0: (0, 0, 0)} | {t: palette[(t - 1) % len(palette)] for t in ids if t}
    return TypeInfo(names, colours)
