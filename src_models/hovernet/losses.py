"""HoVer-Net losses (Graham et al. 2019; ``models/hovernet/utils.py`` of https://github.com/vqdang/hover_net): np/tp CE + Dice, hv MSE + gradient MSE (MSGE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Pixel-mean categorical cross-entropy; pixels equal to ``ignore_index`` are skipped."""
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.clamp_min(0), reduction="none")[valid].mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1, smooth: float = 1e-3) -> torch.Tensor:
    """Σ over channels of (1 − soft Dice) over (N, H, W), one-hot targets, ignored pixels masked."""
    nc = logits.shape[1]
    prob = logits.softmax(dim=1)
    valid = (target != ignore_index).unsqueeze(1).to(prob.dtype)
    onehot = F.one_hot(target.clamp_min(0), nc).permute(0, 3, 1, 2).to(prob.dtype)
    prob = prob * valid
    onehot = onehot * valid
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).sum()


def _sobel_kernels(size: int = 5, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """HoVer-Net's size×size Sobel-like kernels (x: along columns, y: along rows)."""
    r = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float32)
    h = r.view(1, -1).expand(size, size)  # column offset
    v = r.view(-1, 1).expand(size, size)  # row offset
    kx = h / (h * h + v * v + 1e-15)
    ky = v / (h * h + v * v + 1e-15)
    return kx.to(device=device, dtype=dtype), ky.to(device=device, dtype=dtype)


def hv_gradients(hv: torch.Tensor) -> torch.Tensor:
    """d/dx of the x map and d/dy of the y map (no cross-derivative quirk), shape (B, 2, H, W)."""
    kx, ky = _sobel_kernels(5, hv.device, hv.dtype)
    gx = F.conv2d(hv[:, :1], kx.view(1, 1, 5, 5), padding=2)
    gy = F.conv2d(hv[:, 1:2], ky.view(1, 1, 5, 5), padding=2)
    return torch.cat([gx, gy], dim=1)


def msge_loss(pred: torch.Tensor, true: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """MSE of the HV gradients restricted to nucleus pixels ``focus`` (B, H, W)."""
    f = focus.unsqueeze(1).to(pred.dtype).expand(-1, 2, -1, -1)
    diff = (hv_gradients(pred) - hv_gradients(true)) ** 2
    return (diff * f).sum() / (f.sum() + 1.0e-8)


def hovernet_loss(
    out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor], weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the six HoVer-Net terms; returns (total, {term: value})."""
    terms = {
        "np_ce": ce_loss(out["np"], tgt["np"]),
        "np_dice": dice_loss(out["np"], tgt["np"]),
        "hv_mse": F.mse_loss(out["hv"], tgt["hv"]),
        "hv_msge": msge_loss(out["hv"], tgt["hv"], tgt["np"] > 0),
    }
    if "tp" in out:
        terms["tp_ce"] = ce_loss(out["tp"], tgt["tp"])
        terms["tp_dice"] = dice_loss(out["tp"], tgt["tp"])
    total = sum(weights.get(k, 1.0) * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
