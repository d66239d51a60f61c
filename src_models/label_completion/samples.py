"""The nuclei a label-completion run trains and is evaluated on: the config (with paths
resolved against its file), and every configured dataset's nucleus crops with their label set,
local label and held-out flag."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.models.label_completion.inference import nucleus_crops
from napari_histo.utils import InputFileError

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.

#: Adapter per label-set name.
ADAPTERS = {"monusac": "load_monusac", "crchisto": "load_crchisto", "consep": "load_consep"}


@dataclass
class NucleusSamples:
    """Crops and labels of every nucleus of every image (training and held-out)."""

    crops: np.ndarray  # (N, 3, S, S) float32
    set_index: np.ndarray  # (N,) label set of the source dataset
    labels: np.ndarray  # (N,) local label, -1 unlabelled
    image: np.ndarray  # (N,) image name
    heldout: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.labels)


def _is_heldout(image, rule: dict[str, Any]) -> np.ndarray:
    if "images" in rule:
        return np.full(len(image.labels), image.name in set(rule["images"]))
    if "original_images" in rule:  # crops named <original>_<k> (CoNSeP): held out with their original
        return np.full(len(image.labels), image.name.rsplit("_", 1)[0] in set(rule["original_images"]))
    if "x_fraction" in rule:
        return image.centres[:, 0] >= float(rule["x_fraction"]) * image.rgb.shape[1]
    return np.zeros(len(image.labels), bool)


def build_samples(cfg, images_by_set: dict[str, list] | None = None) -> NucleusSamples:
    """Load every configured dataset (or use ``images_by_set``) and cut the nucleus crops."""
    from src_models.label_completion import data as lc_data

    parts = []
    for d, ls in enumerate(cfg.label_sets):
        if images_by_set is not None and ls.name in images_by_set:
            images = images_by_set[ls.name]
        elif ls.name in cfg.data:
            if lc_data.is_generic_layout(cfg.data[ls.name]):
                images = lc_data.load_generic(cfg.data[ls.name], ls.labels)
            else:
                adapter = ADAPTERS.get(ls.name)
                if adapter is None:
                    raise ValueError(f"no dataset adapter for label set {ls.name!r} and {cfg.data[ls.name]} is not "
                                     f"in the img/ mask/ type/ layout; adapters: {sorted(ADAPTERS)}")
                images = getattr(lc_data, adapter)(cfg.data[ls.name], ls.labels)
        else:
            continue
        for im in images:
            crops = nucleus_crops(im.rgb, im.centres, im.bboxes, im.mpp, cfg.crop_um, cfg.input_size)
            parts.append((crops, np.full(len(crops), d), im.labels, np.full(len(crops), im.name, object),
                          _is_heldout(im, cfg.heldout.get(ls.name, {}))))
    if not parts:
        raise ValueError("no data: set 'data' paths for at least one label set")
    cat = [np.concatenate(p) for p in zip(*parts)]
    return NucleusSamples(cat[0].astype(np.float32), cat[1].astype(np.int64), cat[2].astype(np.int64),
                          cat[3], cat[4].astype(bool))


def load_config(path: str | Path):
    """Read a label-completion JSON config, resolving relative paths against its folder."""
    from napari_histo.models.label_completion.model import LabelCompletionConfig

    path = Path(path)
    try:
        cfg = LabelCompletionConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise InputFileError(path, f"invalid label-completion config ({exc})") from exc

    def resolve(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (path.parent / q).resolve())

    cfg.data = {k: resolve(v) for k, v in cfg.data.items()}
    cfg.out_dir = resolve(cfg.out_dir)
    return cfg
