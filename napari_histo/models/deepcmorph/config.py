"""Configuration of a DeepCMorph model, saved as ``config.json`` next to ``model.pt``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from napari_histo.jsonconfig import JsonConfig

#: Decoder widths of the published (B7) segmentation module.
B7_DECODER_WIDTHS = [512, 256, 128, 64]
#: Decoder widths used with the small backbones.
SMALL_DECODER_WIDTHS = [128, 64, 32, 32]


@dataclass
class DeepCMorphConfig(JsonConfig):
    """Network and inference contract of :class:`~napari_histo.models.deepcmorph.model.DeepCMorph`.

    Attributes
    ----------
    backbone : str
        EfficientNet variant of both encoders: "b7" (the published architecture, 2560-d
        features) or a small one for CPU ("b0": 1280-d, "slim": 640-d).
    num_classes : int
        Classifier outputs. 41, 32 and 9 select the head of the released checkpoints
        (``output_41``/``output_32``/``output_9``); any other value uses a generic ``output`` head.
        0 builds the nucleus module alone (no classification module): tiles then get nucleus maps
        and nucleus-module features, and tissue classes come from a few-shot head.
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
        Nucleus class maps (7 as published; 4 in the shipped nucleus module).
    seg_class_names : list[str]
        Name of each nucleus class map (the shipped module uses the coarse nucleus vocabulary:
        other, inflammatory, epithelial, spindle); empty when unknown (the released maps).
    tile_size : int
        Tile side (px) at ``mpp`` used by tile classification and fine-tuning.
    mpp : float or None
        Working resolution in µm/px; None means "use the image's native pixels".
    """

    CONFIG_NAME: ClassVar[str] = "DeepCMorph"
    UNKNOWN_KEYS: ClassVar[str] = "ignore"

    backbone: str = "b7"
    num_classes: int = 41
    class_names: list[str] = field(default_factory=list)
    dropout_rate: float = 0.0
    freeze_segmentation_module: bool = True
    freeze_classification_module: bool = False
    decoder_widths: list[int] | None = None
    num_seg_classes: int = 7
    seg_class_names: list[str] = field(default_factory=list)
    tile_size: int = 224
    mpp: float | None = None

    def resolved_decoder_widths(self) -> list[int]:
        if self.decoder_widths is not None:
            return list(self.decoder_widths)
        return list(B7_DECODER_WIDTHS if self.backbone == "b7" else SMALL_DECODER_WIDTHS)




