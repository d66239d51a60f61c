"""Evaluate a Hagnifinder model on whole source images held out from training.

Two views:

- **patches**: 224² fields at 5, 10, ..., 40x from each held-out image (downsampled, never
  upsampled), each predicted alone; per nominal magnification: MAE and accuracy within ±0.5,
  ±1, ±5x;
- **images** (the way :func:`napari_histo.models.magnification.predict_magnification` is used): per
  held-out image and magnification, the mean over its crops.

Plus **whole images**: each held-out image box-downsampled as a whole to each magnification
and predicted by ``predict_magnification`` (8 crops; with the model's test-time scales and,
for comparison, with ``alt_scales`` and ``alt_crop_rule``), and **native**: each held-out image at its
own scan magnification through ``predict_magnification`` (e.g. the 20x CMU slide, the 20x/40x
CPM-15 tiles).

``python -m src_models.hagnifinder.evaluate --model-dir DIR [--out results.json]``
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from napari_histo.models.hagnifinder.calibration import aggregate_log, apply_calibration
from napari_histo.models.hagnifinder.images import to_tensor
from napari_histo.models.hagnifinder.model import predict_patches
from napari_histo.models.magnification import (
    AGGREGATE_TRIM,
    STANDARD_OBJECTIVES,
    predict_magnification,
    predict_with_model,
    read_model_folder,
    select_crops,
    softness_check,
    spanning_interval,
)
from napari_histo.utils import atomic_write
from src_models.hagnifinder.data import (
    blur_patch,
    discover_sources,
    fields_by_magnification,
    split_sources,
    validation_patches,
)
from src_models.hagnifinder.metrics import summarise
from src_models.hagnifinder.multiscale import image_at

# Lazy imports: PIL is imported inside the functions that use it (directly or through the modules
# named there): only the code paths that use them pay for loading.

EVAL_MAGS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)


def _summaries(records: list[dict], key: str, trim: float) -> tuple[dict, dict, list[dict]]:
    """(by-magnification patch summary, per-image summary, image rows) for prediction ``key``.

    Image level aggregates an image's crops at one magnification like ``predict_magnification``:
    a trimmed mean in log2 space (``trim`` = 0: the plain arithmetic mean of the crops).
    """
    by_mag: dict[float, list] = defaultdict(list)
    by_image: dict[tuple, list] = defaultdict(list)
    for rec in records:
        by_mag[rec["nominal"]].append(rec)
        by_image[(rec["source"], rec["nominal"])].append(rec)
    patches = {f"{m:g}": summarise([r[key] for r in rs], [r["mag"] for r in rs])
               for m, rs in sorted(by_mag.items())}
    patches["all"] = summarise([r[key] for r in records], [r["mag"] for r in records])
    image_rows = [{"source": s, "nominal": m, "mag": rs[0]["mag"],
                   "pred": (aggregate_log([r[key] for r in rs], trim) if trim > 0
                            else float(np.mean([r[key] for r in rs]))),
                   "real_fraction": float(np.mean([r["real_fraction"] for r in rs]))}
                  for (s, m), rs in by_image.items()]
    images: dict[str, dict] = {}
    for m in sorted({r["nominal"] for r in image_rows}):
        rs = [r for r in image_rows if r["nominal"] == m]
        images[f"{m:g}"] = summarise([r["pred"] for r in rs], [r["mag"] for r in rs])
    images["all"] = summarise([r["pred"] for r in image_rows], [r["mag"] for r in image_rows])
    return patches, images, image_rows


def evaluate(model_dir: str | Path, data_root: str | Path | None = None, crops_per_mag: int = 8,
             seed: int = 1, mags=EVAL_MAGS, alt_scales=(1.0,), alt_crop_rule: str = "most_tissue",
             blur_sigma: float = 0.0, jpeg_quality: int = 0) -> dict:
    """Patch-, image- and native-level metrics on the config's held-out images.

    ``pred`` is the shipped prediction (calibrated output, crops aggregated as in
    ``predict_magnification``); ``raw`` the uncalibrated network output with the plain mean of
    crops (the figures before calibration). ``blur_sigma`` > 0 blurs every image as it is given
    to the model (the field at its magnification, the whole downsampled image, the native
    scan) with a Gaussian of that many pixels: a soft scan, an out-of-focus field or a
    screenshot shown enlarged still has the magnification of its structures. ``jpeg_quality``
    > 0 then saves each such image as a JPEG of that quality and reads it back (a snapshot).
    """
    def degrade(rgb: np.ndarray) -> np.ndarray:
        out = blur_patch(rgb, blur_sigma) if blur_sigma > 0 else rgb
        return jpeg_roundtrip(out, jpeg_quality) if jpeg_quality > 0 else out

    model, config = read_model_folder(model_dir)
    root = data_root or config.data_root
    _, val_src = split_sources(discover_sources(root), config.holdout)
    records = validation_patches(val_src, mags, crops_per_mag, config.patch_size, seed=seed)
    patches_in = np.stack([degrade(r["patch"]) for r in records])
    raw = predict_patches(model, patches_in)
    calibrated = apply_calibration(config.calibration, raw)
    check = getattr(model, "softness", None)
    if check is not None:  # each field is an image of one crop: the same check as predict_magnification
        invariant = apply_calibration(check.config.calibration, predict_patches(check.model, patches_in))
        checked, fired = softness_check(calibrated, invariant, check.max_ratio)
        if check.action == "replace":
            calibrated = checked
        for rec, flag, inv in zip(records, fired, invariant):
            rec["soft"], rec["invariant"] = bool(flag), float(inv)
    for rec, r, p in zip(records, raw, calibrated):
        rec["raw"], rec["pred"] = float(r), float(p)
        del rec["patch"]
    patches, images, image_rows = _summaries(records, "pred", AGGREGATE_TRIM)
    patches_raw, images_raw, _ = _summaries(records, "raw", 0.0)
    unpadded = [r for r in records if r["real_fraction"] >= 0.999]
    whole = []
    for i, src, nominal, mag in fields_by_magnification(val_src, mags):
        img = degrade(image_at(src.rgb, src.magnification, mag))
        crop_seed = seed + 1000 * i + int(nominal)
        multi = predict_with_model(model, config, img, crops_per_mag, crop_seed)
        alt = predict_with_model(model, config, img, crops_per_mag, crop_seed, scales=alt_scales,
                                 crop_rule=alt_crop_rule)
        whole.append({"source": src.name, "nominal": float(nominal), "mag": mag,
                      "interval": list(multi.interval) if multi.interval else None,
                      "pred": multi.magnification, "alt": alt.magnification, "soft": bool(multi.note),
                      "shape": list(img.shape[:2])})
    whole_by_mag, whole_alt_by_mag = {}, {}
    for m in sorted({r["nominal"] for r in whole}):
        rs = [r for r in whole if r["nominal"] == m]
        whole_by_mag[f"{m:g}"] = summarise([r["pred"] for r in rs], [r["mag"] for r in rs])
        whole_alt_by_mag[f"{m:g}"] = summarise([r["alt"] for r in rs], [r["mag"] for r in rs])
    whole_by_mag["all"] = summarise([r["pred"] for r in whole], [r["mag"] for r in whole])
    whole_alt_by_mag["all"] = summarise([r["alt"] for r in whole], [r["mag"] for r in whole])
    native, native_preds = [], []
    for src in val_src:
        rgb = degrade(src.rgb)
        pred = predict_magnification(rgb, n_crops=8, seed=0, model_dir=model_dir)
        alt = predict_with_model(model, config, rgb, 8, 0, scales=alt_scales, crop_rule=alt_crop_rule)
        with torch.no_grad():
            # the raw figures before calibration, on the crops chosen then
            crops = np.stack(select_crops(rgb, 8, config.patch_size, 0, "most_tissue"))
            raw_mean = float(model(to_tensor(crops)).numpy().mean())
        native_preds.append(pred)
        native.append({"source": src.name, "true": src.magnification, "pred": pred.magnification,
                       "raw_mean": raw_mean, "alt_scales": alt.magnification,
                       "uncertainty": pred.uncertainty, "shape": list(src.rgb.shape[:2]),
                       "soft": bool(pred.note),
                       "in_range": config.mag_min <= src.magnification <= config.mag_max * 1.03})
    in_range = [r for r in native if r["in_range"]]
    for r, pred in zip(native, native_preds):
        r["interval"] = list(pred.interval) if pred.interval else None
        r["objectives"] = list(pred.consistent_objectives)
    return {
        "model_dir": str(model_dir), "held_out": [s.name for s in val_src],
        "calibration": (config.calibration or {}).get("method", "identity"),
        "test_time_scales": list(config.test_time_scales), "alt_scales": list(alt_scales),
        "alt_crop_rule": alt_crop_rule, "blur_sigma": blur_sigma, "jpeg_quality": jpeg_quality,
        "crops_per_mag": crops_per_mag, "patches": patches, "images": images,
        "whole_images": whole_by_mag, "whole_images_alt_scales": whole_alt_by_mag,
        "patches_raw": patches_raw, "images_raw": images_raw,
        "patches_unpadded": summarise([r["pred"] for r in unpadded], [r["mag"] for r in unpadded]),
        "softness_fired": {"action": getattr(getattr(model, "softness", None), "action", None),
                          "patches": sum(r.get("soft", False) for r in records),
                          "whole_images": sum(r["soft"] for r in whole),
                          "native": sum(r["soft"] for r in native)},
        "native": native,
        "interval_coverage": interval_coverage(config.interval, records, whole, in_range),
        "native_summary": summarise([r["pred"] for r in in_range], [r["true"] for r in in_range]),
        "native_summary_raw": summarise([r["raw_mean"] for r in in_range], [r["true"] for r in in_range]),
        "native_summary_alt_scales": summarise([r["alt_scales"] for r in in_range],
                                               [r["true"] for r in in_range]),
        "patch_records": records, "image_records": image_rows, "whole_image_records": whole,
    }


def interval_coverage(spec: dict | None, patch_records: list[dict], whole: list[dict],
                      native: list[dict]) -> dict | None:
    """How often the true magnification lies in the prediction interval (None: no interval).

    Patches: the interval of each field's calibrated prediction (spanning the blur-invariant
    estimate's too where the softness check fired, as ``predict_magnification``); whole images and native scans:
    the interval ``predict_magnification`` reported. Native scans also count how often the
    true objective is the only standard objective inside the interval.
    """
    if not spec:
        return None

    def field_interval(rec):  # as predict_magnification: a firing check spans both estimates
        return spanning_interval([rec["pred"]] + ([rec["invariant"]] if rec.get("soft") else []), spec)

    def inside(rows, interval, truth):
        flags = [lo <= r[truth] <= hi for r, (lo, hi) in zip(rows, map(interval, rows))]
        return {"coverage": float(np.mean(flags)) if flags else float("nan"), "n": len(flags)}

    out = {"level": spec["level"],
           "patches": inside(patch_records, field_interval, "mag"),
           "whole_images": inside(whole, lambda r: r["interval"], "mag"),
           "native": inside(native, lambda r: r["interval"], "true")}
    standard = [r for r in native if any(abs(r["true"] - m) / m < 0.05 for m in STANDARD_OBJECTIVES)]
    out["native_single_objective"] = {
        "n": len(standard),
        "true_objective_only": sum(len(r["objectives"]) == 1 and abs(r["objectives"][0] - r["true"]) / r["true"] < 0.05
                                   for r in standard)}
    return out


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` saved as a JPEG of ``quality`` (1-95, 4:2:0 chroma) and read back."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as im:
        return np.asarray(im.convert("RGB"))


def markdown_tables(results: dict) -> str:
    """Markdown tables (patch-level and image-level by magnification, native per image)."""
    lines = []
    cal = results.get("calibration", "identity")
    for key, title in (("patches", f"single 224² patch (calibration: {cal})"),
                       ("images", "per image (crops aggregated as in predict_magnification)")):
        raw = results.get(f"{key}_raw", {})
        lines += [f"**{title}**", "", "| magnification | n | MAE (x) | within ±0.5x | within ±1x | within ±5x "
                  "| before: MAE, ±5x |", "|---|---|---|---|---|---|---|"]
        for mag, s in results[key].items():
            label = "all (5-40x)" if mag == "all" else f"{mag}x"
            r = raw.get(mag)
            before = f"{r['mae']:.2f}, {100 * r['acc@5']:.1f} %" if r else "-"
            lines.append(f"| {label} | {s['n']} | {s['mae']:.2f} | {100 * s['acc@0.5']:.1f} % | "
                         f"{100 * s['acc@1']:.1f} % | {100 * s['acc@5']:.1f} % | {before} |")
        lines.append("")
    alt = (", ".join(f"{k:g}" for k in results.get("alt_scales", [1.0]))
           + f"; {results.get('alt_crop_rule', 'most_tissue')} crops")
    if "whole_images" in results:
        scales = ", ".join(f"{k:g}" for k in results.get("test_time_scales", [1.0]))
        lines += [f"**whole image downsampled to each magnification** (`predict_magnification`, "
                  f"{results['crops_per_mag']} crops, test-time scales {scales}; spread crops)", "",
                  "| magnification | n | MAE (x) | within ±0.5x | within ±1x | within ±5x "
                  f"| scales {alt}: MAE, ±5x |", "|---|---|---|---|---|---|---|"]
        for mag, s in results["whole_images"].items():
            label = "all (5-40x)" if mag == "all" else f"{mag}x"
            r = results["whole_images_alt_scales"][mag]
            lines.append(f"| {label} | {s['n']} | {s['mae']:.2f} | {100 * s['acc@0.5']:.1f} % | "
                         f"{100 * s['acc@1']:.1f} % | {100 * s['acc@5']:.1f} % | "
                         f"{r['mae']:.2f}, {100 * r['acc@5']:.1f} % |")
        lines.append("")
    lines += ["**native scan magnification** (`predict_magnification`, 8 crops)", "",
              "| held-out image | true (x) | predicted (x) | ± (crop s.d.) | |error| | "
              f"scales {alt} | before (raw mean) |", "|---|---|---|---|---|---|---|"]
    for r in results["native"]:
        note = "" if r["in_range"] else " (outside 5-40x)"
        lines.append(f"| {r['source']}{note} | {r['true']:.1f} | {r['pred']:.1f} | {r['uncertainty']:.1f} | "
                     f"{abs(r['pred'] - r['true']):.1f} | {r.get('alt_scales', float('nan')):.1f} | "
                     f"{r.get('raw_mean', float('nan')):.1f} |")
    s = results["native_summary"]
    lines += ["", f"Native, images within 5-40x: n = {s['n']}, MAE {s['mae']:.2f}x, within ±5x "
                  f"{100 * s['acc@5']:.0f} %, within ±1x {100 * s['acc@1']:.0f} %."]
    if "native_summary_alt_scales" in results:
        b = results["native_summary_alt_scales"]
        lines[-1] += (f" Scales {alt}: MAE {b['mae']:.2f}x, within ±5x {100 * b['acc@5']:.0f} %, "
                      f"within ±1x {100 * b['acc@1']:.0f} %.")
    if "native_summary_raw" in results:
        b = results["native_summary_raw"]
        lines[-1] += (f" Before (raw mean of crops): MAE {b['mae']:.2f}x, within ±5x {100 * b['acc@5']:.0f} %, "
                      f"within ±1x {100 * b['acc@1']:.0f} %.")
    cover = results.get("interval_coverage")
    if cover:
        single = cover["native_single_objective"]
        lines += ["", f"Prediction interval ({100 * cover['level']:.0f} % nominal): true magnification inside for "
                      f"{100 * cover['patches']['coverage']:.1f} % of patches (n = {cover['patches']['n']}), "
                      f"{100 * cover['whole_images']['coverage']:.1f} % of whole images (n = {cover['whole_images']['n']}), "
                      f"{100 * cover['native']['coverage']:.1f} % of native scans (n = {cover['native']['n']}); "
                      f"the true objective is the only standard objective inside for {single['true_objective_only']} "
                      f"of {single['n']} native scans at a standard objective."]
    if (results.get("softness_fired") or {}).get("action"):
        c = results["softness_fired"]
        lines += ["", f"Softness check fired ({c['action']}): {c['patches']} patches, "
                      f"{c['whole_images']} whole images, {c['native']} native scans."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a Hagnifinder model on held-out images.")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--crops", type=int, default=8, help="crops per image and magnification")
    parser.add_argument("--out", help="write the full results JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = evaluate(args.model_dir, args.data_root, args.crops)
    if args.out:
        with atomic_write(args.out) as fh:
            json.dump(results, fh, indent=1)
    print(markdown_tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
