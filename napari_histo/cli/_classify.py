"""``napari-histo classify SLIDE|IMAGE... -o OUTDIR``: DeepCMorph nucleus maps, tile features and
tissue classes.

Per input, ``OUTDIR/<stem>/`` receives ``tiles.parquet`` (or ``tiles.csv``: one row per tissue
tile: box in level-0 px, nucleus composition, features ``f0..``), ``nucleus_maps.zarr`` (nucleus
probability and nucleus class per working px) and ``run.json``. With tissue classes (a released
model, ``--train-regions`` or ``--head``) also ``class_map.npy`` (int16 tile classes, -1 =
skipped), ``class_map.png`` (legend in ``run.json``), ``tissue_tiles.geojson`` (QuPath tiles),
``tissue_map.session.xml`` (Sedeen regions, one per class) and, for a few-shot map,
``tissue_head.json`` (the fitted head, reusable with ``--head``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Lazy imports: PIL is imported inside the functions that use it (directly or through the modules
# named there): napari-histo --help and napari's plugin discovery import this module.


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "classify",
        help="DeepCMorph nucleus maps, tile features and tissue maps (few-shot from your regions)",
        description="DeepCMorph on tissue tiles. With the shipped nucleus module (no download): per input, "
                    "OUTDIR/<stem>/ receives tiles.parquet (one row per tissue tile: box in level-0 px, nucleus "
                    "composition, features), nucleus_maps.zarr (nucleus probability and class per px) and run.json. "
                    "With --train-regions FILE (a few regions per tissue class, QuPath/Sedeen/ImageScope/ASAP) a "
                    "head is fitted on the tiles inside them and every tile is classified: class_map.npy/.png, "
                    "tissue_tiles.geojson (QuPath), tissue_map.session.xml (Sedeen) and tissue_head.json. A "
                    "released model (--weights COMBINED ...) classifies with its own head.",
    )
    p.add_argument("inputs", nargs="+", metavar="SLIDE|IMAGE", help="slides or plain images")
    p.add_argument("-o", "--outdir", required=True, help="output folder (one sub-folder per input)")
    p.add_argument("--weights", default=None, metavar="PATH|NAME",
                   help="model folder (config.json + model.pt), checkpoint file, or released name "
                        "COMBINED/TCGA/TCGA_REGULARIZED/CRC (looked up in $NAPARI_HISTO_DEEPCMORPH_DIR "
                        "or ~/.napari-histo/deepcmorph/)")
    p.add_argument("--train-regions", default=None, metavar="FILE",
                   help="annotation file whose classified regions label the training tiles of a few-shot tissue map")
    p.add_argument("--roi-class", action="append", default=None, metavar="NAME",
                   help="with --train-regions: use the regions of this class (repeat; default every class)")
    p.add_argument("--head", default=None, metavar="FILE",
                   help="tissue_head.json of an earlier few-shot map: classify with it (same model)")
    p.add_argument("--no-maps", action="store_true", help="do not write nucleus_maps.zarr")
    p.add_argument("--tile", type=int, default=None, metavar="N", help="tile side in working px (default: model's)")
    p.add_argument("--mpp", type=float, default=None, help="working resolution in µm/px (default: model's, else level 0)")
    p.add_argument("--image-mpp", type=float, default=None,
                   help="pixel size (µm/px) of an image that states none, e.g. a PNG (never replaces a stated one)")
    p.add_argument("--roi", default=None, metavar="X,Y,W,H", help="region in level-0 px")
    p.add_argument("--all-tiles", action="store_true", help="classify background tiles too")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per network batch (lower it when memory is short)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--csv", action="store_true", help="write tiles.csv instead of tiles.parquet")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=handler)
    return p


def _parse_roi(text: str | None):
    from napari_histo.utils import HistoError

    if text is None:
        return None
    try:
        x, y, w, h = (int(float(v)) for v in text.split(","))
    except ValueError as exc:
        raise HistoError(f"--roi must be X,Y,W,H integers, got {text!r}") from exc
    return x, y, w, h


def handler(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from napari_histo.cli._common import drain_with_progress
    from napari_histo.formats.geojson import write_geojson
    from napari_histo.formats.sedeen import write_sedeen
    from napari_histo.models.classification import (
        apply_head,
        class_map_rgb,
        class_palette,
        iter_classify_tiles,
        load_tile_classifier,
    )
    from napari_histo.models.tissue_maps import (
        TissueHead,
        TrainingRegions,
        class_run_annotations,
        iter_tissue_map,
        tile_annotations,
    )
    from napari_histo.provenance import write_run_json
    from napari_histo.utils import HistoError, InputFileError, atomic_path

    roi = _parse_roi(args.roi)
    for path in args.inputs:
        if not Path(path).is_file():
            raise InputFileError(path, "no such file")
    if args.train_regions and args.head:
        raise HistoError("give --train-regions (fit a new head) or --head (reuse one), not both")
    if args.roi_class and not args.train_regions:
        raise HistoError("--roi-class selects classes of --train-regions; give that file too")
    if args.train_regions and len(args.inputs) > 1:
        raise HistoError("--train-regions describes one image: classify one input with it, then the others "
                         "with --head OUTDIR/<stem>/tissue_head.json")
    regions = TrainingRegions.from_file(args.train_regions, args.roi_class) if args.train_regions else None
    head = TissueHead.load(args.head) if args.head else None
    model = load_tile_classifier(args.weights, args.device)
    outdir = Path(args.outdir)
    for path in args.inputs:
        target = outdir / Path(path).stem
        main_out = target / ("tiles.csv" if args.csv else "tiles.parquet")
        if main_out.exists() and not args.overwrite:
            raise HistoError(f"{main_out}: exists; pass --overwrite to replace it")
        target.mkdir(parents=True, exist_ok=True)
        options = dict(mpp=args.mpp, image_mpp=args.image_mpp, batch_size=args.batch_size, tissue_only=not args.all_tiles,
                       maps_store=None if args.no_maps else target / "nucleus_maps.zarr")
        if regions is not None:
            events = iter_tissue_map(path, model, regions, tile_size=args.tile, roi=roi, **options)
        else:
            events = iter_classify_tiles(path, model, args.tile, roi, **options)
        result = None
        for event in drain_with_progress(events, desc=Path(path).name):
            result = event.result or result
        assert result is not None
        if head is not None:
            result = apply_head(result, head)
        df = result.features
        with atomic_path(main_out) as tmp:
            if args.csv:
                df.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False)
        n = len(result.class_names)
        classes = []
        if n:
            with atomic_path(target / "class_map.npy") as tmp:
                np.save(tmp, result.class_map)
            scale = max(1, 256 // max(result.class_map.shape))
            with atomic_path(target / "class_map.png") as tmp:
                Image.fromarray(class_map_rgb(result.class_map, n, scale)).save(tmp, format="PNG")
            write_geojson(None, target / "tissue_tiles.geojson", annotations=tile_annotations(result))
            write_sedeen(None, target / "tissue_map.session.xml", rois=class_run_annotations(result),
                         slide_name=Path(path).name)
            palette = class_palette(n).tolist()
            classes = [{"index": i, "name": nm, "colour": palette[i], "tiles": int((result.class_map == i).sum())}
                       for i, nm in enumerate(result.class_names)]
        if result.head is not None and regions is not None:
            result.head.save(target / "tissue_head.json")
        write_run_json(
            target, "classify",
            {"input": str(path), "weights": str(args.weights or "shipped nucleus module"), "tile": result.tile_size,
             "mpp": result.mpp, "image_mpp": args.image_mpp, "roi": roi, "all_tiles": args.all_tiles, "train_regions": args.train_regions,
             "roi_class": args.roi_class, "head": args.head, "maps": not args.no_maps},
            grid={"rows": int(result.class_map.shape[0]), "cols": int(result.class_map.shape[1]),
                  "origin_level0": list(result.origin), "tile_step_level0": result.step_level0},
            classes=classes,
            training_tiles=(result.head.train_tiles if result.head is not None else None),
            skipped_tiles=int((result.class_map < 0).sum()),
        )
        what = f"{n} tissue classes" if n else "nucleus maps and features (no tissue classes: give --train-regions)"
        print(f"{path}: {int((result.class_map >= 0).sum())} tiles, {what} -> {target}")
    return 0
