"""Hagnifinder training: three steps (ASM on; calibrate the scale; fixed scale), resumable.

Run with ``napari-histo train hagnifinder --config FILE`` or
``python -m src_models.hagnifinder.train CONFIG [--resume]``. The run folder (``out_dir``) holds
``checkpoint.pt`` (saved every ``checkpoint_every`` iterations, on SIGTERM/SIGINT and at each
step change), ``train.log``, ``metrics.jsonl`` and, at the end, ``model.pt`` + ``config.json``.
Batches are drawn from a generator seeded by (seed, iteration), so a resumed run continues
the same stream.

Fine-tuning (``init_from``, with ``asm_iters = calib_iters = 0``) keeps the three-step
semantics: it starts from a model that went through steps 1-2 and continues step 3 with that
model's fixed scale factor (ASM off); ``target_space = "log2"`` trains the last layer on log2
magnification (refitted by least squares first when the source model was linear).
``--export-checkpoint DIR`` writes the current checkpoint as a model folder (runs stopped early).
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

from napari_histo.models.hagnifinder.config import HagnifinderConfig
from napari_histo.models.hagnifinder.images import to_tensor
from napari_histo.models.hagnifinder.model import (
    HagnifinderEnsemble,
    HagnifinderNet,
    build_network,
    predict_patches,
)
from napari_histo.utils import atomic_path, choose_device
from src_models.hagnifinder.data import (
    LabelledPatchSampler,
    MultiMagSampler,
    breakhis_sources,
    discover_sources,
    hagni40_entries,
    read_pack,
    split_sources,
    validation_patches,
)
from src_models.hagnifinder.metrics import THRESHOLDS, grouped_folds, summarise


def member_holdouts(sources, config: HagnifinderConfig) -> list[list[str]]:
    """Training source names each member leaves out (``[]``: no cross-fitting, one model).

    Folds are grouped by source (``calibration.grouped_folds``, seeded by ``config.seed``);
    every member must still have a source reaching ``mag_max``.
    """
    if config.cross_fit_folds <= 1:
        return []

    fold_of = grouped_folds([s.name for s in sources], config.cross_fit_folds, config.seed)
    held = [sorted(n for n, f in fold_of.items() if f == k) for k in range(config.cross_fit_folds)]
    for names in held:
        top = max((s.magnification for s in sources if s.name not in names), default=0.0)
        if top < config.mag_max - 1e-6:
            raise ValueError(f"cross-fitting: without {names} no training source reaches "
                             f"{config.mag_max}x; use fewer folds or more sources")
    return held


def phase_of(config: HagnifinderConfig, iteration: int) -> str:
    """``"asm"`` (step 1), ``"calibrate"`` (step 2), ``"fixed"`` (step 3) or ``"done"``."""
    if iteration < config.asm_iters:
        return "asm"
    if iteration < config.asm_iters + config.calib_iters:
        return "calibrate"
    if iteration < config.asm_iters + config.calib_iters + config.fixed_iters:
        return "fixed"
    return "done"


class _Log:
    def __init__(self, out_dir: Path) -> None:
        self.text = open(out_dir / "train.log", "a", buffering=1)
        self.jsonl = open(out_dir / "metrics.jsonl", "a", buffering=1)

    def __call__(self, message: str, **record) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}"
        self.text.write(line + "\n")
        print(line, flush=True)
        if record:
            self.jsonl.write(json.dumps({"time": time.time(), **record}) + "\n")

    def close(self) -> None:
        self.text.close()
        self.jsonl.close()


class _BatchStream(torch.utils.data.Dataset):
    """Training batch ``i`` = ``sampler.batch(default_rng([seed, i]))``, as a dataset so that
    DataLoader workers can draw batches ahead; the stream is the one the serial loop draws.
    Items are (x, y, source index into ``sampler.sources``)."""

    def __init__(self, sampler: MultiMagSampler, seed: int, batch_size: int, length: int) -> None:
        self.sampler, self.seed, self.batch_size, self.length = sampler, seed, batch_size, length
        self.index = {s.name: i for i, s in enumerate(sampler.sources)}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, names = self.sampler.batch_with_sources(np.random.default_rng([self.seed, iteration]),
                                                      self.batch_size)
        return to_tensor(x), torch.from_numpy(y), torch.tensor([self.index[n] for n in names])


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:  # noqa: ARG001
    """Loader workers ignore SIGTERM / SIGINT: a batch job's time limit or Ctrl-C signals the
    whole process group, and a worker killed by it would crash the trainer instead of letting
    it stop at a checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _batches(sampler: MultiMagSampler, config: HagnifinderConfig, start: int, stop: int):
    """(iteration, x, y, source index) for ``start <= iteration < stop``; x normalised, on the CPU."""
    stream = _BatchStream(sampler, config.seed, config.batch_size, stop)
    if config.num_workers <= 0:
        for it in range(start, stop):
            yield (it, *stream[it])
        return
    loader = torch.utils.data.DataLoader(stream, batch_size=None, sampler=range(start, stop),
                                         num_workers=config.num_workers, prefetch_factor=4,
                                         pin_memory=torch.cuda.is_available(), persistent_workers=False,
                                         worker_init_fn=_leave_stop_signals_to_the_trainer)
    yield from ((it, *batch) for it, batch in zip(range(start, stop), loader))


