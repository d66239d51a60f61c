"""Incremental reading of big GeoJSON files: top-level features a chunk at a time from a
sliding text window, so a file larger than memory never has to be parsed whole.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from napari_histo.formats._common import (
    AnnotationFormatError,
    inflate_error,
    inflate_limit,
    open_maybe_gzip,
    parse_json_bytes,
)
from napari_histo.utils import InputFileError, check_input_file, env_limit


def _top_level_features(path: Path, data: Any) -> list:
    """The feature list of a parsed GeoJSON document (see :func:`read_geojson` for the shapes)."""
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise AnnotationFormatError(path, "FeatureCollection has no 'features' list")
        return features
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") in ("Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", "MultiLineString"):
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise AnnotationFormatError(path, "not GeoJSON: expected a FeatureCollection, a Feature or an array of Features")


#: Files at least this big are parsed a chunk of features at a time straight from the file, so
#: neither the parsed tree of a whole-slide export (about 8 KB of Python objects per feature) nor
#: its whole text is ever held. Gzipped files count 4x their size on disk.
STREAM_MIN_BYTES = 64 * 2**20


#: Top-level features converted to table rows at a time.
_READ_CHUNK = 8192


#: Largest text of one feature in a streamed file (``NAPARI_HISTO_MAX_FEATURE_MB`` changes it):
#: a nucleus is a few KB and a million-vertex region about 25 MB; decoding a bigger feature
#: would take gigabytes.
MAX_FEATURE_MB = 64

#: Characters read from a streamed file at a time.
_STREAM_BLOCK = 8 * 2**20


def _feature_chunks(path: Path) -> Iterator[list]:
    """Top-level features in lists of at most ``_READ_CHUNK``; big files are parsed incrementally."""
    chunk = _READ_CHUNK
    try:
        check_input_file(path, "annotation file")
    except InputFileError as exc:
        raise AnnotationFormatError(path, exc.reason) from None
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
    except OSError:
        size, gzipped = 0, False  # open_maybe_gzip below names the problem
    if size * (4 if gzipped else 1) >= STREAM_MIN_BYTES:
        streamed = _stream_features(path, gzipped, chunk)
        if streamed is not None:
            yield from streamed
            return
    data = parse_json_bytes(path, open_maybe_gzip(path))  # small, or an unusual layout: whole
    features = _top_level_features(path, data)
    del data
    for k in range(0, len(features), chunk):
        yield features[k : k + chunk]


class _TextWindow:
    """The unread part of a text file, ``buf[pos:]``, read ``_STREAM_BLOCK`` characters at a time.

    Keeps the line/column of ``buf[0]`` so decoder errors report positions in the whole file.
    """

    def __init__(self, path: Path, fh: Any, max_chars: int | None = None):
        self.path, self.fh, self.max_chars = path, fh, max_chars
        self.buf, self.pos, self.eof, self.read_chars = "", 0, False, 0
        self.line_base, self.col_base = 0, 0

    def more(self, at_least: int = 0) -> bool:
        """Append the next block, of at least ``at_least`` characters (dropping what was
        consumed); False at the end of the file."""
        if self.eof:
            return False
        try:
            data = self.fh.read(max(_STREAM_BLOCK, at_least))
        except UnicodeDecodeError:
            raise AnnotationFormatError(self.path, "not valid UTF-8 text") from None
        except (OSError, EOFError) as exc:
            raise AnnotationFormatError(self.path, f"cannot read file ({exc})") from None
        if not data:
            self.eof = True
            return False
        if "\x00" in data:
            raise AnnotationFormatError(self.path, "not a text file (NUL character)")
        self.read_chars += len(data)
        if self.max_chars is not None and self.read_chars > self.max_chars:
            raise inflate_error(self.path, self.max_chars)
        self.drop_consumed()
        self.buf += data
        return True

    def drop_consumed(self) -> None:
        """Forget ``buf[:pos]``, keeping the line/column of what follows."""
        if self.pos:
            consumed = self.buf[: self.pos]
            newlines = consumed.count("\n")
            if newlines:
                self.line_base += newlines
                self.col_base = len(consumed) - consumed.rfind("\n") - 1
            else:
                self.col_base += len(consumed)
            self.buf, self.pos = self.buf[self.pos :], 0

    def skip_space(self, space) -> None:
        while True:
            self.pos = space.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.more():
                return

    def startswith(self, token: str) -> bool:
        return self.buf.startswith(token, self.pos)

    def error(self, exc: json.JSONDecodeError) -> AnnotationFormatError:
        line = self.line_base + exc.lineno
        col = exc.colno + (self.col_base if exc.lineno == 1 else 0)
        return AnnotationFormatError(self.path, f"malformed JSON: {exc.msg}", line, col)


def _stream_features(path: Path, gzipped: bool, chunk: int) -> Iterator[list] | None:
    """Parse the elements of a top-level array, or of the ``features`` array of a FeatureCollection
    that states its type first (as QuPath and most writers do), one at a time with the standard
    library's decoder, reading the file a block at a time. None for any other layout.
    """
    space = re.compile(r"[ \t\n\r]*")
    head = re.compile(r'\{[ \t\n\r]*"type"[ \t\n\r]*:[ \t\n\r]*"FeatureCollection"[ \t\n\r]*,[ \t\n\r]*'
                      r'"features"[ \t\n\r]*:[ \t\n\r]*\[')
    fh = (gzip.open(path, "rt", encoding="utf-8-sig", newline="") if gzipped
          else open(path, encoding="utf-8-sig", newline=""))
    win = _TextWindow(path, fh, inflate_limit(path) if gzipped else None)
    try:
        while len(win.buf) < 4096 and win.more():
            pass
        win.skip_space(space)
        if win.startswith("["):
            in_collection = False
            win.pos += 1
        elif (match := head.match(win.buf, win.pos)) is not None:
            in_collection = True
            win.pos = match.end()
        else:
            fh.close()
            return None
    except BaseException:
        fh.close()
        raise
    return _stream_elements(win, space, chunk, in_collection)


def _stream_elements(win: _TextWindow, space, chunk: int, in_collection: bool) -> Iterator[list]:
    decoder = json.JSONDecoder()

    def decode() -> Any:
        while True:
            try:
                value, win.pos = decoder.raw_decode(win.buf, win.pos)
                return value
            except json.JSONDecodeError as exc:
                # cut by the end of the window (not malformed): read on and decode again
                cut = exc.pos >= len(win.buf) - 64 or exc.msg.startswith("Unterminated string")
                # the window doubles, so a feature of any size is decoded O(1) times on average
                pending = len(win.buf) - win.pos
                if cut and pending > env_limit("MAX_FEATURE_MB", MAX_FEATURE_MB) * 2**20:
                    raise AnnotationFormatError(
                        win.path, f"a feature longer than {env_limit('MAX_FEATURE_MB', MAX_FEATURE_MB):g} MB "
                        "(set NAPARI_HISTO_MAX_FEATURE_MB to read it)") from None
                if not (cut and win.more(pending)):
                    raise win.error(exc) from None
            except RecursionError:
                raise AnnotationFormatError(win.path, "JSON nested too deeply") from None

    def expect(what: str) -> None:
        raise win.error(json.JSONDecodeError(what, win.buf, win.pos))

    with win.fh:
        batch: list = []
        win.skip_space(space)
        if win.startswith("]"):
            win.pos += 1
        else:
            while True:
                batch.append(decode())
                if len(batch) == chunk:
                    yield batch
                    batch = []
                win.skip_space(space)
                if win.startswith(","):
                    win.pos += 1
                    win.skip_space(space)
                elif win.startswith("]"):
                    win.pos += 1
                    break
                else:
                    expect("Expecting ',' delimiter")
        if batch:
            yield batch
        if in_collection:  # the rest of the FeatureCollection: more members, then "}"
            win.skip_space(space)
            if win.startswith(","):  # decode "{" + the members after the comma, in its place
                while win.more():
                    pass
                win.drop_consumed()
                win.buf = "{" + win.buf[1:]
                decode()
            elif win.startswith("}"):
                win.pos += 1
            else:
                expect("Expecting ',' delimiter")
        win.skip_space(space)
        if win.pos < len(win.buf):
            expect("Extra data")
