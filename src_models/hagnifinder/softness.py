"""Choose the softness check's ratio on training sources only.

A model that reads sharpness as magnification sees a blurred field as a high magnification; a
blur-invariant companion does not. On training fields (sharp and blurred), this prints how far
the two calibrated estimates disagree and what each ratio ``R`` of
:func:`napari_histo.models.magnification.softness_check` would do::

    python -m src_models.hagnifinder.softness --model-dir resources/weights/hagnifinder \\
        --companion runs/hagnifinder_blur [--sigmas 0,0.5,1] [--crops 4] [--out ratios.json]

The held-out list of the model's config is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_histo.models.hagnifinder.calibration import apply_calibration
from napari_histo.models.magnification import read_model_folder, softness_check
from napari_histo.utils import atomic_write
from src_models.hagnifinder.data import (
    blur_patch,
    discover_sources,
    split_sources,
    validation_patches,
)

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.

RATIOS = (1.2, 1.3, 1.4, 1.5, 1.6, 1.75, 2.0)


def training_disagreement(model_dir: str | Path, companion_dir: str | Path, sigmas=(0.0, 0.5, 1.0),
                          crops_per_mag: int = 4, seed: int = 123, data_root: str | Path | None = None
                          ) -> list[dict]:
    """Both models' calibrated estimates on training fields, each field sharp and blurred."""
    from napari_histo.models.hagnifinder.model import predict_patches

    main_model, main_config = read_model_folder(model_dir)
    companion, companion_config = read_model_folder(companion_dir)
    train_src, _ = split_sources(discover_sources(data_root or main_config.data_root), main_config.holdout)
    fields = validation_patches(train_src, (5, 10, 15, 20, 25, 30, 35, 40), crops_per_mag,
                                main_config.patch_size, seed=seed)
    records = []
    for sigma in sigmas:
        patches = np.stack([blur_patch(f["patch"], sigma) if sigma > 0 else f["patch"] for f in fields])
        main = apply_calibration(main_config.calibration, predict_patches(main_model, patches))
        other = apply_calibration(companion_config.calibration, predict_patches(companion, patches))
        records += [{"source": f["source"], "mag": f["mag"], "sigma": float(sigma), "main": float(a),
                     "companion": float(b)} for f, a, b in zip(fields, main, other)]
    return records


def summarise_ratios(records: list[dict], ratios=RATIOS) -> dict:
    """Per blur: MAE of each model, percentiles of main / companion, and MAE and share replaced per R."""
    out = {}
    for sigma in sorted({r["sigma"] for r in records}):
        rs = [r for r in records if r["sigma"] == sigma]
        main = np.array([r["main"] for r in rs])
        other = np.array([r["companion"] for r in rs])
        true = np.array([r["mag"] for r in rs])
        by_ratio = {}
        for ratio in ratios:
            values, replaced = softness_check(main, other, ratio)
            by_ratio[f"{ratio:g}"] = {"mae": float(np.abs(values - true).mean()),
                                      "replaced": float(replaced.mean())}
        out[f"{sigma:g}"] = {
            "n": len(rs), "mae_main": float(np.abs(main - true).mean()),
            "mae_companion": float(np.abs(other - true).mean()),
            "ratio_percentiles": dict(zip(("50", "90", "99", "99.9", "max"),
                                          [float(v) for v in np.percentile(main / other, [50, 90, 99, 99.9, 100])])),
            "by_ratio": by_ratio,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--companion", required=True, help="blur-invariant model folder")
    parser.add_argument("--sigmas", default="0,0.5,1", help="blurs applied to the fields (px, comma-separated)")
    parser.add_argument("--crops", type=int, default=4, help="fields per image and magnification")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    records = training_disagreement(args.model_dir, args.companion,
                                    tuple(float(s) for s in args.sigmas.split(",")), args.crops,
                                    data_root=args.data_root)
    summary = summarise_ratios(records)
    for sigma, s in summary.items():
        pct = " / ".join(f"{v:.2f}" for v in s["ratio_percentiles"].values())
        print(f"blur {sigma} px: {s['n']} fields, MAE main {s['mae_main']:.3f}x, companion "
              f"{s['mae_companion']:.3f}x; main / companion 50/90/99/99.9 %/max {pct}")
        for ratio, r in s["by_ratio"].items():
            print(f"    R {ratio}: MAE {r['mae']:.3f}x, replaced {100 * r['replaced']:.1f} %")
    if args.out:
        with atomic_write(args.out) as fh:
            json.dump({"summary": summary, "records": records}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
