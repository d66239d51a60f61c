"""``napari-histo export RESULT_DIR``: nuclei to QuPath GeoJSON, Sedeen session, HoVer-Net JSON, CSV."""

from __future__ import annotations

import argparse

# Lazy imports: pandas is imported inside the functions that use it (directly or through the
# modules named there): napari-histo --help and napari's plugin discovery import this module.

SEDEEN_WARN_AT = 10_000


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a segmentation result to QuPath / Sedeen / HoVer-Net / CSV",
        description="Export the nuclei of RESULT_DIR (nuclei.parquet). Files are written atomically; a "
        "Sedeen session that already exists is merged (its graphics are kept, earlier napari-histo "
        "graphics replaced).",
    )
    parser.add_argument("result", help="segmentation output folder (with nuclei.parquet)")
    parser.add_argument("--geojson", nargs="?", const="", default=None, metavar="FILE",
                        help="QuPath GeoJSON (default RESULT_DIR/<stem>.geojson[.gz])")
    parser.add_argument("--gz", action="store_true", help="gzip the GeoJSON (.geojson.gz)")
    parser.add_argument("--qupath03", action="store_true", help="QuPath 0.3 compatible GeoJSON (measurement lists)")
    parser.add_argument("--cells", action="store_true", help="write 'cell' objects (nucleusGeometry) instead of detections")
    parser.add_argument("--no-measurements", action="store_true", help="leave measurements out (smaller, faster for huge exports)")
    parser.add_argument("--sedeen", nargs="?", const="", default=None, metavar="SLIDE_OR_SESSION",
                        help="Sedeen session: a slide file (session written beside it as <stem>.session.xml) or a "
                        "*.xml path; default RESULT_DIR/<stem>.session.xml (never a path read from run.json)")
    parser.add_argument("--colours", default=None, help="Sedeen class<->colour table JSON (default: the types' colours)")
    parser.add_argument("--hovernet-json", nargs="?", const="", default=None, metavar="FILE",
                        help="HoVer-Net JSON (default RESULT_DIR/<stem>.json)")
    parser.add_argument("--integer-contours", action="store_true",
                        help="HoVer-Net JSON contours in whole pixels, as the official code writes them (its notebook "
                             "and visualize_instances_dict draw only those)")
    parser.add_argument("--csv", nargs="?", const="", default=None, metavar="FILE",
                        help="per-nucleus measurements CSV (default RESULT_DIR/<stem>_nuclei.csv)")
    parser.add_argument("--mat", nargs="?", const="", default=None, metavar="FILE",
                        help="HoVer-Net tile .mat: inst_map, inst_uid, inst_type, inst_centroid (default "
                             "RESULT_DIR/<stem>.mat)")
    parser.add_argument("--overlay", nargs="?", const="", default=None, metavar="FILE",
                        help="the image with outlines coloured by type, as HoVer-Net's overlay PNG (default "
                             "RESULT_DIR/<stem>_overlay.png; needs the slide: run.json's, or --slide)")
    parser.add_argument("--slide", default=None, help="the slide or image the result belongs to (for --overlay)")
    parser.add_argument("--region", default=None, metavar="X,Y,W,H",
                        help="--mat / --overlay: only this level-0 box (default: the whole image, up to 64 Mpx)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing GeoJSON / HoVer-Net JSON / CSV files (Sedeen sessions are merged into, "
                             "never replaced)")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from napari_histo.analysis.results import load_result_folder
    from napari_histo.utils import HistoError

    if all(v is None for v in (args.geojson, args.sedeen, args.hovernet_json, args.csv, args.mat, args.overlay)):
        raise HistoError("nothing to export: give --geojson, --sedeen, --hovernet-json, --csv, --mat and/or --overlay")
    result = load_result_folder(args.result)
    table, stem = result.table, result.stem

    def output(given: str, default: Path) -> Path:
        path = Path(given) if given else default
        if path.exists() and not args.overwrite:
            raise HistoError(f"{path}: exists; choose another file or add --overwrite to replace it")
        return path

    if args.geojson is not None:
        from napari_histo.formats.geojson import write_geojson

        default = result.folder / (f"{stem}.geojson.gz" if args.gz else f"{stem}.geojson")
        path = write_geojson(table, output(args.geojson, default), object_type="cell" if args.cells else "detection",
                             qupath03=args.qupath03, gzip=True if args.gz else None, include_measurements=not args.no_measurements)
        print(f"GeoJSON ({len(table)} nuclei) -> {path}")
    if args.sedeen is not None:
        from napari_histo.formats.colours import SedeenColourTable
        from napari_histo.formats.sedeen import write_sedeen

        if len(table) > SEDEEN_WARN_AT:
            print(f"warning: {len(table)} nuclei; Sedeen's behaviour with more than {SEDEEN_WARN_AT} graphics is untested")
        slide = result.slide_path()  # data only: the session's slide name, never where to write
        target = Path(args.sedeen) if args.sedeen else result.folder / f"{stem}.session.xml"
        colours = SedeenColourTable.load(args.colours) if args.colours else None
        is_session = str(target).lower().endswith(".xml")
        slide_name = (slide.name if slide else str(result.run.get("slide") or "") or None) if is_session else None
        path = write_sedeen(table, target, colour_table=colours, dimensions=result.dimensions, mpp=result.mpp, slide_name=slide_name)
        print(f"Sedeen session -> {path}")
    if args.hovernet_json is not None:
        from napari_histo.formats.hovernet_json import write_hovernet_json

        path = write_hovernet_json(table, output(args.hovernet_json, result.folder / f"{stem}.json"),
                                   integer_contours=args.integer_contours)
        print(f"HoVer-Net JSON -> {path}")
    if args.csv is not None:
        from napari_histo.formats.csv import write_csv

        path = write_csv(table, output(args.csv, result.folder / f"{stem}_nuclei.csv"))
        print(f"CSV -> {path}")
    if args.mat is not None or args.overlay is not None:
        _tile_outputs(args, result, output)
    return 0


