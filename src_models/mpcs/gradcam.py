"""Grad-CAM maps of a classifier on an MPCS encoder: where in the image the evidence for a class is.

Grad-CAM (Selvaraju et al., ICCV 2017): the encoder's last spatial feature maps ``A_k`` are
weighted by the mean gradient of the class score over each map, summed and rectified,
``ReLU(Σ_k mean(∂y_c/∂A_k) A_k)``, then resized to the image. With a linear classifier on
globally averaged features (as the MPCS fine-tuning and linear evaluation use), this equals the
class activation map of Zhou et al. (CVPR 2016) up to scale, which the tests check.

``python -m src_models.mpcs.gradcam --encoder ENCODER.pt --classifier LINEAR.pt IMAGE -o cam.png``
(``LINEAR.pt``: the state_dict of a ``torch.nn.Linear`` on the pooled features).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_histo.models.hagnifinder.images import to_tensor


def spatial_features(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) feature maps before pooling, of a ResNet or an EfficientNet encoder."""
    if hasattr(encoder, "net"):  # EfficientNetEncoder
        return encoder.net.features(x)
    return encoder.forward_features(x)


def grad_cam(encoder: torch.nn.Module, classifier: torch.nn.Module, rgb: np.ndarray,
             target: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """(map (H, W) in [0, 1], explained class, class probabilities) for one uint8 RGB image.

    ``target`` None explains the predicted class. The networks run in eval mode; a map that is 0
    everywhere means no positive evidence for the class.
    """
    encoder.eval()
    classifier.eval()
    x = to_tensor(np.asarray(rgb)[None, ..., :3])
    fmap = spatial_features(encoder, x)
    fmap.retain_grad()
    logits = classifier(fmap.mean(dim=(2, 3)))
    probs = logits.softmax(dim=1)[0].detach().numpy()
    target = int(logits.argmax(dim=1)) if target is None else int(target)
    encoder.zero_grad(set_to_none=True)
    classifier.zero_grad(set_to_none=True)
    logits[0, target].backward()
    weights = fmap.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * fmap).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).astype(np.float32), target, probs


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The map over the image: blue (0) through yellow to red (1), blended with ``alpha``."""
    c = np.clip(cam, 0, 1)[..., None]
    colour = np.concatenate([np.clip(2 * c, 0, 1), np.clip(2 - np.abs(4 * c - 2), 0, 1),
                             np.clip(1 - 2 * c, 0, 1)], axis=-1) * 255.0
    out = (1 - alpha) * np.asarray(rgb, np.float32)[..., :3] + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from src_models.mpcs.config import MPCSConfig
    from src_models.mpcs.model import build_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--encoder", required=True, help="encoder.pt (config.json beside it)")
    parser.add_argument("--classifier", required=True, help="state_dict of a Linear on the pooled features")
    parser.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted one)")
    parser.add_argument("-o", "--out", required=True, help="PNG to write (the map over the image)")
    args = parser.parse_args(argv)
    encoder_path = Path(args.encoder)
    config = MPCSConfig.load(encoder_path.parent / "config.json")
    encoder = build_encoder(config.backbone, width=config.width, dilate=tuple(config.dilate))
    encoder.load_state_dict(torch.load(encoder_path, map_location="cpu", weights_only=True))
    state = torch.load(args.classifier, map_location="cpu", weights_only=True)
    classifier = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    classifier.load_state_dict(state)
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    cam, target, probs = grad_cam(encoder, classifier, rgb, args.target)
    Image.fromarray(overlay(rgb, cam)).save(args.out)
    np.save(Path(args.out).with_suffix(".npy"), cam)
    print(f"class {target} (p = {probs[target]:.3f}); map -> {args.out} and {Path(args.out).with_suffix('.npy')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
