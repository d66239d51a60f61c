"""Segmenter over any HoVer-Net-style torch model: tiled inference + official post-processing.

The model takes NCHW float RGB in 0..255 (it normalises itself, as the official HoVer-Net
divides by 255 in ``forward``) and returns a dict with ``np`` (2-ch logits), ``hv`` (2-ch, x
then y) and optionally ``tp`` (C-ch logits), each the centre ``output_size`` crop of an
``input_size`` patch. Patches are laid out with step = ``output_size`` and the image is
reflect-padded by the valid-convolution margin ``(input_size - output_size) / 2`` so every
output pixel is predicted exactly once with full context (the official tile mode,
``infer/tile.py`` of https://github.com/vqdang/hover_net); the stitched maps are post-processed at once, so there are no seams inside an image.

Models that are fully convolutional (the compact model) may use larger patches than their
nominal ``input_size`` (``max_input_size``): fewer patches, less overlap. Models whose
convolutions run on a coarser grid than the one they are presented at (compact model,
``work_downsample`` = 2) can be post-processed on that grid: the segmenter block-averages the
input, runs the network and the watershed at ``mpp * work_downsample`` and maps the instances
back (:func:`upscale_instances`). Official checkpoints use neither and are unchanged.

Public API
----------
- :class:`HoverNetSegmenter` -- the :class:`~napari_histo.nuclei.base.Segmenter`.
- :func:`predict_maps` -- stitched ``{"np": (H, W), "hv": (H, W, 2), "tp": (H, W, C)}``.
- :func:`patch_grid` -- the top-left corners of the patch grid.
- :func:`block_mean` -- ``d × d`` block average of an RGB image (the network's own pooling).
- :func:`upscale_instances` -- coarse instance labels -> labels on the ``d``-times finer grid.

Images no finer than the network's grid (a 20× slide for the compact model, which is presented
at 0.25 µm/px but runs at 0.5) are processed on that grid directly:
:meth:`HoverNetSegmenter.for_resolution` gives the segmenter to use for an image's pixel size,
so a 0.5 µm/px image is never upsampled to 0.25, averaged back and its labels upscaled.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.nuclei.measure import measure_instances
from napari_histo.nuclei.postproc import (
    TYPE_RULES,
    HoverPostParams,
    assign_types,
    instances_from_maps,
    postprocess_maps,
)
from napari_histo.schema.types import NUCLEUS_ONLY, TypeInfo
from napari_histo.utils import choose_device

# Lazy imports: scipy, torch are imported inside the functions that use them (directly or through
# the modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["HoverNetSegmenter", "predict_maps", "patch_grid", "block_mean", "upscale_instances",
           "NATIVE_TOLERANCE"]

#: Relative margin by which an image must be coarser than :attr:`HoverNetSegmenter.mpp` before a
#: segmenter with ``work_downsample > 1`` runs on its network grid instead (no upsampling).
NATIVE_TOLERANCE = 0.05


def patch_grid(length: int, out_size: int) -> list[int]:
    """Output-window starts covering ``length`` px with step ``out_size`` (last one flush)."""
    if length <= out_size:
        return [0]
    starts = list(range(0, length - out_size + 1, out_size))
    if starts[-1] + out_size < length:
        starts.append(length - out_size)
    return starts


def fitted_output_size(length: int, output_size: int, margin: int, max_input_size: int | None,
                       multiple: int = 8) -> int:
    """Output-window side covering ``length`` px with as few patches of at most
    ``max_input_size`` px as possible (fully convolutional models only).

    The side is rounded up so that the patch (``side + 2 * margin``) is a multiple of
    ``multiple`` (the encoder stride); never below ``output_size``.
    """
    if not max_input_size or max_input_size <= output_size + 2 * margin:
        return output_size
    max_out = max_input_size - 2 * margin
    n = -(-length // max_out)
    side = -(-length // n)
    side += (-(side + 2 * margin)) % multiple
    return max(output_size, min(side, max_out))


def predict_maps(
    model: Any,
    rgb: np.ndarray,
    input_size: int,
    output_size: int,
    device: str = "cpu",
    batch_size: int = 8,
    amp: bool | None = None,
    max_input_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` over ``rgb`` (H, W, 3) uint8 in patches and stitch the softmaxed maps.

    Returns ``np`` (H, W) foreground probability, ``hv`` (H, W, 2) and, for typed models,
    ``tp`` (H, W, C) class probabilities -- all float32 at input resolution.
    ``max_input_size`` (fully convolutional models): patches may grow up to this side so the
    image is covered by fewer of them (same border margin ``(input_size - output_size) / 2``).
    """
    import torch

    rgb = np.asarray(rgb)[..., :3]
    h, w = rgb.shape[:2]
    margin = (input_size - output_size) // 2
    out_h = fitted_output_size(h, output_size, margin, max_input_size)
    out_w = fitted_output_size(w, output_size, margin, max_input_size)
    ys, xs = patch_grid(h, out_h), patch_grid(w, out_w)
    # pad: margin on every side, plus enough bottom/right for images smaller than a window
    pad_b = margin + max(0, out_h - h)
    pad_r = margin + max(0, out_w - w)
    mode = "reflect" if min(h, w) > max(margin, pad_b, pad_r) else "symmetric"
    padded = np.pad(rgb, ((margin, pad_b), (margin, pad_r), (0, 0)), mode=mode)
    use_amp = (str(device).startswith("cuda")) if amp is None else amp

    out: dict[str, np.ndarray] = {}
    corners = [(y, x) for y in ys for x in xs]
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(corners), batch_size):
            chunk = corners[i : i + batch_size]
            batch = np.stack([padded[y : y + out_h + 2 * margin, x : x + out_w + 2 * margin] for y, x in chunk])
            t = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float()
            with torch.autocast(device_type=str(device).split(":")[0], enabled=use_amp):
                pred = model(t)
            maps = {"np": torch.softmax(pred["np"].float(), dim=1)[:, 1:2],
                    "hv": pred["hv"].float()}
            if "tp" in pred and pred["tp"] is not None:
                maps["tp"] = torch.softmax(pred["tp"].float(), dim=1)
            for key, val in maps.items():
                arr = val.permute(0, 2, 3, 1).cpu().numpy()
                if arr.shape[1] != out_h or arr.shape[2] != out_w:
                    raise ValueError(
                        f"model returned {key} maps of {arr.shape[1]}x{arr.shape[2]} px for a "
                        f"{out_h + 2 * margin}x{out_w + 2 * margin} px patch; expected "
                        f"{out_h}x{out_w} (input_size {input_size}, output_size {output_size})"
                    )
                if key not in out:
                    out[key] = np.zeros((max(h, out_h), max(w, out_w), arr.shape[-1]), np.float32)
                for (y, x), a in zip(chunk, arr):
                    out[key][y : y + out_h, x : x + out_w] = a
    result = {k: v[:h, :w] for k, v in out.items()}
    result["np"] = result["np"][..., 0]
    return result


