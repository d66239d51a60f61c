"""MPCS views: one field seen at two magnifications (downsampling only), same augmentation.

Two kinds of sources:

- the multi-magnification images of Hagnifinder (:mod:`src_models.hagnifinder.data`), with
  absolute levels, e.g. 5x, 10x, 20x, 40x (a level is available when the source reaches it);
- BreakHis images (``breakhis/manifest.csv``): each is one field at one magnification, so the
  views are relative zooms of it with the BreakHis ratios 40:100:200:400 (0.1, 0.25, 0.5, 1 of
  the image's own magnification). BreakHis images of one slide at different magnifications are
  different fields and are never paired.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_histo.models.hagnifinder.images import mag_to_mpp
from napari_histo.slide import tissue_fraction
from src_models.hagnifinder.data import SourceImage, augment_patch, extract_patch, field_size
from src_models.mpcs.pairs import get_pair_strategy

BREAKHIS_RATIOS = (0.1, 0.25, 0.5, 1.0)


@dataclass
class BreakHisImage:
    """One row of ``breakhis/manifest.csv``."""

    path: Path
    magnification: float
    tumor_class: str
    subtype: str
    patient: str

    @property
    def label(self) -> int:
        return int(self.tumor_class.lower().startswith("malig"))


def read_breakhis(data_root: str | Path) -> list[BreakHisImage]:
    """The BreakHis manifest rows (magnification from the manifest, e.g. ``40X`` -> 40)."""
    root = Path(data_root) / "breakhis"
    rows = []
    with open(root / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append(BreakHisImage(root / row["path"], float(row["magnification"].upper().rstrip("X")),
                                      row["tumor_class"], row["tumor_subtype"], row["slide_id"]))
    return rows


#: Downstream datasets of the MPCS paper laid out as one folder per class (upstream's
#: ``prepare_data_bach.py`` / ``prepare_data_bisque.py`` read the same layout): BACH's
#: microscopy photos (ICIAR 2018, ``Photos/<Benign|InSitu|Invasive|Normal>/*.tif``) and the
#: UCSB Bisque breast cancer cell images (``<benign|malignant>/*.tif``).
CLASS_FOLDER_LAYOUTS = {
    "bach": ("benign", "insitu", "invasive", "normal"),
    "bisque": ("benign", "malignant"),
}
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def _folder_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def read_class_folders(root: str | Path, layout: str) -> list[BreakHisImage]:
    """Images of a one-folder-per-class dataset (``layout`` in :data:`CLASS_FOLDER_LAYOUTS`).

    Folder names match case-insensitively, ignoring spaces and underscores (``InSitu``,
    ``in_situ``). These datasets name no patients, so each image is its own group (folds are
    then stratified by class, as upstream splits them) and the magnification is unknown (0).
    A missing class folder or an empty one is an error naming it.
    """
    from napari_histo.utils import InputFileError

    if layout not in CLASS_FOLDER_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(CLASS_FOLDER_LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, f"not a folder (expected one sub-folder per {layout} class)")
    folders = {_folder_key(p.name): p for p in root.iterdir() if p.is_dir()}
    rows = []
    for cls in CLASS_FOLDER_LAYOUTS[layout]:
        folder = folders.get(_folder_key(cls))
        if folder is None:
            raise InputFileError(root, f"no folder for class {cls!r} (found: {', '.join(sorted(folders)) or 'none'})")
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputFileError(folder, f"no images ({', '.join(IMAGE_SUFFIXES)})")
        rows.extend(BreakHisImage(path, 0.0, cls, cls, f"{cls}/{path.stem}") for path in images)
    return rows


def breakhis_sources(data_root: str | Path) -> list[SourceImage]:
    """BreakHis images as sources whose 'magnification' is the BreakHis label (pixel size unknown)."""
    return [SourceImage(f"breakhis:{r.path.stem}", "breakhis", r.path, mag_to_mpp(r.magnification))
            for r in read_breakhis(data_root)]


class PairViewSampler:
    """Positive pairs: one field at two magnification levels chosen by a pair strategy.

    Parameters
    ----------
    sources
        Images of known magnification.
    strategy
        ``"rp"``, ``"op"`` or ``"fp"`` (see :mod:`src_models.mpcs.pairs`).
    levels
        Absolute levels (x); a source offers those it reaches (3 % tolerance: a 39.7x scan is 40x).
    relative_levels
        Alternatively, levels as fractions of each source's own magnification (BreakHis ratios).
    """

    def __init__(self, sources: Sequence[SourceImage], strategy: str = "op",
                 levels: Sequence[float] | None = (5, 10, 20, 40),
                 relative_levels: Sequence[float] | None = None, patch_size: int = 96,
                 augment: bool = True) -> None:
        self.pair_fn = get_pair_strategy(strategy)
        self.patch_size = patch_size
        self.augment = augment
        self.entries: list[tuple[SourceImage, list[float]]] = []
        for src in sources:
            if relative_levels is not None:
                lv = [src.magnification * r for r in relative_levels]
            else:
                lv = [min(float(v), src.magnification) for v in levels or ()
                      if v <= src.magnification * 1.03]
            if len(lv) >= 2:
                self.entries.append((src, lv))
        if not self.entries:
            raise ValueError("no source offers two magnification levels")

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(view_a, view_b, mag_a, mag_b) for a random field of a random source."""
        src, lv = self.entries[int(rng.integers(len(self.entries)))]
        mag_a, mag_b = self.pair_fn(lv, rng)
        rgb = src.rgb
        h, w = rgb.shape[:2]
        half = field_size(self.patch_size, src.magnification / max(mag_a, mag_b)) / 2
        for _ in range(5):  # centre the (smaller) high-magnification field on tissue
            cx = rng.uniform(min(half, w / 2), max(w - half, w / 2))
            cy = rng.uniform(min(half, h / 2), max(h - half, h / 2))
            view_a, _ = extract_patch(rgb, src.magnification, mag_a, self.patch_size, center=(cx, cy))
            view_b, _ = extract_patch(rgb, src.magnification, mag_b, self.patch_size, center=(cx, cy))
            if min(tissue_fraction(view_a), tissue_fraction(view_b)) >= 0.3:
                break
        if self.augment:  # the same random state for both views
            seed = int(rng.integers(2**31))
            view_a = augment_patch(view_a, np.random.default_rng(seed))
            view_b = augment_patch(view_b, np.random.default_rng(seed))
        return view_a, view_b, mag_a, mag_b

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Two (B, H, W, 3) uint8 arrays of paired views."""
        pairs = [self.sample(rng) for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
