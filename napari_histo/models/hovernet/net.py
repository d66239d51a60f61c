"""Official HoVer-Net architecture (``vqdang/hover_net`` ``net_desc.py``), clean-room.

Parameter names and shapes are exactly those of the official PyTorch model
(``shared/specs/hovernet_keys/``), so released checkpoints load with ``strict=True``. Modules
are registered under the official names, including the literal ``/`` ones (``conv0./.weight``,
``d0.units.0.conv1/bn.weight``, ``decoder.np.u3.dense.units.0.preact_bna/bn.weight``).

Modes (``models/hovernet/net_desc.py`` of https://github.com/vqdang/hover_net): ``original`` 270 -> 80 (valid 7×7 conv0, 5×5 decoder kernels) and
``fast`` 256 -> 164 (TF-SAME conv0, 3×3 decoder kernels). Input: NCHW RGB float 0..255 (the
model divides by 255). Output: ordered dict of logits ``tp`` (if typed), ``np``, ``hv``.

Public API
----------
- :class:`HoVerNet` -- the network (``mode``, ``nr_types``, ``input_size``, ``output_size``).
- :data:`MODE_SIZES` -- (input, output) patch sizes per mode.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HoVerNet", "MODE_SIZES", "TFSamePad", "UpSample2x"]

#: (input_size, output_size) per mode.
MODE_SIZES = {"original": (270, 80), "fast": (256, 164)}



def init_conv_bn_weights(module: nn.Module) -> None:
    """He-normal conv weights, zero biases, unit BatchNorm (the official HoVer-Net init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

class TFSamePad(nn.Module):
    """TensorFlow "SAME" zero padding for a square ``ksize``/``stride`` conv (uses H only)."""

    def __init__(self, ksize: int, stride: int):
        super().__init__()
        self.ksize, self.stride = ksize, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2]
        if size % self.stride == 0:
            pad = max(self.ksize - self.stride, 0)
        else:
            pad = max(self.ksize - (size % self.stride), 0)
        start = pad // 2
        end = pad - start
        return F.pad(x, (start, end, start, end), "constant", 0.0)


