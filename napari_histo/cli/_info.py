"""``napari-histo info SLIDE|ANNOTATIONS [--json]``: slide metadata (levels, mpp, power, vendor,
backend), or what an annotation file holds (format, nuclei per type, regions per class)."""

from __future__ import annotations

import argparse
import json

# Lazy imports: pandas is imported inside the functions that use it (directly or through the
# modules named there): napari-histo --help and napari's plugin discovery import this module.

#: What ``info`` says of a file without a pixel size: where one can come from.
UNKNOWN_MPP = ("unknown (not in metadata; `napari-histo magnification FILE` predicts it, "
               "`segment --mpp predict|objective` uses the prediction)")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info",
        help="print a slide's metadata or an annotation file's contents",
        description="Print levels, downsamples, tile sizes, mpp, objective power, vendor, "
        "backend and associated images of a whole-slide image; for an annotation file (QuPath GeoJSON, "
        "HoVer-Net JSON, Sedeen, ImageScope or ASAP XML): its format, nuclei per type, regions per "
        "class and shape, points and extent.",
    )
    parser.add_argument("slide", help="slide file (.svs, .ndpi, .mrxs, .tif, .ome.tif, .png, ...) or annotation file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--backend",
        choices=["openslide", "tifffile", "image"],
        default=None,
        help="force a reader backend (default: chosen from the file header)",
    )
    parser.add_argument(
        "--properties", action="store_true", help="also print all vendor properties"
    )
    parser.set_defaults(func=handler)
    return parser


def _annotation_info(args: argparse.Namespace) -> int:
    from napari_histo.formats.auto import describe_annotations

    info = describe_annotations(args.slide)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    extent = info["extent_xyxy"]
    lines = [
        f"path:              {info['path']}",
        f"format:            {info['format']}",
        f"nuclei:            {info['nuclei']}" + "".join(f"\n  {name}: {n}" for name, n in info["nuclei_by_type"].items()),
        f"regions by class:  {'none' if not info['regions_by_class'] else ''}"
        + "".join(f"\n  {cls}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
                  for cls, kinds in info["regions_by_class"].items()),
        f"extent (level 0):  {f'x {extent[0]:.0f}-{extent[2]:.0f}, y {extent[1]:.0f}-{extent[3]:.0f} px' if extent else 'empty'}",
        f"mpp:               {info['mpp'] if info['mpp'] else 'not stated'}",
    ]
    print("\n".join(lines))
    return 0


def handler(args: argparse.Namespace) -> int:
    from napari_histo.formats import ANNOTATION_SUFFIXES
    from napari_histo.slide._describe import describe_slide

    # only annotation suffixes are sniffed; anything else is read as a slide (no pandas loaded)
    if str(args.slide).lower().endswith(ANNOTATION_SUFFIXES):
        from napari_histo.formats.auto import looks_like_annotations

        if looks_like_annotations(args.slide):
            return _annotation_info(args)

    # files OpenSlide reads: their metadata without numpy; others (and --properties) open a Slide
    info = None if args.properties else describe_slide(args.slide, args.backend)
    if info is None:
        from napari_histo.slide import open_slide

        with open_slide(args.slide, backend=args.backend) as slide:
            info = slide.metadata()
            if args.properties:
                info["properties"] = dict(slide.properties)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    mpp = info["mpp"]
    power = info["objective_power"]
    lines = [
        f"path:              {info['path']}",
        f"vendor / backend:  {info['vendor']} / {info['backend']}",
        f"dimensions:        {info['dimensions'][0]} x {info['dimensions'][1]} px (w x h)",
        f"mpp (x, y):        {f'{mpp[0]:.4f}, {mpp[1]:.4f} µm/px' if mpp else UNKNOWN_MPP}",
        f"objective power:   {f'{power:g}x' if power else 'unknown (not in metadata)'}",
        f"levels:            {info['level_count']}",
    ]
    for level, ((w, h), ds, tile) in enumerate(
        zip(info["level_dimensions"], info["level_downsamples"], info["tile_sizes"])
    ):
        tile_text = f"tiles {tile[0]}x{tile[1]}" if tile else "not tiled"
        lines.append(f"  level {level}: {w} x {h}  downsample {ds:.4g}  {tile_text}")
    lines.append(f"associated images: {', '.join(info['associated_images']) or 'none'}")
    if args.properties:
        lines.append("properties:")
        lines.extend(f"  {k} = {v!r}" for k, v in sorted(info["properties"].items()))
    print("\n".join(lines))
    return 0
