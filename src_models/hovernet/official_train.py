"""Train the official HoVer-Net (``fast`` or ``original`` mode) with its two-phase schedule.

The recipe follows the official training configuration (``models/hovernet/opt.py`` of
https://github.com/vqdang/hover_net; Graham et al. 2019, Med. Image Anal. 58:101563):

- phase 1: the encoder's residual units are frozen (``HoVerNet(freeze=True)``: they run without
  gradients, exactly as upstream, so ``conv0``, the first block's shortcut / closing BatchNorm and
  ``conv_bot`` still learn) and the three decoders train; phase 2: every layer trains, starting
  from phase 1's weights;
- Adam (lr 1e-4, betas 0.9 / 0.999), a fresh optimiser per phase, the learning rate divided by 10
  half-way through each phase (upstream: ``StepLR(25)`` over 50 epochs);
- losses: np cross-entropy + Dice, hv MSE + gradient MSE on nucleus pixels, tp cross-entropy + Dice,
  all weighted 1;
- input / output patches 256 -> 164 (fast) or 270 -> 80 (original) at 0.25 µm/px (40×).

The encoder starts from a user-supplied Preact-ResNet50 file (upstream's
``ImageNet-ResNet50-Preact_pytorch.tar``: its ``conv0`` / ``d0``-``d3`` tensors are loaded, the rest
is reported), from an official HoVer-Net checkpoint (every tensor whose name and shape match;
fine-tuning a released model), or from random weights. A random encoder gains nothing from a frozen
phase, so ``schedule="auto"`` runs both phases only when the encoder was loaded.

Checkpoints are written atomically every ``ckpt_every_s`` and when a run stops (also a cancelled
one); ``resume`` continues in the phase and at the iteration where it stopped. The result is a
model folder (:func:`write_model_folder`) that ``segment --model``, ``evaluate`` and the Nuclei
panel load directly.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from napari_histo.jsonconfig import JsonConfig
from napari_histo.utils import HistoError, InputFileError, atomic_path

#: Name of the weights file in a model folder written here (an official ``{"desc": state_dict}``).
WEIGHTS_NAME = "hovernet.tar"
#: Encoder tensors (the Preact-ResNet50 part of HoVer-Net).
ENCODER_PREFIXES = ("conv0.", "d0.", "d1.", "d2.", "d3.")


@dataclass
class Phase(JsonConfig):
    """One training phase: iterations, whether the encoder is frozen, learning rate, batch size."""

    iterations: int = 100
    freeze_encoder: bool = False
    lr: float = 1e-4
    batch_size: int = 4


@dataclass
class OfficialTrainConfig(JsonConfig):
    """Recipe of an official HoVer-Net run.

    Attributes
    ----------
    mode : str
        ``"fast"`` (256 -> 164) or ``"original"`` (270 -> 80).
    type_names : list[str]
        Type classes including ``background`` first; one name (``["background"]``) trains an
        untyped model (no tp branch).
    type_colours : list[list[int]]
        RGB per type (written to ``type_info.json``).
    mpp : float
        µm/px the network works at (the training images are resampled to it).
    phases : list[Phase]
        Upstream: 50 epochs frozen (batch 16), then 50 epochs all layers (batch 4).
    schedule : str
        ``"two-phase"``, ``"one-phase"`` (the last phase only) or ``"auto"`` (two phases when the
        encoder was loaded, else one).
    encoder_weights : str or None
        Preact-ResNet50 weights file (``{"desc": state_dict}`` or a bare state_dict).
    init_weights : str or None
        An official HoVer-Net checkpoint to start from (tensors of matching name and shape).
    loss_weights : dict[str, float]
        np_ce, np_dice, hv_mse, hv_msge, tp_ce, tp_dice (upstream: all 1).
    amp : bool
        Mixed precision on CUDA (ignored on CPU).
    """

    mode: str = "fast"
    type_names: list[str] = field(default_factory=lambda: ["background", "nucleus"])
    type_colours: list[list[int]] = field(default_factory=lambda: [[0, 0, 0], [255, 0, 0]])
    mpp: float = 0.25
    phases: list[Phase] = field(default_factory=lambda: [
        Phase(iterations=1000, freeze_encoder=True, lr=1e-4, batch_size=16),
        Phase(iterations=1000, freeze_encoder=False, lr=1e-4, batch_size=4),
    ])
    schedule: str = "auto"
    encoder_weights: str | None = None
    init_weights: str | None = None
    loss_weights: dict[str, float] = field(default_factory=lambda: {
        "np_ce": 1.0, "np_dice": 1.0, "hv_mse": 1.0, "hv_msge": 1.0, "tp_ce": 1.0, "tp_dice": 1.0})
    out_dir: str = "/tmp/napari_histo_hovernet_official"
    max_minutes: float = 600.0
    ckpt_every_s: float = 300.0
    augment: bool = True
    jpeg_p: float = 0.3
    seed: int = 10
    threads: int = 2
    device: str | None = None
    amp: bool = True

    UNKNOWN_KEYS: ClassVar[str] = "ignore"

    @property
    def nr_types(self) -> int | None:
        """Type channels of the tp branch (None: untyped)."""
        return len(self.type_names) if len(self.type_names) > 1 else None


def _load_tensors(model, path: str | Path, prefixes: tuple[str, ...] | None) -> dict[str, int]:
    """Copy the tensors of a checkpoint whose names (under ``prefixes``) and shapes match ``model``.

    Returns counts {"loaded", "skipped", "missing"}; raises when nothing matched (a wrong file).
    """
    import torch

    from napari_histo.models.hovernet.checkpoint import read_state_dict

    state = read_state_dict(path)
    own = model.state_dict()
    chosen = {}
    skipped = 0
    for key, value in state.items():
        if prefixes is not None and not key.startswith(prefixes):
            continue
        if key in own and tuple(own[key].shape) == tuple(value.shape):
            chosen[key] = value.to(own[key].dtype) if value.is_floating_point() else value
        else:
            skipped += 1
    wanted = [k for k in own if (prefixes is None or k.startswith(prefixes)) and not k.endswith("num_batches_tracked")]
    if not chosen:
        raise InputFileError(Path(path), "no tensor matches HoVer-Net's "
                             + ("Preact-ResNet50 encoder" if prefixes else "layers")
                             + " (expected names such as 'd0.units.0.conv1.weight')")
    with torch.no_grad():
        model.load_state_dict(chosen, strict=False)
    return {"loaded": len(chosen), "skipped": skipped,
            "missing": len([k for k in wanted if k not in chosen])}


def encoder_parameters(model) -> dict[str, Any]:
    """The parameters that phase 1 keeps fixed: the residual units of ``d0`` and all of ``d1``-``d3``
    (as upstream's ``freeze``: ``conv0``, ``d0``'s shortcut and closing BatchNorm still learn)."""
    return {n: p for n, p in model.named_parameters()
            if n.startswith(("d0.units.", "d1.", "d2.", "d3."))}


def active_phases(cfg: OfficialTrainConfig, encoder_loaded: bool) -> list[Phase]:
    """The phases the run trains, after ``cfg.schedule``."""
    if cfg.schedule not in ("auto", "two-phase", "one-phase"):
        raise HistoError(f"schedule must be auto, two-phase or one-phase, not {cfg.schedule!r}")
    phases = [p if isinstance(p, Phase) else Phase.from_dict(p) for p in cfg.phases]
    if not phases:
        raise HistoError("the recipe names no training phase")
    if cfg.schedule == "one-phase" or (cfg.schedule == "auto" and not encoder_loaded):
        last = phases[-1]
        return [Phase(iterations=sum(p.iterations for p in phases), freeze_encoder=False, lr=last.lr,
                      batch_size=last.batch_size)]
    return phases


def write_model_folder(model, cfg: OfficialTrainConfig, out: str | Path) -> Path:
    """``hovernet.tar`` (official ``{"desc": state_dict}``), ``model_info.json`` and ``type_info.json``."""
    import torch

    from napari_histo.schema.types import TypeInfo

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        torch.save({"desc": state}, tmp)
    info = {"architecture": "hovernet", "mode": cfg.mode, "nr_types": cfg.nr_types, "mpp": cfg.mpp,
            "weights": WEIGHTS_NAME, "type_names": list(cfg.type_names)}
    with atomic_path(out / "model_info.json") as tmp:
        Path(tmp).write_text(json.dumps(info, indent=2), encoding="utf-8")
    if cfg.nr_types:
        TypeInfo(dict(enumerate(cfg.type_names)),
                 {i: tuple(c) for i, c in enumerate(cfg.type_colours)}).save(out / "type_info.json")
    return out


def train_official_steps(cfg: OfficialTrainConfig, tiles: list, resume: bool = True):
    """Train; yields a progress record every 10 iterations (and the first); returns the last record
    (``src_models.hovernet.train.run_to_end`` drives it without watching).

    ``tiles`` are :class:`~src_models.hovernet.data.Tile` at ``cfg.mpp``. ``cfg.out_dir`` receives
    ``checkpoint.pt``, ``train_log.jsonl``, ``train_config.json`` and the model folder files.
    Closing the generator stops at the next record and keeps the checkpoint (resumable).
    """
    import torch

    from napari_histo.models.hovernet.net import MODE_SIZES, HoVerNet
    from napari_histo.utils import choose_device
    from src_models.hovernet.data import PatchSampler
    from src_models.hovernet.losses import hovernet_loss

    if cfg.mode not in MODE_SIZES:
        raise HistoError(f"mode must be fast or original, not {cfg.mode!r}")
    if not tiles:
        raise HistoError("no training images")
    torch.set_num_threads(max(1, int(cfg.threads)))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = torch.device(choose_device(cfg.device))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "train_config.json")
    log_path = out / "train_log.jsonl"
    ckpt_path = out / "checkpoint.pt"
    in_size, out_size = MODE_SIZES[cfg.mode]
    margin = (in_size - out_size) // 2
    sampler = PatchSampler(tiles, in_size, cfg.mpp, cfg.seed, augment=cfg.augment, jpeg_p=cfg.jpeg_p)
    model = HoVerNet(mode=cfg.mode, nr_types=cfg.nr_types)

    def log(record: dict) -> None:
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True) if resume and ckpt_path.exists() else None
    if checkpoint is not None:
        encoder_loaded = bool(checkpoint["encoder_loaded"])
    else:
        encoder_loaded = False
        if cfg.init_weights:
            counts = _load_tensors(model, cfg.init_weights, None)
            encoder_loaded = True
            log({"event": "init", "init_weights": cfg.init_weights, **counts})
        if cfg.encoder_weights:
            counts = _load_tensors(model, cfg.encoder_weights, ENCODER_PREFIXES)
            encoder_loaded = True
            log({"event": "encoder", "encoder_weights": cfg.encoder_weights, **counts})
    phases = active_phases(cfg, encoder_loaded)
    total = sum(p.iterations for p in phases)
    phase_index, it, done, elapsed = 0, 0, 0, 0.0
    opt_state = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        phase_index, it, done = int(checkpoint["phase"]), int(checkpoint["iter"]), int(checkpoint["done"])
        elapsed = float(checkpoint["elapsed"])
        sampler.rng.bit_generator.state = checkpoint["rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        opt_state = checkpoint["opt"]
        log({"event": "resume", "phase": phase_index + 1, "iter": it, "elapsed_s": elapsed})
    model.to(device)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    budget_s = float(cfg.max_minutes) * 60.0
    record: dict = {}
    running: dict[str, float] = {}
    opt = None

    def save_checkpoint() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict() if opt is not None else None,
                        "phase": phase_index, "iter": it, "done": done, "elapsed": elapsed,
                        "rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                        "encoder_loaded": encoder_loaded}, tmp)

    t_last = time.monotonic()
    t_ckpt = t_last
    try:
        while phase_index < len(phases) and elapsed < budget_s:
            phase = phases[phase_index]
            model.freeze = bool(phase.freeze_encoder)
            opt = torch.optim.Adam(model.parameters(), lr=phase.lr, betas=(0.9, 0.999))
            if opt_state is not None:
                opt.load_state_dict(opt_state)
                opt_state = None
            model.train()
            while it < phase.iterations and elapsed < budget_s:
                for group in opt.param_groups:  # upstream StepLR: lr / 10 for the second half of a phase
                    group["lr"] = phase.lr * (0.1 if it >= phase.iterations // 2 and phase.iterations > 1 else 1.0)
                imgs, targets = sampler.batch(phase.batch_size, margin)
                x = torch.from_numpy(imgs).to(device)
                t = {k: torch.from_numpy(v).to(device) for k, v in targets.items()}
                with torch.autocast(device_type=device.type, enabled=use_amp):
                    outputs = model(x)
                outputs = {k: v.float() for k, v in outputs.items()}
                loss, terms = hovernet_loss(outputs, t, cfg.loss_weights)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                it += 1
                done += 1
                now = time.monotonic()
                elapsed += now - t_last
                t_last = now
                terms["loss"] = float(loss.detach())
                for k, v in terms.items():
                    running[k] = 0.9 * running.get(k, v) + 0.1 * v
                if it % 10 == 0 or it == 1 or it == phase.iterations:
                    record = {"iter": done, "max_iters": total, "phase": phase_index + 1, "phase_iter": it,
                              "frozen_encoder": model.freeze, "lr": opt.param_groups[0]["lr"],
                              "elapsed_s": round(elapsed, 1), **{k: round(v, 4) for k, v in running.items()}}
                    log(record)
                    yield record
                if now - t_ckpt >= cfg.ckpt_every_s:
                    save_checkpoint()
                    t_ckpt = now
            if it >= phase.iterations:
                phase_index += 1
                it = 0
                opt = None
    finally:  # also when the generator is closed: what was learnt is kept and can be resumed
        model.freeze = False
        save_checkpoint()
        write_model_folder(model, cfg, out)
    record = {"event": "done", "iter": done, "max_iters": total, "phases": len(phases),
              "elapsed_s": round(elapsed, 1), **{k: round(v, 4) for k, v in running.items()}}
    log(record)
    return record

