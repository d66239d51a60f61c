"""Three-stage label-completion training: base -> correlation -> completion (resumable per stage).

``napari-histo train label_completion --config FILE`` calls :func:`train_from_config_file`.
The JSON config holds :class:`~napari_histo.models.label_completion.model.LabelCompletionConfig` fields;
relative ``data`` roots and ``out_dir`` are resolved against the config file's folder.

Outputs in ``out_dir``: ``stage_<name>.pt`` after each stage (resume restarts after the last
finished stage), ``model.pt`` + ``config.json`` (final), ``metrics.json`` (held-out per-type F1
after every stage) and ``train.log``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.utils import atomic_write
from src_models.label_completion.evaluate import evaluate_samples
from src_models.label_completion.samples import NucleusSamples, build_samples, load_config

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.

STAGES = ("base", "correlation", "completion")


def _augment(x):
    """Random flips/rot90 per batch and per-sample brightness/contrast/saturation jitter."""
    import torch

    k = int(torch.randint(0, 4, ()))
    x = torch.rot90(x, k, (2, 3))
    if bool(torch.rand(()) < 0.5):
        x = x.flip(3)
    img = x * 0.5 + 0.5
    b = img.shape[0]
    img = img * torch.empty(b, 1, 1, 1).uniform_(0.8, 1.2)
    mean = img.mean((1, 2, 3), keepdim=True)
    img = (img - mean) * torch.empty(b, 1, 1, 1).uniform_(0.8, 1.2) + mean
    grey = img.mean(1, keepdim=True)
    img = (img - grey) * torch.empty(b, 1, 1, 1).uniform_(0.8, 1.2) + grey
    return (img.clamp(0, 1) - 0.5) / 0.5


def _class_weights(cfg, samples: NucleusSamples, idx: np.ndarray):
    import torch

    out = []
    for d, n in enumerate(cfg.sizes):
        lab = samples.labels[idx][(samples.set_index[idx] == d) & (samples.labels[idx] >= 0)]
        counts = np.bincount(lab, minlength=n).astype(float)
        w = np.where(counts > 0, np.sqrt(counts.sum() / np.maximum(counts, 1) / n), 0.0)
        out.append(torch.tensor(w if cfg.class_balanced else np.ones(n), dtype=torch.float32))
    return out


def train_stages(cfg, samples: NucleusSamples | None = None, resume: bool = False, log=print) -> dict[str, Any]:
    """Run ``cfg.stages`` in order and evaluate the held-out nuclei after each stage."""
    import torch

    from napari_histo.models.label_completion.model import LabelCompletionModel, save_model
    from src_models.label_completion.losses import completion_loss, sparse_label_loss

    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if samples is None:
        samples = build_samples(cfg)
    names = [s.name for s in cfg.label_sets]
    train_sets = [cfg.set_index(n) for n in (cfg.train_sets or names)]
    in_train_set = np.isin(samples.set_index, train_sets)
    train_lab = np.flatnonzero(~samples.heldout & in_train_set & (samples.labels >= 0))
    # completion also sees other-set labelled nuclei (labels hidden per set) and unlabelled ones
    train_all = np.flatnonzero(~samples.heldout & ((samples.labels >= 0) | cfg.use_unlabelled))
    log(f"{len(samples)} nuclei; training labelled {len(train_lab)}, completion pool {len(train_all)}, "
        f"held-out {int(samples.heldout.sum())}; training sets {[names[d] for d in train_sets]}")
    x_all = torch.from_numpy(samples.crops)
    s_all = torch.from_numpy(samples.set_index)
    y_all = torch.from_numpy(samples.labels)
    model = LabelCompletionModel(cfg)
    weights = _class_weights(cfg, samples, train_lab)
    metrics_path = out / "metrics.json"
    metrics: dict[str, Any] = json.loads(metrics_path.read_text()) if resume and metrics_path.exists() else {}
    metrics.setdefault("stages", {})
    done = [s for s in STAGES if (out / f"stage_{s}.pt").exists()] if resume else []
    if done:
        model.load_state_dict(torch.load(out / f"stage_{done[-1]}.pt", map_location="cpu", weights_only=True))
        log(f"resumed after stage {done[-1]}")

    def batches(idx: np.ndarray):
        order = rng.permutation(idx)
        for b in range(0, len(order), cfg.batch_size):
            yield torch.from_numpy(order[b:b + cfg.batch_size])

    def finish(stage: str, t0: float, extra: dict | None = None) -> None:
        torch.save(model.state_dict(), out / f"stage_{stage}.pt")
        ev = evaluate_samples(model, samples, samples.heldout)
        metrics["stages"][stage] = {"minutes": (time.time() - t0) / 60, "heldout": ev, **(extra or {})}
        for name, m in ev.items():
            log(f"[{stage}] {name}: macro F1 {m['macro_f1']:.3f} acc {m['accuracy']:.3f} (n={m['n']})")
        with atomic_write(metrics_path) as fh:
            json.dump(metrics, fh, indent=2)

    for stage in cfg.stages:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose from {STAGES}")
        if stage in done:
            continue
        t0 = time.time()
        if stage == "base":
            opt = torch.optim.Adam(model.base.parameters(), lr=cfg.base_lr, weight_decay=cfg.weight_decay)
            for epoch in range(cfg.base_epochs):
                model.train()
                tot = 0.0
                for bi in batches(train_lab):
                    loss = sparse_label_loss(model.base(_augment(x_all[bi])), s_all[bi], y_all[bi],
                                             cfg.offsets, weights)
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.base.parameters(), cfg.grad_clip)
                    opt.step()
                    tot += float(loss.detach()) * len(bi)
                if epoch % 5 == 4 or epoch == cfg.base_epochs - 1:
                    log(f"[base] epoch {epoch + 1}/{cfg.base_epochs} loss {tot / max(len(train_lab), 1):.4f}")
            finish("base", t0)
        elif stage == "correlation":
            model.base.eval()
            with torch.no_grad():
                logits = torch.cat([model.base(x_all[b:b + 512]) for b in range(0, len(x_all), 512)])
            for d in train_sets:
                idx = train_lab[samples.set_index[train_lab] == d]
                mlp = model.mlps[d]
                opt = torch.optim.Adam(mlp.parameters(), lr=cfg.correlation_lr, weight_decay=cfg.weight_decay)
                for _ in range(cfg.correlation_epochs):
                    mlp.train()
                    for bi in batches(idx):
                        if len(bi) < 2:
                            continue  # BatchNorm1d needs 2 samples
                        loss = torch.nn.functional.cross_entropy(
                            mlp(model.other_logits(logits[bi], d)), y_all[bi], weight=weights[d])
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                model.mlps_trained[d] = True
                log(f"[correlation] {names[d]}: final batch loss {float(loss.detach()):.4f}")
            finish("correlation", t0)
        else:
            if not bool(model.mlps_trained[train_sets].all()):
                raise ValueError("the completion stage needs the correlation stage first")
            opt = torch.optim.Adam(model.parameters(), lr=cfg.completion_lr, weight_decay=cfg.weight_decay)
            pseudo = {"pseudo_base": 0, "pseudo_mlp": 0}
            for epoch in range(cfg.completion_epochs):
                model.train()
                tot = 0.0
                pseudo = {"pseudo_base": 0, "pseudo_mlp": 0}
                for bi in batches(train_all):
                    if len(bi) < 2:
                        continue
                    y = y_all[bi].clone()
                    y[~torch.from_numpy(np.isin(samples.set_index[bi.numpy()], train_sets))] = -1
                    logits, mlp_logits = model(_augment(x_all[bi]))
                    loss, st = completion_loss(model, logits, mlp_logits, s_all[bi], y, cfg.threshold, train_sets)
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    tot += float(loss.detach()) * len(bi)
                    for k in pseudo:
                        pseudo[k] += st[k]
                if epoch % 5 == 4 or epoch == cfg.completion_epochs - 1:
                    log(f"[completion] epoch {epoch + 1}/{cfg.completion_epochs} loss "
                        f"{tot / max(len(train_all), 1):.4f} pseudo-labels {pseudo}")
            finish("completion", t0, {"last_epoch_pseudo_labels": pseudo})
    save_model(model, out)
    return metrics


def train_from_config_file(path: str | Path, resume: bool = False) -> dict[str, Any]:
    """Run the stages of the JSON config at ``path`` (``resume`` skips finished stages)."""
    cfg = load_config(path)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cfg.out_dir) / "train.log", "a", encoding="utf-8") as fh:
        def log(msg: str) -> None:
            print(msg, flush=True)
            fh.write(msg + "\n")
            fh.flush()

        return train_stages(cfg, resume=resume, log=log)


if __name__ == "__main__":  # pragma: no cover
    import sys

    train_from_config_file(sys.argv[1], resume="--resume" in sys.argv)
