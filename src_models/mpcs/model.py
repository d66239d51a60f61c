"""MPCS encoder + projection head (Linear-BN-ReLU-Linear-BN(no affine)-L2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_histo.models.backbones import build_resnet


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
    """Encoder (a ResNet) and projection head; ``forward(x) -> (B, out)`` unit embeddings."""

    def __init__(self, backbone: str = "resnet50", width: int = 16,
                 dilate: tuple[bool, bool] = (False, False)) -> None:
        super().__init__()
        self.encoder = build_resnet(backbone, width=width, dilate=dilate)
        hidden, out = head_dims(self.encoder.out_features)
        self.head = ProjectionHead(self.encoder.out_features, hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
