"""Original TensorFlow HoVer-Net checkpoints (``.npz`` of tensorpack variables) as PyTorch weights.

The first HoVer-Net release (TensorFlow / tensorpack) saved its weights as an ``.npz`` of
variables named like ``group1/block0/conv1/bn/gamma:0``; the PyTorch release (Graham et al. 2019,
https://github.com/vqdang/hover_net, ``convert_chkpt_tf2pytorch.py`` and its
``variables_tf2pytorch.csv``) renamed them and transposed the kernels. :func:`torch_key` derives
the PyTorch name of a variable from its TensorFlow name by the same rules (checked name for name
against upstream's table of 667 variables), and :func:`convert_tf_checkpoint` writes a
``{"desc": state_dict}`` file that :func:`napari_histo.models.hovernet.checkpoint.load_hovernet`
(and so ``segment --model FILE``) loads strictly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from napari_histo.utils import InputFileError, atomic_path

# Lazy imports: torch is imported inside the functions that use it: importing this module stays light.

#: TensorFlow batch-norm variable -> PyTorch parameter or buffer.
_BN = {"gamma": "weight", "beta": "bias", "mean/EMA": "running_mean", "variance/EMA": "running_var"}

_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^conv0/W$"), "conv0./.weight"),
    (re.compile(r"^conv0/bn/(?P<bn>.+)$"), "conv0.bn.{bn}"),
    (re.compile(r"^group(?P<g>\d)/block(?P<b>\d+)/(?P<c>conv[123])/W$"), "d{g}.units.{b}.{c}.weight"),
    (re.compile(r"^group(?P<g>\d)/block(?P<b>\d+)/(?P<c>conv[12]|preact)/bn/(?P<bn>.+)$"), "d{g}.units.{b}.{c}/bn.{bn}"),
    (re.compile(r"^group(?P<g>\d)/block0/convshortcut/W$"), "d{g}.shortcut.weight"),
    (re.compile(r"^group(?P<g>\d)/bnlast/bn/(?P<bn>.+)$"), "d{g}.blk_bna.bn.{bn}"),
    (re.compile(r"^conv_bot/W$"), "conv_bot.weight"),
    (re.compile(r"^(?P<br>np|hv|tp)/u(?P<u>\d)/dense/blk/(?P<i>\d+)/(?P<c>preact_bna|conv1)/bn/(?P<bn>.+)$"),
     "decoder.{br}.u{u}.dense.units.{i}.{c}/bn.{bn}"),
    (re.compile(r"^(?P<br>np|hv|tp)/u(?P<u>\d)/dense/blk/(?P<i>\d+)/(?P<c>conv[12])/W$"),
     "decoder.{br}.u{u}.dense.units.{i}.{c}.weight"),
    (re.compile(r"^(?P<br>np|hv|tp)/u(?P<u>\d)/dense/blk_bna/bn/(?P<bn>.+)$"), "decoder.{br}.u{u}.dense.blk_bna.bn.{bn}"),
    (re.compile(r"^(?P<br>np|hv|tp)/u(?P<u>\d)/(?P<c>conva|convf)/W$"), "decoder.{br}.u{u}.{c}.weight"),
    (re.compile(r"^preact_out_(?P<br>np|hv|tp)/bn/(?P<bn>.+)$"), "decoder.{br}.u0.bn.{bn}"),
    (re.compile(r"^conv_out_(?P<br>np|hv|tp)/W$"), "decoder.{br}.u0.conv.weight"),
    (re.compile(r"^conv_out_(?P<br>np|hv|tp)/b$"), "decoder.{br}.u0.conv.bias"),
]


def torch_key(tf_name: str) -> str | None:
    """PyTorch state_dict key of a TensorFlow variable name; None for variables the PyTorch model
    has no place for (the ImageNet classifier ``linear``)."""
    name = tf_name[:-2] if tf_name.endswith(":0") else tf_name
    if "linear" in name:
        return None
    for pattern, template in _RULES:
        match = pattern.match(name)
        if match:
            groups = match.groupdict()
            if "bn" in groups:
                if groups["bn"] not in _BN:
                    return None
                groups["bn"] = _BN[groups["bn"]]
            return template.format(**groups)
    return None


def is_kernel(key: str) -> bool:
    """A convolution kernel (stored HWIO by TensorFlow, OIHW by PyTorch)."""
    return key.endswith(".weight") and ("conv" in key or "shortcut" in key) and "bn" not in key


def convert_tf_checkpoint(npz_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Convert an original TensorFlow ``.npz`` checkpoint to a PyTorch ``{"desc": state_dict}`` file.

    Raises :class:`~napari_histo.utils.InputFileError` naming the file when it is not an ``.npz``
    of HoVer-Net variables or holds a variable no rule maps.
    """
    import torch

    npz_path, out_path = Path(npz_path), Path(out_path)
    try:
        arrays = np.load(npz_path, allow_pickle=False)
    except Exception as exc:
        raise InputFileError(npz_path, f"not a readable .npz ({type(exc).__name__}: {exc})") from None
    state: dict[str, torch.Tensor] = {}
    unknown = []
    with arrays:
        for name in arrays.files:
            if "linear" in name:
                continue
            key = torch_key(name)
            if key is None:
                unknown.append(name)
                continue
            value = np.asarray(arrays[name])
            if is_kernel(key) and value.ndim == 4:
                value = np.transpose(value, (3, 2, 0, 1))
            state[key] = torch.from_numpy(np.ascontiguousarray(value))
    if unknown:
        raise InputFileError(npz_path, f"{len(unknown)} variables are not HoVer-Net's: {', '.join(unknown[:5])}")
    if "decoder.np.u3.conva.weight" not in state:
        raise InputFileError(npz_path, "holds no HoVer-Net decoder (decoder.np.u3.conva)")
    state["upsample2x.unpool_mat"] = torch.ones((2, 2), dtype=torch.float32)  # as upstream's conversion adds
    with atomic_path(out_path) as tmp:
        torch.save({"desc": state}, tmp)
    return out_path
