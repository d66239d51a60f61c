"""Train DeepCMorph's nucleus module (segmentation module alone) on the typed nucleus data.

``python -m src_models.deepcmorph.nuclei CONFIG.json [--resume]`` (or
``napari-histo train deepcmorph --config CONFIG.json [--resume]`` for a config with
``"task": "nuclei"``; relative paths are read from the config's folder) writes a model
folder (``config.json`` + ``model.pt``) that :func:`napari_histo.models.deepcmorph.model.load_deepcmorph`
loads as a nucleus module (``num_classes=0``).

Targets, per pixel, from the instance and type maps of the HoVer-Net data loaders
(:func:`src_models.hovernet.data.build_training_tiles`, coarse vocabulary):

- nucleus map: 1 inside any nucleus; on MoNuSAC (only four classes outlined) background pixels
  are ignored, since an unmarked pixel there may be an unannotated nucleus;
- class maps (independent sigmoids as in DeepCMorph): one-hot of the coarse class inside typed
  nuclei, 0 on background of fully annotated sources; nuclei of unknown type (MoNuSeg, CPM-15)
  are ignored.

Loss: BCE + soft Dice on the nucleus map, masked BCE + per-class soft Dice on the class maps.
Augmentation: the HoVer-Net sampler's (affine ±15 % scale, flips, HED jitter, colour, JPEG).
Checkpoints are written every ``checkpoint_every`` iterations; ``--resume`` continues.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from napari_histo.jsonconfig import JsonConfig
from napari_histo.models.deepcmorph.config import DeepCMorphConfig
from napari_histo.models.deepcmorph.model import DeepCMorph, save_pretrained
from napari_histo.schema.vocabulary import COARSE_CLASSES
from napari_histo.utils import atomic_path

#: Coarse class names in class-map order (channel k holds coarse id k + 1).
SEG_CLASS_NAMES = [COARSE_CLASSES[k] for k in sorted(COARSE_CLASSES)]


@dataclass
class NucleusModuleConfig(JsonConfig):
    """Training configuration of the nucleus module (fields documented in the module docstring)."""

    CONFIG_NAME: ClassVar[str] = "DeepCMorph nucleus module training"

    task: str = "nuclei"
    data_root: str = "../shared/data"
    cache_dir: str = "/tmp/napari_histo_hovernet_cache"
    out_dir: str = "runs/deepcmorph_nuclei"
    backbone: str = "slim"
    decoder_widths: list[int] = field(default_factory=lambda: [128, 64, 32, 32])
    mpp: float = 0.5
    patch_size: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    iterations: int = 1500
    max_minutes: float = 60.0
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 2
    sources: list[str] = field(default_factory=lambda: ["consep", "monusac", "monuseg", "cpm15"])
    source_weights: dict[str, float] = field(default_factory=lambda: {
        "consep": 0.55, "monusac": 0.15, "monuseg": 0.2, "cpm15": 0.1})
    val_consep: list[str] = field(default_factory=lambda: ["train_3", "train_8", "train_13", "train_18",
                                                           "train_23"])
    exclude: list[str] = field(default_factory=list)
    jpeg_p: float = 0.3
    tile_size: int = 224


def targets(inst: np.ndarray, types: np.ndarray, partial: bool, n_classes: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(nucleus target, nucleus weight, class targets (C,H,W), class weight (H,W)) of one patch."""
    nucleus = (inst > 0).astype(np.float32)
    n_weight = np.ones_like(nucleus) if not partial else nucleus.copy()
    cls = np.zeros((n_classes,) + inst.shape, np.float32)
    typed = types > 0
    for k in range(n_classes):
        cls[k][types == k + 1] = 1.0
    c_weight = typed.astype(np.float32)
    if not partial:
        c_weight[inst == 0] = 1.0
    return nucleus, n_weight, cls, c_weight


