"""EfficientNet (B0-B7 and slimmer variants), written from the paper, torch only.

Module names follow the common PyTorch layout (``features.<stage>.<block>.block.<layer>``,
``Conv2d``/``BatchNorm2d``/activation as indices ``0``/``1``/``2`` of each conv unit), so that
state dicts saved from EfficientNets with that layout load without renaming, and so that
skip-connection nodes such as ``features.2.0.block.0`` (the expansion conv of the first block of
stage 2) can be addressed by name.

Tan M, Le QV. "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

#: Base (B0) stages: (expand ratio, kernel, stride, in channels, out channels, layers).
BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

#: Named variants: (width multiplier, depth multiplier, dropout, BatchNorm eps).
VARIANTS: dict[str, tuple[float, float, float, float]] = {
    "b0": (1.0, 1.0, 0.2, 1e-5),
    "b1": (1.0, 1.1, 0.2, 1e-5),
    "b2": (1.1, 1.2, 0.3, 1e-5),
    "b3": (1.2, 1.4, 0.3, 1e-5),
    "b4": (1.4, 1.8, 0.4, 1e-5),
    "b5": (1.6, 2.2, 0.4, 1e-3),
    "b6": (1.8, 2.6, 0.5, 1e-3),
    "b7": (2.0, 3.1, 0.5, 1e-3),
    # CPU-friendly: half width, half depth (about 0.7 M parameters, 640-d features).
    "slim": (0.5, 0.5, 0.2, 1e-5),
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (never below 90 % of it)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclass(frozen=True)
class StageSpec:
    """One stage after width/depth scaling."""

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    layers: int


def scaled_stages(width_mult: float, depth_mult: float) -> list[StageSpec]:
    """The seven MBConv stages of a scaled EfficientNet."""
    return [
        StageSpec(e, k, s, make_divisible(cin * width_mult), make_divisible(cout * width_mult),
                  int(math.ceil(n * depth_mult)))
        for e, k, s, cin, cout, n in BASE_STAGES
    ]


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation (indices 0, 1, 2)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 norm: type[nn.Module] | partial = nn.BatchNorm2d, act: type[nn.Module] | None = nn.SiLU):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            norm(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """Channel attention: global pool -> 1x1 reduce -> SiLU -> 1x1 expand -> sigmoid gate."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


class StochasticDepth(nn.Module):
    """Drop the residual branch per sample with probability ``p`` during training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [expand 1x1] -> depthwise kxk -> SE -> project 1x1 (+ residual)."""

    def __init__(self, cin: int, cout: int, expand_ratio: int, kernel: int, stride: int,
                 drop_prob: float, norm: type[nn.Module] | partial):
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        expanded = make_divisible(cin * expand_ratio)
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvNormAct(cin, expanded, 1, norm=norm))
        layers.append(ConvNormAct(expanded, expanded, kernel, stride, groups=expanded, norm=norm))
        layers.append(SqueezeExcitation(expanded, max(1, cin // 4)))
        layers.append(ConvNormAct(expanded, cout, 1, norm=norm, act=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_prob)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(nn.Module):
    """EfficientNet feature extractor and classifier.

    Parameters
    ----------
    variant : str
        One of :data:`VARIANTS` ("b0" ... "b7", "slim").
    in_channels : int
        Input channels of the stem (3 for RGB).
    num_classes : int
        Classifier outputs; 0 keeps only the pooled features (``classifier`` is Identity).
    stochastic_depth_prob : float
        Maximum residual drop probability, linearly increasing over the blocks.

    Attributes
    ----------
    features : nn.Sequential
        Index 0 the stem, 1-7 the MBConv stages, 8 the 1x1 head conv (``num_features`` channels).
    num_features : int
        Width of the pooled feature vector (1280 for B0, 2560 for B7, 640 for "slim").
    """

    def __init__(self, variant: str = "b0", in_channels: int = 3, num_classes: int = 1000,
                 stochastic_depth_prob: float = 0.2, dropout: float | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet variant {variant!r}; choose from {sorted(VARIANTS)}")
        width, depth, default_dropout, eps = VARIANTS[variant]
        norm = partial(nn.BatchNorm2d, eps=eps, momentum=0.01 if eps == 1e-3 else 0.1)
        stages = scaled_stages(width, depth)
        self.variant = variant
        stem = stages[0].in_channels
        layers: list[nn.Module] = [ConvNormAct(in_channels, stem, 3, 2, norm=norm)]
        total = sum(s.layers for s in stages)
        block_id = 0
        for spec in stages:
            blocks = []
            for i in range(spec.layers):
                cin = spec.in_channels if i == 0 else spec.out_channels
                stride = spec.stride if i == 0 else 1
                blocks.append(MBConv(cin, spec.out_channels, spec.expand_ratio, spec.kernel, stride,
                                     stochastic_depth_prob * block_id / total, norm))
                block_id += 1
            layers.append(nn.Sequential(*blocks))
        last_in = stages[-1].out_channels
        self.num_features = 4 * last_in
        layers.append(ConvNormAct(last_in, self.num_features, 1, norm=norm))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        p = default_dropout if dropout is None else dropout
        if num_classes > 0:
            self.classifier: nn.Module = nn.Sequential(nn.Dropout(p), nn.Linear(self.num_features, num_classes))
        else:
            self.classifier = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming (fan_out) convs, unit BatchNorm, uniform linear layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, flattened features (B, num_features)."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def skip_channels(variant: str) -> dict[str, int]:
    """Channels of the expansion conv of the first block of stages 2, 3, 4 and 6."""
    width, depth, _, _ = VARIANTS[variant]
    stages = scaled_stages(width, depth)
    return {f"features.{i}.0.block.0": make_divisible(stages[i - 1].in_channels * stages[i - 1].expand_ratio)
            for i in (2, 3, 4, 6)}