def average_with_mirrored(maps: dict[str, np.ndarray], mirrored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean of ``maps`` and the maps of the left-right mirrored image, mirrored back.

    The horizontal-distance channel (``hv[..., 0]``, x) changes sign under the mirror; the
    vertical one and the probability maps do not.
    """
    out = {}
    for key, value in maps.items():
        back = mirrored[key][:, ::-1]
        if key == "hv":
            back = back * np.array([-1.0, 1.0], np.float32)
        out[key] = ((value + back) * np.float32(0.5)).astype(np.float32)
    return out


def block_mean(rgb: np.ndarray, d: int) -> np.ndarray:
    """``d × d`` block average of an (H, W, C) image, float32 (what ``avg_pool2d`` gives the network).

    Sides that are not a multiple of ``d`` are first padded by edge replication; the result is
    ``ceil(H / d) × ceil(W / d)``.
    """
    rgb = np.asarray(rgb)
    if d <= 1:
        return rgb
    h, w = rgb.shape[:2]
    ph, pw = (-h) % d, (-w) % d
    if ph or pw:
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
    hh, ww = rgb.shape[0] // d, rgb.shape[1] // d
    return rgb.reshape(hh, d, ww, d, rgb.shape[2]).mean(axis=(1, 3), dtype=np.float32)


def upscale_instances(
    labels: np.ndarray,
    np_prob: np.ndarray,
    d: int,
    shape: tuple[int, int],
    np_threshold: float = 0.5,
    fill_px: int = 2,
) -> np.ndarray:
    """Instance labels of a ``d``-times coarser grid mapped onto the (H, W) = ``shape`` grid.

    Labels are upscaled by pixel replication (nearest) and masked by the foreground of the
    bilinear-upsampled nucleus probability (``>= np_threshold``), so outlines follow the
    probability at the fine resolution instead of ``d``-px steps; foreground pixels left
    unlabelled next to an instance (outline grown at the finer grid) take the neighbouring
    label, up to ``fill_px`` px away. Foreground with no instance nearby stays background
    (the watershed had no marker for it).
    """
    import torch
    import torch.nn.functional as F
    from scipy import ndimage as ndi

    h, w = shape
    lab = np.asarray(labels)
    up = np.repeat(np.repeat(lab, d, axis=0), d, axis=1)[:h, :w]
    prob = torch.from_numpy(np.ascontiguousarray(np_prob, dtype=np.float32))[None, None]
    fine = F.interpolate(prob, scale_factor=float(d), mode="bilinear", align_corners=False)[0, 0, :h, :w]
    fg = fine.numpy() >= np_threshold
    out = np.where(fg, up, 0).astype(np.int32, copy=False)
    for _ in range(max(0, int(fill_px))):
        gaps = fg & (out == 0)
        if not gaps.any():
            break
        grown = ndi.maximum_filter(out, size=3)
        out[gaps] = grown[gaps]
    return out


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
    post_params : HoverPostParams, optional -- default: official constants rescaled to the
        watershed's grid (``mpp * work_downsample``)
    amp : bool, optional -- autocast (default: on for CUDA)
    work_downsample : int -- 1 (default): ``model``, maps and watershed at ``mpp``. ``d > 1``:
        ``model`` works at ``mpp * d`` (``input_size`` / ``output_size`` in its px); the
        segmenter block-averages its ``mpp`` input, post-processes the maps on that coarse grid
        and returns labels and table at ``mpp`` (:func:`upscale_instances`)
    max_input_size : int, optional -- fully convolutional models: largest patch side (model
        px) used to cover an image with fewer patches; default ``input_size`` patches only
    fill_px : int -- gap filling of :func:`upscale_instances` (fine px)
    test_time_flip : bool -- also run the model on the left-right mirrored image and average the
        two sets of maps (the horizontal-distance map mirrored back with its sign flipped): about
        twice the network time for smoother, more consistent maps
    type_rule : str -- "official" (HoVer-Net's vote) or "nucleus" (background never wins inside a
        nucleus; :func:`~napari_histo.nuclei.postproc.type_instances`)
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
        work_downsample: int = 1,
        max_input_size: int | None = None,
        fill_px: int = 2,
        test_time_flip: bool = False,
        type_rule: str = "official",
    ):
        self.device = choose_device(device)
        self.model = model.to(self.device).eval()
        self.input_size = int(input_size)
        self.output_size = int(output_size)
        self.mpp = float(mpp)
        self.typed = type_info is not None
        self.type_info = type_info or NUCLEUS_ONLY
        self.name = name
        self.batch_size = int(batch_size)
        self.work_downsample = max(1, int(work_downsample))
        self.work_mpp = self.mpp * self.work_downsample
        self.max_input_size = int(max_input_size) if max_input_size else None
        self.fill_px = int(fill_px)
        self.test_time_flip = bool(test_time_flip)

        if type_rule not in TYPE_RULES:
            raise ValueError(f"unknown typing rule {type_rule!r}; expected one of {TYPE_RULES}")
        self.type_rule = type_rule
        self.post_params = post_params or HoverPostParams.for_mpp(self.work_mpp)
        self.amp = amp
        self.halo_px = self._halo_px()

    def _halo_px(self) -> int:
        margin = (self.input_size - self.output_size) // 2 * self.work_downsample
        # a nucleus (≤ ~20 µm) owned by a tile core must be seen whole, plus the model margin
        return int(margin + np.ceil(20.0 / self.mpp))

    def for_resolution(self, mpp: float | None) -> HoverNetSegmenter:
        """The segmenter to run on an image of ``mpp`` µm/px.

        A segmenter whose network works on a coarser grid (``work_downsample > 1``) is returned
        at that grid when the image is coarser than :attr:`mpp` (by more than
        :data:`NATIVE_TOLERANCE`): the image is then read at (or down to) the network's
        resolution instead of being upsampled to :attr:`mpp` and averaged back, and the
        watershed's labels are used as they are. Same weights, same post-processing constants;
        ``self`` otherwise (unknown ``mpp`` included).
        """
        if self.work_downsample == 1 or not mpp or float(mpp) <= self.mpp * (1.0 + NATIVE_TOLERANCE):
            return self
        return self.at_network_resolution()

    def postprocessor(self) -> HoverNetSegmenter:
        """This segmenter without its network: what post-processing needs, cheap to send to
        worker processes (``predict`` is unavailable on it)."""
        light = copy.copy(self)
        light.model = None
        return light

    def at_network_resolution(self) -> HoverNetSegmenter:
        """This segmenter presented at its network's grid (``mpp * work_downsample``, no
        block-averaging, no label upscaling); shares the model."""
        if self.work_downsample == 1:
            return self
        native = copy.copy(self)
        native.mpp = self.work_mpp
        native.work_downsample = 1
        native.halo_px = native._halo_px()
        return native

    def __repr__(self) -> str:
        coarse = f", network at {self.work_mpp} µm/px" if self.work_downsample > 1 else ""
        return (f"HoverNetSegmenter({self.name!r}, {self.input_size}->{self.output_size}, "
                f"{self.mpp} µm/px{coarse}, device={self.device})")

    def predict(self, rgb: np.ndarray) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
        """Stitched maps of one (H, W, 3) image, or a list for a (B, H, W, 3) batch."""
        rgb = np.asarray(rgb)
        if rgb.ndim == 4:
            return [self.predict(t) for t in rgb]
        if rgb.ndim != 3 or rgb.shape[-1] < 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        work = block_mean(rgb[..., :3], self.work_downsample)
        maps = predict_maps(self.model, work, self.input_size, self.output_size, self.device,
                            self.batch_size, self.amp, self.max_input_size)
        if self.test_time_flip:
            mirrored = predict_maps(self.model, np.ascontiguousarray(work[:, ::-1]), self.input_size,
                                    self.output_size, self.device, self.batch_size, self.amp,
                                    self.max_input_size)
            maps = average_with_mirrored(maps, mirrored)
        return maps

    def postprocess(self, raw: dict[str, np.ndarray], rgb: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Official watershed + typing (vote, type_prob, mean softmax ``probs``).

        With ``work_downsample > 1`` the watershed and the typing vote run on the maps' grid and
        the instances are mapped to ``rgb``'s (default: ``work_downsample`` times the maps').
        """
        tp = raw.get("tp") if self.typed else None
        d = self.work_downsample
        if d == 1:
            labels, table = postprocess_maps(raw["np"], raw["hv"], tp, mpp=self.mpp, type_info=self.type_info,
                                             params=self.post_params, type_rule=self.type_rule)
            table.attrs["model"] = self.name
            return labels, table

        shape = tuple(np.asarray(rgb).shape[:2]) if rgb is not None else None
        labels, coarse = self.instances(raw, shape, self.post_params)
        table = measure_instances(labels, mpp=self.mpp, type_info=self.type_info)
        assign_types(table, coarse, tp, self.type_rule)  # typing votes on the network grid
        table.attrs["model"] = self.name
        return labels, table

    def instances(self, raw: dict[str, np.ndarray], shape: tuple[int, int] | None = None,
                  params: HoverPostParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Instance labels at ``mpp`` (``shape``, default the maps' size × ``work_downsample``) and
        on the maps' own grid, without measuring them (e.g. to tune constants)."""
        params = params or self.post_params
        coarse = instances_from_maps(raw["np"], raw["hv"], params)
        d = self.work_downsample
        if d == 1:
            return coarse, coarse
        shape = shape or (coarse.shape[0] * d, coarse.shape[1] * d)
        return upscale_instances(coarse, raw["np"], d, shape, params.np_threshold, self.fill_px), coarse

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        """Segment an image of any size at :attr:`mpp`."""
        return self.postprocess(self.predict(rgb), rgb)
