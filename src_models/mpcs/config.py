"""MPCS configuration, serialised as ``config.json`` next to the weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class MPCSConfig:
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

    def to_json(self, path: str | Path) -> None:
        from napari_histo.utils import atomic_write

        with atomic_write(path) as fh:
            json.dump(asdict(self), fh, indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> MPCSConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MPCS config keys: {sorted(unknown)}")
        data = dict(data)
        for key in ("dilate", "levels"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> MPCSConfig:
        with open(path) as fh:
            return cls.from_dict(json.load(fh))
