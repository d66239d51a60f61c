"""MPCS encoder + projection head (Linear-BN-ReLU-Linear-BN(no affine)-L2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_histo.models.backbones import build_resnet
from napari_histo.models.backbones.efficientnet import VARIANTS, EfficientNet


class EfficientNetEncoder(nn.Module):
    """An EfficientNet's pooled features as an encoder (``out_features``: 1408 for B2, the
    MPCS paper's other encoder beside ResNet-50)."""

    def __init__(self, variant: str = "b2") -> None:
        super().__init__()
        self.net = EfficientNet(variant, num_classes=0)
        self.out_features = self.net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def build_encoder(backbone: str, width: int = 16, dilate: tuple[bool, bool] = (False, False)) -> nn.Module:
    """A ResNet (``resnet18/34/50``, ``resnet_slim``) or an EfficientNet (``efficientnet_b0`` ...
    ``efficientnet_b7``; ``efficientnet_b2`` as in the MPCS paper)."""
    if backbone.startswith("efficientnet_"):
        variant = backbone.split("_", 1)[1]
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet {backbone!r}; choose from "
                             f"{', '.join('efficientnet_' + v for v in sorted(VARIANTS))}")
        return EfficientNetEncoder(variant)
    return build_resnet(backbone, width=width, dilate=dilate)


def head_dims(in_features: int) -> tuple[int, int]:
    """(hidden, out): 1024, 128 for the 2048-d ResNet-50; the same 1/2 and 1/16 ratios
    (out at least 32) for narrower backbones."""
    if in_features == 2048:
        return 1024, 128
    return max(in_features // 2, 32), max(in_features // 16, 32)


class ProjectionHead(nn.Module):
    """Linear(no bias) -> BN -> ReLU -> Linear(no bias) -> BN(affine=False) -> L2 normalise."""

    def __init__(self, in_features: int, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class MPCSModel(nn.Module):
    """Encoder (a ResNet or an EfficientNet, :func:`build_encoder`) and projection head;
    ``forward(x) -> (B, out)`` unit embeddings."""

    def __init__(self, backbone: str = "resnet50", width: int = 16,
                 dilate: tuple[bool, bool] = (False, False)) -> None:
        super().__init__()
        self.encoder = build_encoder(backbone, width=width, dilate=dilate)
        hidden, out = head_dims(self.encoder.out_features)
        self.head = ProjectionHead(self.encoder.out_features, hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
