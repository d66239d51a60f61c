"""Train the compact HoVer-Net on CPU (or GPU) with checkpoints that resume.

There is no pretrained encoder for the compact network, so HoVer-Net's two-phase schedule
(frozen encoder, then full fine-tuning; Graham et al. 2019) does not apply: training is a
single phase from Kaiming initialisation with AdamW, linear warm-up and a cosine decay over
the run's budget (whichever of ``max_iters`` and ``max_minutes`` is reached first).
Fine-tuning (``TrainConfig.init_weights``) starts the same schedule from trained weights.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np

from napari_histo.schema.types import TypeInfo
from napari_histo.utils import InputFileError, atomic_path
from src_models.hovernet.config import TrainConfig
from src_models.hovernet.data import PatchSampler, build_training_tiles

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_factor(progress: float, warmup: float = 0.03) -> float:
    if progress < warmup:
        return max(progress / warmup, 0.02)
    p = min(1.0, (progress - warmup) / (1.0 - warmup))
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p))


def _log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _complete_types(tiles: list, cfg: TrainConfig, log_path: Path) -> list:
    """``cfg.complete_types`` applied to the training tiles (see :class:`TrainConfig`), logged."""
    from napari_histo.models.label_completion.model import load_model
    from src_models.hovernet.data import complete_unknown_types

    spec = dict(cfg.complete_types or {})
    folder = Path(spec.get("model", "resources/weights/label_completion"))
    if not folder.is_absolute():
        folder = Path(__file__).resolve().parents[2] / folder
    tiles, counts = complete_unknown_types(tiles, load_model(folder), cfg.model.network_mpp,
                                           label_set=spec.get("label_set", "consep"),
                                           min_probability=float(spec.get("min_probability", 0.6)))
    _log(log_path, {"event": "complete_types", "model": str(folder), **counts})
    return tiles


def load_init_weights(model, path: str | Path, type_channels: list[int] | None = None) -> None:
    """Load network weights for fine-tuning from a ``model.pt`` state_dict or a ``checkpoint.pt``.

    Loading is strict (the architecture must match); half-precision weights are cast to the
    model's dtype. ``type_channels`` re-orders the type head's output channels (new channel ``i``
    from loaded channel ``type_channels[i]``) to start a new vocabulary from related classes.
    A missing or unreadable file raises :class:`~napari_histo.utils.InputFileError`.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "init_weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputFileError(path, f"not a readable torch file ({exc.__class__.__name__}: {exc})") from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(path, "holds neither a state_dict nor a training checkpoint with a 'model' entry")
    ref = model.state_dict()
    state = {k: (v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v) for k, v in state.items()}
    if type_channels is not None:
        index = torch.as_tensor(list(type_channels), dtype=torch.long)
        for key in ("decoders.tp.head.weight", "decoders.tp.head.bias"):
            if key not in state:
                raise InputFileError(path, f"init_type_channels given but the weights have no {key}")
            if int(index.max()) >= state[key].shape[0]:
                raise InputFileError(path, f"init_type_channels {list(type_channels)} names a channel the "
                                           f"loaded head ({state[key].shape[0]} channels) does not have")
            state[key] = state[key][index].clone()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputFileError(path, f"weights do not match the configured network: {exc}") from exc


