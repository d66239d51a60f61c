"""Train a nucleus model on the user's own annotated images (``train hovernet --data DIR``).

``DIR`` holds images with same-stem annotation files (QuPath GeoJSON with classifications, Sedeen
sessions typed by pen colour, ImageScope / ASAP XML with classes, HoVer-Net JSON; read by
:mod:`napari_histo.datasets.annotated`). The outlines become instance and type maps at the
network's resolution, the types one vocabulary named as the files name them, and the run
fine-tunes the shipped model (or starts from random weights, or from a checkpoint): its type head
starts, for each of the user's classes, from the shipped class of the same coarse class
(:mod:`napari_histo.schema.vocabulary`: "lymphocyte" from "inflammatory"), else from the
background channel. The output folder is a model ``segment --model OUTDIR``, the Nuclei panel and
``evaluate`` accept directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.utils import HistoError, InputFileError
from src_models.hovernet.config import TrainConfig
from src_models.hovernet.patches import own_tiles, type_colours, vocabulary_names

#: Architectures ``--mode`` names: the compact network, or the official HoVer-Net's two modes.
MODES = ("compact", "fast", "original")


def shipped_weights_dir() -> Path:
    from napari_histo.utils import resource_path

    return resource_path("weights", "hovernet_compact")


def head_channels(new_names: list[str], old_names: list[str]) -> list[int]:
    """For each new type channel, the old channel it starts from: same name, else same coarse
    class, else background (0)."""
    from napari_histo.schema.vocabulary import coarse_class

    old = [n.lower() for n in old_names]
    out = [0]
    for name in new_names[1:]:
        low = name.lower()
        if low in old:
            out.append(old.index(low))
            continue
        coarse = coarse_class(name)
        match = next((i for i, n in enumerate(old) if i > 0 and coarse and coarse_class(n) == coarse), 0)
        out.append(match)
    return out


def start_model_config(init: str) -> dict | None:
    """The ``config.json`` of the model a run starts from (``init``: "default", a model folder or
    a checkpoint file beside one); None for random weights or a checkpoint without a config."""
    if init == "none":
        return None
    if init == "default":
        folder = shipped_weights_dir()
    else:
        path = Path(init)
        if not path.exists():
            raise InputFileError(path, "--init: no such checkpoint or model folder")
        folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    return json.loads(config.read_text(encoding="utf-8")) if config.is_file() else None


def own_config(vocabulary: dict[str, int], out: Path, iterations: int, minutes: float, init: str,
               threads: int = 2, batch_size: int = 4, base: TrainConfig | None = None,
               start: dict | None = None) -> TrainConfig:
    """The recipe: the shipped architecture (``base``, default the shipped ``train_config.json``)
    with the user's type head, fine-tuning settings. ``start`` is the starting model's config
    (default read by :func:`start_model_config`)."""
    from napari_histo.models.hovernet.config import CompactConfig

    base = base or TrainConfig.load(shipped_weights_dir() / "train_config.json")
    start = start if start is not None else start_model_config(init)
    names = vocabulary_names(vocabulary)
    model = CompactConfig.from_dict({
        **base.model.to_dict(),
        "num_types": len(names),
        "type_names": names,
        "type_colours": type_colours(names),
        "unified_ids": [[i] for i in range(len(names))],
    })
    cfg = TrainConfig(model=model, out_dir=str(out / "training"), patch_size=128, batch_size=batch_size,
                      lr=2e-4 if init != "none" else 1e-3, max_iters=int(iterations), max_minutes=float(minutes),
                      ckpt_every_s=120.0, threads=threads, augment=True, jpeg_p=0.3, val_monuseg=[],
                      sources=[], type_scheme="coarse")
    if init != "none":
        path = shipped_weights_dir() if init == "default" else Path(init)
        cfg.init_weights = str(path / "model.pt" if path.is_dir() else path)
        if start is not None:
            cfg.init_type_channels = head_channels(names, start["type_names"])
    return cfg


def train_own(data: str | Path, out: str | Path, **kwargs: Any) -> dict:
    """Train on the annotated images of ``data``; ``out`` becomes a model folder (and keeps the
    checkpoints in ``out/training`` so ``resume`` continues). See :func:`train_own_steps`."""
    from src_models.hovernet.train import run_to_end

    return run_to_end(train_own_steps(data, out, **kwargs))


def train_own_steps(data: str | Path, out: str | Path, *, iterations: int = 500, minutes: float = 60.0,
                    init: str = "default", mode: str = "compact", mpp: float | None = None, resume: bool = False,
                    threads: int = 2, colours: Any = None, encoder_weights: str | None = None,
                    schedule: str = "auto", work_mpp: float | None = None, batch_size: int = 4):
    """:func:`train_own` as a generator of progress records (training iterations), for a
    cancellable job; returns the summary. A closed generator keeps its checkpoint (resumable).

    ``mode`` ``"compact"`` fine-tunes the shipped network; ``"fast"`` / ``"original"`` train the
    official HoVer-Net with its two-phase schedule (:mod:`src_models.hovernet.official_train`),
    its encoder from ``encoder_weights`` (Preact-ResNet50) or ``init`` (an official checkpoint), at
    ``work_mpp`` µm/px (default 0.25, the 40× of upstream; 0.5 trains a 20× model).
    """
    if mode not in MODES:
        raise HistoError(f"--mode must be one of {', '.join(MODES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "compact":
        if encoder_weights:
            raise HistoError("--encoder-weights applies to the official HoVer-Net (--mode fast or original)")
        record, tiles, vocabulary = yield from _train_compact(data, out, iterations, minutes, init, mpp, resume,
                                                              threads, colours, work_mpp, batch_size)
    else:
        record, tiles, vocabulary = yield from _train_official(data, out, iterations, minutes, init, mode, mpp,
                                                               resume, threads, colours, encoder_weights,
                                                               schedule, work_mpp, batch_size)
    summary = {"data": str(data), "images": sorted({t.name for t in tiles}), "types": vocabulary, "init": init,
               "mode": mode, "mpp": mpp, "iterations": record.get("iter"), "model_folder": str(out),
               "encoder_weights": encoder_weights, "final": record}
    with open(out / "training_summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def _train_compact(data, out: Path, iterations, minutes, init, mpp, resume, threads, colours, work_mpp, batch_size):
    from src_models.hovernet.ship import ship
    from src_models.hovernet.train import train_steps

    base = TrainConfig.load(shipped_weights_dir() / "train_config.json")
    if work_mpp is not None and abs(work_mpp - base.model.network_mpp) > 1e-9:
        raise HistoError(f"the compact network works at {base.model.network_mpp:g} µm/px; --work-mpp applies to "
                         "the official HoVer-Net (--mode fast or original)")
    tiles, vocabulary = own_tiles(data, mpp, base.model.network_mpp, colours)
    if not vocabulary:
        vocabulary = {"nucleus": 1}
    start = start_model_config(init)  # read once: type names for the head, inference settings to keep
    cfg = own_config(vocabulary, out, iterations, minutes, init, threads, batch_size=batch_size, base=base,
                     start=start)
    record = yield from train_steps(cfg, resume=resume, tiles=tiles)
    ship(cfg.out_dir, out, validation=None, model_cfg=inference_config(cfg, start))
    return record, tiles, vocabulary


def inference_config(cfg: TrainConfig, start: dict | None):
    """The new model's ``config.json``: the inference settings of the model it started from
    (``start``, its config: post-processing thresholds tuned with its weights, typing rule,
    patch limits), else the shipped defaults (random weights, or a start without them)."""
    from src_models.hovernet.ship import shipped_config

    ref = start or {}
    if not ref.get("internal_downsample"):
        return shipped_config(cfg)
    return shipped_config(cfg, downsample=int(ref["internal_downsample"]), postproc=ref.get("postproc"),
                          postproc_at_network_mpp=bool(ref.get("postproc_at_network_mpp", True)),
                          network_postproc=ref.get("network_postproc"), max_tile_px=int(ref.get("max_tile_px", 640)),
                          type_rule=str(ref.get("type_rule", "nucleus")))


def _train_official(data, out: Path, iterations, minutes, init, mode, mpp, resume, threads, colours,
                    encoder_weights, schedule, work_mpp, batch_size):
    from src_models.hovernet.official_train import (
        WEIGHTS_NAME,
        OfficialTrainConfig,
        Phase,
        train_official_steps,
    )

    work_mpp = 0.25 if work_mpp is None else float(work_mpp)
    if not work_mpp > 0:
        raise HistoError(f"--work-mpp must be positive, got {work_mpp}")
    tiles, vocabulary = own_tiles(data, mpp, work_mpp, colours)
    names = vocabulary_names(vocabulary)
    init_weights = None
    if init not in ("default", "none"):
        path = Path(init)
        if not path.exists():
            raise InputFileError(path, "--init: no such HoVer-Net checkpoint")
        if path.is_dir():
            candidates = [path / WEIGHTS_NAME, *sorted(path.glob("*.tar")), *sorted(path.glob("*.pth"))]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise InputFileError(path, "--init: the folder holds no HoVer-Net checkpoint (.tar / .pth)")
            path = found
        init_weights = str(path)
    first = max(1, int(iterations) // 2)
    phases = [Phase(iterations=first, freeze_encoder=True, lr=1e-4, batch_size=batch_size),
              Phase(iterations=max(1, int(iterations) - first), freeze_encoder=False, lr=1e-4,
                    batch_size=max(1, batch_size // 2))]
    cfg = OfficialTrainConfig(mode=mode, type_names=names, type_colours=type_colours(names),
                              mpp=work_mpp, phases=phases, schedule=schedule, encoder_weights=encoder_weights,
                              init_weights=init_weights, out_dir=str(out), max_minutes=float(minutes),
                              ckpt_every_s=120.0, threads=threads)
    record = yield from train_official_steps(cfg, tiles, resume=resume)
    return record, tiles, vocabulary


def write_annotated_region(rgb: np.ndarray, table, origin: tuple[int, int], folder: str | Path,
                           name: str = "region") -> Path:
    """An annotated folder of one image: ``rgb`` (its pixel (0, 0) at level-0 ``origin``) and the
    nuclei of ``table`` moved into its coordinates, as ``<name>.png`` + ``<name>.geojson``."""
    from PIL import Image

    from napari_histo.formats.geojson import write_geojson
    from napari_histo.schema.table import offset_table

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    local = offset_table(table, -origin[0], -origin[1])
    Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)).save(folder / f"{name}.png")
    write_geojson(local, folder / f"{name}.geojson")
    return folder
