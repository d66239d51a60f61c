"""``napari-histo magnification IMAGE... [--json]``: predicted objective magnification per input.

Plain images (PNG, JPEG, BMP, TIFF) are read whole; slides are read as a level-0 region of
tissue. When a slide stores its magnification (objective power or mpp) it is printed alongside
the prediction: the metadata is authoritative and is never overridden.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Lazy imports: PIL, openslide, tifffile are imported inside the functions that use them (directly
# or through the modules named there): napari-histo --help and napari's plugin discovery import
# this module.

SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
#: Side of the level-0 region read from a slide (px).


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "magnification",
        help="predict the objective magnification of images or slides (Hagnifinder)",
        description="Predict the objective magnification (x) of H&E images or slides from their "
                    "pixels. Slide metadata, when present, is printed alongside and never overridden.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image or slide files")
    parser.add_argument("--json", action="store_true", help="print a JSON list of results")
    parser.add_argument("--n-crops", type=int, default=8, help="224 px crops averaged (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop positions")
    parser.add_argument("--model", default=None, help="model folder (default: shipped model)")
    parser.set_defaults(func=handler)
    return parser


def _metadata(slide) -> tuple[float | None, float | None]:
    power = getattr(slide, "objective_power", None)
    mpp = getattr(slide, "mpp", None)
    mpp_x = float(mpp[0]) if mpp else None
    mag = float(power) if power else (10.0 / mpp_x if mpp_x else None)
    return mag, mpp_x


def read_input(path: Path):
    """(rgb, metadata magnification, metadata mpp, region) for one image or slide."""
    import numpy as np

    from napari_histo.utils import InputFileError, check_input_file

    check_input_file(path, "image file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES | SLIDE_SUFFIXES:
        raise InputFileError(path, f"unsupported file type {suffix!r}")
    if suffix in IMAGE_SUFFIXES - {".tif", ".tiff"}:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB")), None, None, None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise InputFileError(path, f"cannot read image ({exc})") from None
    if suffix in (".tif", ".tiff") and _is_plain_tiff(path):
        from napari_histo.models.hagnifinder.images import read_rgb

        try:
            return read_rgb(path), None, None, None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is an input error
            raise InputFileError(path, f"cannot read TIFF ({exc})") from exc
    try:
        return _read_slide(path)
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes a clear input error
        raise InputFileError(path, f"cannot read slide ({exc})") from exc


def _is_plain_tiff(path: Path) -> bool:
    """A small single-resolution TIFF (read whole) rather than a pyramidal slide."""
    import tifffile

    from napari_histo.models.magnification import SLIDE_REGION_PX

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape = series.shape
            return len(series.levels) == 1 and shape[0] * shape[1] <= (2 * SLIDE_REGION_PX) ** 2
    except Exception:  # noqa: BLE001 - unreadable by tifffile: let the slide reader try
        return False


def _read_slide(path: Path):
    """The window every front end predicts a slide's magnification from
    (:func:`~napari_histo.models.magnification.slide_prediction_region`)."""
    from napari_histo.models.magnification import slide_prediction_region
    from napari_histo.slide import open_slide

    with open_slide(path) as slide:
        meta_mag, meta_mpp = _metadata(slide)
        rgb, region = slide_prediction_region(slide)
    return rgb, meta_mag, meta_mpp, region


def handler(args: argparse.Namespace) -> int:
    from napari_histo.models.magnification import interval_text, predict_magnification
    from napari_histo.utils import HistoError, InputFileError

    results, failed = [], 0
    for name in args.images:
        path = Path(name)
        try:  # one unreadable or empty image does not stop the others
            rgb, meta_mag, meta_mpp, region = read_input(path)
            pred = predict_magnification(rgb, n_crops=args.n_crops, seed=args.seed, model_dir=args.model)
        except HistoError as exc:
            failed += 1
            message = str(exc) if isinstance(exc, InputFileError) else f"{path}: {exc}"
            print(f"error: {message}", file=sys.stderr)
            results.append({"path": str(path), "magnification": None, "error": message})
            continue
        record = {
            "path": str(path),
            "magnification": round(pred.magnification, 3),
            "mpp": round(pred.mpp, 5),
            "uncertainty": round(pred.uncertainty, 3),
            "interval": [round(v, 3) for v in pred.interval] if pred.interval else None,
            "interval_level": pred.interval_level,
            "consistent_objectives": list(pred.consistent_objectives),
            "per_crop": [round(v, 3) for v in pred.per_crop],
            "note": pred.note,
            "blur_invariant_magnification": (None if pred.blur_invariant is None
                                             else round(pred.blur_invariant, 3)),
            "metadata_magnification": meta_mag,
            "metadata_mpp": meta_mpp,
            "region": list(region) if region else None,
        }
        results.append(record)
        if not args.json:
            line = f"{path}: predicted {pred.magnification:.1f}x ({pred.mpp:.3f} µm/px)"
            line += f", {interval_text(pred)}" if pred.interval else f" ± {pred.uncertainty:.1f}"
            if meta_mag is not None:
                meta = f"{meta_mag:g}x" + (f", {meta_mpp:.4g} µm/px" if meta_mpp else "")
                line += f"  [metadata: {meta}; metadata is used]"
            if pred.note:
                line += f"\n    note: {pred.note}"
            print(line)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 1 if failed else 0
