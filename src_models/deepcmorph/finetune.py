"""Fine-tune DeepCMorph on a folder-per-class dataset or a manifest, with group-wise splits.

``finetune(FinetuneConfig(...))`` trains on every fold of a group k-fold split (patients/slides
never straddle train and test), evaluates each held-out fold and writes to ``out_dir``:
``fold<k>/model.pt`` + ``config.json`` (last epoch), ``fold<k>/checkpoint.pt`` (resume), and
``metrics.json`` (per-fold and pooled accuracy / balanced accuracy). With ``folds=1`` it trains
one model on everything (no evaluation).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from napari_histo.jsonconfig import JsonConfig
from napari_histo.models.deepcmorph.config import DeepCMorphConfig
from napari_histo.utils import atomic_write
from src_models.deepcmorph.data import classification_metrics, group_kfold, load_dataset

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.


@dataclass
class FinetuneConfig(JsonConfig):
    """Fine-tuning run. Paths relative to the config file are resolved by the caller.

    Attributes
    ----------
    data : str
        Folder-per-class root, or a manifest CSV (paths relative to it).
    out_dir : str
        Output folder.
    label_column, path_column, group_column : str
        Manifest columns (ignored for folders; a folder's group is the file stem).
    backbone : str
        EfficientNet variant ("slim", "b0", ... "b7").
    weights : str or None
        Starting weights: a released name (COMBINED, TCGA, ...), a file, or None (from scratch).
    freeze_segmentation_module, freeze_classification_module : bool
        Freezing (from scratch, everything should train: both False).
    downscale : float
        Images are resized by 1/downscale when loaded.
    tile_size : int
        Random training crop side (px, after downscaling); evaluation uses whole images.
    folds : int
        Group k-fold count (>= 2 evaluates), 1 = train on all.
    """

    CONFIG_NAME: ClassVar[str] = "fine-tuning"

    data: str = ""
    out_dir: str = "runs/deepcmorph_finetune"
    label_column: str = "label"
    path_column: str = "path"
    group_column: str | None = None
    backbone: str = "slim"
    weights: str | None = None
    freeze_segmentation_module: bool = False
    freeze_classification_module: bool = False
    dropout_rate: float = 0.2
    downscale: float = 2.0
    tile_size: int = 160
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    folds: int = 4
    seed: int = 0
    num_threads: int = 1
    max_minutes: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)




def _augment_batch(images: list[np.ndarray], tile: int, rng: np.random.Generator):
    import torch

    out = []
    for im in images:
        h, w = im.shape[:2]
        th, tw = min(tile, h), min(tile, w)
        y = int(rng.integers(0, h - th + 1))
        x = int(rng.integers(0, w - tw + 1))
        crop = im[y:y + th, x:x + tw]
        if th < tile or tw < tile:
            crop = np.pad(crop, ((0, tile - th), (0, tile - tw), (0, 0)), mode="reflect")
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]
        crop = np.rot90(crop, int(rng.integers(0, 4)))
        out.append(np.ascontiguousarray(crop))
    t = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0
    # mild brightness/contrast jitter
    scale = torch.empty(len(out), 1, 1, 1).uniform_(0.9, 1.1)
    shift = torch.empty(len(out), 1, 1, 1).uniform_(-0.05, 0.05)
    return (t * scale + shift).clamp(0, 1)


def build_model(cfg: FinetuneConfig, class_names: list[str]):
    from napari_histo.models.deepcmorph.model import DeepCMorph

    mcfg = DeepCMorphConfig(
        backbone=cfg.backbone, num_classes=len(class_names), class_names=list(class_names),
        dropout_rate=cfg.dropout_rate, freeze_segmentation_module=cfg.freeze_segmentation_module,
        freeze_classification_module=cfg.freeze_classification_module, tile_size=cfg.tile_size)
    model = DeepCMorph(mcfg)
    if cfg.weights:
        model.load_weights(cfg.weights, strict=False)
    return model


def predict_images(model, images: list[np.ndarray]) -> np.ndarray:
    """Class probabilities per whole image (any size), one image at a time."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for im in images:
            out.append(torch.softmax(model(model.to_tensor(im)), 1)[0].numpy())
    return np.stack(out)


def train_one(cfg: FinetuneConfig, train_set, folder: Path, resume: bool = False, log=print):
    """Train one model on ``train_set``; checkpoint each epoch under ``folder``."""
    import torch

    from napari_histo.models.deepcmorph.model import save_pretrained

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(cfg, train_set.class_names)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    folder.mkdir(parents=True, exist_ok=True)
    ckpt_path = folder / "checkpoint.pt"
    start = 0
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        rng.bit_generator.state = ck["rng"]
        start = ck["epoch"] + 1
        log(f"resumed {folder} at epoch {start}")
    counts = np.bincount(train_set.labels, minlength=len(train_set.class_names)).astype(float)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    n = len(train_set.images)
    t0 = time.time()
    for epoch in range(start, cfg.epochs):
        model.train()
        order = rng.permutation(n)
        total = 0.0
        for b in range(0, n, cfg.batch_size):
            idx = order[b:b + cfg.batch_size]
            x = _augment_batch([train_set.images[i] for i in idx], cfg.tile_size, rng)
            y = torch.from_numpy(train_set.labels[idx])
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "rng": rng.bit_generator.state, "epoch": epoch}, ckpt_path)
        log(f"{folder.name} epoch {epoch + 1}/{cfg.epochs} loss {total / n:.4f} ({time.time() - t0:.0f}s)")
        if cfg.max_minutes and (time.time() - t0) / 60 > cfg.max_minutes:
            log(f"{folder.name}: stopping after {epoch + 1} epochs (max_minutes)")
            break
    save_pretrained(model, folder)
    return model


def finetune(cfg: FinetuneConfig, resume: bool = False, log=print) -> dict[str, Any]:
    """Group k-fold fine-tuning + evaluation; returns (and writes) the metrics dict."""
    import torch

    torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(cfg.data, cfg.label_column, cfg.path_column, cfg.group_column, cfg.downscale)
    log(f"{len(data.images)} images, classes {data.class_names}, {len(set(data.groups))} groups")
    t0 = time.time()
    if cfg.folds <= 1:
        train_one(cfg, data, out / "fold0", resume, log)
        result: dict[str, Any] = {"folds": 1, "n_train": len(data.images)}
    else:
        fold_ids = group_kfold(data.labels, data.groups, cfg.folds, cfg.seed)
        y_true, y_pred, per_fold = [], [], []
        for k in range(cfg.folds):
            tr, te = np.flatnonzero(fold_ids != k), np.flatnonzero(fold_ids == k)
            test = data.subset(te)
            assert not set(test.groups) & set(data.subset(tr).groups)
            model = train_one(cfg, data.subset(tr), out / f"fold{k}", resume, log)
            pred = predict_images(model, test.images).argmax(1)
            m = classification_metrics(test.labels, pred, len(data.class_names))
            m.update(fold=k, test_groups=sorted(set(test.groups)), n_train=len(tr))
            per_fold.append(m)
            y_true += test.labels.tolist()
            y_pred += pred.tolist()
            log(f"fold {k}: acc {m['accuracy']:.3f} bal.acc {m['balanced_accuracy']:.3f} (n={m['n']})")
        result = {"folds": cfg.folds, "pooled": classification_metrics(y_true, y_pred, len(data.class_names)),
                  "per_fold": per_fold}
    result.update(config=asdict(cfg), class_names=data.class_names, minutes=(time.time() - t0) / 60)
    with atomic_write(out / "metrics.json") as fh:
        json.dump(result, fh, indent=2)
    return result
