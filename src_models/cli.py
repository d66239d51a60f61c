"""``napari-histo train MODEL --config FILE [--resume]``: train one of the trainable models.

The training package plugs this command into the ``napari-histo`` CLI through the
``napari_histo.commands`` entry point (``pyproject.toml``), so the plugin never imports training
code. Dispatches to ``src_models.<MODEL>.train.train_from_config_file(path, resume)``; the
training code (torch) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from napari_histo.utils import HistoError, InputFileError

#: Trainable models (package names under ``src_models``).
TRAINABLE_MODELS = ["hovernet", "hagnifinder", "mpcs", "deepcmorph", "label_completion"]


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a JSON config, or HoVer-Net from your annotated images",
        description="Train a model of src_models from a JSON config (progress, checkpoints and the final "
        "weights go to the output folder named in the config), or, with --data, fine-tune the nucleus model on "
        "your own annotated images: DIR holds images with same-stem annotation files (tile.png + tile.geojson "
        "QuPath, tile.session.xml Sedeen, tile.xml ImageScope/ASAP, tile.json HoVer-Net); OUTDIR becomes a "
        "model that segment --model OUTDIR, evaluate and the Nuclei panel use.",
    )
    parser.add_argument("model", choices=TRAINABLE_MODELS, help="model family to train")
    parser.add_argument("--config", type=Path, default=None, help="training config JSON")
    parser.add_argument("--data", type=Path, default=None, help="hovernet: folder of annotated images")
    parser.add_argument("-o", "--outdir", type=Path, default=None, help="with --data: the model folder to write")
    parser.add_argument("--iterations", type=int, default=500, help="with --data: training iterations")
    parser.add_argument("--minutes", type=float, default=60.0, help="with --data: time budget (whichever comes first)")
    parser.add_argument("--init", default="default",
                        help="with --data: 'default' (fine-tune the shipped model), 'none' (random weights) or a "
                             "checkpoint / model folder")
    parser.add_argument("--mode", choices=["compact", "fast", "original"], default="compact",
                        help="with --data: the network (only the compact one trains from folders today)")
    parser.add_argument("--mpp", type=float, default=None, help="with --data: µm/px of the annotated images")
    parser.add_argument("--colours", default=None, help="with --data: Sedeen pen colour table JSON")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    if args.data is not None:
        return _train_own(args)
    if args.config is None:
        raise HistoError("give --config FILE, or --data DIR -o OUTDIR (hovernet)")
    config = Path(args.config)
    if not config.is_file():
        raise InputFileError(config, "config file not found")
    module_name = f"src_models.{args.model}.train"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise HistoError(
                f"training code for {args.model!r} is not installed (module {module_name} missing)"
            ) from exc
        raise
    entry = getattr(module, "train_from_config_file", None)
    if entry is None:
        raise HistoError(f"{module_name} has no train_from_config_file(path, resume)")
    result = entry(config, args.resume)
    if result is not None:
        try:
            print(json.dumps(result, indent=2, default=str))
        except TypeError:
            print(result)
    return 0


def _train_own(args: argparse.Namespace) -> int:
    if args.model != "hovernet":
        raise HistoError("--data trains the nucleus model: napari-histo train hovernet --data DIR -o OUTDIR")
    if args.outdir is None:
        raise HistoError("--data needs -o OUTDIR (the model folder to write)")
    if not Path(args.data).is_dir():
        raise InputFileError(Path(args.data), "--data: not a folder")
    from napari_histo.provenance import write_run_json
    from src_models.hovernet.own_data import train_own

    colours = None
    if args.colours:
        from napari_histo.formats.colours import SedeenColourTable

        colours = SedeenColourTable.load(args.colours)
    summary = train_own(args.data, args.outdir, iterations=args.iterations, minutes=args.minutes, init=args.init,
                        mode=args.mode, mpp=args.mpp, resume=args.resume, colours=colours)
    write_run_json(args.outdir, "train", {k: (str(v) if isinstance(v, Path) else v)
                                          for k, v in vars(args).items() if k != "func"}, summary=summary)
    print(f"{len(summary['images'])} annotated images, types {summary['types']}; "
          f"{summary['iterations']} iterations -> model folder {args.outdir}")
    return 0
