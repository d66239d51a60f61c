"""``napari-histo density RESULT_DIR``: nucleus density map (PNG figure or NPY array)."""

from __future__ import annotations

import argparse

# Lazy imports: pandas is imported inside the functions that use it (directly or through the
# modules named there): napari-histo --help and napari's plugin discovery import this module.


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "density",
        help="nucleus density map of a segmentation result",
        description="Density map of the nuclei in RESULT_DIR (nuclei.parquet) or an annotation file: 'count' = nuclei within "
        "a radius (QuPath raw counts), 'gaussian' = Gaussian-weighted count, 'percent' = % positive "
        "(or --secondary type) among the counted nuclei, 'tile' = count / N^2 per N x N px tile. "
        "Writes a PNG figure (thumbnail, heatmap, colour bar) or the raw array as .npy; both with a "
        "JSON sidecar holding pixel size, offset and parameters.",
    )
    parser.add_argument("result", help="segmentation output folder (with nuclei.parquet), a nuclei.parquet file, or an "
                        "annotation file (QuPath GeoJSON, HoVer-Net JSON, Sedeen session, ImageScope/ASAP XML)")
    parser.add_argument("--mpp", type=float, default=None, help="level-0 µm/px when the input does not carry it (or to override it)")
    parser.add_argument("--kind", choices=["count", "gaussian", "percent", "tile"], default="count",
                        help="what each map pixel holds (see above; default: count)")
    parser.add_argument("--radius-um", type=float, default=None, help="radius in µm (default 50; needs mpp)")
    parser.add_argument("--radius-px", type=float, default=None, help="radius in level-0 px (instead of µm)")
    parser.add_argument("--tile", type=int, default=50, help="tile side in level-0 px for --kind tile (default 50)")
    parser.add_argument("--type", default=None, help="nuclei to count: type name or id, 'positive' (default: all)")
    parser.add_argument("--secondary", default="positive", help="--kind percent: class whose share is mapped (default: positive)")
    parser.add_argument("--slide", default=None, help="slide for the thumbnail, its size and mpp (default: the one in run.json, if found)")
    parser.add_argument("-o", "--output", default=None, help="output .png or .npy (default RESULT_DIR/density_<kind>.png; "
                        "<stem>_density_<kind>.png beside an annotation file)")
    parser.set_defaults(func=handler)
    return parser


def compute(args: argparse.Namespace):
    from napari_histo.analysis.density import density_map
    from napari_histo.analysis.results import load_result_folder
    from napari_histo.utils import HistoError

    result = load_result_folder(args.result, mpp=args.mpp, slide=args.slide)
    try:
        dmap = density_map(result.table, args.kind, radius_um=args.radius_um, radius_px=args.radius_px, mpp=result.mpp,
                           type=args.type, secondary=args.secondary, shape=result.dimensions, tile=args.tile)
    except ValueError as exc:
        hint = " (or --mpp / --slide)" if "needs the pixel size" in str(exc) else ""
        raise HistoError(f"{result.input_path}: {str(exc).replace('radius_px', '--radius-px')}{hint}") from None
    return result, dmap


def handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from napari_histo.analysis.plots import render_density_png
    from napari_histo.analysis.results import slide_thumbnail, write_sidecar
    from napari_histo.utils import HistoError, atomic_path

    result, dmap = compute(args)
    out = Path(args.output) if args.output else result.output_path(f"density_{args.kind}.png")
    suffix = out.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise HistoError(f"{out}: output must end in .png or .npy")
    if suffix == ".npy":
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, dmap.array)
    else:
        thumb, ds = slide_thumbnail(result, args.slide)
        title = f"{result.stem}: {dmap.kind} density of {dmap.type} nuclei" + (f", r = {dmap.radius_px:.0f} px" if dmap.radius_px else f", tile {args.tile} px")
        render_density_png(dmap, out, thumbnail=thumb, thumbnail_downsample=ds, title=title)
    params = {k: v for k, v in vars(args).items() if k != "func"}
    write_sidecar(out.with_suffix(".json"), "density", params, pixel_size=dmap.pixel_size, offset=list(dmap.offset),
                  units=dmap.units, kind=dmap.kind, type=dmap.type, radius_px=dmap.radius_px, shape=list(dmap.array.shape),
                  max=float(np.nanmax(dmap.array)) if np.isfinite(dmap.array).any() else None)
    print(f"density map ({dmap.array.shape[1]} x {dmap.array.shape[0]} px, {dmap.pixel_size:g} level-0 px per px) -> {out}")
    return 0
