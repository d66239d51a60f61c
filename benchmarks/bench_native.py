"""20× images at the network's own resolution vs the detour through 0.25 µm/px, side by side.

The default (compact) model is presented at 0.25 µm/px but its network and watershed run at
0.5 µm/px. A 20× image (≈0.5 µm/px) used to be upsampled to 0.25, block-averaged back to 0.5 for
the network, and its labels upscaled to 0.25 and measured there before being sampled back onto the
image's pixels. It now runs on the network's grid directly
(:meth:`~napari_histo.nuclei.hovernet_segmenter.HoverNetSegmenter.for_resolution`).

Two measurements, old ("detour") and new ("native") paths alternating in one process:

1. the shipped sample slide (CMU-1-Small-Region, 0.499 µm/px) through ``run_segmentation`` with
   default options: process CPU time, wall time, nuclei, and the agreement of the two label
   images (PQ, DQ, Dice of one against the other);
2. accuracy against ground truth at 20×: the five held-out MoNuSeg tiles averaged 2 × 2 to
   ≈0.5 µm/px (their instance maps sampled at the same pixel centres), through ``segment_image``
   (Dice, AJI, PQ); and at 40× (native tiles), where the path is unchanged.

Run: ``python benchmarks/bench_native.py [--repeat 2] [--threads 2] [--out FILE.json]``.
Part 2 needs ``../shared/data/monuseg``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from _report import emit_json

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = ["TCGA-44-2665-01B-06-BS6", "TCGA-A6-6782-01A-01-BS1", "TCGA-AO-A0J2-01A-01-BSA",
            "TCGA-CU-A0YN-01A-02-BSB", "TCGA-GL-6846-01A-01-BS1"]


def detour(segmenter):
    """The same segmenter with the old behaviour: never switched to its network grid."""
    import copy

    old = copy.copy(segmenter)
    old.for_resolution = lambda mpp: old
    return old


def run_slide(segmenter, slide: Path, outdir: Path) -> dict:
    import numpy as np
    import zarr

    from napari_histo.engine.run import run_segmentation

    gen = run_segmentation(slide, segmenter, outdir)
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    labels = np.asarray(zarr.open_group(str(outdir / "labels.zarr"), mode="r")["0"])
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "nuclei": result.n_nuclei,
            "tiles": result.n_tiles, "work_mpp": result.plan.work_mpp, "labels": labels}


def downsample_pair(rgb, inst):
    """2 × 2 block mean of the image; instance labels sampled at the coarse pixel centres."""
    import numpy as np

    from napari_histo.models.segment import resize_labels
    from napari_histo.nuclei.hovernet_segmenter import block_mean

    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    small = np.clip(np.rint(block_mean(rgb[:h, :w], 2)), 0, 255).astype(np.uint8)
    return small, resize_labels(inst[:h, :w], small.shape[:2])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from napari_histo.models import get_segmenter
    from napari_histo.models.segment import segment_image
    from napari_histo.nuclei.metrics import instance_scores
    from napari_histo.utils import sample_slide_path

    torch.set_num_threads(args.threads)
    native = get_segmenter("default", device="cpu")
    old = detour(native)
    slide = sample_slide_path()
    work = Path(tempfile.mkdtemp(prefix="bench_native_"))
    runs: dict[str, list[dict]] = {"detour": [], "native": []}
    labels = {}
    for rep in range(args.repeat):
        for name, seg in (("detour", old), ("native", native)):
            r = run_slide(seg, slide, work / f"{name}_{rep}")
            labels[name] = r.pop("labels")
            runs[name].append(r)
            print(name, r, flush=True)
    agreement = instance_scores(labels["detour"], labels["native"])
    result: dict = {
        "benchmark": "bench_native", "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "slide": slide.name, "runs": runs,
        "cpu_ratio_native_over_detour": round(float(np.median([r["cpu_s"] for r in runs["native"]])
                                                    / np.median([r["cpu_s"] for r in runs["detour"]])), 3),
        "agreement_native_vs_detour": {k: round(float(v), 4) for k, v in agreement.items()},
        "command": "python benchmarks/bench_native.py",
    }
    root = Path(args.data)
    if (root / "monuseg").is_dir():
        from src_models.hovernet.data import load_monuseg_native

        rows = {}
        for stem in HELD_OUT:
            rgb, inst, mpp = load_monuseg_native(root, stem)
            small, small_inst = downsample_pair(rgb, inst)
            row = {}
            for name, seg in (("detour", old), ("native", native)):
                lab20, _ = segment_image(small, 2 * mpp, model=seg)
                row[f"20x_{name}"] = {k: round(float(v), 4) for k, v in instance_scores(small_inst, lab20).items()}
            lab40, _ = segment_image(rgb, mpp, model=native)
            row["40x"] = {k: round(float(v), 4) for k, v in instance_scores(inst, lab40).items()}
            rows[stem] = row
            print(stem, row, flush=True)
        means = {}
        for key in ("20x_detour", "20x_native", "40x"):
            means[key] = {m: round(float(np.mean([rows[s][key][m] for s in rows])), 4)
                          for m in rows[HELD_OUT[0]][key]}
        result["monuseg_held_out"] = {"tiles": rows, "mean": means}
    emit_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