def crop_op(x: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """Centre crop by ``crop`` = (rows, cols) px in total: top/left ``c // 2``, rest bottom/right."""
    ct, cl = crop[0] // 2, crop[1] // 2
    cb, cr = crop[0] - ct, crop[1] - cl
    return x[:, :, ct : x.shape[2] - cb, cl : x.shape[3] - cr]


def crop_to_shape(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Centre-crop ``x`` to the spatial size of ``y``."""
    return crop_op(x, (x.shape[2] - y.shape[2], x.shape[3] - y.shape[3]))


class UpSample2x(nn.Module):
    """Nearest ×2 upsampling through the official constant 2×2 ones buffer ``unpool_mat``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("unpool_mat", torch.ones((2, 2), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        mat = self.unpool_mat.to(x.dtype)
        out = x[:, :, :, None, :, None] * mat[None, None, None, :, None, :]
        return out.reshape(b, c, h * 2, w * 2)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=1e-5)


class ResidualBlock(nn.Module):
    """Pre-activation bottleneck block: ``units`` (ModuleList), optional ``shortcut``, ``blk_bna``."""

    def __init__(self, in_ch: int, unit_ksize: list[int], unit_ch: list[int], unit_count: int, stride: int = 1):
        super().__init__()
        self.nr_unit = unit_count
        units = []
        unit_in = in_ch
        for idx in range(unit_count):
            layers: list[tuple[str, nn.Module]] = []
            if idx != 0:
                layers += [("preact/bn", _bn(unit_in)), ("preact/relu", nn.ReLU(inplace=True))]
            s = stride if idx == 0 else 1
            layers += [
                ("conv1", nn.Conv2d(unit_in, unit_ch[0], unit_ksize[0], stride=1, padding=0, bias=False)),
                ("conv1/bn", _bn(unit_ch[0])),
                ("conv1/relu", nn.ReLU(inplace=True)),
                ("conv2/pad", TFSamePad(unit_ksize[1], s)),
                ("conv2", nn.Conv2d(unit_ch[0], unit_ch[1], unit_ksize[1], stride=s, padding=0, bias=False)),
                ("conv2/bn", _bn(unit_ch[1])),
                ("conv2/relu", nn.ReLU(inplace=True)),
                ("conv3", nn.Conv2d(unit_ch[1], unit_ch[2], unit_ksize[2], stride=1, padding=0, bias=False)),
            ]
            units.append(nn.Sequential(OrderedDict(layers)))
            unit_in = unit_ch[-1]
        self.units = nn.ModuleList(units)
        if in_ch != unit_ch[-1] or stride != 1:
            self.shortcut = nn.Conv2d(in_ch, unit_ch[-1], 1, stride=stride, bias=False)
        else:
            self.shortcut = None
        self.blk_bna = nn.Sequential(OrderedDict([("bn", _bn(unit_in)), ("relu", nn.ReLU(inplace=True))]))

    def forward(self, x: torch.Tensor, freeze: bool = False) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        for unit in self.units:
            if self.training:
                with torch.set_grad_enabled(not freeze):
                    new = unit(x)
            else:
                new = unit(x)
            x = new + shortcut
            shortcut = x
        return self.blk_bna(x)


class DenseBlock(nn.Module):
    """Decoder dense block: valid convs, grouped (4) k×k conv, centre-crop + concat per unit."""

    def __init__(self, in_ch: int, unit_ksize: list[int], unit_ch: list[int], unit_count: int, split: int = 4):
        super().__init__()
        units = []
        unit_in = in_ch
        for _ in range(unit_count):
            units.append(
                nn.Sequential(
                    OrderedDict(
                        [
                            ("preact_bna/bn", _bn(unit_in)),
                            ("preact_bna/relu", nn.ReLU(inplace=True)),
                            ("conv1", nn.Conv2d(unit_in, unit_ch[0], unit_ksize[0], stride=1, padding=0, bias=False)),
                            ("conv1/bn", _bn(unit_ch[0])),
                            ("conv1/relu", nn.ReLU(inplace=True)),
                            ("conv2", nn.Conv2d(unit_ch[0], unit_ch[1], unit_ksize[1], groups=split,
                                                stride=1, padding=0, bias=False)),
                        ]
                    )
                )
            )
            unit_in += unit_ch[1]
        self.units = nn.ModuleList(units)
        self.blk_bna = nn.Sequential(OrderedDict([("bn", _bn(unit_in)), ("relu", nn.ReLU(inplace=True))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            new = unit(x)
            x = torch.cat([crop_to_shape(x, new), new], dim=1)
        return self.blk_bna(x)


def _decoder_branch(ksize: int, out_ch: int) -> nn.Sequential:
    u3 = nn.Sequential(OrderedDict([
        ("conva", nn.Conv2d(1024, 256, ksize, stride=1, padding=0, bias=False)),
        ("dense", DenseBlock(256, [1, ksize], [128, 32], 8, split=4)),
        ("convf", nn.Conv2d(512, 512, 1, stride=1, padding=0, bias=False)),
    ]))
    u2 = nn.Sequential(OrderedDict([
        ("conva", nn.Conv2d(512, 128, ksize, stride=1, padding=0, bias=False)),
        ("dense", DenseBlock(128, [1, ksize], [128, 32], 4, split=4)),
        ("convf", nn.Conv2d(256, 256, 1, stride=1, padding=0, bias=False)),
    ]))
    u1 = nn.Sequential(OrderedDict([
        ("conva/pad", TFSamePad(ksize, 1)),
        ("conva", nn.Conv2d(256, 64, ksize, stride=1, padding=0, bias=False)),
    ]))
    u0 = nn.Sequential(OrderedDict([
        ("bn", _bn(64)),
        ("relu", nn.ReLU(inplace=True)),
        ("conv", nn.Conv2d(64, out_ch, 1, stride=1, padding=0, bias=True)),
    ]))
    return nn.Sequential(OrderedDict([("u3", u3), ("u2", u2), ("u1", u1), ("u0", u0)]))


class HoVerNet(nn.Module):
    """HoVer-Net with the official layer names.

    Parameters
    ----------
    mode : "original" (270 -> 80) or "fast" (256 -> 164)
    nr_types : int or None -- type classes including background; None/0 = untyped (no ``tp``)
    freeze : bool -- phase-1 training: encoder units run without gradients (phase 1 of the official two-phase schedule)
    init_weights : bool -- Kaiming/BN initialisation; skip it when weights are loaded right after
    """

    def __init__(self, mode: str = "fast", nr_types: int | None = None, freeze: bool = False,
                 init_weights: bool = True):
        super().__init__()
        if mode not in MODE_SIZES:
            raise ValueError(f"mode must be one of {sorted(MODE_SIZES)}, got {mode!r}")
        self.mode = mode
        self.nr_types = int(nr_types) if nr_types else None
        self.freeze = freeze
        self.input_size, self.output_size = MODE_SIZES[mode]
        conv0 = [("/", nn.Conv2d(3, 64, 7, stride=1, padding=0, bias=False)),
                 ("bn", _bn(64)), ("relu", nn.ReLU(inplace=True))]
        if mode == "fast":
            conv0 = [("pad", TFSamePad(7, 1))] + conv0
        self.conv0 = nn.Sequential(OrderedDict(conv0))
        self.d0 = ResidualBlock(64, [1, 3, 1], [64, 64, 256], 3, stride=1)
        self.d1 = ResidualBlock(256, [1, 3, 1], [128, 128, 512], 4, stride=2)
        self.d2 = ResidualBlock(512, [1, 3, 1], [256, 256, 1024], 6, stride=2)
        self.d3 = ResidualBlock(1024, [1, 3, 1], [512, 512, 2048], 3, stride=2)
        self.conv_bot = nn.Conv2d(2048, 1024, 1, stride=1, padding=0, bias=False)
        ksize = 5 if mode == "original" else 3
        branches = [("np", _decoder_branch(ksize, 2)), ("hv", _decoder_branch(ksize, 2))]
        if self.nr_types:
            branches = [("tp", _decoder_branch(ksize, self.nr_types))] + branches
        self.decoder = nn.ModuleDict(OrderedDict(branches))
        self.upsample2x = UpSample2x()
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        init_conv_bn_weights(self)

    def forward(self, imgs: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """NCHW RGB 0..255 -> ordered dict of raw logits (``tp``, ``np``, ``hv``)."""
        imgs = imgs / 255.0
        if self.training:
            d0 = self.conv0(imgs)
            d0 = self.d0(d0, self.freeze)
            with torch.set_grad_enabled(not self.freeze):
                d1 = self.d1(d0)
                d2 = self.d2(d1)
                d3 = self.d3(d2)
            d3 = self.conv_bot(d3)
        else:
            d0 = self.d0(self.conv0(imgs))
            d1 = self.d1(d0)
            d2 = self.d2(d1)
            d3 = self.conv_bot(self.d3(d2))
        if self.mode == "original":
            d0 = crop_op(d0, (184, 184))
            d1 = crop_op(d1, (72, 72))
        else:
            d0 = crop_op(d0, (92, 92))
            d1 = crop_op(d1, (36, 36))
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, branch in self.decoder.items():
            u3 = branch[0](self.upsample2x(d3) + d2)
            u2 = branch[1](self.upsample2x(u3) + d1)
            u1 = branch[2](self.upsample2x(u2) + d0)
            out[name] = branch[3](u1)
        return out
