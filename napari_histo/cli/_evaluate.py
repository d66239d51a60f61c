"""``napari-histo evaluate``: segment an annotated dataset and score it (Dice, AJI, PQ...)."""

from __future__ import annotations

import argparse
import json
import sys
import time

# Lazy imports: pandas, scipy are imported inside the functions that use them (directly or through
# the modules named there): napari-histo --help and napari's plugin discovery import this module.

METRICS = ("dice", "aji", "aji_plus", "dq", "sq", "pq")


#: ``napari_histo.datasets.MONUSEG_MASKS``, written out so ``--help`` loads no numpy (a test keeps them equal).
MONUSEG_MASKS = ("project", "official")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="score a nucleus model on MoNuSeg / CPM-15 / MoNuSAC ground truth",
        description=(
            "Segment every annotated image of DATASET_DIR at its own resolution and print Dice, "
            "AJI, AJI+, DQ, SQ and PQ per image and their mean (HoVer-Net compute_stats), plus "
            "the 12 px centroid detection F1."
        ),
    )
    p.add_argument("dataset_dir", help="dataset folder (e.g. ../shared/data/monuseg)")
    p.add_argument("--model", default="default", help="classical | default | weights folder | HoVer-Net checkpoint")
    p.add_argument("--dataset", choices=["monuseg", "cpm15", "monusac", "annotated"], default=None,
                   help="dataset layout (default: detected from the files); 'annotated': your images with "
                        "same-stem annotation files (tile.png + tile.geojson / .xml / .session.xml / .json)")
    p.add_argument("--mpp", type=float, default=None, help="µm/px of annotated images that do not state it")
    p.add_argument("--monuseg-masks", choices=MONUSEG_MASKS, default="project",
                   help="MoNuSeg ground truth: this package's rasterisation (default) or the challenge "
                        "script's (MATLAB poly2mask: half a pixel up and left, the earlier of two "
                        "overlapping nuclei owns the overlap)")
    p.add_argument("--device", default=None, help="torch device (default: cuda > mps > cpu)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--json", dest="json_out", default=None, help="write per-image and mean scores to this JSON file")
    p.set_defaults(func=handler)
    return p


def handler(args) -> int:
    import numpy as np

    from napari_histo.datasets import iter_dataset
    from napari_histo.models import get_segmenter
    from napari_histo.models.segment import segment_image
    from napari_histo.nuclei.metrics import instance_scores, pair_centroids
    from napari_histo.utils import HistoError, atomic_write

    seg = get_segmenter(args.model, device=args.device)
    rows = []
    header = f"{'image':<28} {'mpp':>6} {'n_gt':>5} {'n_pred':>6} " + " ".join(f"{m:>8}" for m in METRICS) + f" {'f1_d':>6} {'sec':>6}"
    print(f"model: {getattr(seg, 'name', args.model)} ({seg.mpp:g} µm/px)")
    print(header)
    samples = iter_dataset(args.dataset_dir, args.dataset, monuseg_masks=args.monuseg_masks, mpp=args.mpp)
    for k, sample in enumerate(samples):
        if args.limit is not None and k >= args.limit:
            break
        t0 = time.perf_counter()
        labels, table = segment_image(sample.image, sample.mpp, model=seg)
        seconds = time.perf_counter() - t0
        scores = instance_scores(sample.inst, labels)
        gt_ids = np.unique(sample.inst)
        gt_ids = gt_ids[gt_ids > 0]
        gt_xy = _centroids(sample.inst, gt_ids)
        pairs, un_t, un_p = pair_centroids(gt_xy, table[["x", "y"]].to_numpy(), radius=12.0 * 0.25 / sample.mpp)
        denom = 2 * len(pairs) + len(un_t) + len(un_p)
        f1_d = 2 * len(pairs) / denom if denom else 1.0
        row = {"image": sample.name, "mpp": sample.mpp, "n_gt": int(len(gt_ids)), "n_pred": int(len(table)),
               **scores, "f1_d": f1_d, "seconds": seconds}
        rows.append(row)
        print(f"{sample.name[:28]:<28} {sample.mpp:>6.4f} {row['n_gt']:>5} {row['n_pred']:>6} "
              + " ".join(f"{scores[m]:>8.4f}" for m in METRICS) + f" {f1_d:>6.3f} {seconds:>6.1f}", flush=True)
    if not rows:
        raise HistoError(f"{args.dataset_dir}: no annotated image evaluated")
    mean = {m: float(np.mean([r[m] for r in rows])) for m in (*METRICS, "f1_d")}
    print(f"{'mean (' + str(len(rows)) + ' images)':<28} {'':>6} {sum(r['n_gt'] for r in rows):>5} "
          f"{sum(r['n_pred'] for r in rows):>6} " + " ".join(f"{mean[m]:>8.4f}" for m in METRICS)
          + f" {mean['f1_d']:>6.3f}")
    if args.json_out:
        record = {"dataset_dir": str(args.dataset_dir), "model": str(args.model),
                  "model_name": getattr(seg, "name", str(args.model)), "working_mpp": seg.mpp,
                  "monuseg_masks": args.monuseg_masks, "argv": sys.argv, "images": rows, "mean": mean}
        with atomic_write(args.json_out) as fh:
            json.dump(record, fh, indent=2)
    return 0


def _centroids(inst, ids):
    import numpy as np
    from scipy import ndimage as ndi

    if len(ids) == 0:
        return np.zeros((0, 2))
    cm = np.array(ndi.center_of_mass(np.ones_like(inst), inst, ids)).reshape(-1, 2)
    return cm[:, ::-1]  # (x, y)
