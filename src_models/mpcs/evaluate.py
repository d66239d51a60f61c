"""MPCS downstream evaluation on BreakHis with patient-wise folds.

- :func:`patient_folds`: stratified K-fold over patients (a patient never spans two splits).
- :func:`linear_evaluation`: frozen encoder features + logistic regression per fold.
- :func:`finetune_evaluation`: encoder + linear head trained end to end per fold (BCE).

Targets: ``"class"`` (benign vs malignant, image- and patient-level accuracy) or
``"magnification"`` (40/100/200/400X, image-level accuracy).

- :func:`multimag_linear_evaluation`: the magnification class (5-40x in 5x steps) of fields of
  the Hagnifinder source images, probe fitted on the training sources and scored on the
  held-out ones (``--dataset multimag``).

``python -m src_models.mpcs.evaluate --encoder runs/mpcs/encoder.pt`` compares the given encoder
with a randomly initialised one of the same architecture.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_histo.models.hagnifinder.images import to_tensor
from napari_histo.utils import atomic_write
from src_models.hagnifinder.data import discover_sources, split_sources, validation_patches
from src_models.mpcs.config import MPCSConfig
from src_models.mpcs.data import (
    CLASS_FOLDER_LAYOUTS,
    BreakHisImage,
    read_breakhis,
    read_class_folders,
)
from src_models.mpcs.model import build_encoder

# Lazy imports: PIL is imported inside the functions that use it (directly or through the modules
# named there): only the code paths that use them pay for loading.


def patient_folds(patients: Sequence[str], strata: Sequence[str], n_folds: int = 5,
                  seed: int = 47) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) per fold; patients are dealt to folds round-robin within each
    stratum (e.g. subtype) after a seeded shuffle, so each fold is patient-disjoint."""
    patients = np.asarray(patients)
    strata = np.asarray(strata)
    first = {}
    for p, s in zip(patients, strata):
        first.setdefault(p, s)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    offset = 0
    for stratum in sorted(set(first.values())):
        members = sorted(p for p, s in first.items() if s == stratum)
        rng.shuffle(members)
        for k, p in enumerate(members):
            fold_of[p] = (offset + k) % n_folds
        offset += len(members)
    fold = np.array([fold_of[p] for p in patients])
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_folds)
            if (fold == k).any() and (fold != k).any()]


