"""Segmenter over any HoVer-Net-style torch model: tiled inference + official post-processing.

The model takes NCHW float RGB in 0..255 (it normalises itself, as the official HoVer-Net
divides by 255 in ``forward``) and returns a dict with ``np`` (2-ch logits), ``hv`` (2-ch, x
then y) and optionally ``tp`` (C-ch logits), each the centre ``output_size`` crop of an
``input_size`` patch. Patches are laid out with step = ``output_size`` and the image is
reflect-padded by the valid-convolution margin ``(input_size - output_size) / 2`` so every
output pixel is predicted exactly once with full context (official tile mode, ``HOVERNET.md``
§4.1); the stitched maps are post-processed at once, so there are no seams inside an image.

Public API
----------
- :class:`HoverNetSegmenter` -- the :class:`~napari_histo.nuclei.base.Segmenter`.
- :func:`predict_maps` -- stitched ``{"np": (H, W), "hv": (H, W, 2), "tp": (H, W, C)}``.
- :func:`patch_grid` -- the top-left corners of the patch grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from napari_histo.nuclei.postproc import HoverPostParams, postprocess_maps
from napari_histo.nuclei.types import NUCLEUS_ONLY, TypeInfo

__all__ = ["HoverNetSegmenter", "predict_maps", "patch_grid"]


def patch_grid(length: int, out_size: int) -> list[int]:
    """Output-window starts covering ``length`` px with step ``out_size`` (last one flush)."""
    if length <= out_size:
        return [0]
    starts = list(range(0, length - out_size + 1, out_size))
    if starts[-1] + out_size < length:
        starts.append(length - out_size)
    return starts


def predict_maps(
    model: Any,
    rgb: np.ndarray,
    input_size: int,
    output_size: int,
    device: str = "cpu",
    batch_size: int = 8,
    amp: bool | None = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` over ``rgb`` (H, W, 3) uint8 in patches and stitch the softmaxed maps.

    Returns ``np`` (H, W) foreground probability, ``hv`` (H, W, 2) and, for typed models,
    ``tp`` (H, W, C) class probabilities -- all float32 at input resolution.
    """
    import torch

    rgb = np.asarray(rgb)[..., :3]
    h, w = rgb.shape[:2]
    margin = (input_size - output_size) // 2
    ys, xs = patch_grid(h, output_size), patch_grid(w, output_size)
    # pad: margin on every side, plus enough bottom/right for images smaller than a window
    pad_b = margin + max(0, output_size - h)
    pad_r = margin + max(0, output_size - w)
    mode = "reflect" if min(h, w) > max(margin, pad_b, pad_r) else "symmetric"
    padded = np.pad(rgb, ((margin, pad_b), (margin, pad_r), (0, 0)), mode=mode)
    use_amp = (str(device).startswith("cuda")) if amp is None else amp

    out: dict[str, np.ndarray] = {}
    corners = [(y, x) for y in ys for x in xs]
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(corners), batch_size):
            chunk = corners[i : i + batch_size]
            batch = np.stack([padded[y : y + input_size, x : x + input_size] for y, x in chunk])
            t = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float()
            with torch.autocast(device_type=str(device).split(":")[0], enabled=use_amp):
                pred = model(t)
            maps = {"np": torch.softmax(pred["np"].float(), dim=1)[:, 1:2],
                    "hv": pred["hv"].float()}
            if "tp" in pred and pred["tp"] is not None:
                maps["tp"] = torch.softmax(pred["tp"].float(), dim=1)
            for key, val in maps.items():
                arr = val.permute(0, 2, 3, 1).cpu().numpy()
                if arr.shape[1] != output_size or arr.shape[2] != output_size:
                    raise ValueError(
                        f"model returned {key} maps of {arr.shape[1]}x{arr.shape[2]} px for a "
                        f"{input_size} px patch; expected output_size {output_size}"
                    )
                if key not in out:
                    out[key] = np.zeros((max(h, output_size), max(w, output_size), arr.shape[-1]), np.float32)
                for (y, x), a in zip(chunk, arr):
                    out[key][y : y + output_size, x : x + output_size] = a
    result = {k: v[:h, :w] for k, v in out.items()}
    result["np"] = result["np"][..., 0]
    return result


class HoverNetSegmenter:
    """A :class:`Segmenter` for HoVer-Net-style models (official or compact).

    Parameters
    ----------
    model : torch.nn.Module returning {"np", "hv"(, "tp")}
    input_size, output_size : int -- patch and centre-crop sizes (256/164 fast, 270/80 original)
    mpp : float -- working resolution (0.25 µm/px for the official 40× weights)
    type_info : TypeInfo, optional -- class vocabulary for typed models
    name : str -- provenance name
    device : str, optional -- default ``napari_histo.utils.choose_device()``
    batch_size : int -- patches per forward
    post_params : HoverPostParams, optional -- default: official constants rescaled to ``mpp``
    amp : bool, optional -- autocast (default: on for CUDA)
    """

    def __init__(
        self,
        model: Any,
        input_size: int,
        output_size: int,
        mpp: float,
        type_info: TypeInfo | None = None,
        name: str = "hovernet",
        device: str | None = None,
        batch_size: int = 8,
        post_params: HoverPostParams | None = None,
        amp: bool | None = None,
    ):
        from napari_histo.utils import choose_device

        self.device = choose_device(device)
        self.model = model.to(self.device).eval()
        self.input_size = int(input_size)
        self.output_size = int(output_size)
        self.mpp = float(mpp)
        self.typed = type_info is not None
        self.type_info = type_info or NUCLEUS_ONLY
        self.name = name
        self.batch_size = int(batch_size)
        self.post_params = post_params or HoverPostParams.for_mpp(self.mpp)
        self.amp = amp
        margin = (self.input_size - self.output_size) // 2
        # a nucleus (≤ ~20 µm) owned by a tile core must be seen whole, plus the model margin
        self.halo_px = int(margin + np.ceil(20.0 / self.mpp))

    def __repr__(self) -> str:
        return (f"HoverNetSegmenter({self.name!r}, {self.input_size}->{self.output_size}, "
                f"{self.mpp} µm/px, device={self.device})")

    def predict(self, rgb: np.ndarray) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
        """Stitched maps of one (H, W, 3) image, or a list for a (B, H, W, 3) batch."""
        rgb = np.asarray(rgb)
        if rgb.ndim == 4:
            return [self.predict(t) for t in rgb]
        if rgb.ndim != 3 or rgb.shape[-1] < 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        return predict_maps(self.model, rgb, self.input_size, self.output_size, self.device,
                            self.batch_size, self.amp)

    def postprocess(self, raw: dict[str, np.ndarray], rgb: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Official watershed + typing (vote, type_prob, mean softmax ``probs``)."""
        tp = raw.get("tp") if self.typed else None
        labels, table = postprocess_maps(raw["np"], raw["hv"], tp, mpp=self.mpp,
                                         type_info=self.type_info, params=self.post_params)
        table.attrs["model"] = self.name
        return labels, table

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        """Segment an image of any size at :attr:`mpp`."""
        return self.postprocess(self.predict(rgb), rgb)
