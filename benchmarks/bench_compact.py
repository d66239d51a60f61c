"""Throughput of the shipped compact HoVer-Net on CPU, post-processing included.

Measures megapixels of 40× input per second for a MoNuSeg 1000×1000 tile (≈0.25 µm/px):
resample to the model's working mpp, tiled inference, HV watershed post-processing and the
nucleus table (contours, shape features, typing), stage by stage, in wall-clock AND process
CPU time (the machine may be shared: CPU time is the load-independent figure; with 2 threads
a stage's CPU time can exceed its wall time). Medians over repeats, plus the best total (the
least disturbed repeat on a shared machine).

Run: ``python benchmarks/bench_compact.py [--weights DIR] [--threads 2] [--repeat 3] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from _report import emit_json

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(REPO / "resources" / "weights" / "hovernet_compact"))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--image", default="TCGA-44-2665-01B-06-BS6")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the result JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from src_models.hovernet.data import load_monuseg_native, resize_rgb
    from src_models.hovernet.evaluate import build_segmenter, segment_native

    seg = build_segmenter(args.weights)
    rgb, _, mpp = load_monuseg_native(Path(args.data), args.image)
    mpx = rgb.shape[0] * rgb.shape[1] / 1e6
    segment_native(seg, rgb[:300, :300], mpp)  # warm-up
    stages = ("resample", "network", "postproc")
    wall: dict[str, list[float]] = {k: [] for k in stages}
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    n_nuclei = 0
    for _ in range(args.repeat):
        marks = [(time.perf_counter(), time.process_time())]
        scale = mpp / seg.mpp
        work = resize_rgb(rgb, (round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)))
        marks.append((time.perf_counter(), time.process_time()))
        raw = seg.predict(work)
        marks.append((time.perf_counter(), time.process_time()))
        _, table = seg.postprocess(raw, work)
        marks.append((time.perf_counter(), time.process_time()))
        n_nuclei = len(table)
        for i, k in enumerate(stages):
            wall[k].append(marks[i + 1][0] - marks[i][0])
            cpu[k].append(marks[i + 1][1] - marks[i][1])

    def med(vals: list[float]) -> float:
        return round(float(np.median(vals)), 3)

    total = [sum(wall[k][i] for k in stages) for i in range(args.repeat)]
    seg_only = [wall["network"][i] + wall["postproc"][i] for i in range(args.repeat)]
    total_cpu = [sum(cpu[k][i] for k in stages) for i in range(args.repeat)]
    res = {
        "image": args.image,
        "weights": str(args.weights),
        "input_mpx_40x": round(mpx, 3),
        "working_mpp": seg.mpp,
        "network_mpp": getattr(seg, "work_mpp", seg.mpp),
        "nuclei": n_nuclei,
        "threads": args.threads,
        "repeat": args.repeat,
        "seconds_total_median": med(total),
        "seconds_resample_median": med(wall["resample"]),
        "seconds_network_median": med(wall["network"]),
        "seconds_postproc_median": med(wall["postproc"]),
        "cpu_seconds_total_median": med(total_cpu),
        "cpu_seconds_network_median": med(cpu["network"]),
        "cpu_seconds_postproc_median": med(cpu["postproc"]),
        "seconds_total_min": round(float(np.min(total)), 3),
        "mpx_per_s_40x_total": round(mpx / float(np.median(total)), 3),
        "mpx_per_s_40x_total_best": round(mpx / float(np.min(total)), 3),
        "mpx_per_s_40x_network_and_postproc": round(mpx / float(np.median(seg_only)), 3),
        "mpx_per_s_40x_network": round(mpx / float(np.median(wall["network"])), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    emit_json(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
