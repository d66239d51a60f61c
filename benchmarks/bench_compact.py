"""Throughput of the shipped compact HoVer-Net on CPU, post-processing included.

Measures megapixels of 40× input per second for a MoNuSeg 1000×1000 tile (≈0.25 µm/px):
resample to the model's working mpp, tiled inference, HV watershed post-processing, nucleus
table; and the network alone. Run: ``python benchmarks/bench_compact.py [--threads 2] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from src_models.hovernet.data import load_monuseg_native, resize_rgb
    from src_models.hovernet.evaluate import build_segmenter, segment_native

    seg = build_segmenter(args.weights)
    rgb, _, mpp = load_monuseg_native(Path(args.data), args.image)
    mpx = rgb.shape[0] * rgb.shape[1] / 1e6
    segment_native(seg, rgb[:300, :300], mpp)  # warm-up
    full, net, post = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        scale = mpp / seg.mpp
        work = resize_rgb(rgb, (round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)))
        t1 = time.perf_counter()
        raw = seg.predict(work)
        t2 = time.perf_counter()
        seg.postprocess(raw, work)
        t3 = time.perf_counter()
        full.append(t3 - t0)
        net.append(t2 - t1)
        post.append(t3 - t2)
    res = {
        "image": args.image,
        "input_mpx_40x": round(mpx, 3),
        "threads": args.threads,
        "seconds_total_median": round(float(np.median(full)), 3),
        "seconds_network_median": round(float(np.median(net)), 3),
        "seconds_postproc_median": round(float(np.median(post)), 3),
        "mpx_per_s_40x_total": round(mpx / float(np.median(full)), 3),
        "mpx_per_s_40x_network": round(mpx / float(np.median(net)), 3),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
