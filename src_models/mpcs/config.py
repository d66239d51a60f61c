"""MPCS configuration, serialised as ``config.json`` next to the weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from napari_histo.jsonconfig import JsonConfig


@dataclass
class MPCSConfig(JsonConfig):
    """Pretraining settings. ``dataset``: ``"multimag"`` (Hagnifinder training images, absolute
    ``levels``) or ``"breakhis"`` (relative BreakHis zooms 40:100:200:400 of each image)."""

    backbone: str = "resnet_slim"
    width: int = 16
    dilate: tuple[bool, bool] = (False, False)
    strategy: str = "op"
    dataset: str = "multimag"
    levels: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
    patch_size: int = 96
    temperature: float = 0.1
    batch_size: int = 32
    lr: float = 1e-3
    iters: int = 200
    seed: int = 47
    data_root: str = "../shared/data"
    out_dir: str = "runs/mpcs"
    checkpoint_every: int = 25
    log_every: int = 10
    num_threads: int = 1
    #: "auto": one process per GPU (DistributedDataParallel) when several GPUs are present; "off".
    ddp: str = "auto"

    CONFIG_NAME: ClassVar[str] = "MPCS"
