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


def pretrain(config: MPCSConfig, resume: bool = False, sampler: PairViewSampler | None = None,
             rank: int = 0, world_size: int = 1) -> MPCSModel:
    """Pretrain per ``config``; returns the model. Logs the NT-Xent loss every ``log_every``.

    Inside a process group (:func:`pretrain_ddp`) the model is wrapped in
    ``DistributedDataParallel``: each of the ``world_size`` processes draws its own
    ``batch_size / world_size`` pairs (seeded by iteration and rank), gradients are averaged,
    and rank 0 alone writes logs, checkpoints and weights.
    """
    torch.set_num_threads(max(1, config.num_threads))
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = sampler or build_sampler(config)
    torch.manual_seed(config.seed)
    distributed = world_size > 1
    device = torch.device(f"cuda:{rank}") if distributed and torch.distributed.get_backend() == "nccl" \
        else torch.device("cpu")
    model = MPCSModel(config.backbone, config.width, tuple(config.dilate)).to(device)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if device.type == "cuda" else None) \
        if distributed else model
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    state = {"iteration": 0, "losses": []}
    ckpt_path = out_dir / "checkpoint.pt"
    main_process = rank == 0
    log_fh = open(out_dir / "train.log", "a", buffering=1) if main_process else None
    jsonl = open(out_dir / "metrics.jsonl", "a", buffering=1) if main_process else None
    local_batch = max(2, config.batch_size // world_size)

    def log(message: str, **record) -> None:
        if not main_process:
            return
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}"
        log_fh.write(line + "\n")
        print(line, flush=True)
        if record:
            jsonl.write(json.dumps({"time": time.time(), **record}) + "\n")

    def save() -> None:
        if not main_process:
            return
        with atomic_path(ckpt_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, tmp)

    def stop_requested() -> bool:
        if not distributed:
            return stop["flag"]
        flag = torch.tensor([int(stop["flag"])], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)  # every rank stops together
        return bool(flag.item())

    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        log(f"resumed at iteration {state['iteration']}")
    else:
        log(f"start: {len(sampler.entries)} sources, {world_size} process(es); config {json.dumps(asdict(config))}")
    stop = {"flag": False}
    old = {s: signal.signal(s, lambda *_: stop.__setitem__("flag", True)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        model.train()
        while state["iteration"] < config.iters and not stop_requested():
            it = state["iteration"]
            seed = [config.seed, it] if not distributed else [config.seed, it, rank]
            a, b = sampler.batch(np.random.default_rng(seed), config.batch_size if not distributed else local_batch)
            if distributed:  # one forward of both views: DDP synchronises once per backward
                z = net(to_tensor(np.concatenate([a, b])).to(device))
                loss = nt_xent(z[:len(a)], z[len(a):], config.temperature)
            else:
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
        if distributed:  # the replicas must have stayed identical
            checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
            gathered = [torch.zeros_like(checksum) for _ in range(world_size)]
            torch.distributed.all_gather(gathered, checksum)
            identical = all(torch.equal(g, gathered[0]) for g in gathered)
            log(f"{world_size} replicas identical: {identical}", event="ddp_check", world_size=world_size,
                identical=identical)
        if state["iteration"] >= config.iters and main_process:
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
        if main_process:
            log_fh.close()
            jsonl.close()
    return model


def _ddp_worker(rank: int, world_size: int, backend: str, init_file: str, config: MPCSConfig, resume: bool,
                sampler: PairViewSampler | None) -> None:
    torch.distributed.init_process_group(backend, init_method=f"file://{init_file}", rank=rank,
                                         world_size=world_size)
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        pretrain(config, resume, sampler, rank=rank, world_size=world_size)
    finally:
        torch.distributed.destroy_process_group()


def pretrain_ddp(config: MPCSConfig, world_size: int, backend: str = "nccl", resume: bool = False,
                 sampler: PairViewSampler | None = None) -> None:
    """:func:`pretrain` in ``world_size`` processes (one per GPU with ``"nccl"``; ``"gloo"`` runs
    on CPUs) joined by a file rendezvous in ``out_dir``; blocks until all have finished."""
    import torch.multiprocessing as mp

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    init_file = out_dir / ".ddp_rendezvous"
    init_file.unlink(missing_ok=True)
    try:
        mp.spawn(_ddp_worker, args=(world_size, backend, str(init_file.resolve()), config, resume, sampler),
                 nprocs=world_size, join=True)
    finally:
        init_file.unlink(missing_ok=True)


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
    gpus = torch.cuda.device_count() if config.ddp == "auto" else 0
    if gpus > 1:
        pretrain_ddp(config, gpus, "nccl", resume=resume)
    else:
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