def soft_dice(prob: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - Dice over the weighted pixels of each channel, averaged over channels (B,C,H,W)."""
    inter = (prob * target * weight).sum((0, 2, 3))
    denom = ((prob + target) * weight).sum((0, 2, 3))
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


def nucleus_loss(seg: torch.Tensor, cls: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """BCE + Dice on the nucleus map, masked BCE + Dice on the class maps."""
    n_t, n_w, c_t, c_w = batch["nucleus"], batch["n_weight"], batch["classes"], batch["c_weight"]
    seg = seg[:, 0].clamp(1e-6, 1 - 1e-6)
    cls = cls.clamp(1e-6, 1 - 1e-6)
    bce_n = (F.binary_cross_entropy(seg, n_t, reduction="none") * n_w).sum() / n_w.sum().clamp_min(1)
    dice_n = soft_dice(seg[:, None], n_t[:, None], n_w[:, None])
    cw = c_w[:, None].expand_as(cls)
    bce_c = (F.binary_cross_entropy(cls, c_t, reduction="none") * cw).sum() / cw.sum().clamp_min(1)
    dice_c = soft_dice(cls, c_t, cw)
    return bce_n + dice_n + bce_c + dice_c


def make_batch(sampler, n: int, n_classes: int) -> dict[str, torch.Tensor]:
    """One augmented batch from a :class:`src_models.hovernet.data.PatchSampler`."""
    imgs, nts, nws, cts, cws = [], [], [], [], []
    for _ in range(n):
        img, inst, types, partial = sampler.sample_with_source()
        nt, nw, ct, cw = targets(inst, types, partial, n_classes)
        imgs.append(img.transpose(2, 0, 1).astype(np.float32) / 255.0)
        nts.append(nt)
        nws.append(nw)
        cts.append(ct)
        cws.append(cw)
    return {"img": torch.from_numpy(np.stack(imgs)), "nucleus": torch.from_numpy(np.stack(nts)),
            "n_weight": torch.from_numpy(np.stack(nws)), "classes": torch.from_numpy(np.stack(cts)),
            "c_weight": torch.from_numpy(np.stack(cws))}


def model_config(cfg: NucleusModuleConfig) -> DeepCMorphConfig:
    """The shipped model's config: a nucleus module alone, coarse classes, at ``cfg.mpp``."""
    return DeepCMorphConfig(backbone=cfg.backbone, num_classes=0, decoder_widths=list(cfg.decoder_widths),
                            num_seg_classes=len(SEG_CLASS_NAMES), seg_class_names=list(SEG_CLASS_NAMES),
                            freeze_segmentation_module=False, tile_size=cfg.tile_size, mpp=cfg.mpp)


def train_nucleus_module(cfg: NucleusModuleConfig, resume: bool = False, tiles: list | None = None,
                         log=print) -> dict[str, Any]:
    """Train and write ``cfg.out_dir`` (model folder + ``checkpoint.pt`` + ``history.json``)."""
    from src_models.hovernet.data import PatchSampler, build_training_tiles

    torch.set_num_threads(max(1, int(cfg.threads)))
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "train_config.json")
    if tiles is None:
        tiles = build_training_tiles(cfg.data_root, cfg.mpp, list(cfg.val_consep) + list(cfg.exclude),
                                     cfg.cache_dir, sources=cfg.sources, type_scheme="coarse")
    present = {t.source for t in tiles}
    weights = {k: v for k, v in cfg.source_weights.items() if k in present} or None
    sampler = PatchSampler(tiles, cfg.patch_size, cfg.mpp, cfg.seed, source_weights=weights, jpeg_p=cfg.jpeg_p)
    model = DeepCMorph(model_config(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(2, cfg.iterations),
                                                pct_start=0.05)
    start, history = 0, []
    ckpt_file = out / "checkpoint.pt"
    if resume and ckpt_file.is_file():
        ck = torch.load(ckpt_file, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        sampler.rng = np.random.default_rng(ck["rng_seed"])
        start, history = int(ck["iteration"]), list(ck["history"])
        log(f"resumed at iteration {start}")
    t0 = time.time()
    model.train()
    it = start
    running: list[float] = []

    def checkpoint() -> None:
        with atomic_path(ckpt_file) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "iteration": it, "history": history, "rng_seed": cfg.seed + it}, tmp)

    while it < cfg.iterations and (time.time() - t0) / 60 < cfg.max_minutes:
        batch = make_batch(sampler, cfg.batch_size, len(SEG_CLASS_NAMES))
        seg, cls = model.segmentation_module(batch["img"])
        loss = nucleus_loss(seg, cls, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        it += 1
        running.append(float(loss.detach()))
        if it % 20 == 0 or it == cfg.iterations:
            history.append({"iteration": it, "loss": round(float(np.mean(running)), 5),
                            "minutes": round((time.time() - t0) / 60, 2)})
            log(f"iter {it}: loss {np.mean(running):.4f} ({(time.time() - t0) / 60:.1f} min)")
            running = []
        if it % cfg.checkpoint_every == 0:
            checkpoint()
    checkpoint()
    model.eval()
    save_pretrained(model, out)
    with atomic_path(out / "history.json") as tmp:
        Path(tmp).write_text(json.dumps(history, indent=1), encoding="utf-8")
    return {"iterations": it, "history": history, "out_dir": str(out)}


def load_nucleus_config(path: str | Path) -> NucleusModuleConfig:
    """A nucleus-module config with ``data_root``, ``cache_dir`` and ``out_dir`` resolved against
    the config file's folder when relative."""
    from napari_histo.utils import InputFileError

    path = Path(path)
    try:
        cfg = NucleusModuleConfig.load(path)
    except (TypeError, ValueError) as exc:
        raise InputFileError(path, str(exc)) from exc
    for name in ("data_root", "cache_dir", "out_dir"):
        value = Path(getattr(cfg, name)).expanduser()
        if not value.is_absolute():
            setattr(cfg, name, str((path.parent / value).resolve()))
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_nucleus_module(load_nucleus_config(argv[0]), resume="--resume" in argv)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
