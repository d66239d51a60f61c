"""DeepCMorph: nucleus segmentation/classification maps feeding a tissue classifier.

A segmentation module (UNet decoder on an EfficientNet encoder) predicts one nucleus map and
seven nucleus class maps (independent sigmoids). The classification module, an EfficientNet
whose stem takes 11 channels ``[nuclei (1), class maps (7), RGB (3)]``, predicts the tissue
class and exposes the pooled features (2560-d with B7).

Re-implemented from the architecture description (Ignatov, Yates, Boeva, CVPR Workshops 2024,
arXiv:2407.08625). The released weights are CC BY-NC-SA 4.0 and are not bundled: users provide
them (see :func:`resolve_weights`). Input RGB is in [0, 1] with no mean/std normalisation.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_histo.models.backbones.efficientnet import EfficientNet, skip_channels
from napari_histo.models.deepcmorph.config import DeepCMorphConfig
from napari_histo.utils import HistoError, atomic_path

#: Released checkpoint names -> file names (users download them; licence CC BY-NC-SA 4.0).
RELEASED_WEIGHTS: dict[str, tuple[str, int]] = {
    "COMBINED": ("DeepCMorph_Datasets_Combined_41_classes_acc_8159.pth", 41),
    "TCGA": ("DeepCMorph_Pan_Cancer_32_classes_acc_8273.pth", 32),
    "TCGA_REGULARIZED": ("DeepCMorph_Pan_Cancer_Regularized_32_classes_acc_8200.pth", 32),
    "CRC": ("DeepCMorph_NCT_CRC_HE_Dataset_9_classes_acc_9699.pth", 9),
}
#: Environment variable naming the folder that holds the released checkpoints.
WEIGHTS_DIR_ENV = "NAPARI_HISTO_DEEPCMORPH_DIR"
#: Heads of the released checkpoints; the one not selected by ``num_classes`` is ignored on load.
PRETRAINED_HEADS = {41: "output_41", 32: "output_32", 9: "output_9"}

#: Input side must be a multiple of this for the decoder (encoder stride of the deepest skip).
SEG_MULTIPLE = 16


class WeightsMismatchError(HistoError):
    """A checkpoint does not fit the model: lists missing/unexpected keys and shape mismatches."""


def weights_search_dirs() -> list[Path]:
    """Folders searched for released checkpoints, in order."""
    dirs = []
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.home() / ".napari-histo" / "deepcmorph")
    return dirs


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """Map a released name (COMBINED, TCGA, TCGA_REGULARIZED, CRC) or a path to an existing file.

    Raises
    ------
    HistoError
        When the file is not found; the message names every place that was searched.
    """
    text = str(name_or_path)
    key = text.upper()
    if key in RELEASED_WEIGHTS:
        filename = RELEASED_WEIGHTS[key][0]
        looked = [d / filename for d in weights_search_dirs()]
        for candidate in looked:
            if candidate.is_file():
                return candidate
        raise HistoError(
            f"DeepCMorph weights {key!r} not found; looked for {', '.join(str(p) for p in looked)}. "
            f"Download {filename} (licence CC BY-NC-SA 4.0, non-commercial) and put it in "
            f"${WEIGHTS_DIR_ENV} or ~/.napari-histo/deepcmorph/."
        )
    path = Path(text).expanduser()
    if path.is_dir() and (path / "model.pt").is_file():
        return path / "model.pt"
    if not path.is_file():
        raise HistoError(
            f"{path}: DeepCMorph weights not found (not a file, and not one of the released names "
            f"{sorted(RELEASED_WEIGHTS)})"
        )
    return path


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class DoubleConv(nn.Sequential):
    """2 x [Conv3x3 (no bias), BatchNorm, LeakyReLU(0.2)]."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), _leaky(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), _leaky(),
        )


