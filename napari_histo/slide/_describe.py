"""A slide's metadata without numpy: what ``napari-histo info`` prints, at the cost of OpenSlide's.

:func:`describe_slide` gives the dictionary of :meth:`Slide.metadata` for the files OpenSlide
opens (SVS, NDPI, MRXS, generic tiled TIFF ...), reads them with openslide-python alone, and
decodes one pixel of the coarsest level, as opening a :class:`Slide` does, so a broken file
still fails. The backend it reports is the one :func:`choose_backend` picks. That choice needs
two facts about a TIFF's structure, which :func:`tiff_layout` reads from the IFDs in pure Python.
Files this path does not cover return None, and the caller opens a :class:`Slide`: OME-TIFFs and
SubIFD pyramids, plain images, and TIFFs OpenSlide declines. This module imports neither numpy
nor tifffile; numpy alone costs more CPU than OpenSlide's whole metadata read.

The constants of the backend choice live here so that both paths share them.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from napari_histo.utils import InputFileError, check_input_file, env_limit

PLAIN_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
VENDOR_EXTENSIONS = frozenset({".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide"})
SUPPORTED_EXTENSIONS = PLAIN_EXTENSIONS | TIFF_EXTENSIONS | VENDOR_EXTENSIONS

#: Uncompressed level-0 bytes a single-file slide may declare per byte on disk. Scanned slides
#: compress 10-50x (blank glass more); a header claiming thousands of times its file size is a
#: truncated or forged file, whose reading would not end.
MAX_DECLARED_RATIO = 2000
#: Formats whose index file holds no pixels (the size check does not apply).
MULTI_FILE_EXTENSIONS = frozenset({".mrxs", ".vms", ".vmu"})

#: OpenSlide formats whose pixels the tifffile + zarr path reads identically and faster
#: (native-tile chunks, no RGBA round trip); measured in docs/benchmarks/slide.md.
TIFFFILE_PREFERRED_VENDORS = frozenset({"aperio", "generic-tiff"})

_TIFF_HEADERS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: TIFF tags read by :func:`tiff_layout`.
_TAGS = {256: "width", 258: "bits", 270: "description", 277: "samples", 284: "planar", 322: "tile_width",
         330: "subifds"}
#: Value sizes of the TIFF field types (BYTE, ASCII, SHORT, LONG, RATIONAL, ..., LONG8, IFD8).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_TYPE_FORMATS = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
_MAX_IFDS = 64


def tiff_header_ok(path: str | os.PathLike) -> bool:
    """True when the file starts with a classic or BigTIFF header (cheap probe)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head in _TIFF_HEADERS


def openslide_vendor(path: str | os.PathLike) -> str | None:
    """OpenSlide's format name for ``path`` (cheap header probe) or None."""
    try:
        import openslide

        return openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return None


