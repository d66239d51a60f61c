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
        help="train a model from a JSON config (checkpoints, resumable)",
        description="Train a model of src_models from a JSON config. Progress, checkpoints and the "
        "final weights go to the output folder named in the config.",
    )
    parser.add_argument("model", choices=TRAINABLE_MODELS, help="model family to train")
    parser.add_argument("--config", required=True, type=Path, help="training config JSON")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
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
