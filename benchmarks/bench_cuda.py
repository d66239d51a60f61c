"""The CUDA path of the nucleus models: same results as the CPU, and GPU throughput.

1. The shipped compact HoVer-Net on MoNuSeg tiles with ground truth, three ways: CPU float32,
   CUDA float32 and CUDA with autocast (AMP, float16, the default on CUDA). Per way: AJI / PQ
   against the ground truth, nuclei found, and the agreement of the CUDA labels with the CPU
   labels (PQ of one against the other; 1.0 = the same nuclei with the same outlines).
2. GPU throughput of the compact model (megapixels of 40x input per second; network alone and
   with the CPU post-processing) on a mosaic of the tiles.
3. The official HoVer-Net architecture ('fast', 6 types, random weights): 256² patches per
   second in float32 and AMP. (No output comparison: with random weights and untrained batch
   norm statistics the logits are huge, and their float16 rounding says nothing about trained
   checkpoints; the compact model above is the AMP agreement check.)

Tiles come from ``--tiles DIR`` (``*.npz`` with ``image``, ``inst``, ``mpp``) or from
``--data ROOT`` (``../shared/data``; the compact model's held-out MoNuSeg tiles).

Run: ``python benchmarks/bench_cuda.py [--tiles DIR | --data ROOT] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from _report import emit_json

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "resources" / "weights" / "hovernet_compact"


def _tiles(args) -> list[tuple[str, object, object, float]]:
    import numpy as np

    if args.tiles:
        out = []
        for f in sorted(Path(args.tiles).glob("*.npz")):
            z = np.load(f)
            out.append((f.stem, z["image"], z["inst"], float(z["mpp"])))
        return out
    from src_models.hovernet.config import TrainConfig
    from src_models.hovernet.data import load_monuseg_native

    return [(s, *load_monuseg_native(Path(args.data), s)) for s in TrainConfig().val_monuseg]


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--tiles", default=None, help="folder of *.npz tiles (image, inst, mpp)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_cuda: no CUDA device")

    from napari_histo.models.hovernet.compact import compact_segmenter
    from napari_histo.nuclei.metrics import instance_scores
    from src_models.hovernet.evaluate import segment_native

    tiles = _tiles(args)
    ways = {
        "cpu_fp32": compact_segmenter(args.weights, device="cpu", batch_size=4),
        "cuda_fp32": compact_segmenter(args.weights, device="cuda", batch_size=args.batch_size, amp=False),
        "cuda_amp": compact_segmenter(args.weights, device="cuda", batch_size=args.batch_size, amp=True),
    }
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
                 "weights": Path(args.weights).name, "tiles": [t[0] for t in tiles], "per_tile": []}
    for seg in ways.values():  # warm-up (cuDNN autotuning, allocations)
        segment_native(seg, tiles[0][1][:300, :300], tiles[0][3])
    sums: dict[str, dict[str, list[float]]] = {w: {"aji": [], "pq": [], "seconds": [], "n": []} for w in ways}
    agree: dict[str, list[float]] = {"cuda_fp32_pq_vs_cpu": [], "cuda_amp_pq_vs_cpu": [],
                                     "cuda_amp_aji_vs_cpu": []}
    for name, rgb, gt, mpp in tiles:
        labels = {}
        row: dict = {"tile": name}
        for way, seg in ways.items():
            t0 = time.perf_counter()
            labels[way], _ = segment_native(seg, rgb, mpp)
            dt = time.perf_counter() - t0
            s = instance_scores(gt, labels[way])
            n = int(len(np.unique(labels[way])) - 1)
            row[way] = {"aji": round(s["aji"], 4), "pq": round(s["pq"], 4), "nuclei": n, "seconds": round(dt, 3)}
            for k, v in (("aji", s["aji"]), ("pq", s["pq"]), ("seconds", dt), ("n", n)):
                sums[way][k].append(v)
        for way in ("cuda_fp32", "cuda_amp"):
            a = instance_scores(labels["cpu_fp32"], labels[way])
            agree[f"{way}_pq_vs_cpu"].append(a["pq"])
            if way == "cuda_amp":
                agree["cuda_amp_aji_vs_cpu"].append(a["aji"])
            row[f"{way}_vs_cpu"] = {"pq": round(a["pq"], 4), "aji": round(a["aji"], 4)}
        res["per_tile"].append(row)
        print(json.dumps(row), flush=True)
    res["mean"] = {w: {k: round(float(np.mean(v)), 4) for k, v in d.items()} for w, d in sums.items()}
    res["agreement_mean"] = {k: round(float(np.mean(v)), 4) for k, v in agree.items()}

    # 2. throughput on a 2x2 mosaic of the first tiles (native mpp), network and post-processing
    from src_models.hovernet.data import resize_rgb

    first = [t[1] for t in tiles[:4]]
    while len(first) < 4:
        first.append(first[-1])
    h = min(t.shape[0] for t in first)
    w = min(t.shape[1] for t in first)
    mosaic = np.concatenate([np.concatenate([first[0][:h, :w], first[1][:h, :w]], 1),
                             np.concatenate([first[2][:h, :w], first[3][:h, :w]], 1)], 0)
    mpp = tiles[0][3]
    mpx = mosaic.shape[0] * mosaic.shape[1] / 1e6
    tput = {}
    for way in ("cuda_fp32", "cuda_amp"):
        seg = ways[way]
        scale = mpp / seg.mpp
        work = resize_rgb(mosaic, (round(mosaic.shape[0] * scale), round(mosaic.shape[1] * scale)))
        seg.predict(work)
        net, post = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            raw = seg.predict(work)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            seg.postprocess(raw, work)
            t2 = time.perf_counter()
            net.append(t1 - t0)
            post.append(t2 - t1)
        tput[way] = {"mosaic_mpx_40x": round(mpx, 3),
                     "mpx_per_s_network": round(mpx / float(np.median(net)), 2),
                     "mpx_per_s_network_and_postproc": round(mpx / float(np.median(np.add(net, post))), 3),
                     "seconds_postproc_median": round(float(np.median(post)), 3)}
    res["compact_throughput"] = tput

    # 3. the official architecture, fast mode, PanNuke-sized type branch, random weights
    from napari_histo.models.hovernet.net import HoVerNet

    net_official = HoVerNet("fast", nr_types=6).cuda().eval()
    bs = 16
    rng = np.random.default_rng(0)
    ys = rng.integers(0, tiles[0][1].shape[0] - 256, bs)
    xs = rng.integers(0, tiles[0][1].shape[1] - 256, bs)
    patches = np.stack([tiles[0][1][y:y + 256, x:x + 256] for y, x in zip(ys, xs)])
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float().cuda()  # official input: 0-255 RGB
    official: dict = {"batch": bs, "input": 256, "output": 164}
    with torch.no_grad():
        for label, amp in (("fp32", False), ("amp", True)):
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                for _ in range(3):
                    net_official(x)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                reps = 10
                for _ in range(reps):
                    out = net_official(x)
                torch.cuda.synchronize()
                dt = (time.perf_counter() - t0) / reps
            assert {"np", "hv", "tp"} <= set(out), sorted(out)
            official[f"patches_per_s_{label}"] = round(bs / dt, 1)
    res["official_fast"] = official
    emit_json(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
