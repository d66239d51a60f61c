"""ResNet-18/34/50 and a slim CPU variant, written from the He et al. 2016 description.

Stem 7x7/2 conv, BN, ReLU, 3x3/2 max-pool; four stages of basic (18/34, slim) or bottleneck
(50, expansion 4) blocks; global average pooling. Kaiming-normal (fan_out) init, BN weight 1
and bias 0, as in the Hagnifinder reference. No pretrained weights are ever downloaded.
Adaptive pooling replaces ``AvgPool2d(7)`` so inputs other than 224 px also work (at 224 px the
two are identical). ``dilation=(False, d3, d4)``-style output-stride 8 is available for MPCS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet_slim")


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv3x3(cin, width, stride, first_dilation)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, cout, 1, dilation)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4) with a projection shortcut when needed."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, first_dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet feature extractor: ``forward(x) -> (B, out_features)`` pooled features.

    Parameters
    ----------
    block
        ``BasicBlock`` or ``Bottleneck``.
    layers
        Blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
    widths
        Stage widths before expansion, e.g. ``(64, 128, 256, 512)``.
    stem_width
        Channels of the 7x7 stem.
    dilate
        ``(stage3, stage4)``: replace the stride by dilation 2 and 4 (output stride 8).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: int = 64,
                 dilate: tuple[bool, bool] = (False, False)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = stem_width
        dilation = 1
        stages = []
        for i, (n_blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            first_dilation = dilation
            if i >= 2 and dilate[i - 2]:
                dilation *= 2
                stride = 1
            blocks = [block(cin, width, stride, dilation, first_dilation)]
            cin = width * block.expansion
            blocks += [block(cin, width, 1, dilation, dilation) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(B, out_features, h, w)`` before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_features(x)), 1)


def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2, 512-d features)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3, 512-d features)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (bottlenecks 3-4-6-3, 2048-d features), the Hagnifinder and MPCS backbone."""
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


def resnet_slim(width: int = 16, **kwargs) -> ResNet:
    """A slim ResNet for CPU training: one basic block per stage, widths w, 2w, 4w, 8w."""
    widths = (width, 2 * width, 4 * width, 8 * width)
    return ResNet(BasicBlock, (1, 1, 1, 1), widths=widths, stem_width=width, **kwargs)


def build_resnet(name: str, width: int = 16, dilate: tuple[bool, bool] = (False, False)) -> ResNet:
    """Build a ResNet by name (one of :data:`RESNET_NAMES`); ``width`` is for ``resnet_slim``."""
    if name == "resnet_slim":
        return resnet_slim(width, dilate=dilate)
    builders = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
    if name not in builders:
        raise ValueError(f"unknown backbone {name!r}; expected one of {RESNET_NAMES}")
    return builders[name](dilate=dilate)
