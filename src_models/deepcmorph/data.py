"""Image-classification datasets for DeepCMorph fine-tuning: folder-per-class or a manifest CSV.

Both load every image into memory (the intended use is small fine-tuning sets) and carry a
group id per image (patient/slide) so that splits never put one group on both sides.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_histo.utils import InputFileError

# Lazy imports: PIL is imported inside the functions that use it (directly or through the modules
# named there): only the code paths that use them pay for loading.

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


@dataclass
class ImageSet:
    """Images (uint8 RGB, possibly different sizes), integer labels, class names and groups."""

    images: list[np.ndarray]
    labels: np.ndarray
    class_names: list[str]
    groups: list[str]
    paths: list[str]

    def subset(self, idx) -> ImageSet:
        idx = list(idx)
        return ImageSet([self.images[i] for i in idx], self.labels[idx], self.class_names,
                        [self.groups[i] for i in idx], [self.paths[i] for i in idx])


def read_rgb(path: str | Path, downscale: float = 1.0) -> np.ndarray:
    """Read an RGB image (alpha dropped), optionally downscaled by ``downscale`` (>= 1)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if downscale != 1.0:
                w, h = im.size
                im = im.resize((max(1, round(w / downscale)), max(1, round(h / downscale))),
                               Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read image ({exc})") from exc


def load_folder_dataset(root: str | Path, downscale: float = 1.0) -> ImageSet:
    """``root/<class>/<image>``: classes are the sorted sub-folder names; group = file stem."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise InputFileError(root, "expected one sub-folder per class with images inside")
    images, labels, groups, paths = [], [], [], []
    for ci, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(read_rgb(f, downscale))
                labels.append(ci)
                groups.append(f.stem)
                paths.append(str(f))
    return ImageSet(images, np.asarray(labels, np.int64), classes, groups, paths)


def load_manifest_dataset(manifest: str | Path, label_column: str, path_column: str = "path",
                          group_column: str | None = None, downscale: float = 1.0) -> ImageSet:
    """A CSV with one row per image; paths are relative to the CSV's folder."""
    manifest = Path(manifest)
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputFileError(manifest, f"cannot read manifest ({exc})") from exc
    if not rows:
        raise InputFileError(manifest, "manifest has no rows")
    for col in (label_column, path_column, group_column):
        if col and col not in rows[0]:
            raise InputFileError(manifest, f"manifest lacks column {col!r} (has {list(rows[0])})")
    classes = sorted({r[label_column] for r in rows})
    images, labels, groups, paths = [], [], [], []
    for r in rows:
        p = manifest.parent / r[path_column]
        images.append(read_rgb(p, downscale))
        labels.append(classes.index(r[label_column]))
        groups.append(r[group_column] if group_column else p.stem)
        paths.append(str(p))
    return ImageSet(images, np.asarray(labels, np.int64), classes, groups, paths)


def load_dataset(data: str | Path, label_column: str = "label", path_column: str = "path",
                 group_column: str | None = None, downscale: float = 1.0) -> ImageSet:
    """Manifest CSV (a file) or folder-per-class dataset (a folder)."""
    data = Path(data)
    if data.is_file():
        return load_manifest_dataset(data, label_column, path_column, group_column, downscale)
    return load_folder_dataset(data, downscale)


def group_kfold(labels: np.ndarray, groups: list[str], k: int, seed: int = 0) -> list[np.ndarray]:
    """Fold id per image: groups (patients/slides) are dealt to ``k`` folds per majority class.

    Every image of a group lands in the same fold; groups of each class are shuffled and dealt
    round-robin so each fold gets a share of every class (stratified by group label).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    uniq = sorted(set(groups))
    group_label = {g: int(np.bincount(labels[[i for i, x in enumerate(groups) if x == g]]).argmax())
                   for g in uniq}
    fold_of: dict[str, int] = {}
    offset = 0
    for c in sorted(set(group_label.values())):
        gs = [g for g in uniq if group_label[g] == c]
        rng.shuffle(gs)
        for j, g in enumerate(gs):
            fold_of[g] = (j + offset) % k
        offset += len(gs)
    return np.asarray([fold_of[g] for g in groups])


def classification_metrics(y_true, y_pred, num_classes: int) -> dict[str, float | list]:
    """Accuracy, balanced accuracy (mean per-class recall over present classes), confusion."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    conf = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    support = conf.sum(1)
    recalls = [conf[i, i] / support[i] for i in range(num_classes) if support[i] > 0]
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "confusion": conf.tolist(),
    }