def _two_groups(optim_state: dict, n_head: int) -> dict:
    """Optimizer state from a one-group checkpoint split into (body, head) groups.

    The head (``fc3``) parameters come last in ``model.parameters()``, so the flat parameter
    indices (and their Adam moments) are unchanged by the split.
    """
    groups = optim_state["param_groups"]
    if len(groups) != 1:
        return optim_state
    ids = groups[0]["params"]
    body = {**groups[0], "params": ids[:-n_head]}
    head = {**groups[0], "params": ids[-n_head:], "is_head": True}
    return {**optim_state, "param_groups": [body, head]}


def _save_checkpoint(path: Path, members: list[_Member], state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"models": [m.model.state_dict() for m in members],
                    "use_asm": members[0].model.use_asm,
                    "optimizers": [m.optimizer.state_dict() for m in members],
                    "schedulers": [m.scheduler.state_dict() for m in members],
                    "state": state}, tmp)


def _checkpoint_models(ckpt: dict) -> list[dict]:
    """Member state dicts of a checkpoint (older checkpoints hold one ``model``)."""
    return ckpt["models"] if "models" in ckpt else [ckpt["model"]]


def export_model(model: HagnifinderNet | HagnifinderEnsemble, config: HagnifinderConfig,
                 out_dir: str | Path) -> Path:
    """Write ``model.pt`` (state_dict) and ``config.json`` (with the scale factor) to ``out_dir``.

    An ensemble's weights are stored in float16 (they are loaded back into float32; the
    members' scale factors stay float32), which halves the file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.scale_factor = float(model.scale_factor)
    state = model.state_dict()
    if isinstance(model, HagnifinderEnsemble):
        state = {k: v.half() if v.is_floating_point() and not k.endswith("scale_factor") else v
                 for k, v in state.items()}
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save(state, tmp)
    config.save(out_dir / "config.json")
    return out_dir


@torch.no_grad()
def fit_head(model: HagnifinderNet, sampler: MultiMagSampler, rng_seed: int, n_batches: int,
             batch_size: int, ridge: float = 1e-3) -> float:
    """Refit the last layer by ridge least squares of the target (in ``model.target_space``) on
    the tanh features of ``n_batches`` training batches; returns the fit's mean absolute error
    in x. Used when fine-tuning changes the target space (e.g. linear -> log2)."""
    was_training = model.training
    model.eval()
    feats, targets, mags = [], [], []
    for b in range(n_batches):
        x, y = sampler.batch(np.random.default_rng([rng_seed, 10**6 + b]), batch_size)
        feats.append(model.scaled_features(to_tensor(x)).double())
        targets.append(model.to_target_space(torch.from_numpy(y).double()))
        mags.append(y)
    f = torch.cat(feats)
    t = torch.cat(targets)
    design = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], dim=1)
    gram = design.T @ design + ridge * torch.eye(design.shape[1], dtype=f.dtype)
    coef = torch.linalg.solve(gram, design.T @ t)
    model.fc3.weight.copy_(coef[:-1].view(1, -1).float())
    model.fc3.bias.copy_(coef[-1:].float())
    model.train(was_training)
    pred = design @ coef
    if model.target_space == "log2":
        pred = torch.exp2(pred)
    return float(np.mean(np.abs(pred.numpy() - np.concatenate(mags))))


def _init_from(model: HagnifinderNet, config: HagnifinderConfig, sampler: MultiMagSampler, log) -> None:
    """Start from a trained model folder: its weights and fixed scale (step 3 continues)."""
    folder = Path(config.init_from)
    base = HagnifinderConfig.load(folder / "config.json")
    if base.scale_factor <= 0:
        raise ValueError(f"{folder}: the model to fine-tune has no calibrated scale factor")
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.fix_scale(base.scale_factor)
    config.scale_factor = base.scale_factor
    msg = f"initialised from {folder} (scale factor {base.scale_factor:.6g}, {base.target_space} output)"
    if base.target_space != config.target_space:
        mae = fit_head(model, sampler, config.seed, config.head_fit_batches, config.batch_size)
        msg += f"; last layer refitted for {config.target_space} output (fit MAE {mae:.2f}x)"
    log(msg, event="init_from", source=str(folder))


class _Member:
    """One network under training, its optimiser, and the training sources it may see."""

    def __init__(self, model: HagnifinderNet, config: HagnifinderConfig, keep: torch.Tensor) -> None:
        self.model, self.keep = model, keep
        head_params = list(model.fc3.parameters())
        body_params = [p for p in model.parameters() if all(p is not q for q in head_params)]
        self.n_head = len(head_params)
        groups = [{"params": body_params}, {"params": head_params, "is_head": True}]
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
        elif config.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', not {config.optimizer!r}")
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, "min", factor=0.5, patience=config.plateau_patience, min_lr=config.min_lr)


def train(config: HagnifinderConfig, resume: bool = False, data_sources=None,
          stop_after_min: float | None = None) -> HagnifinderNet | HagnifinderEnsemble:
    """Train (or resume) per ``config``; returns the final model (ASM off, fixed scale).

    ``data_sources`` overrides discovery: a ``(train, val)`` pair of :class:`SourceImage` lists.
    With ``config.init_from`` the run fine-tunes a trained model (step 3 only, its fixed scale).
    ``stop_after_min``: checkpoint and stop after this many minutes (a time-limited job), as
    on SIGTERM. With ``config.cross_fit_folds > 1`` it trains that many members on one batch stream, each
    on the samples of its own training sources, and returns their ensemble.
    """
    torch.set_num_threads(max(1, config.num_threads))
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = _Log(out_dir)
    labelled = hagni40 = None
    if data_sources is not None:
        train_src, val_src = data_sources
    elif config.hagni40_root:
        # patches labelled by magnification, held out by cancer type (``hagni40:<type>`` names)
        held = {name.split(":", 1)[1] for name in (*config.holdout, *config.tuning_holdout)
                if name.startswith("hagni40:")}
        hagni40 = LabelledPatchSampler(hagni40_entries(config.hagni40_root), config.patch_size)
        labelled = LabelledPatchSampler([e for e in hagni40.entries if e[1] not in held], config.patch_size,
                                        augment=config.data_arg, camera_prob=config.camera_prob)
        train_src = labelled.sources
        val_src = [s for s in hagni40.sources if s.name.split(":", 1)[1] in held]
    elif config.data_pack:
        train_src, val_src = split_sources(read_pack(config.data_pack), config.holdout)
    else:
        found = discover_sources(config.data_root)
        if config.camera_sources:
            found += breakhis_sources(config.data_root)
        train_src, val_src = split_sources(found, config.holdout)
    if config.tuning_holdout and labelled is None:
        # model choice on training sources left out of this run; the held-out list stays unseen
        train_src, val_src = split_sources(train_src, config.tuning_holdout)
    sampler = labelled or MultiMagSampler(train_src, (config.mag_min, config.mag_max), config.patch_size,
                                          pad_prob=config.pad_prob, blur_prob=config.blur_prob,
                                          blur_sigma=tuple(config.blur_sigma), stain_jitter=config.stain_jitter,
                                          augment=config.data_arg, camera_prob=config.camera_prob,
                                          mag_sampling=config.mag_sampling)
    if config.cross_fit_folds > 1 and config.init_from:
        raise ValueError("cross_fit_folds and init_from cannot be combined")
    config.member_holdouts = member_holdouts(train_src, config)

    device = torch.device(choose_device(config.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    members = []
    for held in config.member_holdouts or [[]]:
        model = build_network(config)
        model.use_asm = True
        keep = torch.tensor([s.name not in held for s in train_src])  # on the CPU: no sync
        members.append((model, keep))
    if config.init_from and not (resume and (out_dir / "checkpoint.pt").exists()):
        _init_from(members[0][0], config, sampler, log)
    elif config.init_from:
        config.scale_factor = HagnifinderConfig.load(Path(config.init_from) / "config.json").scale_factor
    elif config.asm_iters == 0 and config.calib_iters == 0:
        # step 3 only: the given scale factor replaces ASM from the first iteration (upstream: ASM
        # off with sf 0 is an error)
        if config.scale_factor <= 0:
            raise ValueError("asm_iters and calib_iters are 0 but scale_factor is 0: give the fixed scale "
                             "factor (or init_from a trained model, or run the ASM and calibration steps)")
        for model, _ in members:
            model.fix_scale(config.scale_factor)
    elif config.calib_iters == 0 and config.scale_factor <= 0:
        raise ValueError("calib_iters is 0: give scale_factor, the fixed factor step 3 continues with")
    members = [_Member(model.to(device), config, keep) for model, keep in members]
    loss_fn = torch.nn.HuberLoss(delta=config.huber_delta)
    n = len(members)
    state = {"iteration": 0, "calib_sum": [0.0] * n, "calib_n": [0] * n, "epoch_losses": [[] for _ in range(n)]}
    ckpt_path = out_dir / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        models = _checkpoint_models(ckpt)
        if len(models) != n:
            raise ValueError(f"{ckpt_path}: {len(models)} member(s) in the checkpoint, {n} in the config")
        optims = ckpt.get("optimizers", [ckpt.get("optimizer")])
        scheds = ckpt.get("schedulers", [ckpt.get("scheduler")])
        for m, weights, opt, sched in zip(members, models, optims, scheds):
            m.model.load_state_dict(weights)
            m.model.use_asm = ckpt["use_asm"]
            m.optimizer.load_state_dict(_two_groups(opt, m.n_head))
            m.scheduler.load_state_dict(sched)
            m.scheduler.min_lrs = [config.min_lr] * len(m.optimizer.param_groups)  # one per group
        state = ckpt["state"]
        if not isinstance(state["calib_sum"], list):  # single-model checkpoint format
            state.update(calib_sum=[state["calib_sum"]], calib_n=[state["calib_n"]],
                         epoch_losses=[state["epoch_losses"]])
        log(f"resumed at iteration {state['iteration']} ({phase_of(config, state['iteration'])})")
    else:
        config.save(out_dir / "run_config.json")
        log(f"start: {len(train_src)} training and {len(val_src)} validation source images on {device}; "
            f"config {json.dumps(asdict(config))}")
    if hagni40 is not None:
        val = hagni40.validation({s.name.split(":", 1)[1] for s in val_src}) if val_src and config.val_every > 0 \
            else []
    else:
        val = validation_patches(val_src, crops_per_mag=config.val_crops, patch_size=config.patch_size,
                                 seed=config.seed) if val_src and config.val_every > 0 else []
    val_x = np.stack([r["patch"] for r in val]) if val else None
    val_y = np.array([r["mag"] for r in val]) if val else None

    def current_model():
        return members[0].model if n == 1 else HagnifinderEnsemble([m.model for m in members])

    stop = {"flag": False}

    def _request_stop(signum, frame):  # noqa: ARG001 - signal handler signature
        stop["flag"] = True

    old_handlers = {s: signal.signal(s, _request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    t0 = time.time()
    total = config.asm_iters + config.calib_iters + config.fixed_iters
    try:
        def amp():
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")

        for it, x, y, src in _batches(sampler, config, state["iteration"], total):
            if stop["flag"] or (stop_after_min and time.time() - t0 > 60 * stop_after_min):
                break
            phase = phase_of(config, it)
            x = x.to(device, non_blocking=True)
            y_dev = y.to(device, non_blocking=True)
            y = y.numpy()
            if phase == "calibrate":
                # step 2: one pass with ASM on, averaging the multiplier; no weight update
                for k, m in enumerate(members):
                    sel = m.keep[src]
                    if int(sel.sum()) < 2:
                        continue
                    m.model.eval()
                    with torch.no_grad(), amp():
                        m.model.asm.ev = config.ev
                        m.model(x[sel.to(device, non_blocking=True)])
                    state["calib_sum"][k] += float(m.model.last_multiplier)
                    state["calib_n"][k] += 1
                    m.model.train()
                if phase_of(config, it + 1) != "calibrate":
                    factors = [total_ / max(count, 1) for total_, count in zip(state["calib_sum"], state["calib_n"])]
                    for m, sf in zip(members, factors):
                        m.model.fix_scale(sf)
                    log(f"step 2 done: scale factor {', '.join(f'{sf:.6g}' for sf in factors)} "
                        f"from {', '.join(map(str, state['calib_n']))} batches",
                        event="calibrated", iteration=it, scale_factor=float(np.mean(factors)),
                        scale_factors=factors)
                    _save_checkpoint(ckpt_path, members, {**state, "iteration": it + 1})
            else:
                if phase == "fixed" and members[0].model.use_asm:  # step 3 after ASM without calibration
                    for m in members:
                        m.model.fix_scale(config.scale_factor)
                first_fixed = phase == "fixed" and config.fixed_lr and not state.get("fixed_lr_set")
                first_head = config.head_lr and not state.get("head_lr_set")
                losses, maes, step_losses, active = [], [], [], []
                for k, m in enumerate(members):
                    if first_fixed:
                        for group in m.optimizer.param_groups:
                            group["lr"] = config.fixed_lr
                    if first_head:
                        m.optimizer.param_groups[1]["lr"] = config.head_lr
                    sel = m.keep[src]
                    if int(sel.sum()) < 2:  # ASM and batch norm need two samples
                        continue
                    if n > 1:
                        sel = sel.to(device, non_blocking=True)
                        xs, ys = x[sel], y_dev[sel]
                    else:
                        xs, ys = x, y_dev
                    m.model.train()
                    with amp():
                        out = m.model.head_output(xs)
                    loss = loss_fn(out, m.model.to_target_space(ys))
                    m.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    m.optimizer.step()
                    step_losses.append(loss.detach())
                    active.append(k)
                    if (it + 1) % config.iters_per_epoch == 0:
                        pred = torch.exp2(out) if m.model.target_space == "log2" else out
                        maes.append(float(torch.mean(torch.abs(pred.detach() - ys))))
                for k, value in zip(active, torch.stack(step_losses).tolist() if step_losses else []):
                    state["epoch_losses"][k].append(value)  # one device sync per iteration
                state["fixed_lr_set"] = state.get("fixed_lr_set") or bool(first_fixed)
                state["head_lr_set"] = state.get("head_lr_set") or bool(first_head)
                if (it + 1) % config.iters_per_epoch == 0:
                    for k, m in enumerate(members):
                        if state["epoch_losses"][k]:
                            losses.append(float(np.mean(state["epoch_losses"][k])))
                            m.scheduler.step(losses[-1])
                        state["epoch_losses"][k] = []
                    lr = members[0].optimizer.param_groups[0]["lr"]
                    epoch_loss = float(np.mean(losses)) if losses else float("nan")
                    mae = float(np.mean(maes)) if maes else float("nan")
                    log(f"it {it + 1} [{phase}] train huber {epoch_loss:.3f} batch-MAE {mae:.2f} lr {lr:.2g} "
                        f"({(time.time() - t0) / 60:.1f} min)", event="epoch", iteration=it + 1,
                        phase=phase, loss=epoch_loss, lr=lr, member_losses=losses)
            state["iteration"] = it + 1
            done_phase = phase_of(config, it + 1) != phase
            if val_x is not None and ((it + 1) % config.val_every == 0 or (done_phase and phase != "calibrate")):
                preds = predict_patches(current_model(), val_x, config.batch_size)
                summary = summarise(preds, val_y, sorted({*THRESHOLDS, float(config.N)}))
                log(f"it {it + 1} validation MAE {summary['mae']:.2f} acc@{config.N:g} "
                    f"{summary[f'acc@{float(config.N):g}']:.2f} acc@1 {summary['acc@1']:.2f} "
                    f"acc@5 {summary['acc@5']:.2f} (n={summary['n']})", event="val", iteration=it + 1,
                    phase=phase, **summary)
            if (it + 1) % config.checkpoint_every == 0 or done_phase:
                _save_checkpoint(ckpt_path, members, state)
        _save_checkpoint(ckpt_path, members, state)
        model = current_model()
        if phase_of(config, state["iteration"]) == "done":
            export_model(model.cpu(), config, out_dir)
            log(f"finished: model.pt and config.json in {out_dir}")
        else:
            log(f"stopped at iteration {state['iteration']}; resume with resume=True")
    finally:
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
        log.close()
    return model


def load_config_file(path: str | Path) -> HagnifinderConfig:
    """A config from JSON (or TOML); relative ``data_root``/``out_dir`` stay relative to the CWD."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        with open(path, "rb") as fh:
            return HagnifinderConfig.from_dict(tomllib.load(fh))
    return HagnifinderConfig.load(path)


