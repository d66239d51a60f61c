"""``napari-histo train MODEL --config FILE [--resume]``: train one of the trainable models;
``napari-histo patches DIR -o OUT``: HoVer-Net training patches and their preview.

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
                        help="with --data: 'default' (compact: fine-tune the shipped model), 'none' (random "
                             "weights) or a checkpoint / model folder (fast|original: an official HoVer-Net "
                             "checkpoint to fine-tune)")
    parser.add_argument("--mode", choices=["compact", "fast", "original"], default="compact",
                        help="with --data: the network: compact (fine-tunes the shipped model) or the official "
                             "HoVer-Net fast (256->164) / original (270->80) with its two-phase schedule")
    parser.add_argument("--encoder-weights", default=None, metavar="FILE",
                        help="with --mode fast|original: Preact-ResNet50 weights for the encoder (upstream's "
                             "ImageNet-ResNet50-Preact_pytorch.tar); phase 1 trains the decoders on it frozen")
    parser.add_argument("--schedule", choices=["auto", "two-phase", "one-phase"], default="auto",
                        help="with --mode fast|original: two phases (frozen encoder, then all layers), one, or "
                             "auto (two when the encoder was loaded from --encoder-weights or --init)")
    parser.add_argument("--work-mpp", type=float, default=None, metavar="MPP",
                        help="with --mode fast|original: µm/px the model learns at (default 0.25 = 40x; 0.5 "
                             "for a 20x model)")
    parser.add_argument("--batch-size", type=int, default=4, help="with --data: patches per step")
    parser.add_argument("--mpp", type=float, default=None,
                        help="with --data: µm/px of the annotated images (or of a patch folder without patches.json)")
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


def _colour_table(path: str | None):
    """The Sedeen pen colour table of ``--colours`` (None without one)."""
    if not path:
        return None
    from napari_histo.formats.colours import SedeenColourTable

    return SedeenColourTable.load(path)


def _parameters(args: argparse.Namespace) -> dict:
    """The command's arguments for ``run.json`` (paths as text)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}


def _train_own(args: argparse.Namespace) -> int:
    if args.model != "hovernet":
        raise HistoError("--data trains the nucleus model: napari-histo train hovernet --data DIR -o OUTDIR")
    if args.outdir is None:
        raise HistoError("--data needs -o OUTDIR (the model folder to write)")
    if not Path(args.data).is_dir():
        raise InputFileError(Path(args.data), "--data: not a folder")
    from napari_histo.provenance import write_run_json
    from src_models.hovernet.own_data import train_own

    summary = train_own(args.data, args.outdir, iterations=args.iterations, minutes=args.minutes, init=args.init,
                        mode=args.mode, mpp=args.mpp, resume=args.resume, colours=_colour_table(args.colours),
                        encoder_weights=args.encoder_weights, schedule=args.schedule, work_mpp=args.work_mpp,
                        batch_size=args.batch_size)
    write_run_json(args.outdir, "train", _parameters(args), summary=summary)
    print(f"{len(summary['images'])} annotated images, types {summary['types']}; "
          f"{summary['iterations']} iterations -> model folder {args.outdir}")
    return 0


def register_patches(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "patches",
        help="cut annotated images into HoVer-Net training patches, and preview them",
        description="Cut the annotated images of DIR (images with same-stem annotation files, as train --data "
        "reads) into the training patches of HoVer-Net's extract_patches: OUT/<image>_<NNN>.npy, int32 arrays "
        "(size, size, 5) = RGB, instance id, type id, with patches.json and type_info.json. With --preview, "
        "also a PNG grid of patches with nucleus outlines in their type colours (look before you train). "
        "train hovernet --data OUT trains on the patch folder.",
    )
    parser.add_argument("data", type=Path, help="folder of annotated images (or, with --preview-only, of patches)")
    parser.add_argument("-o", "--outdir", type=Path, default=None, help="patch folder to write")
    parser.add_argument("--size", type=int, default=540, help="patch side in px (upstream: 540)")
    parser.add_argument("--step", type=int, default=164, help="stride in px (upstream: 164)")
    parser.add_argument("--mpp", type=float, default=None, help="µm/px of the annotated images")
    parser.add_argument("--work-mpp", type=float, default=0.25, help="µm/px the patches are written at (0.25 = 40x)")
    parser.add_argument("--colours", default=None, help="Sedeen pen colour table JSON")
    parser.add_argument("--preview", type=Path, default=None, metavar="PNG", help="write a preview grid PNG")
    parser.add_argument("--preview-only", action="store_true", help="DATA is a patch folder: only draw --preview")
    parser.set_defaults(func=patches_handler)
    return parser


def patches_handler(args: argparse.Namespace) -> int:
    from napari_histo.provenance import write_run_json
    from src_models.hovernet.patches import extract_patches, load_patch_folder, write_preview

    if not Path(args.data).is_dir():
        raise InputFileError(Path(args.data), "not a folder")
    if args.preview_only:
        if args.preview is None:
            raise HistoError("--preview-only needs --preview PNG")
        folder = Path(args.data)
    else:
        if args.outdir is None:
            raise HistoError("give -o OUT (the patch folder to write), or --preview-only --preview PNG")
        summary = extract_patches(args.data, args.outdir, size=args.size, step=args.step, mpp=args.mpp,
                                  work_mpp=args.work_mpp, colours=_colour_table(args.colours))
        write_run_json(args.outdir, "patches", _parameters(args), summary=summary)
        print(f"{summary['patches']} patches of {summary['size']} px from {len(summary['images'])} images "
              f"-> {args.outdir}; types {summary['types']}")
        folder = Path(args.outdir)
    if args.preview is not None:
        tiles, names, _ = load_patch_folder(folder, args.mpp)
        write_preview(tiles, args.preview, names)
        print(f"preview of {min(16, len(tiles))} of {len(tiles)} patches -> {args.preview}")
    return 0
