"""Image backbones defined from scratch (no torchvision): ResNets and, separately, EfficientNets.

Each backbone maps ``(B, 3, H, W)`` to a ``(B, C)`` pooled feature; ``.out_features`` is ``C``.
"""

from __future__ import annotations

from napari_histo.models.backbones.resnet import (
    RESNET_NAMES,
    ResNet,
    build_resnet,
    resnet18,
    resnet34,
    resnet50,
    resnet_slim,
)

__all__ = ["RESNET_NAMES", "ResNet", "build_resnet", "resnet18", "resnet34", "resnet50", "resnet_slim"]
