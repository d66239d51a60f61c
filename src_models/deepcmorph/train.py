"""``napari-histo train deepcmorph --config FILE``: fine-tuning from a JSON config.

The config holds the fields of :class:`~src_models.deepcmorph.finetune.FinetuneConfig`;
``data`` and ``out_dir`` relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_histo.utils import InputFileError
from src_models.deepcmorph.finetune import FinetuneConfig, finetune


def load_config(path: str | Path):
    """Read a fine-tuning JSON config, resolving relative paths against its folder."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(path, f"cannot read JSON config ({exc})") from exc
    try:
        cfg = FinetuneConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise InputFileError(path, str(exc)) from exc
    if not cfg.data:
        raise InputFileError(path, "config needs 'data' (folder-per-class root or manifest CSV)")
    for name in ("data", "out_dir"):
        value = Path(getattr(cfg, name)).expanduser()
        if not value.is_absolute():
            setattr(cfg, name, str((path.parent / value).resolve()))
    return cfg


def train_from_config_file(path: str | Path, resume: bool = False) -> dict[str, Any]:
    """Run the training described by ``path``: the nucleus module for a config with
    ``"task": "nuclei"`` (:mod:`src_models.deepcmorph.nuclei`), else tile fine-tuning; with
    ``resume`` continue from checkpoints."""
    from napari_histo.jsonconfig import read_json_object

    if read_json_object(path).get("task") == "nuclei":
        from src_models.deepcmorph.nuclei import load_nucleus_config, train_nucleus_module

        return train_nucleus_module(load_nucleus_config(path), resume=resume)
    cfg = load_config(path)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "train.log", "a", encoding="utf-8")  # noqa: SIM115

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    try:
        return finetune(cfg, resume=resume, log=log)
    finally:
        log_file.close()


if __name__ == "__main__":  # pragma: no cover
    import sys

    train_from_config_file(sys.argv[1], resume="--resume" in sys.argv)
