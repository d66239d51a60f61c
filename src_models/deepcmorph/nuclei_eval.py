"""Score a DeepCMorph nucleus module per nucleus: CoNSeP validation images and CRCHistoPhenotypes.

``python -m src_models.deepcmorph.nuclei_eval MODEL_DIR [--data ../shared/data] [--out scores.json]``

- **CoNSeP validation split** (the original images ``CONSEP_VAL_IMAGES``, never trained on):
  crops read at 0.25 µm/px, resized to the model's µm/px, nucleus instances from
  :func:`napari_histo.models.deepcmorph.nuclei.maps_to_instances`; detection and per-class F1
  pooled over the crops as HoVer-Net's ``compute_stats`` does (centroids paired within 12 px of
  the 0.25 µm/px grid), plus the pixel Dice of the nucleus map.
- **CRCHistoPhenotypes** (points; not a training source of the nucleus module): detection and
  class F1 with the classes mapped to the coarse vocabulary (fibroblast -> spindle, others ->
  other), points paired within 6 px at 0.55 µm/px.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from napari_histo.models.deepcmorph.model import load_deepcmorph
from napari_histo.models.deepcmorph.nuclei import maps_to_instances
from napari_histo.nuclei.metrics import type_scores

COARSE_NAMES = {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"}


def predict_instances(model, rgb: np.ndarray, native_mpp: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nucleus map at the model's µm/px, coarse type id per nucleus, centroids in native px)."""
    from src_models.hovernet.data import resize_rgb

    scale = native_mpp / float(model.config.mpp)
    shape = (max(16, round(rgb.shape[0] * scale)), max(16, round(rgb.shape[1] * scale)))
    small = resize_rgb(rgb, shape)
    with torch.no_grad():
        seg, cls = model.segmentation_maps(model.to_tensor(small))
    seg, cls = seg[0, 0].numpy(), cls[0].numpy()
    _, classes, centres = maps_to_instances(seg, cls)
    # pixel centres: (x + 0.5) / scale - 0.5 in native px
    native = (centres + 0.5) * np.array([rgb.shape[1] / shape[1], rgb.shape[0] / shape[0]]) - 0.5
    return seg, classes + 1, native


def score_consep(model, root: Path, images) -> dict:
    from src_models.hovernet.data import (
        CONSEP_MPP,
        consep_crops,
        load_consep_native,
        read_consep_types,
        resize_labels,
    )
    from src_models.hovernet.evaluate import instance_centroids

    types_by_crop = read_consep_types(root)
    pooled, inter, total = [], 0.0, 0.0
    for crop in consep_crops(root, images):
        rgb, inst, _ = load_consep_native(root, crop, types_by_crop)
        seg, types, centres = predict_instances(model, rgb, CONSEP_MPP)
        truth = resize_labels(inst, seg.shape) > 0
        pred = seg >= 0.5
        inter += float((truth & pred).sum())
        total += float(truth.sum() + pred.sum())
        ids, com = instance_centroids(inst)
        table = types_by_crop.get(crop, {})
        t_types = np.array([table.get(int(i), -1) for i in ids], np.int64)
        pooled.append((com, t_types, centres, types))
    scores = type_scores(pooled, radius=12.0, type_ids=[1, 2, 3, 4], exhaustive=False)
    out = {"crops": len(pooled), "images": list(images), "dice_pixels": round(2 * inter / max(total, 1), 4),
           "f1_d": round(float(scores["f1_d"]), 4), "acc": round(float(scores["acc"]), 4)}
    out.update({f"f1_{n}": round(float(scores.get(f"f1_type{k}", float("nan"))), 4) for k, n in COARSE_NAMES.items()})
    return out


def score_crchisto(model, data_root: Path) -> dict:
    from PIL import Image

    from napari_histo.datasets.readers import CRCHISTO_MPP
    from src_models.hovernet.evaluate import COARSE_TO_CRC, CRC_CLASSES, _crc_points

    base = data_root / "crchisto" / "CRCHistoPhenotypes_2016_04_28" / "cls_and_det" / "test"
    pooled = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        rgb = np.asarray(Image.open(folder / f"{folder.name}.bmp").convert("RGB"))
        _, types, centres = predict_instances(model, rgb, CRCHISTO_MPP)
        pts, cls = _crc_points(folder)
        pooled.append((pts, cls, centres, np.array([COARSE_TO_CRC[int(t)] for t in types], np.int64)))
    scores = type_scores(pooled, radius=6.0, type_ids=[1, 2, 3, 4], exhaustive=False)
    names = {v: k for k, v in CRC_CLASSES.items()}
    out = {"images": len(pooled), "f1_d": round(float(scores["f1_d"]), 4), "acc": round(float(scores["acc"]), 4)}
    out.update({f"f1_{names[k]}": round(float(scores.get(f"f1_type{k}", float("nan"))), 4) for k in names})
    return out


def main(argv: list[str] | None = None) -> int:
    from src_models.hovernet.data import CONSEP_VAL_IMAGES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="nucleus-module folder (config.json + model.pt)")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default=None, help="write the scores as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model = load_deepcmorph(args.model)
    root = Path(args.data)
    scores = {"consep_validation": score_consep(model, root, CONSEP_VAL_IMAGES),
              "crchisto": score_crchisto(model, root)}
    print(json.dumps(scores, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(scores, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
