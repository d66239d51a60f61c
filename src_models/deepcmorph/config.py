"""Configuration of a DeepCMorph model, saved as ``config.json`` next to ``model.pt``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: Decoder widths of the published (B7) segmentation module.
B7_DECODER_WIDTHS = [512, 256, 128, 64]
#: Decoder widths used with the small backbones.
SMALL_DECODER_WIDTHS = [128, 64, 32, 32]


@dataclass
class DeepCMorphConfig:
    """Network and inference contract of :class:`~src_models.deepcmorph.model.DeepCMorph`.

    Attributes
    ----------
    backbone : str
        EfficientNet variant of both encoders: "b7" (the published architecture, 2560-d
        features) or a small one for CPU ("b0": 1280-d, "slim": 640-d).
    num_classes : int
        Classifier outputs. 41, 32 and 9 select the head of the released checkpoints
        (``output_41``/``output_32``/``output_9``); any other value uses a generic ``output`` head.
    class_names : list[str]
        Display name per class (index order of the logits).
    dropout_rate : float
        Dropout on the pooled features before the head (0 disables it).
    freeze_segmentation_module : bool
        True (default, as published): the nuclei/class-map module is frozen. False: all trainable.
    freeze_classification_module : bool
        True: only the final linear layer of the classifier trains.
    decoder_widths : list[int] or None
        Widths of the four UNet decoder stages; None picks 512/256/128/64 for B7 and
        128/64/32/32 otherwise.
    num_seg_classes : int
        Nucleus class maps (7 as published).
    tile_size : int
        Tile side (px) at ``mpp`` used by tile classification and fine-tuning.
    mpp : float or None
        Working resolution in µm/px; None means "use the image's native pixels".
    """

    backbone: str = "b7"
    num_classes: int = 41
    class_names: list[str] = field(default_factory=list)
    dropout_rate: float = 0.0
    freeze_segmentation_module: bool = True
    freeze_classification_module: bool = False
    decoder_widths: list[int] | None = None
    num_seg_classes: int = 7
    tile_size: int = 224
    mpp: float | None = None

    def resolved_decoder_widths(self) -> list[int]:
        if self.decoder_widths is not None:
            return list(self.decoder_widths)
        return list(B7_DECODER_WIDTHS if self.backbone == "b7" else SMALL_DECODER_WIDTHS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeepCMorphConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, path: str | Path) -> None:
        from napari_histo.utils import atomic_write

        with atomic_write(path) as fh:
            json.dump(self.to_dict(), fh, indent=2)

    @classmethod
    def load(cls, path: str | Path) -> DeepCMorphConfig:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))
