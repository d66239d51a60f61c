"""Which reader a dataset folder takes: by name, or guessed from the folder's files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from napari_histo.datasets.annotated import annotated_pairs, iter_annotated
from napari_histo.datasets.readers import (
    _ITERATORS,
    NucleusSample,
    iter_monuseg,
)
from napari_histo.utils import InputFileError


def detect_dataset(root: str | Path) -> str:
    """Guess the dataset of a folder from its files (monuseg, monusac, cpm15 or crchisto)."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "not a folder")
    if (root / "manifest.csv").exists() or any(root.rglob("*_mask.txt")):
        return "cpm15"
    if any(root.rglob("*_detection.mat")):
        return "crchisto"
    if any(p.with_suffix(".xml").exists() for p in root.rglob("*.svs")):
        return "monusac"
    if any(p.with_suffix(".xml").exists() for p in root.rglob("*.tif")):
        return "monuseg"
    if annotated_pairs(root):
        return "annotated"
    raise InputFileError(root, "cannot tell the dataset (expected MoNuSeg, MoNuSAC, CPM-15 or CRCHistoPhenotypes "
                               "files, or images with same-stem annotation files)")


def iter_dataset(root: str | Path, name: str | None = None,
                 monuseg_masks: str = "project", mpp: float | None = None) -> Iterator[NucleusSample]:
    """Samples of ``root`` read by the named reader (default: :func:`detect_dataset`);
    ``monuseg_masks`` picks the MoNuSeg mask convention (:data:`MONUSEG_MASKS`); ``"annotated"``
    is a folder of the user's images with same-stem annotation files
    (:mod:`napari_histo.datasets.annotated`, ``mpp`` for images without one)."""
    name = (name or detect_dataset(root)).lower().replace("-", "")
    if name == "annotated":
        return iter_annotated(root, mpp=mpp)
    if name not in _ITERATORS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(_ITERATORS)}")
    if name == "monuseg":
        return iter_monuseg(root, masks=monuseg_masks)
    return _ITERATORS[name](root)
