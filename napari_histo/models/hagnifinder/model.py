"""Hagnifinder regression network: backbone -> 200 -> 20 -> ASM (or fixed sf) -> tanh -> 1.

The Adaptive Scaling Module rescales the 20-d features of the whole batch so their variance is
the expected variance ``ev`` (2.2), keeping tanh out of saturation whatever the feature scale.
Because it depends on batch statistics, the final model replaces it by a fixed scalar ``sf``:
the mean ASM multiplier over one pass of the training data (three-step training).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_histo.models.backbones import build_resnet
from napari_histo.models.hagnifinder.config import HagnifinderConfig
from napari_histo.models.hagnifinder.images import to_tensor


class AdaptiveScaling(nn.Module):
    """ASM: ``x * m`` with ``m = z / a``, ``a = max|x|``, ``v = var(x / a)``,
    ``z = sqrt(ev / v)`` when ``v <= 1.4`` or ``v >= 2.4`` else 1.

    ``var`` is the population variance over the whole batch tensor. ``m`` is treated as a
    constant in the backward pass (a rescaling, not a learned normalisation).
    """

    def __init__(self, ev: float = 2.2) -> None:
        super().__init__()
        self.ev = float(ev)

    def multiplier(self, x: torch.Tensor) -> torch.Tensor:
        """The scalar multiplier ``m`` for batch ``x`` (detached)."""
        with torch.no_grad():
            a = torch.maximum(x.max().abs(), x.min().abs()).clamp_min(1e-12)
            v = (x / a).var(unbiased=False).clamp_min(1e-12)
            z = torch.sqrt(self.ev / v) if (v <= 1.4 or v >= 2.4) else torch.ones_like(v)
            return z / a

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.multiplier(x)
        return x * m, m


class HagnifinderNet(nn.Module):
    """Magnification regressor; ``forward(x) -> (B,)`` magnification in x (objective power).

    Parameters
    ----------
    backbone
        ``resnet50`` (paper) or a smaller ResNet (``resnet18``, ``resnet34``, ``resnet_slim``).
    width
        Width of ``resnet_slim``.
    hidden
        Head widths; (200, 20) as in the paper.
    ev
        ASM expected variance.
    init_bias
        Initial output bias (the middle of the magnification range) so training starts centred.
    target_space
        ``"linear"``: the last layer outputs the magnification (paper); ``"log2"``: it outputs
        log2 magnification (errors count relative to the magnification, and 5x and 40x are
        equally far from the middle of the range); ``forward`` returns x in both cases.
    """

    def __init__(self, backbone: str = "resnet50", width: int = 16, hidden: tuple[int, int] = (200, 20),
                 ev: float = 2.2, init_bias: float = 22.5, target_space: str = "linear") -> None:
        super().__init__()
        if target_space not in ("linear", "log2"):
            raise ValueError(f"target_space must be 'linear' or 'log2', got {target_space!r}")
        self.target_space = target_space
        self.backbone = build_resnet(backbone, width=width)
        self.fc1 = nn.Linear(self.backbone.out_features, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.asm = AdaptiveScaling(ev)
        self.fc3 = nn.Linear(hidden[1], 1)
        nn.init.constant_(self.fc3.bias, init_bias)
        #: True: scale by ASM (steps 1-2); False: by the fixed ``scale_factor`` (step 3, final).
        self.use_asm = True
        self.register_buffer("scale_factor", torch.tensor(0.0))
        #: ASM multiplier of the last batch (a 0-d tensor: reading it waits for the device).
        self.last_multiplier: torch.Tensor | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 20-d pre-scaling features (``fc2`` output). Under autocast only the backbone
        runs in reduced precision; the head (and ASM's batch variance) stays in float32."""
        f = self.backbone(x)
        with torch.autocast(device_type=f.device.type, enabled=False):
            return self.fc2(self.fc1(f.float()))

    def scaled_features(self, x: torch.Tensor) -> torch.Tensor:
        """tanh of the scaled 20-d features: the input of the last layer."""
        f = self.features(x)
        if self.use_asm:
            f, m = self.asm(f)
            self.last_multiplier = m.detach()
        else:
            if float(self.scale_factor) <= 0:
                raise RuntimeError("ASM is off but no scale factor is set (run the calibration pass)")
            f = f * self.scale_factor
        return torch.tanh(f)

    def head_output(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) output of the last layer, in ``target_space`` units (the training target)."""
        f = self.scaled_features(x)
        with torch.autocast(device_type=f.device.type, enabled=False):
            return self.fc3(f.float()).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head_output(x)
        return torch.exp2(out) if self.target_space == "log2" else out

    def to_target_space(self, magnification: torch.Tensor) -> torch.Tensor:
        """Magnification (x) -> the training target of the last layer."""
        return torch.log2(magnification) if self.target_space == "log2" else magnification

    def fix_scale(self, scale_factor: float) -> None:
        """Step 3: switch ASM off and scale by the fixed calibrated factor from now on."""
        self.scale_factor.fill_(float(scale_factor))
        self.use_asm = False


class HagnifinderEnsemble(nn.Module):
    """Cross-fitted members combined by a geometric mean of their magnifications.

    Each member was trained without one fold of the training sources
    (``HagnifinderConfig.cross_fit_folds``), so every training source has a member that never
    saw it: the output calibration is fitted on those out-of-fold predictions, which behave
    like predictions for new images, and the mean of the members is steadier on new sources
    than any one of them.
    """

    def __init__(self, members: list[HagnifinderNet]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)

    @property
    def target_space(self) -> str:
        return self.members[0].target_space

    @property
    def use_asm(self) -> bool:
        return any(m.use_asm for m in self.members)

    @property
    def scale_factor(self) -> torch.Tensor:
        """Mean of the members' fixed scale factors (each member keeps its own)."""
        return torch.stack([m.scale_factor for m in self.members]).mean()

    def member_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """(members, B) magnifications, one row per member."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp2(torch.log2(self.member_outputs(x).clamp(min=0.5)).mean(dim=0))


def build_model(config: HagnifinderConfig) -> HagnifinderNet | HagnifinderEnsemble:
    """The network described by ``config`` (scale fixed when ``config.scale_factor > 0``);
    an ensemble of ``cross_fit_folds`` members when that is above 1."""
    if config.cross_fit_folds > 1:
        return HagnifinderEnsemble([build_network(config) for _ in range(config.cross_fit_folds)])
    return build_network(config)


def build_network(config: HagnifinderConfig) -> HagnifinderNet:
    model = HagnifinderNet(config.backbone, config.width, tuple(config.hidden), config.ev,
                           init_bias=(config.mag_min + config.mag_max) / 2,
                           target_space=config.target_space)
    if config.scale_factor > 0:
        model.fix_scale(config.scale_factor)
    return model


@torch.no_grad()
def predict_patches(model: HagnifinderNet, patches: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Predictions (N,) for uint8 patches (N, H, W, 3) in eval mode, on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(to_tensor(patches[i:i + batch_size]).to(device)).cpu().numpy()
           for i in range(0, len(patches), batch_size)]
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)
