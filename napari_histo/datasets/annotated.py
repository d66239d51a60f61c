"""A folder of the user's own annotated images: ``tile.png`` + ``tile.geojson`` (or ``tile.xml``
ImageScope, ``tile.session.xml`` Sedeen, ``tile.json`` HoVer-Net JSON, ``tile.xml`` ASAP).

Each image with a same-stem annotation file becomes a :class:`NucleusSample`: the instance map and
type map are painted from the nucleus outlines (top-left edge rule, later outlines over earlier
ones), and the types follow one vocabulary for the whole folder: the names the files give (QuPath
classifications, Sedeen pen colours through the colour table, ImageScope/ASAP classes), numbered
in order of first appearance. Plain images only (PNG, TIFF, JPEG, BMP: cut annotated tiles out of a
slide first). Their pixel size is given (``mpp``): a folder read without it is refused rather than
trained or scored at a guessed scale.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.datasets.readers import NucleusSample, _read_rgb
from napari_histo.schema.types import TypeInfo
from napari_histo.utils import HistoError, InputFileError

#: Image files read from an annotated folder.
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: Annotation files, most specific first (``tile.session.xml`` before ``tile.xml``).
ANNOTATION_SUFFIXES = (".session.xml", ".geojson", ".geojson.gz", ".json", ".xml")
#: Largest annotated image read whole (px).
MAX_IMAGE_PX = 64_000_000


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def annotated_pairs(folder: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(image, annotation file) for every image of ``folder`` with a same-stem annotation file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    pairs = []
    for image in images:
        for suffix in ANNOTATION_SUFFIXES:
            candidate = folder / f"{_stem(image)}{suffix}"
            if candidate.is_file() and candidate != image:
                pairs.append((image, candidate))
                break
    return pairs


def read_annotated(image: Path, annotation: Path, mpp: float | None = None,
                   vocabulary: dict[str, int] | None = None, colours: Any = None) -> NucleusSample:
    """One annotated image; ``vocabulary`` (name -> id, grown in place) numbers the types."""
    from napari_histo.formats._common import table_type_info
    from napari_histo.formats.auto import read_nuclei
    from napari_histo.formats.rasterize import paint_polygons

    if not mpp:
        raise InputFileError(image, "the pixel size of the annotated images is needed (--mpp, µm/px; 0.25 for "
                                    "40x) so that nuclei are learnt and scored at their true size")
    rgb = _read_rgb(Path(image))
    height, width = rgb.shape[:2]
    if width * height > MAX_IMAGE_PX:
        raise InputFileError(image, f"{width} x {height} px is too large to read whole; cut annotated tiles")
    table = read_nuclei(annotation, mpp=mpp, colours=colours)
    contours = [np.asarray(c, np.float64) for c in table["contour"]]
    if not any(len(c) >= 3 for c in contours):
        raise InputFileError(annotation, "holds points only; training and scoring need nucleus outlines")
    info = table_type_info(table)
    vocabulary = {} if vocabulary is None else vocabulary
    ids = []
    for t in table["type"].to_numpy():
        name = info.name(int(t))
        if int(t) == 0 or name.lower() in ("background", "nucleus", "unclassified"):
            ids.append(-1)  # a nucleus of no stated type
            continue
        vocabulary.setdefault(name, len(vocabulary) + 1)
        ids.append(vocabulary[name])
    inst, types = paint_polygons(contours, (height, width), edges="top-left", overlap="later",
                                 values=ids, value_dtype=np.int16)
    names = {0: "background"} | {v: k for k, v in vocabulary.items()}
    return NucleusSample(name=_stem(image), image=rgb, mpp=float(mpp), inst=inst.astype(np.int32),
                         types=types.astype(np.int32), type_info=TypeInfo(names), path=str(image),
                         mpp_source="given")


def iter_annotated(folder: str | os.PathLike, mpp: float | None = None, colours: Any = None,
                   vocabulary: dict[str, int] | None = None) -> Iterator[NucleusSample]:
    """Every annotated image of ``folder`` (see the module docstring); one shared vocabulary."""
    pairs = annotated_pairs(folder)
    if not pairs:
        raise HistoError(f"{folder}: no image with a same-stem annotation file (e.g. tile.png + tile.geojson, "
                         "tile.xml, tile.session.xml, tile.json)")
    vocabulary = {} if vocabulary is None else vocabulary
    for image, annotation in pairs:
        yield read_annotated(image, annotation, mpp, vocabulary, colours)
