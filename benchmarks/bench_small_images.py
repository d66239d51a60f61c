"""Magnification of small images: how the error grows as the image shrinks.

Held-out scanner images (the Hagnifinder holdout: MoNuSeg test tiles, CPM-15, MoNuSAC, CRCHisto
and the CMU slide region, never trained on) are downsampled to 5, 10, 20 and 40× and cut to
centred squares of each side below; ``predict_magnification`` (the product path) predicts each.
Per side: MAE (×), median absolute log2 error and the share within ±5×. The side below which the
product refuses an image, and the one below which it flags its answer, are read from this table.

Run: ``python benchmarks/bench_small_images.py [--model-dir DIR] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from _report import emit_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIDES = (24, 32, 48, 64, 96, 128, 160, 192, 224, 320, 448)
MAGS = (5.0, 10.0, 20.0, 40.0)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from PIL import Image

    from napari_histo.models.hagnifinder.config import DEFAULT_HOLDOUT
    from napari_histo.models.magnification import (
        default_model_dir,
        predict_with_model,
        read_model_folder,
    )
    from napari_histo.utils import HistoError
    from src_models.hagnifinder.data import discover_sources, split_sources

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    model, config = read_model_folder(args.model_dir or default_model_dir())
    _, held = split_sources(discover_sources(args.data_root), DEFAULT_HOLDOUT)
    rows: dict[int, list[tuple[float, float]]] = {side: [] for side in SIDES}
    refused: dict[int, int] = {side: 0 for side in SIDES}
    t0 = time.perf_counter()
    for src in held:
        rgb = src.rgb
        for mag in MAGS:
            if mag > src.magnification * 1.03:
                continue
            factor = src.magnification / mag
            h, w = rgb.shape[:2]
            small = np.asarray(Image.fromarray(rgb).resize((max(1, round(w / factor)), max(1, round(h / factor))),
                                                           Image.BOX))
            for side in SIDES:
                if min(small.shape[:2]) < side:
                    continue
                y0, x0 = (small.shape[0] - side) // 2, (small.shape[1] - side) // 2
                crop = np.ascontiguousarray(small[y0:y0 + side, x0:x0 + side])
                try:
                    pred = predict_with_model(model, config, crop).magnification
                except HistoError:
                    refused[side] += 1
                    continue
                rows[side].append((pred, min(mag, src.magnification)))
    table = {}
    for side, pairs in rows.items():
        if not pairs:
            continue
        pred, true = np.array(pairs).T
        table[side] = {"n": len(pairs), "refused": refused[side], "mae": float(np.mean(np.abs(pred - true))),
                       "median_abs_log2": float(np.median(np.abs(np.log2(pred / true)))),
                       "within_5x": float(np.mean(np.abs(pred - true) <= 5.0))}
        print(f"{side:4d} px  n={len(pairs):3d}  refused {refused[side]:2d}  MAE {table[side]['mae']:.2f}x  "
              f"median |log2| {table[side]['median_abs_log2']:.2f}  within ±5x {100 * table[side]['within_5x']:.0f} %")
    emit_json({"benchmark": "small_images", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
               "model": str(args.model_dir or default_model_dir()), "seconds": round(time.perf_counter() - t0, 1),
               "by_side": table}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