class Up(nn.Module):
    """ConvTranspose2d(k2, s2) + LeakyReLU, optional skip concatenation, DoubleConv."""

    def __init__(self, cin: int, cout: int, skip: int = 0):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2), _leaky())
        self.conv = DoubleConv(cout + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class _ExpansionOnly(nn.Module):
    """Holds only ``block.0`` (the expansion conv) of a stage's first MBConv."""

    def __init__(self, expansion: nn.Module):
        super().__init__()
        self.block = nn.Sequential(expansion)


class SegmentationModule(nn.Module):
    """UNet decoder on a truncated EfficientNet: 1 nucleus map + ``num_classes`` class maps.

    Skips are the expansion convs of the first block of stages 2, 3, 4 and 6 (strides 2, 4, 8,
    16). Input H and W must be multiples of 16; outputs have the input's H x W (sigmoid).
    """

    def __init__(self, backbone: str = "b7", num_classes: int = 7, widths: list[int] | None = None):
        super().__init__()
        widths = widths or [512, 256, 128, 64]
        enc = EfficientNet(backbone, num_classes=0).features
        # Keep stages 0-5 and, of stage 6, only the expansion conv of its first block.
        self.features = nn.Sequential(*list(enc[:6]), nn.Sequential(_ExpansionOnly(enc[6][0].block[0])))
        ch = list(skip_channels(backbone).values())  # f1, f2, f3, f4
        self.up1 = Up(ch[3], widths[0], ch[2])
        self.up2 = Up(widths[0], widths[1], ch[1])
        self.up3 = Up(widths[1], widths[2], ch[0])
        self.up4 = Up(widths[2], widths[3], 0)
        self.nuclei_head = nn.Conv2d(widths[3], 1, 3, padding=1)
        self.class_head = nn.Conv2d(widths[3], num_classes, 3, padding=1)

    @staticmethod
    def _first_block_with_skip(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = stage[0]
        skip = first.block[0](x)  # first blocks have stride 2 or a channel change: no residual
        out = first.block[1:](skip)
        for blk in stage[1:]:
            out = blk(out)
        return out, skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg, cls, _, _ = self.forward_with_features(x)
        return seg, cls

    def forward_with_features(self, x: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both maps plus the deepest skip (stride 16) and the last decoder features (stride 1)."""
        f = self.features
        x = f[1](f[0](x))
        x, f1 = self._first_block_with_skip(f[2], x)
        x, f2 = self._first_block_with_skip(f[3], x)
        x, f3 = self._first_block_with_skip(f[4], x)
        x = f[5](x)
        f4 = f[6][0].block[0](x)
        y = self.up1(f4, f3)
        y = self.up2(y, f2)
        y = self.up3(y, f1)
        y = self.up4(y)
        return torch.sigmoid(self.nuclei_head(y)), torch.sigmoid(self.class_head(y)), f4, y

    def feature_size(self) -> int:
        """Width of :func:`nucleus_module_features` for this module."""
        return (self.up1.up[0].in_channels + self.nuclei_head.in_channels
                + 1 + 2 * self.class_head.out_channels)


class ClassificationModule(nn.Module):
    """EfficientNet with an 11-channel bare-conv stem; pooled features -> linear head."""

    def __init__(self, backbone: str, num_classes: int, in_channels: int = 11, dropout_rate: float = 0.0):
        super().__init__()
        net = EfficientNet(backbone, in_channels=3, num_classes=0)
        stem = net.features[0][0].out_channels
        net.features[0] = nn.Conv2d(in_channels, stem, 3, stride=2, padding=1, bias=False)
        nn.init.kaiming_normal_(net.features[0].weight, mode="fan_out")
        self.features = net.features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = net.num_features
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.head_name = PRETRAINED_HEADS.get(num_classes, "output")
        self.add_module(self.head_name, nn.Linear(self.num_features, num_classes))

    @property
    def head(self) -> nn.Linear:
        return getattr(self, self.head_name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.flatten(self.avgpool(self.features(x)), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@dataclass
class LoadReport:
    """What :meth:`DeepCMorph.load_weights` did."""

    path: Path
    loaded: int
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]


class DeepCMorph(nn.Module):
    """Segmentation module + classification module (see module docstring).

    Parameters
    ----------
    num_classes : int, optional
        Classes of the classification head, positional as upstream's ``DeepCMorph(num_classes=41)``
        and ``DeepCMorph(9)``; a :class:`DeepCMorphConfig` is accepted in this place too.
    config : DeepCMorphConfig, optional
        Architecture and freezing options; keyword arguments override its fields
        (e.g. ``DeepCMorph(backbone="b0", num_classes=2)``).

    Notes
    -----
    Freezing as published: by default the segmentation module is frozen (and kept in eval mode)
    and the classifier trains; ``freeze_classification_module=True`` leaves only the last linear
    layer trainable; ``freeze_segmentation_module=False`` makes everything trainable.
    """

    def __init__(self, num_classes: int | DeepCMorphConfig | None = None, config: DeepCMorphConfig | None = None,
                 **overrides):
        super().__init__()
        if isinstance(num_classes, DeepCMorphConfig):
            config, num_classes = num_classes, None
        if num_classes is not None:
            overrides["num_classes"] = int(num_classes)
        cfg = DeepCMorphConfig(**{**(config.to_dict() if config else {}), **overrides})
        self.config = cfg
        self.segmentation_module = SegmentationModule(cfg.backbone, cfg.num_seg_classes,
                                                      cfg.resolved_decoder_widths())
        self.classification_module: ClassificationModule | None = None
        if cfg.num_classes > 0:
            self.classification_module = ClassificationModule(
                cfg.backbone, cfg.num_classes, 1 + cfg.num_seg_classes + 3, cfg.dropout_rate)
        self.apply_freezing()

    @property
    def has_classifier(self) -> bool:
        """False for a nucleus module alone (``num_classes=0``): no tissue logits."""
        return self.classification_module is not None

    @property
    def num_features(self) -> int:
        if self.classification_module is None:
            return self.segmentation_module.feature_size()
        return self.classification_module.num_features

    def apply_freezing(self) -> None:
        """Set ``requires_grad`` from the config's freeze options."""
        cfg = self.config
        for p in self.segmentation_module.parameters():
            p.requires_grad = not cfg.freeze_segmentation_module or self.classification_module is None
        if self.classification_module is None:
            return
        for p in self.classification_module.parameters():
            p.requires_grad = not cfg.freeze_classification_module
        for p in self.classification_module.head.parameters():
            p.requires_grad = True

    def train(self, mode: bool = True) -> DeepCMorph:
        super().train(mode)
        if self.classification_module is None:
            return self
        if self.config.freeze_segmentation_module:
            self.segmentation_module.eval()
        if self.config.freeze_classification_module:
            self.classification_module.features.eval()
        return self

    # ------------------------------------------------------------------ forward
    def segmentation_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nucleus map (B,1,H,W) and class maps (B,7,H,W), sigmoid, for any H x W.

        The input is mirror-padded to a multiple of 16 and the maps are cropped back.
        """
        h, w = x.shape[-2:]
        ph, pw = (-h) % SEG_MULTIPLE, (-w) % SEG_MULTIPLE
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        seg, cls = self.segmentation_module(x)
        return seg[..., :h, :w], cls[..., :h, :w]

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % SEG_MULTIPLE, (-w) % SEG_MULTIPLE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        return x

    def nucleus_module_features(self, x: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features (B, F), nucleus map (B,1,H,W), class maps (B,C,H,W)) of the nucleus module.

        The features describe a tile by what the nucleus module sees in it: the mean of its
        deepest encoder features (stride 16) and of its last decoder layer, the nucleus fraction,
        each class map's mean, and each class's share of the nucleus pixels. They are what a
        few-shot tissue head is fitted on when the model has no classification module.
        """
        h, w = x.shape[-2:]
        seg, cls, deep, last = self.segmentation_module.forward_with_features(self._padded(x))
        seg, cls, last = seg[..., :h, :w], cls[..., :h, :w], last[..., :h, :w]
        nuclei = seg.mean((2, 3))
        share = (seg * cls).mean((2, 3)) / nuclei.clamp_min(1e-6)
        feats = torch.cat([deep.mean((2, 3)), last.mean((2, 3)), nuclei, cls.mean((2, 3)), share], 1)
        return feats, seg, cls

    def _classifier_input(self, x: torch.Tensor) -> torch.Tensor:
        seg, cls = self.segmentation_maps(x)
        return torch.cat([seg, cls, x], dim=1)

    def forward(self, x: torch.Tensor, return_features: bool = False,
                return_segmentation_maps: bool = False):
        """Logits (B, num_classes); or features (B, F); or the two segmentation maps.

        ``x`` is RGB in [0, 1], shape (B, 3, H, W), any H x W.
        """
        if return_segmentation_maps:
            return self.segmentation_maps(x)
        if self.classification_module is None:
            if return_features:
                return self.nucleus_module_features(x)[0]
            raise HistoError("this DeepCMorph model is a nucleus module alone (num_classes=0): it has no "
                             "tissue classes; fit a few-shot head on its features instead")
        z = self._classifier_input(x)
        if return_features:
            return self.classification_module.forward_features(z)
        return self.classification_module(z)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Logits (None for a nucleus module alone) and features in one pass."""
        return self.forward_maps(x)[:2]

    def forward_maps(self, x: torch.Tensor
                     ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (or None), features, nucleus map and class maps in one pass."""
        if self.classification_module is None:
            feats, seg, cls = self.nucleus_module_features(x)
            return None, feats, seg, cls
        seg, cls = self.segmentation_maps(x)
        feats = self.classification_module.forward_features(torch.cat([seg, cls, x], dim=1))
        return self.classification_module.head(feats), feats, seg, cls

    # ------------------------------------------------------------------ numpy helpers
    @staticmethod
    def to_tensor(rgb) -> torch.Tensor:
        """(H,W,3) or (B,H,W,3) uint8 RGB -> float tensor (B,3,H,W) in [0,1] (no mean/std)."""
        t = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(np.array(rgb, copy=True))
        is_uint8 = t.dtype == torch.uint8
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[-1] < 3:
            raise ValueError(f"expected (H, W, 3) or (B, H, W, 3) RGB, got shape {tuple(t.shape)}")
        t = t[..., :3].permute(0, 3, 1, 2).float()
        return t / 255.0 if is_uint8 or t.max() > 1.5 else t

    @torch.no_grad()
    def predict_proba(self, rgb):
        """Class probabilities (B, num_classes) as numpy for uint8 RGB image(s)."""
        self.eval()
        return torch.softmax(self(self.to_tensor(rgb).to(self._device())), 1).cpu().numpy()

    @torch.no_grad()
    def predict_class(self, rgb):
        """Class index per image (B,)."""
        return self.predict_proba(rgb).argmax(1)

    @torch.no_grad()
    def extract_features(self, rgb):
        """Pooled classifier features (B, num_features) as numpy."""
        self.eval()
        return self(self.to_tensor(rgb).to(self._device()), return_features=True).cpu().numpy()

    @torch.no_grad()
    def predict_segmentation(self, rgb):
        """(nuclei (B,H,W), class maps (B,7,H,W)) sigmoid probabilities as numpy."""
        self.eval()
        seg, cls = self.segmentation_maps(self.to_tensor(rgb).to(self._device()))
        return seg[:, 0].cpu().numpy(), cls.cpu().numpy()

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ weights
    def load_weights(self, path: str | os.PathLike | None = None, *, dataset: str | None = None,
                     path_to_checkpoints: str | os.PathLike | None = None,
                     strict: bool = True, key_map: dict[str, str] | None = None) -> LoadReport:
        """Load a checkpoint: a released name (``dataset=`` or ``path=`` COMBINED/TCGA/...) or a file.

        ``path_to_checkpoints`` is the folder holding the released files, as in upstream's
        ``load_weights(dataset="COMBINED", path_to_checkpoints="pretrained_models/")``; without it
        the released files are looked for where :func:`resolve_weights` looks.

        The DataParallel ``module.`` prefix is stripped. Checkpoints saved by the upstream
        DeepCMorph code (the released COMBINED/TCGA/TCGA_REGULARIZED/CRC files: state dicts with
        ``module.model_preprocessing.*``, ``module.encoder.*``, ``module.output*`` keys) are
        renamed with :func:`upstream_key_to_ours`. ``key_map`` then renames further key prefixes
        (``{"old.prefix.": "new.prefix."}``). Heads of the released checkpoints other than the
        one selected by ``num_classes`` are ignored. Pickled full models are refused (see
        :func:`_read_state_dict`).

        Raises
        ------
        HistoError
            If neither argument is given or the file cannot be found/read.
        WeightsMismatchError
            With ``strict`` (default), when any key is missing or unexpected or any shape differs;
            the message lists them. With ``strict=False`` the matching tensors are loaded and the
            returned :class:`LoadReport` lists the rest.
        """
        source = path if path is not None else dataset
        if source is None:
            raise HistoError("load_weights needs a released name (dataset=...) or a checkpoint path")
        if path_to_checkpoints is not None and str(source).upper() in RELEASED_WEIGHTS:
            file = Path(path_to_checkpoints) / RELEASED_WEIGHTS[str(source).upper()][0]
            if not file.is_file():
                raise HistoError(f"DeepCMorph weights {str(source).upper()!r} not found at {file}")
        else:
            file = resolve_weights(source)
        ckpt = _read_state_dict(file)
        upstream = is_upstream_layout(ckpt)
        state = {}
        for k, v in ckpt.items():
            k = upstream_key_to_ours(k) if upstream else k.removeprefix("module.")
            for old, new in (key_map or {}).items():
                if k.startswith(old):
                    k = new + k[len(old):]
            state[k] = v
        own = self.state_dict()
        other_heads = {f"classification_module.{h}." for h in (*PRETRAINED_HEADS.values(), "output")}
        if self.classification_module is None:  # a nucleus module takes the maps of a full checkpoint
            other_heads = {"classification_module."}
        else:
            other_heads.discard(f"classification_module.{self.classification_module.head_name}.")
        unexpected = [k for k in state if k not in own and not any(k.startswith(p) for p in other_heads)]
        missing = [k for k in own if k not in state]
        mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape))
                      for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        report = LoadReport(file, 0, missing, unexpected, mismatched)
        if strict and (missing or unexpected or mismatched):
            raise WeightsMismatchError(_mismatch_message(file, report, self.config.backbone))
        ok = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        self.load_state_dict(ok, strict=False)
        report.loaded = len(ok)
        return report


#: Upstream (aiff22/DeepCMorph ``model.py``) key prefixes -> ours, after the ``module.`` prefix
#: is stripped. Both encoders already use torchvision's EfficientNet names (``features.*``);
#: the decoder, the two map heads and the classifier heads are renamed.
UPSTREAM_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model_preprocessing.encoder.", "segmentation_module."),
    *((f"model_preprocessing.upsample_{i}.upconv.", f"segmentation_module.up{i}.up.0.") for i in range(1, 5)),
    *((f"model_preprocessing.conv_{i}.conv.", f"segmentation_module.up{i}.conv.") for i in range(1, 5)),
    ("model_preprocessing.conv_segmentation.", "segmentation_module.nuclei_head."),
    ("model_preprocessing.conv_classification.", "segmentation_module.class_head."),
    ("encoder.", "classification_module."),
    *((f"{head}.", f"classification_module.{head}.") for head in ("output", *PRETRAINED_HEADS.values())),
)


