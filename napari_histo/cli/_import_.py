"""``napari-histo import ANNOTATION``: annotations (Sedeen, QuPath GeoJSON, ImageScope, HoVer-Net JSON)
to instance + type masks for a region."""

from __future__ import annotations

import argparse

# Lazy imports: pandas, tifffile are imported inside the functions that use them (directly or
# through the modules named there): napari-histo --help and napari's plugin discovery import this
# module.

MAX_PIXELS = 25_000 * 25_000


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "import",
        help="rasterise an annotation file into instance + type masks",
        description="Read a Sedeen session (.session.xml), Aperio ImageScope or ASAP XML, QuPath GeoJSON "
        "(.geojson/.json, .gz) or HoVer-Net JSON and write the instance map and type map of a "
        "level-0 region as .npz (arrays 'inst', 'type', 'type_info' JSON) or .tif (2 pages).",
    )
    parser.add_argument("annotation", help="annotation file")
    parser.add_argument("--region", default=None,
                        help="x,y,w,h in level-0 px (default: the whole image: its size from --image, else from a "
                             "Sedeen session's image dimensions, else the extent of the objects)")
    parser.add_argument("--image", default=None, metavar="SLIDE_OR_IMAGE",
                        help="the image the annotations were drawn on: the masks get its size")
    parser.add_argument("-o", "--output", required=True, help="MASKS.npz or MASKS.tif")
    parser.add_argument("--colours", default=None, help="Sedeen class<->colour table JSON (default: the shipped table)")
    parser.add_argument("--type-info", default=None, help="type_info.json mapping class names to ids (GeoJSON/HoVer-Net/ImageScope)")
    parser.add_argument("--point-radius", type=float, default=2.0, help="radius (px) of point annotations in the masks")
    parser.add_argument("--table", default=None, help="also write the imported nuclei as a nucleus table (.parquet)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a GeoJSON file at its first malformed feature (default: skip and count them)")
    parser.set_defaults(func=handler)
    return parser


def load_shapes(path, kind: str, colours=None, type_info=None, strict: bool = False):
    """(shapes, type_info dict, negative shapes, nucleus table or None) for any supported format."""
    import numpy as np

    from napari_histo.formats._common import AnnotationFormatError
    from napari_histo.formats.rasterize import Shape

    if kind == "sedeen":
        from napari_histo.formats.sedeen import read_sedeen

        session = read_sedeen(path)
        types, classes = session._types(colours)
        shapes = [Shape(g.type, g.points, types[i] or 0, 0) for i, g in enumerate(session.graphics)
                  if g.type in ("polygon", "rectangle", "ellipse", "point") and types[i] is not None]
        for k, s in enumerate(shapes, start=1):
            s.instance_id = k
        info = {"0": ["background", [0, 0, 0]]} | {str(k): [n, list(int(c[i:i + 2], 16) for i in (1, 3, 5))] for k, (n, c) in sorted(classes.items())}
        table = session.to_table(colours)
        if session.dimensions:
            table.attrs["image_dimensions"] = tuple(int(v) for v in session.dimensions)
        return shapes, info, [], table
    if kind == "imagescope":
        try:
            from napari_histo.formats.imagescope import read_imagescope
        except ImportError:
            raise AnnotationFormatError(path, "the ImageScope reader is not available in this installation") from None
        from napari_histo.formats.auto import class_ids

        ann = read_imagescope(path)
        regions = [r for r in ann.regions if not r.negative]
        ids, info = class_ids([r.class_name for r in regions], type_info)  # no class -> "nucleus"
        shapes = [Shape("polygon", np.asarray(r.vertices), t, k) for k, (r, t) in enumerate(zip(regions, ids, strict=True), start=1)]
        negative = [Shape("polygon", np.asarray(r.vertices), 0, 0) for r in ann.regions if r.negative]
        return shapes, info, negative, None
    if kind == "asap":
        from napari_histo.formats.asap import read_asap

        return _annotation_shapes(read_asap(path), None)
    if kind == "hovernet":
        from napari_histo.formats.hovernet_json import read_hovernet_json

        table = read_hovernet_json(path, type_info=type_info)
        info = table.attrs["type_info"]
    else:
        from napari_histo.formats.geojson import read_geojson

        objs = read_geojson(path, type_info=type_info, strict=strict)
        table, info = objs.table, objs.type_info.to_json_dict()
        if not len(table):  # annotation-only file: rasterise the polygons / points
            return _annotation_shapes(objs.annotations, info)
    shapes = [Shape("polygon", np.asarray(c), int(t), int(i)) for c, t, i in zip(table["contour"], table["type"], table["id"], strict=True)]
    return shapes, info, [], table


