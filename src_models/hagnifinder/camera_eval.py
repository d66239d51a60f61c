"""Magnification on microscope-camera images: does the prediction follow the stated magnification?

For BreakHis images (stated 40X / 100X / 200X / 400X, no pixel size) the product's prediction
(:func:`napari_histo.models.magnification.predict_with_model`, 8 crops, the model's test-time
settings) is regressed in log2 on the stated magnification: a model that reads scale has slope 1
(whatever the constant offset between "total microscope magnification" and the scanner-equivalent
magnification the model reports); a model blind to scale has slope 0. Residual RMS is the scatter
about the fitted line (log2 units: 0.5 = a factor 1.41).

``python -m src_models.hagnifinder.camera_eval --model-dir DIR [--images breakhis:NAME ...] [--out F.json]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_histo.models.magnification import predict_with_model, read_model_folder
from src_models.hagnifinder.data import breakhis_sources

#: BreakHis images held out of camera training, by patient (slide id 14-25197: 40X, 100X, 200X and
#: 400X; 14-12204: 40X and 100X; 14-17614: 400X), chosen before any training.
VALIDATION_IMAGES = (
    "breakhis:SOB_B_F-14-25197-40-023", "breakhis:SOB_B_F-14-25197-100-001",
    "breakhis:SOB_B_F-14-25197-200-032", "breakhis:SOB_B_F-14-25197-400-033",
    "breakhis:SOB_M_LC-14-12204-40-001", "breakhis:SOB_M_LC-14-12204-100-031",
    "breakhis:SOB_M_LC-14-12204-100-032", "breakhis:SOB_M_DC-14-17614-400-014",
)


def stated_magnification(name: str) -> float:
    """The stated total magnification of a BreakHis file name (``...-<mag>-<seq>``)."""
    return float(name.rsplit("-", 2)[-2])


def slope_fit(predicted, stated) -> dict:
    """Least-squares line of log2(predicted) on log2(stated): slope, intercept, residual RMS."""
    x = np.log2(np.asarray(stated, float))
    y = np.log2(np.asarray(predicted, float))
    if len(set(x.tolist())) < 2:
        raise ValueError("need images of at least two stated magnifications")
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return {"n": int(len(x)), "slope": float(slope), "intercept": float(intercept),
            "residual_rms": float(np.sqrt(np.mean(residual ** 2)))}


def camera_scores(model_dir: str | Path, data_root: str | Path, names=VALIDATION_IMAGES) -> dict:
    """Per-image predictions and the slope fit on the named BreakHis images."""
    model, config = read_model_folder(model_dir)
    chosen = [s for s in breakhis_sources(data_root) if s.name in set(names)]
    if not chosen:
        raise FileNotFoundError(f"{Path(data_root) / 'breakhis'}: none of the images found")
    rows = []
    for src in chosen:
        prediction = predict_with_model(model, config, src.rgb)
        rows.append({"image": src.name, "stated": stated_magnification(src.name),
                     "predicted": float(prediction.magnification)})
    fit = slope_fit([r["predicted"] for r in rows], [r["stated"] for r in rows])
    return {"model": str(model_dir), "images": rows, "fit": fit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--images", nargs="*", default=None, help="BreakHis source names (default: validation)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = camera_scores(args.model_dir, args.data_root, tuple(args.images) if args.images else VALIDATION_IMAGES)
    for row in result["images"]:
        print(f"{row['image']:42s} stated {row['stated']:5.0f}X  predicted {row['predicted']:7.1f}x")
    fit = result["fit"]
    print(f"slope {fit['slope']:.2f}, intercept {fit['intercept']:.2f}, residual RMS {fit['residual_rms']:.2f} "
          f"(log2; n={fit['n']})")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
