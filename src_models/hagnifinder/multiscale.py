"""Test-time choices for Hagnifinder (scales, crop selection), made on training sources only.

An image at magnification ``m`` downsampled by a known factor ``k`` is at ``m / k``; so each
crop gives several estimates of ``m``: ``k * f(crop downsampled by k)``. Combining them (mean
of ``log2 f + log2 k``) averages out errors that depend on the scale the model sees. Which
factors to use (and down to which magnification) is chosen here by cross-validation grouped
by **training** source image, the way :mod:`src_models.hagnifinder.calibration` chooses the
calibration: in each fold the isotonic calibration is refitted on the other sources' crops.

Protocol (the way :func:`napari_histo.models.magnification.predict_magnification` is used): every
training source is downsampled as a whole to each nominal magnification 5, 10, ..., 40x at or
below its own (box filter, never upsampled); the image is predicted from 8 tissue-rich crops.

The crop selection rule (:func:`napari_histo.models.magnification.select_crop_boxes`) is compared
the same way (:func:`crop_rule_records`, :func:`cross_validate_rules`, ``--crop-rules``).

``python -m src_models.hagnifinder.multiscale --model-dir DIR [--out F]``
``python -m src_models.hagnifinder.multiscale --model-dir DIR --crop-rules --seed S``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_histo.models.hagnifinder.calibration import aggregate_log, apply_calibration
from napari_histo.models.hagnifinder.config import HagnifinderConfig
from napari_histo.models.hagnifinder.images import to_tensor
from napari_histo.models.magnification import (
    CROP_RULES,
    combine_scales,
    read_model_folder,
    scaled_crop,
    select_crop_boxes,
    select_crops,
    usable_scales,
)
from napari_histo.utils import atomic_write
from src_models.hagnifinder.calibration import fit_calibration, training_predictions
from src_models.hagnifinder.data import discover_sources, fields_by_magnification, split_sources
from src_models.hagnifinder.metrics import grouped_folds, summarise

# Lazy imports: PIL, torch are imported inside the functions that use them (directly or through
# the modules named there): only the code paths that use them pay for loading.

#: Downsampling factors collected for the comparison (a superset of any candidate).
ALL_SCALES = (1.0, 1.2, 1.25, 1.35, 1.5, 2.0, 2.5, 3.0, 4.0)
NOMINAL_MAGS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)


def image_at(rgb: np.ndarray, source_mag: float, mag: float) -> np.ndarray:
    """The whole image ``rgb`` (at ``source_mag``) box-downsampled to ``mag`` (never upsampled)."""
    from PIL import Image

    factor = float(source_mag) / float(mag)
    if factor < 1.0 + 1e-6:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, int(round(w / factor))), max(1, int(round(h / factor))))
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.BOX))


def raw_multiscale(model, rgb: np.ndarray, n_crops: int = 8, seed: int = 0,
                   scales: Sequence[float] = ALL_SCALES, size: int = 224,
                   crop_rule: str = "spread") -> dict[float, np.ndarray]:
    """Raw network outputs of the same tissue-rich crops downsampled by each factor that fits.

    Returns ``{k: (n,) raw outputs}``; factor 1 is always present (one padded crop when the
    image is smaller than ``size``), ``k > 1`` only when its field fits in the image.
    """
    import torch

    h, w = rgb.shape[:2]
    if min(h, w) < size:
        crops = {1.0: select_crops(rgb, n_crops, size, seed, crop_rule)}
    else:
        centres = [(y + size / 2, x + size / 2)
                   for y, x in select_crop_boxes(rgb, n_crops, size, seed, crop_rule)]
        crops = {float(k): [scaled_crop(rgb, c, size, k) for c in centres]
                 for k in scales if int(round(size * k)) <= min(h, w)}
    keys = list(crops)
    stack = np.stack([c for k in keys for c in crops[k]])
    with torch.no_grad():
        out = np.concatenate([model(to_tensor(stack[i:i + 64])).numpy() for i in range(0, len(stack), 64)])
    result, start = {}, 0
    for k in keys:
        result[k] = out[start:start + len(crops[k])].astype(float)
        start += len(crops[k])
    return result


def collect(model, sources, mags: Sequence[float] = NOMINAL_MAGS, n_crops: int = 8, seed: int = 123,
            scales: Sequence[float] = ALL_SCALES, size: int = 224, crop_rule: str = "spread") -> list[dict]:
    """Raw multi-scale outputs for every source at every nominal magnification at or below its own.

    Each record: source, dataset, nominal, mag (true), shape (of the downsampled image), raw
    (``{str(k): list}``).
    """
    records = []
    for i, src, nominal, mag in fields_by_magnification(sources, mags):
        img = image_at(src.rgb, src.magnification, mag)
        raw = raw_multiscale(model, img, n_crops, seed + 1000 * i + int(nominal), scales, size, crop_rule)
        records.append({"source": src.name, "dataset": src.dataset, "nominal": float(nominal),
                        "mag": mag, "shape": list(img.shape[:2]),
                        "raw": {f"{k:g}": v.tolist() for k, v in raw.items()}})
    return records


def predict_record(record: dict, calibration: dict, scales: Sequence[float], min_mag: float,
                   trim: float = 0.125, size: int = 224) -> tuple[float, np.ndarray]:
    """(image estimate, per-crop estimates) for one collected record, as predict would do it."""
    raw = {float(k): np.asarray(v, float) for k, v in record["raw"].items()}
    first = apply_calibration(calibration, raw[1.0])
    first_estimate = aggregate_log(first, trim)
    ks = [k for k in usable_scales(first_estimate, record["shape"], scales, size, min_mag) if k in raw]
    per_crop = combine_scales({k: apply_calibration(calibration, raw[k]) for k in ks})
    return aggregate_log(per_crop, trim), per_crop


def cross_validate(records: list[dict], candidates: dict[str, dict], fields: list[dict] | None = None,
                   n_folds: int = 5, seed: int = 0) -> dict[str, dict]:
    """Source-grouped CV of each candidate ``{"scales": [...], "min_mag": x}``.

    In each fold the isotonic calibration is refitted on the other folds' sources: on
    ``fields`` (records with source, mag, raw, from
    :func:`src_models.hagnifinder.calibration.training_predictions`, the data the shipped
    calibration is fitted on) when given, else on the factor-1 crops of ``records``. Returns per
    candidate: image-level and per-crop summaries (all, and by nominal magnification) and the
    per-record predictions.
    """
    fold_of = grouped_folds([r["source"] for r in records], n_folds, seed)
    calibrations = {}
    for f in range(n_folds):
        if fields is not None:
            fit = [r for r in fields if fold_of.get(r["source"], -1) != f]
            raw, true = [r["raw"] for r in fit], [r["mag"] for r in fit]
        else:
            fit = [r for r in records if fold_of[r["source"]] != f]
            raw = np.concatenate([r["raw"]["1"] for r in fit])
            true = np.concatenate([[r["mag"]] * len(r["raw"]["1"]) for r in fit])
        calibrations[f] = fit_calibration(raw, true, "isotonic")
    results = {}
    for name, cand in candidates.items():
        img_pred, img_true, crop_pred, crop_true, nominal = [], [], [], [], []
        for r in records:
            est, per_crop = predict_record(r, calibrations[fold_of[r["source"]]], cand["scales"],
                                           cand["min_mag"])
            img_pred.append(est)
            img_true.append(r["mag"])
            nominal.append(r["nominal"])
            crop_pred.extend(per_crop.tolist())
            crop_true.extend([r["mag"]] * len(per_crop))
        img_pred, img_true, nominal = map(np.asarray, (img_pred, img_true, nominal))
        by_mag = {f"{m:g}": summarise(img_pred[nominal == m], img_true[nominal == m])
                  for m in sorted(set(nominal.tolist()))}
        results[name] = {"candidate": cand, "images": summarise(img_pred, img_true),
                         "crops": summarise(crop_pred, crop_true), "images_by_mag": by_mag,
                         "predictions": img_pred.tolist()}
    return results


def default_candidates() -> dict[str, dict]:
    """Factor sets compared (``"1"``: single scale, the method before), lowest magnification 5x."""
    sets = ([1.0], [1.0, 1.2], [1.0, 1.25], [1.0, 1.35], [1.0, 1.5], [1.0, 2.0], [1.0, 1.25, 1.5],
            [1.0, 1.25, 1.5, 2.0], [1.0, 1.5, 2.0, 3.0], [1.0, 2.0, 4.0], list(ALL_SCALES))
    return {"-".join(f"{k:g}" for k in ks): {"scales": ks, "min_mag": 5.0} for ks in sets}


def choose(results: dict[str, dict]) -> str:
    """Candidate with the lowest image-level CV MAE (ties: fewer factors)."""
    return min(results, key=lambda n: (round(results[n]["images"]["mae"], 6), len(results[n]["candidate"]["scales"])))


def crop_rule_records(model, sources, rules: Sequence[str], mags: Sequence[float] = NOMINAL_MAGS,
                      n_crops: int = 8, seed: int = 123, size: int = 224) -> list[dict]:
    """Raw outputs of the crops each selection rule picks, per source and nominal magnification.

    Same images as :func:`collect` (each source downsampled as a whole); images smaller than
    ``size`` (one padded crop, no choice to make) are skipped. Each record: source, nominal,
    mag, raw (``{rule: list}``).
    """
    import torch

    records = []
    for i, src, nominal, mag in fields_by_magnification(sources, mags):
        img = image_at(src.rgb, src.magnification, mag)
        if min(img.shape[:2]) < size:
            continue
        boxes = {r: select_crop_boxes(img, n_crops, size, seed + 1000 * i + int(nominal), r) for r in rules}
        union = sorted({b for bs in boxes.values() for b in bs})
        with torch.no_grad():
            out = model(to_tensor(np.stack([img[y:y + size, x:x + size] for y, x in union]))).numpy()
        raw_of = dict(zip(union, out.astype(float).tolist()))
        records.append({"source": src.name, "nominal": float(nominal), "mag": mag,
                        "raw": {r: [raw_of[b] for b in bs] for r, bs in boxes.items()}})
    return records


def cross_validate_rules(records: list[dict], fields: list[dict], n_folds: int = 5, seed: int = 0
                         ) -> dict[str, dict]:
    """Source-grouped CV of each crop rule: image-level summary and per-record absolute errors.

    The calibration of each fold is fitted on ``fields`` of the other folds' sources (as the
    shipped one); the image estimate is the trimmed log mean of the calibrated crops.
    """
    fold_of = grouped_folds([r["source"] for r in fields], n_folds, seed)
    cals = {f: fit_calibration([r["raw"] for r in fields if fold_of[r["source"]] != f],
                               [r["mag"] for r in fields if fold_of[r["source"]] != f], "isotonic")
            for f in range(n_folds)}
    out = {}
    for rule in records[0]["raw"]:
        pred = [aggregate_log(apply_calibration(cals[fold_of[r["source"]]], r["raw"][rule])) for r in records]
        true = [r["mag"] for r in records]
        out[rule] = {"images": summarise(pred, true),
                     "abs_errors": np.abs(np.asarray(pred) - np.asarray(true)).tolist()}
    return out


def source_bootstrap(diff: Sequence[float], groups: Sequence[str], n: int = 2000, seed: int = 0
                     ) -> tuple[float, float]:
    """95 % interval of the mean of ``diff`` when whole sources are resampled with replacement."""
    diff, groups = np.asarray(diff, float), np.asarray(groups)
    names = np.unique(groups)
    per = {g: diff[groups == g] for g in names}
    rng = np.random.default_rng(seed)
    means = [np.concatenate([per[g] for g in rng.choice(names, names.size)]).mean() for _ in range(n)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> int:
    """``python -m src_models.hagnifinder.multiscale --model-dir DIR [--records F] [--out F]``."""
    parser = argparse.ArgumentParser(description="Choose test-time scales by source-grouped CV on training sources.")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--records", help="collected outputs (JSON): read if present, else written")
    parser.add_argument("--out", help="write the CV results (JSON) here")
    parser.add_argument("--write", action="store_true",
                        help="store the chosen factors as test_time_scales in DIR/config.json")
    parser.add_argument("--crop-rule", default="spread",
                        help="crop selection for the scale comparison (the recorded run used most_tissue)")
    parser.add_argument("--crop-rules", action="store_true",
                        help="compare the crop selection rules instead of the scales")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)

    model, config = read_model_folder(args.model_dir)
    if args.crop_rules:
        return _main_crop_rules(args, model, config)
    if args.records and Path(args.records).exists():
        records = json.loads(Path(args.records).read_text())["records"]
    else:
        train, _held = split_sources(discover_sources(args.data_root or config.data_root), config.holdout)
        if {s.name for s in train} & set(config.holdout):
            raise RuntimeError("a held-out source reached the training list")
        records = collect(model, train, n_crops=args.crops, seed=args.seed, size=config.patch_size,
                          crop_rule=args.crop_rule)
        if args.records:
            Path(args.records).parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(args.records) as fh:
                json.dump({"records": records}, fh)
    # the calibration of each fold is fitted like the shipped one (calibration.py defaults)
    fields = training_predictions(args.model_dir, args.data_root)
    if {r["source"] for r in records + fields} & set(config.holdout):
        raise RuntimeError("a held-out source reached the cross-validation data")
    results = cross_validate(records, default_candidates(), fields)
    print(f"{len(records)} images (source x magnification) from {len({r['source'] for r in records})} "
          f"training sources; source-grouped 5-fold CV, calibration refitted per fold on {len(fields)} fields")
    print("| candidate | image MAE | image ±5x | crop MAE | crop ±5x |")
    for name, res in sorted(results.items(), key=lambda kv: kv[1]["images"]["mae"]):
        i, c = res["images"], res["crops"]
        print(f"| {name} | {i['mae']:.3f} | {100 * i['acc@5']:.1f} % | {c['mae']:.3f} | {100 * c['acc@5']:.1f} % |")
    best = choose(results)
    print(f"chosen: {best}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.out) as fh:
            json.dump({"chosen": best, "results": results}, fh, indent=1)
    if args.write:
        cfg_path = Path(args.model_dir) / "config.json"
        config = HagnifinderConfig.load(cfg_path)
        config.test_time_scales = tuple(results[best]["candidate"]["scales"])
        config.min_scaled_mag = float(results[best]["candidate"]["min_mag"])
        config.save(cfg_path)
        print(f"test_time_scales {list(config.test_time_scales)} written to {cfg_path}")
    return 0


def _main_crop_rules(args, model, config) -> int:
    train, _held = split_sources(discover_sources(args.data_root or config.data_root), config.holdout)
    if {s.name for s in train} & set(config.holdout):
        raise RuntimeError("a held-out source reached the training list")
    records = crop_rule_records(model, train, CROP_RULES, n_crops=args.crops, seed=args.seed,
                                size=config.patch_size)
    fields = training_predictions(args.model_dir, args.data_root)
    results = cross_validate_rules(records, fields)
    groups = [r["source"] for r in records]
    print(f"{len(records)} images from {len(set(groups))} training sources, crop seed {args.seed}; "
          "source-grouped 5-fold CV")
    base = np.asarray(results["most_tissue"]["abs_errors"])
    for rule, res in results.items():
        s = res["images"]
        diff = np.asarray(res["abs_errors"]) - base
        lo, hi = source_bootstrap(diff, groups)
        print(f"| {rule} | MAE {s['mae']:.3f} | ±5x {100 * s['acc@5']:.1f} % | ±1x {100 * s['acc@1']:.1f} % "
              f"| vs most_tissue {diff.mean():+.3f} (95 % source bootstrap {lo:+.3f} to {hi:+.3f}) |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.out) as fh:
            json.dump({"seed": args.seed, "results": results, "records": records}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