def is_upstream_layout(keys) -> bool:
    """True when state-dict keys use the upstream DeepCMorph names (``model_preprocessing.*``)."""
    return any(k.removeprefix("module.").startswith("model_preprocessing.") for k in keys)


def upstream_key_to_ours(key: str) -> str:
    """Rename one upstream DeepCMorph state-dict key to this implementation's name.

    ``module.`` (DataParallel) is dropped; unknown keys are returned without the prefix so that
    they are reported as unexpected.
    """
    key = key.removeprefix("module.")
    for old, new in UPSTREAM_PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _read_state_dict(file: Path) -> dict:
    """Tensors of a checkpoint file, with a clear error for anything that is not a state dict.

    Only ``weights_only=True`` loading is used: a pickled full model (``torch.save(model)``) can
    run arbitrary code when unpickled and is refused. The released DeepCMorph checkpoints are
    state dicts (upstream loads them with ``load_state_dict(torch.load(path))``).
    """
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise HistoError(
            f"{file}: cannot read checkpoint as a plain state dict (it probably holds a pickled "
            f"model object, which is not loaded for safety). If the file comes from a trusted "
            f"source, load it yourself and save model.state_dict() instead. Details: {exc}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        raise HistoError(f"{file}: cannot read checkpoint ({exc})") from exc
    if isinstance(ckpt, dict):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if wrapper in ckpt and isinstance(ckpt[wrapper], dict):
                ckpt = ckpt[wrapper]
                break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise HistoError(f"{file}: not a state dict of tensors (got {type(ckpt).__name__})")
    return ckpt


def _mismatch_message(file: Path, r: LoadReport, backbone: str, limit: int = 12) -> str:
    def listing(items) -> str:
        shown = ", ".join(str(i) for i in items[:limit])
        return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

    parts = [f"{file}: checkpoint does not fit DeepCMorph(backbone={backbone!r})"]
    if r.missing:
        parts.append(f"missing keys ({len(r.missing)}): {listing(r.missing)}")
    if r.unexpected:
        parts.append(f"unexpected keys ({len(r.unexpected)}): {listing(r.unexpected)}")
    if r.mismatched:
        parts.append(f"shape mismatches ({len(r.mismatched)}): "
                     + listing([f"{k} checkpoint {a} vs model {b}" for k, a, b in r.mismatched]))
    parts.append("use strict=False to load the matching tensors only")
    return "; ".join(parts)


def save_pretrained(model: DeepCMorph, folder: str | os.PathLike) -> Path:
    """Write ``folder/model.pt`` (state dict) and ``folder/config.json`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    model.config.save(folder / "config.json")
    return folder


def load_pretrained(folder: str | os.PathLike, map_location: str = "cpu") -> DeepCMorph:
    """Build a model from ``folder/config.json`` and load ``folder/model.pt`` strictly."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise HistoError(f"{cfg_path}: DeepCMorph config.json not found")
    model = DeepCMorph(DeepCMorphConfig.load(cfg_path))
    model.load_weights(folder / "model.pt")
    return model.to(map_location).eval()


#: Class order of the released heads: TCGA-UT folder names sorted (ImageFolder order); CRC as
#: NCT-CRC-HE folder names (unverified); COMBINED presumably TCGA then CRC (unverified).
TCGA_CLASSES = [
    "Adrenocortical_carcinoma", "Bladder_Urothelial_Carcinoma", "Brain_Lower_Grade_Glioma",
    "Breast_invasive_carcinoma", "Cervical_squamous_cell_carcinoma_and_endocervical_adenocarcinoma",
    "Cholangiocarcinoma", "Colon_adenocarcinoma", "Esophageal_carcinoma", "Glioblastoma_multiforme",
    "Head_and_Neck_squamous_cell_carcinoma", "Kidney_Chromophobe", "Kidney_renal_clear_cell_carcinoma",
    "Kidney_renal_papillary_cell_carcinoma", "Liver_hepatocellular_carcinoma", "Lung_adenocarcinoma",
    "Lung_squamous_cell_carcinoma", "Lymphoid_Neoplasm_Diffuse_Large_B-cell_Lymphoma", "Mesothelioma",
    "Ovarian_serous_cystadenocarcinoma", "Pancreatic_adenocarcinoma", "Pheochromocytoma_and_Paraganglioma",
    "Prostate_adenocarcinoma", "Rectum_adenocarcinoma", "Sarcoma", "Skin_Cutaneous_Melanoma",
    "Stomach_adenocarcinoma", "Testicular_Germ_Cell_Tumors", "Thymoma", "Thyroid_carcinoma",
    "Uterine_Carcinosarcoma", "Uterine_Corpus_Endometrial_Carcinoma", "Uveal_Melanoma",
]
CRC_CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


def released_class_names(num_classes: int) -> list[str]:
    """Class names of a released head (41, 32 or 9 classes); generic names otherwise."""
    if num_classes == 32:
        return list(TCGA_CLASSES)
    if num_classes == 9:
        return list(CRC_CLASSES)
    if num_classes == 41:
        return list(TCGA_CLASSES) + list(CRC_CLASSES)
    return [f"class {i}" for i in range(num_classes)]


def load_deepcmorph(weights: str | os.PathLike, device: str = "cpu") -> DeepCMorph:
    """A ready model from a folder (``config.json`` + ``model.pt``), a released name, or a bare
    checkpoint file (B7 assumed; the class count is read from its head)."""
    text = str(weights)
    folder = Path(text).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        return load_pretrained(folder, device)
    if text.upper() in RELEASED_WEIGHTS:
        resolve_weights(text)  # fail early, before building B7, when the file is absent
        n = RELEASED_WEIGHTS[text.upper()][1]
    else:
        file = resolve_weights(text)
        released = {fname: count for fname, count in RELEASED_WEIGHTS.values()}
        if file.name in released:  # a released file under its own name: its head is known
            n = released[file.name]
        else:
            state = _read_state_dict(file)
            heads = [v for k, v in state.items()
                     if k.split(".")[-2:-1] and k.split(".")[-2].startswith("output") and k.endswith("weight")]
            if not heads:
                raise HistoError(f"{file}: no classifier head (output*.weight) found; "
                                 "pass a folder with config.json instead")
            n = int(heads[0].shape[0])
    model = DeepCMorph(backbone="b7", num_classes=n, class_names=released_class_names(n))
    model.load_weights(text)
    return model.to(device).eval()