def _annotation_shapes(annotations, type_info: dict | None):
    """Polygons and points of region annotations as shapes; class names become type ids
    (:func:`~napari_histo.formats.auto.class_ids`; no class -> 0)."""
    import numpy as np

    from napari_histo.formats.auto import class_ids
    from napari_histo.formats.rasterize import Shape

    parts = [(a, part) for a in annotations for part in getattr(a.geometry, "geoms", [a.geometry])
             if part.geom_type in ("Polygon", "Point")]
    ids, info = class_ids([a.class_name for a, _ in parts], type_info, [a.colour for a, _ in parts], unnamed=None)
    shapes = []
    for (_, part), tid in zip(parts, ids, strict=True):
        if part.geom_type == "Polygon":
            shapes.append(Shape("polygon", np.asarray(part.exterior.coords)[:-1, :2], tid, len(shapes) + 1))
        else:
            shapes.append(Shape("point", np.asarray(part.coords)[:, :2], tid, len(shapes) + 1))
    return shapes, info, [], None


def handler(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from napari_histo.formats.auto import detect_format
    from napari_histo.formats.colours import SedeenColourTable
    from napari_histo.formats.rasterize import parse_region, rasterize_shapes
    from napari_histo.utils import HistoError, atomic_path

    src = Path(args.annotation)
    out = Path(args.output)
    if out.suffix.lower() not in (".npz", ".tif", ".tiff"):
        raise HistoError(f"{out}: output must end in .npz or .tif")
    type_info = None
    if args.type_info:
        from napari_histo.formats._common import load_json

        type_info = load_json(args.type_info)
    colours = SedeenColourTable.load(args.colours) if args.colours else None
    kind = detect_format(src)
    shapes, info, negative, table = load_shapes(src, kind, colours, type_info, strict=args.strict)
    declared = table.attrs.get("image_dimensions") if table is not None else None
    if args.region:
        try:
            region = parse_region(args.region)
        except ValueError as exc:
            raise HistoError(f"--region: {exc}") from None
    elif args.image:
        from napari_histo.slide import open_slide
        from napari_histo.utils import check_input_file

        check_input_file(Path(args.image), "image")
        with open_slide(args.image) as slide:
            width, height = (int(v) for v in slide.dimensions)
        region = (0, 0, width, height)
    elif declared:
        region = (0, 0, int(declared[0]), int(declared[1]))
        print(f"{src.name}: masks of the image's size {declared[0]} x {declared[1]} (from the session)")
    else:
        pts = [np.asarray(s.points).reshape(-1, 2) for s in shapes]
        if not pts:
            raise HistoError(f"{src}: no objects to rasterise")
        allp = np.concatenate(pts)
        x0, y0 = np.floor(allp.min(0)).astype(int) - int(args.point_radius) - 1
        x1, y1 = np.ceil(allp.max(0)).astype(int) + int(args.point_radius) + 2
        region = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
        print(f"{src.name}: the file does not state its image's size: masks cover the objects' extent {region} "
              "(x, y, w, h); give --image or --region for the whole image")
    if region[2] * region[3] > MAX_PIXELS:
        raise HistoError(f"region {region[2]} x {region[3]} px is too large; give a smaller --region")
    inst, typ = rasterize_shapes(shapes, region, point_radius=args.point_radius)
    if negative:
        hole, _ = rasterize_shapes(negative, region)
        inst[hole > 0] = 0
        typ[hole > 0] = 0
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, inst=inst, type=typ, region=np.asarray(region), type_info=json.dumps(info))
        else:
            import tifffile

            tifffile.imwrite(tmp, np.stack([inst, typ]), compression="zlib",
                             description=json.dumps({"pages": ["inst", "type"], "region": list(region), "type_info": info}))
    if args.table:
        from napari_histo.formats.auto import read_nuclei
        from napari_histo.schema.table import write_table_parquet

        if table is None or not len(table):  # ImageScope outlines, point annotations
            table = read_nuclei(src, colours=colours, type_info=type_info)

        write_table_parquet(table, args.table)
        print(f"nucleus table ({len(table)} nuclei) -> {args.table}")
    print(f"{kind}: {int(len(np.unique(inst))) - (1 if (inst == 0).any() else 0)} objects in region {region} -> {out}")
    return 0
