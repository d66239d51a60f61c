"""Magnification benchmark: held-out validation by magnification and prediction time.

Usage (from the repository root)::

    python benchmarks/bench_magnification.py [--model-dir resources/weights/hagnifinder] \
        [--crops 8] [--blur SIGMA] [--jpeg QUALITY] [--out results/bench_magnification.json]

Prints the markdown tables recorded in ``docs/benchmarks/magnification.md``: the shipped
prediction (calibrated output, trimmed log-mean over crops) beside the figures before
calibration (raw network output, plain mean of crops) on the same held-out fields; whole
held-out images downsampled to each magnification, predicted with the model's test-time
scales and crop rule beside another choice (``--alt-scales``, ``--alt-crop-rule``; default: the
method before, single scale and most-tissue crops); and the prediction time of both.
Wall and CPU time of the whole evaluation are printed too (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_histo.models.hagnifinder.images import read_rgb
    from napari_histo.models.magnification import (
        default_model_dir,
        load_model,
        predict_magnification,
    )
    from src_models.hagnifinder.evaluate import evaluate, markdown_tables

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(default_model_dir()))
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--out", default=None)
    parser.add_argument("--alt-scales", default="1",
                        help="test-time scales compared with the model's own (comma-separated factors)")
    parser.add_argument("--alt-crop-rule", default="most_tissue",
                        help="crop selection rule compared with the default (see select_crop_boxes)")
    parser.add_argument("--blur", type=float, default=0.0, metavar="SIGMA",
                        help="blur every held-out image given to the model (Gaussian, SIGMA px): "
                             "how much the prediction relies on sharpness rather than structure size")
    parser.add_argument("--jpeg", type=int, default=0, metavar="QUALITY",
                        help="save every held-out image given to the model as a JPEG of this quality "
                             "(after --blur) and read it back: a snapshot")
    args = parser.parse_args(argv)
    import resource

    torch.set_num_threads(1)
    wall0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    alt_scales = tuple(float(k) for k in args.alt_scales.split(","))
    results = evaluate(args.model_dir, args.data_root, args.crops, alt_scales=alt_scales,
                       alt_crop_rule=args.alt_crop_rule, blur_sigma=args.blur,
                       jpeg_quality=args.jpeg)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    results["evaluation_time"] = {"wall_s": time.perf_counter() - wall0, "cpu_s": cpu_s}
    print(markdown_tables(results))
    print(f"evaluation: {results['evaluation_time']['wall_s']:.1f} s wall, {cpu_s:.1f} s CPU")
    cmu = Path(args.data_root) / "wsi" / "cmu-1-small-region.svs"
    if cmu.exists():
        from napari_histo.models.magnification import predict_with_model

        rgb = read_rgb(cmu, (0, 0, 2048, 2048))
        model, config = load_model(args.model_dir)
        timing = {}
        for name, call in (("shipped", lambda: predict_magnification(rgb, n_crops=8, model_dir=args.model_dir)),
                           ("alt", lambda: predict_with_model(model, config, rgb, 8, 0, scales=alt_scales,
                                                            crop_rule=args.alt_crop_rule))):
            walls, cpus = [], []
            for _ in range(3):  # median of 3 (the machine is shared)
                t0, c0 = time.perf_counter(), time.process_time()
                pred = call()
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            timing[name] = {"wall_s": sorted(walls)[1], "cpu_s": sorted(cpus)[1], "prediction": pred.magnification}
            label = (f"scales {args.alt_scales}, {args.alt_crop_rule} crops") if name == "alt" else (
                "shipped, scales " + ",".join(f"{k:g}" for k in config.test_time_scales))
            print(f"predict_magnification ({label}) on a 2048² region, 8 crops, 1 thread: "
                  f"{timing[name]['wall_s']:.2f} s wall, {timing[name]['cpu_s']:.2f} s CPU (median of 3) "
                  f"-> {pred.magnification:.1f}x")
        results["timing"] = timing
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({k: v for k, v in results.items() if not k.endswith("_records")}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