def _read_ifds(fh) -> list[dict[str, Any]]:
    """The tags of :data:`_TAGS` for each IFD of the main chain (at most :data:`_MAX_IFDS`)."""
    head = fh.read(8)
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    if big:
        fh.seek(8)
        offset = struct.unpack(order + "Q", fh.read(8))[0]
        count_fmt, entry_size, next_fmt, inline = "Q", 20, "Q", 8
    else:
        offset = struct.unpack(order + "I", head[4:8])[0]
        count_fmt, entry_size, next_fmt, inline = "H", 12, "I", 4
    ifds: list[dict[str, Any]] = []
    seen = set()
    while offset and offset not in seen and len(ifds) < _MAX_IFDS:
        seen.add(offset)
        fh.seek(offset)
        (count,) = struct.unpack(order + count_fmt, fh.read(struct.calcsize(count_fmt)))
        if count > 4096:
            raise ValueError(f"implausible IFD with {count} entries")
        raw = fh.read(count * entry_size)
        next_raw = fh.read(struct.calcsize(next_fmt))
        tags: dict[str, Any] = {}
        for k in range(count):
            entry = raw[k * entry_size:(k + 1) * entry_size]
            code, kind = struct.unpack(order + "HH", entry[:4])
            if code not in _TAGS:
                continue
            n = struct.unpack(order + ("Q" if big else "I"), entry[4:4 + (8 if big else 4)])[0]
            size = _TYPE_SIZES.get(kind, 1) * n
            data = entry[-inline:]
            if size > inline:
                here = fh.tell()
                fh.seek(struct.unpack(order + ("Q" if big else "I"), data)[0])
                data = fh.read(min(size, 1 << 20))
                fh.seek(here)
            if kind == 2:
                tags[_TAGS[code]] = data[:size].split(b"\x00", 1)[0].decode("latin-1")
            elif kind in _TYPE_FORMATS:
                fmt = _TYPE_FORMATS[kind]
                n_read = min(n, len(data) // struct.calcsize(fmt))
                tags[_TAGS[code]] = struct.unpack(order + fmt * n_read, data[:n_read * struct.calcsize(fmt)])
            else:
                tags[_TAGS[code]] = ()
        ifds.append(tags)
        offset = struct.unpack(order + next_fmt, next_raw)[0] if len(next_raw) == struct.calcsize(next_fmt) else 0
    return ifds


def tiff_layout(path: str | os.PathLike) -> dict[str, bool] | None:
    """The structure facts of the backend choice, from the IFDs alone (no pixels, no tifffile).

    ``ome_or_subifd``: an OME-XML description or SubIFDs on the first page. ``tiled_rgb8``: the
    first page and every other tiled page (the pyramid levels; label and macro images are
    striped) hold 8-bit RGB, contiguous. None when the file cannot be parsed.
    """
    try:
        with open(path, "rb") as fh:
            ifds = _read_ifds(fh)
    except (OSError, ValueError, struct.error):
        return None
    if not ifds:
        return None
    first = ifds[0]
    description = first.get("description", "")
    ome = "<OME" in description[:4096] or "<OME" in description[-4096:]

    def rgb8(tags: dict[str, Any]) -> bool:
        return (tuple(tags.get("samples", (1,)))[:1] == (3,) and set(tags.get("bits", (1,))) == {8}
                and tuple(tags.get("planar", (1,)))[:1] == (1,))

    levels = [tags for tags in ifds if "tile_width" in tags]
    tiled_rgb8 = "tile_width" in first and all(rgb8(tags) for tags in levels)
    return {"ome_or_subifd": bool(ome or "subifds" in first), "tiled_rgb8": tiled_rgb8}


def check_declared_size(path: Path, dimensions: tuple[int, int]) -> None:
    """Refuse a single-file slide whose level 0 is implausibly large for its file size."""
    if path.suffix.lower() in MULTI_FILE_EXTENSIONS:
        return  # the pixels live in other files: the index file's size says nothing
    w, h = dimensions
    size = os.path.getsize(path)
    ratio = env_limit("MAX_DECLARED_RATIO", MAX_DECLARED_RATIO)
    if w * h * 3 > ratio * size:
        raise InputFileError(
            path, f"declares {w} x {h} px ({w * h * 3 / 2**30:.1f} GiB of pixels) in a "
            f"{size / 2**20:.1f} MiB file: truncated, or not a real slide (more than {ratio:g}x "
            "compression; set NAPARI_HISTO_MAX_DECLARED_RATIO to open it anyway)")


def describe_slide(path: str | os.PathLike, backend: str | None = None) -> dict[str, Any] | None:
    """:meth:`Slide.metadata` of a file OpenSlide opens, read without numpy; None when the file
    is not one (the caller then opens a :class:`Slide`, which also reports every error).

    ``backend`` as for :func:`open_slide`; a backend other than the one OpenSlide's files get
    here also returns None.
    """
    from napari_histo.slide._metadata import mpp_from_openslide, power_from_openslide

    if backend not in (None, "openslide", "tifffile"):
        return None
    try:
        path = check_input_file(path, "slide file")
    except InputFileError:
        return None
    is_tiff = tiff_header_ok(path)
    if path.suffix.lower() in PLAIN_EXTENSIONS and not is_tiff:
        return None
    layout = tiff_layout(path) if is_tiff else {"ome_or_subifd": False, "tiled_rgb8": False}
    if layout is None or layout["ome_or_subifd"]:
        return None
    vendor = openslide_vendor(path)
    if vendor is None:
        return None
    chosen = "tifffile" if vendor in TIFFFILE_PREFERRED_VENDORS and layout["tiled_rgb8"] else "openslide"
    if backend is not None and backend != chosen:
        return None
    import openslide

    try:
        slide = openslide.OpenSlide(str(path))
    except Exception:
        return None
    try:
        properties = dict(slide.properties)
        dims = [(int(w), int(h)) for w, h in slide.level_dimensions]
        if not dims or any(w <= 0 or h <= 0 for w, h in dims):
            return None
        check_declared_size(path, dims[0])
        level = len(dims) - 1
        width, height = dims[level]
        downsample = float(slide.level_downsamples[level])
        try:  # one pixel of the coarsest level, as opening a Slide decodes one
            slide.read_region((int((width // 2) * downsample), int((height // 2) * downsample)), level, (1, 1))
        except Exception as exc:
            raise InputFileError(path, f"cannot decode pixels ({exc})") from exc
        tiles = []
        for k in range(len(dims)):
            tw = properties.get(f"openslide.level[{k}].tile-width")
            th = properties.get(f"openslide.level[{k}].tile-height")
            tiles.append([int(tw), int(th)] if tw and th else None)
        mpp = mpp_from_openslide(properties)
        return {
            "path": str(path),
            "backend": chosen,
            "vendor": properties.get("openslide.vendor", "unknown"),
            "dimensions": list(dims[0]),
            "level_count": len(dims),
            "level_dimensions": [list(d) for d in dims],
            "level_downsamples": [float(d) for d in slide.level_downsamples],
            "tile_sizes": tiles,
            "mpp": list(mpp) if mpp else None,
            "objective_power": power_from_openslide(properties),
            "associated_images": list(slide.associated_images.keys()),
        }
    finally:
        slide.close()
