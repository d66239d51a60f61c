"""``napari-histo classify SLIDE|IMAGE... -o OUTDIR``: DeepCMorph tile classification.

Per input, ``OUTDIR/<stem>/`` receives ``class_map.npy`` (int16 tile classes, -1 = skipped),
``class_map.png`` (colour-coded, legend in ``run.json``), ``tiles.parquet`` (or ``tiles.csv``:
tile box in level-0 px, class, probabilities, features) and ``run.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Lazy imports: PIL is imported inside the functions that use it (directly or through the modules
# named there): napari-histo --help and napari's plugin discovery import this module.


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "classify",
        help="classify image tiles with DeepCMorph (class map + per-tile features table)",
        description="DeepCMorph tile classification. Per input, OUTDIR/<stem>/ receives class_map.npy (int16 tile "
                    "classes, -1 = skipped), class_map.png (colour-coded, legend in run.json), tiles.parquet (or "
                    "tiles.csv: tile box in level-0 px, class, probabilities, features) and run.json.",
    )
    p.add_argument("inputs", nargs="+", metavar="SLIDE|IMAGE", help="slides or plain images")
    p.add_argument("-o", "--outdir", required=True, help="output folder (one sub-folder per input)")
    p.add_argument("--weights", default=None, metavar="PATH|NAME",
                   help="model folder (config.json + model.pt), checkpoint file, or released name "
                        "COMBINED/TCGA/TCGA_REGULARIZED/CRC (looked up in $NAPARI_HISTO_DEEPCMORPH_DIR "
                        "or ~/.napari-histo/deepcmorph/)")
    p.add_argument("--tile", type=int, default=None, metavar="N", help="tile side in working px (default: model's)")
    p.add_argument("--mpp", type=float, default=None, help="working resolution in µm/px (default: model's, else level 0)")
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
    from napari_histo.models.classification import (
        class_map_rgb,
        iter_classify_tiles,
        load_tile_classifier,
    )
    from napari_histo.provenance import write_run_json
    from napari_histo.utils import HistoError, InputFileError, atomic_path

    roi = _parse_roi(args.roi)
    for path in args.inputs:
        if not Path(path).is_file():
            raise InputFileError(path, "no such file")
    model = load_tile_classifier(args.weights, args.device)
    outdir = Path(args.outdir)
    for path in args.inputs:
        target = outdir / Path(path).stem
        main_out = target / ("tiles.csv" if args.csv else "tiles.parquet")
        if main_out.exists() and not args.overwrite:
            raise HistoError(f"{main_out}: exists; pass --overwrite to replace it")
        target.mkdir(parents=True, exist_ok=True)
        events = iter_classify_tiles(path, model, args.tile, roi, mpp=args.mpp, batch_size=args.batch_size,
                                     tissue_only=not args.all_tiles)
        result = None
        for event in drain_with_progress(events, desc=Path(path).name):
            result = event.result or result
        assert result is not None
        with atomic_path(target / "class_map.npy") as tmp:
            np.save(tmp, result.class_map)
        n = len(result.class_names)
        scale = max(1, 256 // max(result.class_map.shape))
        with atomic_path(target / "class_map.png") as tmp:
            Image.fromarray(class_map_rgb(result.class_map, n, scale)).save(tmp, format="PNG")
        df = result.features
        with atomic_path(main_out) as tmp:
            if args.csv:
                df.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False)
        from napari_histo.models.classification import class_palette

        palette = class_palette(n).tolist()
        counts = {name: int((result.class_map == i).sum()) for i, name in enumerate(result.class_names)}
        write_run_json(
            target, "classify",
            {"input": str(path), "weights": str(args.weights), "tile": result.tile_size, "mpp": result.mpp,
             "roi": roi, "all_tiles": args.all_tiles},
            grid={"rows": int(result.class_map.shape[0]), "cols": int(result.class_map.shape[1]),
                  "origin_level0": list(result.origin), "tile_step_level0": result.step_level0},
            classes=[{"index": i, "name": nm, "colour": palette[i], "tiles": counts[nm]}
                     for i, nm in enumerate(result.class_names)],
            skipped_tiles=int((result.class_map < 0).sum()),
        )
        print(f"{path}: {int((result.class_map >= 0).sum())} tiles classified -> {target}")
    return 0