def export_weights(model, cfg: TrainConfig, out_dir: str | Path, half: bool = False) -> Path:
    """Write ``model.pt`` (state_dict), ``config.json`` and ``type_info.json`` into ``out_dir``."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    with atomic_path(out / "model.pt") as tmp:
        torch.save(state, tmp)
    cfg.model.save(out / "config.json")
    m = cfg.model
    TypeInfo(
        {i: n for i, n in enumerate(m.type_names)},
        {i: tuple(c) for i, c in enumerate(m.type_colours)},  # type: ignore[misc]
    ).save(out / "type_info.json")
    return out


def run_to_end(steps):
    """Drive a generator of progress records to its end and return its return value (what a
    cancellable job's generator returns, for callers that do not watch the progress)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def train(cfg: TrainConfig, resume: bool = True, tiles=None) -> dict:
    """Train ``cfg.model`` on the training tiles; returns the final log record (see :func:`train_steps`)."""
    return run_to_end(train_steps(cfg, resume, tiles))


def train_steps(cfg: TrainConfig, resume: bool = True, tiles=None):
    """Train ``cfg.model``, yielding a progress record (iteration, elapsed seconds, running losses)
    every 20 iterations; returns the final log record.

    Closing the generator (a cancelled job) stops at the next record and still saves the
    checkpoint and the weights, so ``resume`` continues where it stopped.

    Parameters
    ----------
    cfg : TrainConfig
        Recipe; ``cfg.out_dir`` receives ``checkpoint.pt``, ``train_log.jsonl``,
        ``train_config.json`` and the final ``model.pt`` / ``config.json`` / ``type_info.json``.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when it exists (model, optimiser, sampler RNG,
        iteration and elapsed time are restored).
    tiles : list[Tile] or None
        Pre-loaded training tiles (tests); default builds them from ``cfg.data_root``.
    """
    import torch

    from napari_histo.models.hovernet.compact import CompactHoVerNet
    from src_models.hovernet.losses import hovernet_loss

    torch.set_num_threads(max(1, int(cfg.threads)))
    _seed_everything(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "train_config.json")
    log_path = out / "train_log.jsonl"
    ckpt_path = out / "checkpoint.pt"

    if tiles is None:
        exclude = list(cfg.val_monuseg) + list(cfg.val_monusac) + list(cfg.val_consep)
        tiles = build_training_tiles(cfg.data_root, cfg.model.network_mpp, exclude, cfg.cache_dir,
                                     sources=cfg.sources, type_scheme=cfg.type_scheme)
        if cfg.complete_types:
            tiles = _complete_types(tiles, cfg, log_path)
    if cfg.model.internal_downsample != 1:
        raise ValueError("train the network at its working resolution: set internal_downsample to 1 and mpp to "
                         "the training mpp (the shipped config may wrap it afterwards)")
    sampler = PatchSampler(tiles, cfg.patch_size, cfg.model.mpp, cfg.seed, cfg.monusac_weight, cfg.augment,
                           source_weights=cfg.source_weights, jpeg_p=cfg.jpeg_p)
    model = CompactHoVerNet(cfg.model)
    margin = model.margin
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    it, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sampler.rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        it, elapsed = int(ck["iter"]), float(ck["elapsed"])
        _log(log_path, {"event": "resume", "iter": it, "elapsed_s": elapsed})
    elif cfg.init_weights:
        load_init_weights(model, cfg.init_weights, cfg.init_type_channels)
        _log(log_path, {"event": "init", "init_weights": str(cfg.init_weights),
                        "init_type_channels": cfg.init_type_channels})

    def save_ckpt() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "rng": sampler.rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(), "iter": it, "elapsed": elapsed},
                tmp,
            )

    model.train()
    budget_s = cfg.max_minutes * 60.0
    t_last = time.monotonic()
    t_ckpt = t_last
    running: dict[str, float] = {}
    record: dict = {}
    try:
        while it < cfg.max_iters and elapsed < budget_s:
            progress = max(it / cfg.max_iters, elapsed / budget_s)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(progress)
            imgs, tgt = sampler.batch(cfg.batch_size, margin)
            x = torch.from_numpy(imgs)
            t = {k: torch.from_numpy(v) for k, v in tgt.items()}
            outputs = model(x)
            loss, terms = hovernet_loss(outputs, t, cfg.loss_weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            now = time.monotonic()
            elapsed += now - t_last
            t_last = now
            terms["loss"] = float(loss.detach())
            for k, v in terms.items():
                running[k] = 0.95 * running.get(k, v) + 0.05 * v
            if it % 20 == 0 or it == 1:
                record = {"iter": it, "elapsed_s": round(elapsed, 1), "lr": opt.param_groups[0]["lr"],
                          "max_iters": cfg.max_iters, "budget_s": budget_s,
                          **{k: round(v, 4) for k, v in running.items()}}
                _log(log_path, record)
                yield record
            if now - t_ckpt >= cfg.ckpt_every_s:
                save_ckpt()
                export_weights(model, cfg, out)
                t_ckpt = now
    finally:  # also when the generator is closed: what was learnt is kept and can be resumed
        save_ckpt()
        export_weights(model, cfg, out)
    record = {"event": "done", "iter": it, "elapsed_s": round(elapsed, 1),
              **{k: round(v, 4) for k, v in running.items()}}
    _log(log_path, record)
    return record


def train_from_config_file(path: str | Path, resume: bool = False) -> dict:
    """CLI entry point: load a :class:`TrainConfig` JSON and train."""
    return train(TrainConfig.load(path), resume=resume)


if __name__ == "__main__":  # pragma: no cover - manual runs: python -m src_models.hovernet.train CFG
    import sys

    train_from_config_file(sys.argv[1], resume="--resume" in sys.argv)
