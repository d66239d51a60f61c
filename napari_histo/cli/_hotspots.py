"""``napari-histo hotspots RESULT_DIR -k 10``: top-k non-overlapping hotspots, exactly recounted."""

from __future__ import annotations

import argparse

from napari_histo.cli._common import ROI_HELP

# Lazy imports: pandas is imported inside the functions that use it (directly or through the
# modules named there): napari-histo --help and napari's plugin discovery import this module.


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "hotspots",
        help="find the top-k nucleus hotspots of a segmentation result",
        description="Top-k non-overlapping hotspots: 'circle' (QuPath: ROI eroded by the radius, count "
        "> --min-count, density peaks, centres >= 2r apart) or 'box' (W x W tiles of N px, greedy, "
        "non-overlapping). Each hotspot is recounted exactly from the nucleus table. Prints a table "
        "and optionally writes CSV, PNG, a Sedeen session and QuPath GeoJSON.",
    )
    parser.add_argument("result", help="segmentation output folder (with nuclei.parquet), a nuclei.parquet file, or an "
                        "annotation file (QuPath GeoJSON, HoVer-Net JSON, Sedeen session, ImageScope/ASAP XML)")
    parser.add_argument("--mpp", type=float, default=None, help="level-0 µm/px when the input does not carry it (or to override it)")
    parser.add_argument("-k", type=int, default=10, help="number of hotspots (default 10)")
    parser.add_argument("--mode", choices=["circle", "box"], default="circle",
                        help="'circle': QuPath's hotspots (circles of the density radius around the densest points); "
                             "'box': the densest windows of tiles (Ki-67 / IHC hotspot counting)")
    parser.add_argument("--radius-um", type=float, default=None, help="circle radius in µm (default 50)")
    parser.add_argument("--radius-px", type=float, default=None, help="circle radius in level-0 px")
    parser.add_argument("--type", default=None, help="nuclei counted: type name or id, 'positive' (default: all)")
    parser.add_argument("--roi", default=None, help="search only inside this region: " + ROI_HELP)
    parser.add_argument("--roi-class", default=None, help="with an annotation file: only its regions of this class")
    parser.add_argument("--min-count", type=float, default=1, help="keep hotspots with count strictly greater (default 1)")
    parser.add_argument("--tile", type=int, default=50, help="box mode: tile side in px (default 50)")
    parser.add_argument("--window", type=int, default=20, help="box mode: window side in tiles (default 20)")
    parser.add_argument("--fork-rule", action="store_true", help="box mode: the seed pipeline's stricter row/column exclusion")
    parser.add_argument("--csv", default=None, help="write the hotspot table as CSV")
    parser.add_argument("--png", default=None, help="write a figure (density heatmap + numbered hotspots)")
    parser.add_argument("--slide", default=None, help="slide for the PNG thumbnail, the Sedeen session location, its size and mpp")
    parser.add_argument("--sedeen", nargs="?", const="", default=None, metavar="SESSION",
                        help="add the hotspots to a Sedeen session (default: beside the --slide given, else "
                        "RESULT_DIR/<stem>.session.xml; merged)")
    parser.add_argument("--geojson", nargs="?", const="", default=None, metavar="FILE",
                        help="write the hotspots as QuPath annotations (default RESULT_DIR/hotspots.geojson; "
                        "<stem>_hotspots.geojson beside an annotation file)")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from napari_histo.analysis.density import density_map
    from napari_histo.analysis.hotspots import HotspotOptions, find_hotspots, hotspot_annotations
    from napari_histo.analysis.results import load_result_folder, slide_thumbnail, write_sidecar
    from napari_histo.cli._common import parse_roi
    from napari_histo.utils import HistoError, atomic_write

    result = load_result_folder(args.result, mpp=args.mpp, slide=args.slide)
    table = result.table
    roi = parse_roi(args.roi, args.roi_class)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            options = HotspotOptions(mode=args.mode, radius_um=args.radius_um, radius_px=args.radius_px,
                                     type=args.type, min_count=args.min_count, tile=args.tile, window=args.window,
                                     box_rule="fork" if args.fork_rule else "overlap")
            hs = find_hotspots(table, args.k, options, mpp=result.mpp, shape=result.dimensions, roi=roi)
    except ValueError as exc:
        hint = " (or --mpp / --slide)" if "needs the pixel size" in str(exc) else ""
        raise HistoError(f"{result.input_path}: {str(exc).replace('radius_px', '--radius-px')}{hint}") from None
    for w in caught:
        print(f"warning: {w.message}")
    cols = [c for c in ("rank", "name", "x", "y", "x0", "y0", "x1", "y1", "score", "count", "count_all", "positive_pct")
            if c in hs.columns]
    print(hs[cols].to_string(index=False) if len(hs) else "no hotspot found")
    if len(hs):
        if args.mode == "circle":
            print("ranked by score: the density map's value where the circle was placed (nuclei within the radius "
                  "on the map's grid, as QuPath ranks); count: the exact recount of nucleus centroids inside the "
                  "circle, which can differ slightly")
        else:
            print("ranked by score: nuclei counted in the window of tiles; count: the exact recount inside the box")
    params = {k: v for k, v in vars(args).items() if k != "func"}
    if args.csv:
        with atomic_write(Path(args.csv), encoding="utf-8", newline="") as fh:
            hs.to_csv(fh, index=False)
        write_sidecar(Path(args.csv).with_suffix(".json"), "hotspots", params, found=len(hs))
        print(f"hotspots -> {args.csv}")
    if args.png:
        from napari_histo.analysis.plots import render_density_png

        if args.mode == "circle":
            dmap = density_map(table, "count", radius_px=float(hs.attrs["radius_px"]), type=args.type, shape=result.dimensions)
        else:
            dmap = density_map(table, "tile", tile=args.tile, type=args.type, shape=result.dimensions)
        thumb, ds = slide_thumbnail(result, args.slide)
        render_density_png(dmap, args.png, thumbnail=thumb, thumbnail_downsample=ds, hotspots=hs,
                           title=f"{result.stem}: top {len(hs)} hotspots ({args.mode})")
        print(f"figure -> {args.png}")
    if args.sedeen is not None:
        from napari_histo.formats.sedeen import session_path_for, write_sedeen

        slide = Path(args.slide) if args.slide else result.slide_path()  # run.json's: data, not a destination
        if args.sedeen:
            target = Path(args.sedeen)
        elif args.slide:
            target = session_path_for(Path(args.slide))
        else:
            target = result.folder / f"{result.stem}.session.xml"
        path = write_sedeen(None, target, hotspots=hs, slide_name=slide.name if slide else str(result.run.get("slide") or result.stem),
                            dimensions=result.dimensions, mpp=result.mpp)
        print(f"Sedeen session -> {path}")
    if args.geojson is not None:
        from napari_histo.formats.geojson import write_geojson

        path = write_geojson(None, Path(args.geojson) if args.geojson else result.output_path("hotspots.geojson"),
                             annotations=hotspot_annotations(hs))
        print(f"GeoJSON -> {path}")
    return 0
