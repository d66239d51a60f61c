"""Evaluation of label-completion models: per-type F1 on held-out nuclei, per label set.

F1 is computed with the true labels as reference (weighted F1 weights by *true* support).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from src_models.label_completion.samples import build_samples, load_config

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.


def per_type_f1(y_true, y_pred, labels: list[str]) -> dict[str, Any]:
    """Per-type precision/recall/F1/support, macro F1 over types present, weighted F1, accuracy."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    per = {}
    f1s, supports = [], []
    for i, name in enumerate(labels):
        tp = int(((y_pred == i) & (y_true == i)).sum())
        fp = int(((y_pred == i) & (y_true != i)).sum())
        fn = int(((y_pred != i) & (y_true == i)).sum())
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        support = tp + fn
        per[name] = {"precision": prec, "recall": rec, "f1": f1, "support": support, "predicted": tp + fp}
        if support:
            f1s.append(f1)
            supports.append(support)
    n = len(y_true)
    return {
        "n": n,
        "accuracy": float((y_true == y_pred).mean()) if n else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "weighted_f1": float(np.average(f1s, weights=supports)) if f1s else float("nan"),
        "per_type": per,
    }


def evaluate_samples(model, samples, mask: np.ndarray) -> dict[str, Any]:
    """Per label set: F1 of the model's prediction (in that set) on its own labelled nuclei."""
    import torch

    out = {}
    cfg = model.config
    for d, ls in enumerate(cfg.label_sets):
        sel = mask & (samples.set_index == d) & (samples.labels >= 0)
        if not sel.any():
            continue
        probs = model.predict_proba(torch.from_numpy(samples.crops[sel]))[d].numpy()
        out[ls.name] = per_type_f1(samples.labels[sel], probs.argmax(1), ls.labels)
    return out


def cross_taxonomy_table(model, samples, mask: np.ndarray, source: str, target: str) -> dict[str, dict[str, int]]:
    """Counts of ``source`` ground-truth labels vs predicted ``target`` labels (held-out nuclei)."""
    import torch

    cfg = model.config
    s, t = cfg.set_index(source), cfg.set_index(target)
    sel = mask & (samples.set_index == s) & (samples.labels >= 0)
    pred = model.predict_proba(torch.from_numpy(samples.crops[sel]))[t].numpy().argmax(1)
    table: dict[str, dict[str, int]] = {}
    for i, name in enumerate(cfg.label_sets[s].labels):
        row = pred[samples.labels[sel] == i]
        table[name] = {lab: int((row == j).sum()) for j, lab in enumerate(cfg.label_sets[t].labels)}
    return table


def evaluate_folder(model_dir: str | Path, config_path: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a trained folder on the held-out nuclei defined by its config (or ``config_path``)."""
    from napari_histo.models.label_completion.model import load_model

    model = load_model(model_dir)
    cfg = load_config(config_path) if config_path else model.config
    samples = build_samples(cfg)
    return evaluate_samples(model, samples, samples.heldout)


def main(argv: list[str] | None = None) -> int:
    """``python -m src_models.label_completion.evaluate MODEL_DIR [CONFIG.json]``: held-out F1 as JSON."""
    p = argparse.ArgumentParser(description="Per-type F1 of a label-completion model on its held-out nuclei.")
    p.add_argument("model_dir")
    p.add_argument("config", nargs="?", default=None, help="config whose data/held-out to use")
    args = p.parse_args(argv)
    print(json.dumps(evaluate_folder(args.model_dir, args.config), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
