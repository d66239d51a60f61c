"""Original TensorFlow HoVer-Net checkpoints convert to weights the PyTorch network loads strictly."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from napari_histo.models.hovernet.checkpoint import load_hovernet
from napari_histo.models.hovernet.net import HoVerNet
from napari_histo.models.hovernet.tf_checkpoint import convert_tf_checkpoint, is_kernel, torch_key
from napari_histo.utils import InputFileError

_BN_TF = {"weight": "gamma", "bias": "beta", "running_mean": "mean/EMA", "running_var": "variance/EMA"}


def _tf_name(key: str) -> str | None:
    """TensorFlow name of a PyTorch key, written independently of the converter's rules."""
    parts = key.split(".")
    param = parts[-1]
    body = ".".join(parts[:-1])
    if key == "conv0./.weight":
        return "conv0/W:0"
    if m := re.fullmatch(r"conv0\.bn", body):
        return f"conv0/bn/{_BN_TF[param]}:0"
    if m := re.fullmatch(r"d(\d)\.units\.(\d+)\.(conv[123])", body):
        return f"group{m[1]}/block{m[2]}/{m[3]}/W:0"
    if m := re.fullmatch(r"d(\d)\.units\.(\d+)\.(conv[12]|preact)/bn", body):
        return f"group{m[1]}/block{m[2]}/{m[3]}/bn/{_BN_TF[param]}:0"
    if m := re.fullmatch(r"d(\d)\.shortcut", body):
        return f"group{m[1]}/block0/convshortcut/W:0"
    if m := re.fullmatch(r"d(\d)\.blk_bna\.bn", body):
        return f"group{m[1]}/bnlast/bn/{_BN_TF[param]}:0"
    if body == "conv_bot":
        return "conv_bot/W:0"
    if m := re.fullmatch(r"decoder\.(\w\w)\.u(\d)\.dense\.units\.(\d+)\.(preact_bna|conv1)/bn", body):
        return f"{m[1]}/u{m[2]}/dense/blk/{m[3]}/{m[4]}/bn/{_BN_TF[param]}:0"
    if m := re.fullmatch(r"decoder\.(\w\w)\.u(\d)\.dense\.units\.(\d+)\.(conv[12])", body):
        return f"{m[1]}/u{m[2]}/dense/blk/{m[3]}/{m[4]}/W:0"
    if m := re.fullmatch(r"decoder\.(\w\w)\.u(\d)\.dense\.blk_bna\.bn", body):
        return f"{m[1]}/u{m[2]}/dense/blk_bna/bn/{_BN_TF[param]}:0"
    if m := re.fullmatch(r"decoder\.(\w\w)\.u(\d)\.(conva|convf)", body):
        return f"{m[1]}/u{m[2]}/{m[3]}/W:0"
    if m := re.fullmatch(r"decoder\.(\w\w)\.u0\.bn", body):
        return f"preact_out_{m[1]}/bn/{_BN_TF[param]}:0"
    if m := re.fullmatch(r"decoder\.(\w\w)\.u0\.conv", body):
        return f"conv_out_{m[1]}/{'W' if param == 'weight' else 'b'}:0"
    return None


@pytest.mark.parametrize("mode", ["original", "fast"])
def test_a_tensorflow_checkpoint_converts_to_identical_pytorch_weights(tmp_path, mode):
    torch.manual_seed(3)
    model = HoVerNet(mode=mode, nr_types=5)
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    state = {k: v for k, v in model.state_dict().items() if "num_batches" not in k and "unpool" not in k}
    arrays = {}
    for key, value in state.items():
        name = _tf_name(key)
        assert name is not None and torch_key(name) == key, key
        array = value.numpy()
        arrays[name] = np.transpose(array, (2, 3, 1, 0)) if is_kernel(key) and array.ndim == 4 else array
    arrays["linear/W:0"] = np.zeros((2048, 1000), np.float32)  # the ImageNet classifier is skipped
    npz = tmp_path / "hovernet_tf.npz"
    np.savez(npz, **arrays)
    out = convert_tf_checkpoint(npz, tmp_path / "hovernet_tf.tar")
    loaded, info = load_hovernet(out)
    if mode == "fast":  # the command line does the same and says what it wrote
        from napari_histo.cli import main

        assert main(["convert", str(npz), str(tmp_path / "cli.tar")]) == 0
        assert main(["convert", str(npz), str(tmp_path / "cli.tar")]) == 1  # never over a file
        assert load_hovernet(tmp_path / "cli.tar")[1].mode == "fast"
    assert info.mode == mode and info.nr_types == 5
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(1, 3, *((270, 270) if mode == "original" else (256, 256)))
    model.eval()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_a_file_that_is_not_a_hovernet_checkpoint_is_refused(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, **{"resnet/fc/W:0": np.zeros(3)})
    with pytest.raises(InputFileError, match="other.npz.*not HoVer-Net"):
        convert_tf_checkpoint(other, tmp_path / "x.tar")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(InputFileError, match="not a readable .npz"):
        convert_tf_checkpoint(text, tmp_path / "y.tar")
    assert not (tmp_path / "x.tar").exists()
