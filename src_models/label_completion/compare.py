"""Merged vs per-dataset comparison: train several configs on one set of crops, tabulate F1.

``python -m src_models.label_completion.compare OUT.json CONFIG.json [CONFIG.json ...]`` trains each
config (crops are cut once and shared when the configs use the same data/crop settings) and
writes the held-out metrics of every stage of every run, plus the cross-taxonomy table of the
merged run, to ``OUT.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from napari_histo.utils import atomic_write
from src_models.label_completion.evaluate import cross_taxonomy_table
from src_models.label_completion.samples import build_samples, load_config
from src_models.label_completion.train import train_stages

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.


def run_comparison(out_json: str | Path, config_paths: list[str | Path]) -> dict:
    import torch

    from napari_histo.models.label_completion.model import load_model

    results: dict = {"runs": {}}
    cache: dict = {}
    for path in config_paths:
        cfg = load_config(path)
        torch.set_num_threads(cfg.num_threads)
        key = json.dumps([cfg.data, cfg.heldout, cfg.crop_um, cfg.input_size], sort_keys=True)
        if key not in cache:
            t0 = time.time()
            cache[key] = build_samples(cfg)
            print(f"crops: {len(cache[key])} nuclei in {time.time() - t0:.0f}s", flush=True)
        samples = cache[key]
        t0 = time.time()
        metrics = train_stages(cfg, samples=samples)
        run = {"config": str(path), "train_sets": cfg.train_sets, "stages": metrics["stages"],
               "minutes": (time.time() - t0) / 60}
        model = load_model(cfg.out_dir)
        names = [s.name for s in cfg.label_sets]
        if len(names) == 2:
            run["cross_taxonomy"] = {
                f"{a}->{b}": cross_taxonomy_table(model, samples, samples.heldout, a, b)
                for a, b in (names, names[::-1])}
        results["runs"][Path(path).stem] = run
        with atomic_write(out_json) as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":  # pragma: no cover
    run_comparison(sys.argv[1], sys.argv[2:])
