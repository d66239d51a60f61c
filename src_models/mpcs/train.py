"""MPCS pretraining: NT-Xent over same-field pairs at two magnifications; resumable.

``napari-histo train mpcs --config FILE`` or ``python -m src_models.mpcs.train CONFIG [--resume]``.
``out_dir`` gets ``checkpoint.pt``, ``train.log``, ``metrics.jsonl`` and at the end
``encoder.pt`` (encoder state_dict, for fine-tuning/linear evaluation), ``model.pt`` (encoder +
projection head) and ``config.json``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import tomllib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from napari_histo.models.hagnifinder.images import to_tensor
from napari_histo.utils import atomic_path
from src_models.hagnifinder.data import discover_sources, split_sources
from src_models.mpcs.config import MPCSConfig
from src_models.mpcs.data import BREAKHIS_RATIOS, PairViewSampler, breakhis_sources
from src_models.mpcs.loss import nt_xent
from src_models.mpcs.model import MPCSModel


def build_sampler(config: MPCSConfig) -> PairViewSampler:
    """The pair sampler for ``config.dataset`` (multimag uses only Hagnifinder training images)."""
    if config.dataset == "breakhis":
        return PairViewSampler(breakhis_sources(config.data_root), config.strategy, levels=None,
                               relative_levels=BREAKHIS_RATIOS, patch_size=config.patch_size)
    if config.dataset == "multimag":
        train_src, _ = split_sources(discover_sources(config.data_root))
        return PairViewSampler(train_src, config.strategy, levels=config.levels,
                               patch_size=config.patch_size)
    raise ValueError(f"unknown MPCS dataset {config.dataset!r}; expected multimag or breakhis")


def pretrain(config: MPCSConfig, resume: bool = False, sampler: PairViewSampler | None = None) -> MPCSModel:
    """Pretrain per ``config``; returns the model. Logs the NT-Xent loss every ``log_every``."""
    torch.set_num_threads(max(1, config.num_threads))
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = sampler or build_sampler(config)
    torch.manual_seed(config.seed)
    model = MPCSModel(config.backbone, config.width, tuple(config.dilate))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    state = {"iteration": 0, "losses": []}
    ckpt_path = out_dir / "checkpoint.pt"
    log_fh = open(out_dir / "train.log", "a", buffering=1)
    jsonl = open(out_dir / "metrics.jsonl", "a", buffering=1)

    def log(message: str, **record) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}"
        log_fh.write(line + "\n")
        print(line, flush=True)
        if record:
            jsonl.write(json.dumps({"time": time.time(), **record}) + "\n")

    def save() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, tmp)

    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        log(f"resumed at iteration {state['iteration']}")
    else:
        log(f"start: {len(sampler.entries)} sources; config {json.dumps(asdict(config))}")
    stop = {"flag": False}
    old = {s: signal.signal(s, lambda *_: stop.__setitem__("flag", True)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        model.train()
        while state["iteration"] < config.iters and not stop["flag"]:
            it = state["iteration"]
            a, b = sampler.batch(np.random.default_rng([config.seed, it]), config.batch_size)
            loss = nt_xent(model(to_tensor(a)), model(to_tensor(b)), config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state["losses"].append(loss.item())
            state["iteration"] = it + 1
            if (it + 1) % config.log_every == 0:
                recent = float(np.mean(state["losses"][-config.log_every:]))
                log(f"it {it + 1} NT-Xent {recent:.4f}", iteration=it + 1, loss=recent)
            if (it + 1) % config.checkpoint_every == 0:
                save()
        save()
        if state["iteration"] >= config.iters:
            with atomic_path(out_dir / "encoder.pt") as tmp:
                torch.save(model.encoder.state_dict(), tmp)
            with atomic_path(out_dir / "model.pt") as tmp:
                torch.save(model.state_dict(), tmp)
            config.save(out_dir / "config.json")
            log(f"finished: encoder.pt, model.pt and config.json in {out_dir}")
        else:
            log(f"stopped at iteration {state['iteration']}; resume with resume=True")
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        log_fh.close()
        jsonl.close()
    return model


def train_from_config_file(path: str | Path, resume: bool = False) -> dict:
    """Entry point for ``napari-histo train mpcs --config FILE [--resume]`` (JSON or TOML).

    Returns a summary: run folder, iterations done, last logged NT-Xent, exported files.
    """
    path = Path(path)
    if path.suffix.lower() == ".toml":
        with open(path, "rb") as fh:
            config = MPCSConfig.from_dict(tomllib.load(fh))
    else:
        config = MPCSConfig.load(path)
    pretrain(config, resume=resume)
    out_dir = Path(config.out_dir)
    ckpt = torch.load(out_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    losses = ckpt["state"]["losses"]
    return {"out_dir": str(out_dir), "iterations": ckpt["state"]["iteration"],
            "finished": (out_dir / "encoder.pt").exists(),
            "last_nt_xent": float(np.mean(losses[-config.log_every:])) if losses else None,
            "files": sorted(p.name for p in out_dir.iterdir() if p.is_file())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MPCS self-supervised pretraining.")
    parser.add_argument("config", help="config JSON (MPCSConfig fields)")
    parser.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt")
    args = parser.parse_args(argv)
    train_from_config_file(args.config, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