def load_images(rows: Sequence[BreakHisImage], size: int = 160) -> np.ndarray:
    """Images squashed to ``size``² by area averaging (as the MPCS recipe resizes to a square)."""
    from PIL import Image

    out = []
    for row in rows:
        with Image.open(row.path) as im:
            out.append(np.asarray(im.convert("RGB").resize((size, size), Image.BOX)))
    return np.stack(out)


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Frozen pooled features (N, C) in eval mode."""
    encoder.eval()
    return np.concatenate([encoder(to_tensor(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)])


def _fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float = 1e-2,
                  steps: int = 200) -> torch.nn.Linear:
    torch.manual_seed(0)
    clf = torch.nn.Linear(x.shape[1], n_classes)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    opt = torch.optim.LBFGS(clf.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(xt), yt) + weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return clf


def _accuracies(pred: np.ndarray, y: np.ndarray, patients: np.ndarray) -> tuple[float, float]:
    ila = float(np.mean(pred == y))
    by_patient = defaultdict(list)
    for p, ok in zip(patients, pred == y):
        by_patient[p].append(ok)
    pla = float(np.mean([np.mean(v) for v in by_patient.values()]))  # BreakHis patient score
    return ila, pla


def targets(rows: Sequence[BreakHisImage], target: str) -> tuple[np.ndarray, int]:
    """Integer labels and class count for ``"class"`` (classes in name order: BreakHis's benign 0,
    malignant 1) or ``"magnification"``."""
    if target == "class":
        classes = sorted({r.tumor_class.lower() for r in rows})
        return np.array([classes.index(r.tumor_class.lower()) for r in rows]), max(2, len(classes))
    if target == "magnification":
        if any(r.magnification <= 0 for r in rows):
            raise ValueError("these images state no magnification: only the class target applies")
        levels = sorted({r.magnification for r in rows})
        return np.array([levels.index(r.magnification) for r in rows]), len(levels)
    raise ValueError(f"unknown target {target!r}; expected class or magnification")


def linear_evaluation(encoder: torch.nn.Module, rows: Sequence[BreakHisImage], target: str = "class",
                      n_folds: int = 5, seed: int = 47, size: int = 160,
                      images: np.ndarray | None = None) -> dict:
    """Per-fold image-level (ILA) and patient-level (PLA) accuracy of a linear probe."""
    images = load_images(rows, size) if images is None else images
    feats = extract_features(encoder, images)
    y, n_classes = targets(rows, target)
    patients = np.array([r.patient for r in rows])
    strata = [r.subtype if target == "class" else str(r.magnification) for r in rows]
    ilas, plas = [], []
    for tr, te in patient_folds(patients, strata, n_folds, seed):
        mean, std = feats[tr].mean(0), feats[tr].std(0) + 1e-6
        clf = _fit_logistic((feats[tr] - mean) / std, y[tr], n_classes)
        with torch.no_grad():
            pred = clf(torch.from_numpy((feats[te] - mean) / std).float()).argmax(1).numpy()
        ila, pla = _accuracies(pred, y[te], patients[te])
        ilas.append(ila)
        plas.append(pla)
    return {"target": target, "folds": len(ilas), "ila": ilas, "pla": plas,
            "ila_mean": float(np.mean(ilas)), "ila_std": float(np.std(ilas)),
            "pla_mean": float(np.mean(plas)), "pla_std": float(np.std(plas))}


def finetune_evaluation(make_encoder, rows: Sequence[BreakHisImage], target: str = "class",
                        n_folds: int = 5, seed: int = 47, size: int = 160, epochs: int = 5,
                        lr: float = 1e-4, images: np.ndarray | None = None) -> dict:
    """Fine-tune ``make_encoder()`` + a linear head per fold (cross entropy, Adam), flips as
    augmentation; report ILA/PLA on the held-out patients."""
    images = load_images(rows, size) if images is None else images
    y, n_classes = targets(rows, target)
    patients = np.array([r.patient for r in rows])
    strata = [r.subtype if target == "class" else str(r.magnification) for r in rows]
    ilas, plas = [], []
    for k, (tr, te) in enumerate(patient_folds(patients, strata, n_folds, seed)):
        torch.manual_seed(seed + k)
        encoder = make_encoder()
        model = torch.nn.Sequential(encoder, torch.nn.Dropout(0.2),
                                    torch.nn.Linear(encoder.out_features, n_classes))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        rng = np.random.default_rng(seed + k)
        for _ in range(epochs):
            model.train()
            for idx in np.array_split(rng.permutation(tr), max(1, len(tr) // 8)):
                batch = images[idx]
                if rng.random() < 0.5:
                    batch = batch[:, :, ::-1]
                loss = F.cross_entropy(model(to_tensor(batch)), torch.from_numpy(y[idx]).long())
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(to_tensor(images[te])).argmax(1).numpy()
        ila, pla = _accuracies(pred, y[te], patients[te])
        ilas.append(ila)
        plas.append(pla)
    return {"target": target, "folds": len(ilas), "ila": ilas, "pla": plas,
            "ila_mean": float(np.mean(ilas)), "ila_std": float(np.std(ilas)),
            "pla_mean": float(np.mean(plas)), "pla_std": float(np.std(plas))}


#: Magnifications of the multi-magnification probe: the Hagnifinder range in 5x steps.
MULTIMAG_LEVELS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)


def multimag_fields(data_root: str | Path, patch_size: int, levels: Sequence[float] = MULTIMAG_LEVELS,
                    crops_per_mag: int = 8, seed: int = 0) -> dict[str, list[dict]]:
    """Fields of the Hagnifinder training sources (``"train"``) and held-out sources
    (``"held_out"``): ``crops_per_mag`` tissue-rich ``patch_size``² fields per source and
    magnification it reaches by downsampling (:func:`~src_models.hagnifinder.data.validation_patches`)."""
    train_src, held_src = split_sources(discover_sources(data_root))
    if not train_src or not held_src:
        raise FileNotFoundError(f"{data_root}: no Hagnifinder source images (training and held-out) found")
    return {split: validation_patches(srcs, mags=levels, crops_per_mag=crops_per_mag, patch_size=patch_size,
                                      seed=seed)
            for split, srcs in (("train", train_src), ("held_out", held_src))}


def multimag_linear_evaluation(encoder: torch.nn.Module, fields: dict[str, list[dict]],
                               levels: Sequence[float] = MULTIMAG_LEVELS) -> dict:
    """Linear probe for the magnification class: fitted on training-source fields, scored on
    fields of source images the encoder and the probe never saw.

    Returns accuracy, accuracy within one class (±5x), the mean absolute error of the predicted
    class in x, per-magnification accuracy and the per-source mean accuracy."""
    levels = list(levels)
    feats, ys = {}, {}
    for split, recs in fields.items():
        feats[split] = extract_features(encoder, np.stack([r["patch"] for r in recs]))
        ys[split] = np.array([levels.index(r["nominal"]) for r in recs])
    mean, std = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    clf = _fit_logistic((feats["train"] - mean) / std, ys["train"], len(levels))
    with torch.no_grad():
        pred = clf(torch.from_numpy((feats["held_out"] - mean) / std).float()).argmax(1).numpy()
    y = ys["held_out"]
    mags = np.asarray(levels)
    sources = np.array([r["source"] for r in fields["held_out"]])
    return {"n_train": int(len(ys["train"])), "n_held_out": int(len(y)),
            "accuracy": float(np.mean(pred == y)),
            "within_one_class": float(np.mean(np.abs(pred - y) <= 1)),
            "mae_x": float(np.mean(np.abs(mags[pred] - mags[y]))),
            "by_magnification": {f"{m:g}x": float(np.mean(pred[y == i] == i)) for i, m in enumerate(levels)
                                 if (y == i).any()},
            "source_mean_accuracy": float(np.mean([np.mean(pred[sources == s] == y[sources == s])
                                                   for s in sorted(set(sources))]))}


def compare(encoder_path: str | Path, data_root: str | Path = "../shared/data",
            targets_: Sequence[str] = ("class", "magnification"), finetune_epochs: int = 0,
            size: int = 160, dataset: str = "breakhis", per_magnification: bool = False) -> dict:
    """Linear (and optionally fine-tuning) evaluation: pretrained encoder vs random init.

    ``dataset="breakhis"``: patient-wise folds on BreakHis (``targets_``, optional fine-tuning).
    ``dataset="multimag"``: magnification-class probe on fields of the Hagnifinder sources,
    fitted on the training sources and scored on the held-out ones (the pretraining's split).
    ``dataset="bach"`` / ``"bisque"``: the class target on a folder per class (``data_root`` is
    that folder; :func:`~src_models.mpcs.data.read_class_folders`), folds by image, stratified.
    ``per_magnification`` (BreakHis): the class target also on each magnification's images alone
    (keys ``class@40X/...``), as the method's per-magnification evaluation.
    """
    encoder_path = Path(encoder_path)
    config = MPCSConfig.load(encoder_path.parent / "config.json")

    def make(pretrained: bool):
        torch.manual_seed(config.seed)
        enc = build_encoder(config.backbone, width=config.width, dilate=tuple(config.dilate))
        if pretrained:
            enc.load_state_dict(torch.load(encoder_path, map_location="cpu", weights_only=True))
        return enc

    if dataset == "multimag":
        fields = multimag_fields(data_root, config.patch_size)
        return {"encoder": str(encoder_path), "dataset": "multimag", "patch_size": config.patch_size,
                "levels": list(MULTIMAG_LEVELS),
                "linear": {f"magnification/{name}": multimag_linear_evaluation(make(pretrained), fields)
                           for name, pretrained in (("mpcs", True), ("random", False))}}
    if dataset in CLASS_FOLDER_LAYOUTS:
        rows = read_class_folders(data_root, dataset)
        targets_ = ("class",)
    elif dataset == "breakhis":
        rows = read_breakhis(data_root)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected breakhis, multimag, "
                         f"{', '.join(CLASS_FOLDER_LAYOUTS)}")
    images = load_images(rows, size)
    results: dict = {"encoder": str(encoder_path), "n_images": len(rows),
                     "n_patients": len({r.patient for r in rows}), "linear": {}, "finetune": {}}
    for tgt in targets_:
        for name, pretrained in (("mpcs", True), ("random", False)):
            results["linear"][f"{tgt}/{name}"] = linear_evaluation(make(pretrained), rows, tgt,
                                                                   size=size, images=images)
            if finetune_epochs:
                results["finetune"][f"{tgt}/{name}"] = finetune_evaluation(
                    lambda p=pretrained: make(p), rows, tgt, size=size, epochs=finetune_epochs,
                    images=images)
    if per_magnification and dataset == "breakhis":
        for mag in sorted({r.magnification for r in rows}):
            idx = [i for i, r in enumerate(rows) if r.magnification == mag]
            subset = [rows[i] for i in idx]
            for name, pretrained in (("mpcs", True), ("random", False)):
                key = f"class@{mag:g}X/{name}"
                results["linear"][key] = linear_evaluation(make(pretrained), subset, "class", size=size,
                                                           images=images[idx])
                if finetune_epochs:
                    results["finetune"][key] = finetune_evaluation(
                        lambda p=pretrained: make(p), subset, "class", size=size, epochs=finetune_epochs,
                        images=images[idx])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluation of an MPCS encoder vs random init.")
    parser.add_argument("--encoder", required=True, help="encoder.pt (config.json beside it)")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--dataset", choices=["breakhis", "multimag", *CLASS_FOLDER_LAYOUTS], default="breakhis",
                        help="breakhis: patient-wise folds; multimag: magnification probe on held-out "
                             "Hagnifinder source images; bach, bisque: class probe on a folder per class "
                             "(--data-root is that dataset's folder, e.g. BACH's Photos)")
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument("--per-magnification", action="store_true",
                        help="BreakHis: also evaluate the class target on each magnification's images alone")
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = compare(args.encoder, args.data_root, finetune_epochs=args.finetune_epochs, dataset=args.dataset,
                      per_magnification=args.per_magnification)
    text = json.dumps(results, indent=2)
    if args.out:
        with atomic_write(args.out) as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
