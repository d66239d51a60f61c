"""CompactHoVerNet: a small residual U-Net encoder with HoVer-Net's three decoder branches.

Same I/O contract as the official HoVer-Net (Graham et al. 2019, Medical Image Analysis 58:101563;
https://github.com/vqdang/hover_net) so the same post-processing
applies: input NCHW RGB float in 0..255 (divided by 255 inside ``forward``), output a dict of
``np`` (2-ch logits), ``hv`` (2-ch, x then y, regressed to [-1, 1]) and ``tp`` (``num_types``
logits, 0 = background). Convolutions use zero "same" padding; ``forward`` removes a margin of
``(input_size - output_size) // 2`` px per side, so an ``H×W`` input yields
``(H - 2m)×(W - 2m)`` maps, as the official model returns its centre crop.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from napari_histo.models.hovernet.config import CompactConfig
from napari_histo.models.hovernet.net import init_conv_bn_weights
from napari_histo.schema.types import TypeInfo
from napari_histo.utils import InputFileError

# Lazy imports: pandas is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResBlock(nn.Module):
    """Basic residual block (3×3 conv-BN-ReLU, 3×3 conv-BN, + shortcut, ReLU)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class DecoderBranch(nn.Module):
    """One decoder branch: nearest up ×2, 1×1 projection, summed skip, 3×3 conv per level."""

    def __init__(self, enc_widths: list[int], dec_widths: list[int], out_ch: int):
        super().__init__()
        levels = len(enc_widths)
        self.proj = nn.ModuleList()
        self.skip = nn.ModuleList()
        self.fuse = nn.ModuleList()
        cin = enc_widths[-1]
        for lvl in range(levels - 2, -1, -1):
            w = dec_widths[lvl]
            self.proj.append(nn.Conv2d(cin, w, 1, bias=False))
            self.skip.append(
                nn.Identity() if enc_widths[lvl] == w else nn.Conv2d(enc_widths[lvl], w, 1, bias=False)
            )
            self.fuse.append(_conv_bn_relu(w, w))
            cin = w
        self.head = nn.Conv2d(cin, out_ch, 1, bias=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for i, lvl in enumerate(range(len(feats) - 2, -1, -1)):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.proj[i](x) + self.skip[i](feats[lvl])
            x = self.fuse[i](x)
        return self.head(x)


class CompactHoVerNet(nn.Module):
    """Compact three-branch (np / hv / tp) nucleus segmentation network.

    Parameters
    ----------
    cfg : CompactConfig
        Widths, blocks, number of types and the input/output crop contract.
    """

    def __init__(self, cfg: CompactConfig):
        super().__init__()
        self.cfg = cfg
        widths = list(cfg.widths)
        dec = list(cfg.decoder_widths or widths)
        if len(cfg.blocks) != len(widths):
            raise ValueError("config.blocks and config.widths must have the same length")
        self.stride = 2 ** (len(widths) - 1)
        self.margin = max(0, (cfg.input_size - cfg.output_size) // 2)
        self.stem = _conv_bn_relu(3, widths[0])
        self.levels = nn.ModuleList()
        cin = widths[0]
        for lvl, (w, n) in enumerate(zip(widths, cfg.blocks, strict=True)):
            blocks = [ResBlock(cin, w, stride=1 if lvl == 0 else 2)]
            blocks += [ResBlock(w, w) for _ in range(max(0, n - 1))]
            self.levels.append(nn.Sequential(*blocks))
            cin = w
        self.decoders = nn.ModuleDict({"np": DecoderBranch(widths, dec, 2), "hv": DecoderBranch(widths, dec, 2)})
        if cfg.num_types > 0:
            self.decoders["tp"] = DecoderBranch(widths, dec, cfg.num_types)
        self._init_weights()

    def _init_weights(self) -> None:
        init_conv_bn_weights(self)

    @classmethod
    def from_config(cls, cfg: CompactConfig | dict) -> CompactHoVerNet:
        """Build the network from a :class:`CompactConfig` (or its dict form)."""
        if isinstance(cfg, dict):
            cfg = CompactConfig.from_dict(cfg.get("model", cfg))
        return cls(cfg)

    def forward(self, imgs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict np/hv/tp maps for NCHW RGB 0..255 input; borders of ``margin`` px are cut."""
        x = imgs / 255.0
        h, w = x.shape[-2:]
        d = max(1, int(getattr(self.cfg, "internal_downsample", 1)))
        mult = self.stride * d
        ph, pw = (-h) % mult, (-w) % mult
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        if d > 1:
            x = F.avg_pool2d(x, d)
        x = self.stem(x)
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        m = self.margin
        out: dict[str, torch.Tensor] = {}
        for name, branch in self.decoders.items():
            y = branch(feats)
            if d > 1:
                y = F.interpolate(y, scale_factor=float(d), mode="bilinear", align_corners=False)
            y = y[..., :h, :w]
            out[name] = y[..., m : h - m, m : w - m] if m else y
        return out


def count_macs(model: CompactHoVerNet, size: int = 256) -> int:
    """Multiply-accumulates of convolutions for one ``size``² patch (forward hooks, exact for convs)."""
    total = 0

    def hook(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += int(out.numel() // out.shape[0]) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total


def network_config(cfg: CompactConfig) -> CompactConfig:
    """The same network seen at its own resolution: ``internal_downsample`` 1, ``mpp`` =
    ``network_mpp``, patch sizes divided by the factor (the weights are unchanged)."""
    d = max(1, int(cfg.internal_downsample))
    if d == 1:
        return cfg
    return CompactConfig.from_dict({**cfg.to_dict(), "mpp": cfg.network_mpp, "internal_downsample": 1,
                                    "input_size": cfg.input_size // d, "output_size": cfg.output_size // d})


def load_compact(folder: str | Path, device: str = "cpu",
                 at_network_mpp: bool = False) -> tuple[CompactHoVerNet, CompactConfig]:
    """Load ``config.json`` + ``model.pt`` (state_dict, float16 or float32) from a weights folder.

    The returned config is always the folder's; with ``at_network_mpp`` the network is built
    from :func:`network_config` (no internal pooling / upsampling), for callers that resample
    themselves.
    """
    folder = Path(folder)
    cfg = CompactConfig.load(folder / "config.json")
    model = CompactHoVerNet(network_config(cfg) if at_network_mpp else cfg)
    wpath = folder / "model.pt"
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InputFileError(wpath, "weights file not found") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputFileError(wpath, f"weights do not match config.json: {exc}") from exc
    model.eval().to(device)
    return model, cfg


def segmenter_post_params(cfg: CompactConfig) -> dict:
    """``HoverPostParams`` fields for the grid the watershed runs on (see ``postproc_at_network_mpp``)."""
    from napari_histo.nuclei.postproc import HoverPostParams

    known = {f.name for f in fields(HoverPostParams)}
    post = {k: v for k, v in (cfg.postproc or {}).items() if k in known}
    if not (cfg.postproc_at_network_mpp and cfg.internal_downsample > 1):
        return post
    if cfg.network_postproc:
        return {k: v for k, v in cfg.network_postproc.items() if k in known}
    scaled = asdict(HoverPostParams.for_mpp(cfg.network_mpp))
    scaled.update({k: post[k] for k in ("np_threshold", "marker_threshold") if k in post})
    return scaled


def compact_segmenter(folder: str | Path, device: str | None = None, name: str | None = None, **kwargs):
    """A ``HoverNetSegmenter`` over a compact weights folder, set up as its ``config.json`` says.

    Applies the shipped post-processing constants, the type vocabulary (``type_info.json`` or
    the config's names/colours), the coarse-grid post-processing shortcut
    (``postproc_at_network_mpp``), the patch size limit (``max_tile_px``), the mirrored
    second pass (``test_time_flip``) and the typing rule (``type_rule``). Keyword arguments
    override the segmenter's (e.g. ``post_params``, ``batch_size``).
    """
    from napari_histo.nuclei.hovernet_segmenter import HoverNetSegmenter
    from napari_histo.nuclei.postproc import HoverPostParams

    folder = Path(folder)
    cfg = CompactConfig.load(folder / "config.json")
    d = max(1, int(cfg.internal_downsample))
    coarse = bool(cfg.postproc_at_network_mpp) and d > 1
    model, cfg = load_compact(folder, device=device or "cpu", at_network_mpp=coarse)
    num_types = int(cfg.num_types or 0)
    type_info = None
    if num_types > 1:
        ti_path = folder / "type_info.json"
        if ti_path.exists():
            type_info = TypeInfo.load(ti_path)
        elif cfg.type_names:
            type_info = TypeInfo(dict(enumerate(cfg.type_names)),
                                 {i: tuple(c) for i, c in enumerate(cfg.type_colours or [])})
    if "post_params" not in kwargs:
        kwargs["post_params"] = HoverPostParams(**segmenter_post_params(cfg))
    net = network_config(cfg) if coarse else cfg
    if coarse:
        kwargs.setdefault("work_downsample", d)
    if cfg.max_tile_px:
        kwargs.setdefault("max_input_size", cfg.max_tile_px * (1 if coarse else d))
    kwargs.setdefault("test_time_flip", bool(cfg.test_time_flip))
    kwargs.setdefault("type_rule", str(cfg.type_rule))
    return HoverNetSegmenter(model, net.input_size, net.output_size, cfg.mpp, type_info=type_info,
                             name=name or folder.name, device=device, **kwargs)