#: Largest box (px) written as a .mat or overlay PNG.
MAX_TILE_OUTPUT_PX = 64_000_000


def _tile_outputs(args: argparse.Namespace, result, output) -> None:
    """HoVer-Net's tile outputs (.mat, overlay PNG) for the whole image or ``--region``."""
    from pathlib import Path

    import numpy as np

    from napari_histo.formats.rasterize import parse_region
    from napari_histo.utils import HistoError

    table, stem = result.table, result.stem
    dims = result.dimensions
    if args.region:
        try:
            x, y, w, h = parse_region(args.region)
        except ValueError as exc:
            raise HistoError(f"--region: {exc}") from None
    elif dims:
        x, y, (w, h) = 0, 0, dims
    else:
        raise HistoError(f"{result.input_path}: the image size is unknown; give --region")
    if w * h > MAX_TILE_OUTPUT_PX:
        raise HistoError(f"{w} x {h} px is too large for a .mat or overlay; give a smaller --region")
    inside = table[(table["x"] >= x) & (table["x"] < x + w) & (table["y"] >= y) & (table["y"] < y + h)]
    if args.mat is not None:
        from napari_histo.engine.outputs import load_result
        from napari_histo.formats.hovernet_mat import write_hovernet_mat

        if result.source is not None:
            raise HistoError(f"{result.input_path}: --mat needs a segmentation result folder (its label image)")
        labels = np.asarray(load_result(result.folder).labels[0][y:y + h, x:x + w])
        keep = np.isin(labels, inside["id"].to_numpy())
        labels = np.where(keep, labels, 0)
        from napari_histo.formats._common import table_type_info

        typed = len(table_type_info(table).names) > 2  # more than background and "nucleus"
        path = write_hovernet_mat(inside, labels, output(args.mat, result.folder / f"{stem}.mat"), origin=(x, y),
                                  typed=typed)
        print(f"HoVer-Net .mat ({len(inside)} nuclei, {w} x {h} px) -> {path}")
    if args.overlay is not None:
        from napari_histo.analysis.plots import render_overlay_png
        from napari_histo.slide import open_slide

        slide_path = Path(args.slide) if args.slide else result.slide_path()
        if slide_path is None:
            raise HistoError(f"{result.input_path}: the slide is not found; give --slide for --overlay")
        with open_slide(slide_path) as slide:
            rgb = slide.read_region((x, y), (w, h))
        path = render_overlay_png(rgb, inside, output(args.overlay, result.folder / f"{stem}_overlay.png"),
                                  origin=(x, y))
        print(f"overlay ({len(inside)} nuclei) -> {path}")