def train_from_config_file(path: str | Path, resume: bool = False,
                           stop_after_min: float | None = None) -> dict:
    """Entry point for ``napari-histo train hagnifinder --config FILE [--resume]``.

    Returns a summary: run folder, whether all three steps finished, the scale factor, and the
    exported files.
    """
    config = load_config_file(path)
    model = train(config, resume=resume, stop_after_min=stop_after_min)
    out_dir = Path(config.out_dir)
    finished = (out_dir / "model.pt").exists() and not model.use_asm
    return {"out_dir": str(out_dir), "finished": finished,
            "scale_factor": float(model.scale_factor),
            "files": sorted(p.name for p in out_dir.iterdir() if p.is_file())}


def export_checkpoint(config: HagnifinderConfig, out_dir: str | Path) -> dict:
    """Export the run's current ``checkpoint.pt`` (step 3 reached) as ``model.pt`` + ``config.json``.

    For evaluating a run in progress, or shipping one stopped early; returns the iteration.
    """
    ckpt = torch.load(Path(config.out_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)
    run_config = Path(config.out_dir) / "run_config.json"
    if config.cross_fit_folds > 1 and run_config.exists():  # the folds the run drew
        config.member_holdouts = HagnifinderConfig.load(run_config).member_holdouts
    models = [build_network(config) for _ in _checkpoint_models(ckpt)]
    for model, weights in zip(models, _checkpoint_models(ckpt)):
        model.load_state_dict(weights)
        if ckpt["use_asm"] or float(model.scale_factor) <= 0:
            raise ValueError("the checkpoint is still in step 1/2 (no fixed scale): nothing to export")
        model.use_asm = False
    model = models[0] if len(models) == 1 else HagnifinderEnsemble(models)
    export_model(model, config, out_dir)
    return {"iteration": ckpt["state"]["iteration"], "out_dir": str(out_dir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the Hagnifinder magnification regressor.")
    parser.add_argument("config", help="config JSON (HagnifinderConfig fields)")
    parser.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt")
    parser.add_argument("--stop-after", type=float, metavar="MIN",
                        help="checkpoint and stop after MIN minutes (resume later with --resume)")
    parser.add_argument("--export-checkpoint", metavar="DIR",
                        help="do not train: export out_dir/checkpoint.pt as a model folder DIR")
    args = parser.parse_args(argv)
    if args.export_checkpoint:
        config = load_config_file(args.config)
        if config.init_from:  # the fixed scale comes from the model the run started from
            config.scale_factor = HagnifinderConfig.load(Path(config.init_from) / "config.json").scale_factor
        print(export_checkpoint(config, args.export_checkpoint))
        return 0
    train_from_config_file(args.config, resume=args.resume, stop_after_min=args.stop_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
