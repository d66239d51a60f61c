"""``napari-histo summary RESULT [--roi FILE]``: nuclei per type, density per mm², % positive per region."""

from __future__ import annotations

import argparse

from napari_histo.cli._common import ROI_HELP

# Lazy imports: pandas is imported inside the functions that use it (directly or through the
# modules named there): napari-histo --help and napari's plugin discovery import this module.


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "summary",
        help="nuclei per type, density per mm² and %% positive in each region",
        description="Read-out of a segmentation result or annotation file, per region: area, number of "
        "nuclei, nuclei per mm², count and share of each type, positive count and % positive (IHC), "
        "mean nucleus area. A nucleus counts for a region when its centroid is inside. Without --roi: the "
        "region the segmentation ran on (run.json), else the slide's tissue (when the slide is known), else "
        "every nucleus over their bounding extent. Prints a table; --csv writes it.",
    )
    parser.add_argument("result", help="segmentation output folder, nuclei.parquet, or an annotation file with nuclei")
    parser.add_argument("--roi", default=None, help="regions: " + ROI_HELP)
    parser.add_argument("--roi-class", default=None, help="with an annotation file: only its regions of this class")
    parser.add_argument("--mpp", type=float, default=None, help="level-0 µm/px when the input does not carry it")
    parser.add_argument("--slide", default=None, help="slide the nuclei belong to (supplies the mpp)")
    parser.add_argument("--csv", default=None, help="write the table as CSV (with a .json provenance sidecar)")
    parser.set_defaults(func=handler)
    return parser


def _default_region(result, slide_arg: str | None):
    """The segmentation run's region, else the slide's tissue mask, else None (nuclei extent)."""
    import math
    from pathlib import Path

    from napari_histo.cli._common import parse_roi

    parameters = result.run.get("parameters") or {}
    run_roi, roi_class = parameters.get("roi"), parameters.get("roi_class")
    if (isinstance(run_roi, (list, tuple)) and len(run_roi) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in run_roi)
            and run_roi[2] > 0 and run_roi[3] > 0):
        return tuple(float(v) for v in run_roi)
    if isinstance(run_roi, str) and Path(run_roi).is_file():
        return parse_roi(run_roi, roi_class if isinstance(roi_class, str) else None)
    slide = Path(slide_arg) if slide_arg else result.slide_path()
    if slide is None or not slide.is_file():
        return None
    from napari_histo.slide import open_slide, tissue_mask

    with open_slide(slide) as s:
        return tissue_mask(s)


def handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from napari_histo.analysis.results import load_result_folder, write_sidecar
    from napari_histo.analysis.summary import region_summary
    from napari_histo.cli._common import parse_roi
    from napari_histo.utils import HistoError, atomic_write

    result = load_result_folder(args.result, mpp=args.mpp, slide=args.slide)
    roi = parse_roi(args.roi, args.roi_class)
    if roi is None:
        roi = _default_region(result, args.slide)
    try:
        summary = region_summary(result.table, roi, mpp=result.mpp)
    except ValueError as exc:
        raise HistoError(f"{args.roi or result.input_path}: {exc}") from None
    with_units = summary.copy()  # rounded for the terminal; the CSV keeps full precision
    for col in with_units.columns:
        if with_units[col].dtype.kind == "f":
            with_units[col] = with_units[col].round(4 if col == "area_mm2" else 1)
    print(with_units.to_string(index=False))
    if not result.mpp:
        print("note: no pixel size (mpp) known: areas in px², density per megapixel; give --mpp or --slide")
    if args.csv:
        with atomic_write(Path(args.csv), encoding="utf-8", newline="") as fh:
            summary.to_csv(fh, index=False)
        params = {k: v for k, v in vars(args).items() if k != "func"}
        write_sidecar(Path(args.csv).with_suffix(".json"), "summary", params, mpp=result.mpp, regions=len(summary))
        print(f"summary -> {args.csv}")
    return 0
