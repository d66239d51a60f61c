"""Official HoVer-Net architecture: exact key manifests, strict checkpoint loading, shapes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO

from napari_histo.models.hovernet.checkpoint import infer_config, load_hovernet, read_state_dict
from napari_histo.models.hovernet.net import HoVerNet

KEYS_DIR = REPO.parent / "shared" / "specs" / "hovernet_keys"
CONFIGS = [("fast_pannuke6.json", "fast", 6, 37_639_626), ("original_notype.json", "original", None, 45_028_676)]


def _manifest(name: str) -> dict[str, list[int]]:
    path = KEYS_DIR / name
    if not path.exists():
        pytest.skip(f"HoVer-Net key manifest not available: {path}")
    return json.loads(path.read_text())


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,mode,nr_types,n_params", CONFIGS)
def test_state_dict_matches_official_manifest(name, mode, nr_types, n_params):
    manifest = _manifest(name)
    model = HoVerNet(mode, nr_types, init_weights=False)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(manifest)  # same names, same registration order
    assert ours == manifest
    assert _n_params(model) == n_params


def test_other_configurations_parameter_counts():
    assert _n_params(HoVerNet("fast", None, init_weights=False)) == 33_625_412
    typed = HoVerNet("original", 5, init_weights=False)
    assert _n_params(typed) == 54_744_457 and len(typed.state_dict()) == 798


_RANDOM: dict[int, dict[str, torch.Tensor]] = {}


def _random_checkpoint(manifest: dict[str, list[int]], prefix: str = "") -> dict[str, torch.Tensor]:
    """Released-weights layout: every manifest entry but num_batches_tracked, random values.

    Values are views into one random buffer (cached per manifest) to keep the test fast.
    """
    key = len(manifest)
    if key not in _RANDOM:
        shapes = {k: s for k, s in manifest.items() if not k.endswith("num_batches_tracked")}
        total = sum(int(torch.Size(s).numel()) for s in shapes.values())
        flat = torch.rand(total, generator=torch.Generator().manual_seed(0)) - 0.5
        out, pos = {}, 0
        for k, s in shapes.items():
            n = int(torch.Size(s).numel())
            out[k] = torch.ones(s) if k == "upsample2x.unpool_mat" else flat[pos : pos + n].view(s).clone()
            pos += n
        _RANDOM[key] = out
    return {prefix + k: v for k, v in _RANDOM[key].items()}


@pytest.mark.parametrize("name,mode,nr_types,n_params", CONFIGS)
@pytest.mark.parametrize("wrap,prefix", [("desc", ""), ("desc", "module."), ("bare", "")])
def test_strict_loading_of_official_layouts(tmp_path, name, mode, nr_types, n_params, wrap, prefix):
    manifest = _manifest(name)
    sd = _random_checkpoint(manifest, prefix)
    path = tmp_path / ("ckpt.tar" if wrap == "desc" else "ckpt.pth")
    torch.save({"desc": sd, "optimizer": {}} if wrap == "desc" else sd, path)
    model, info = load_hovernet(path)
    assert (info.mode, info.nr_types) == (mode, nr_types)
    assert (info.input_size, info.output_size) == ((256, 164) if mode == "fast" else (270, 80))
    assert not model.training
    loaded = model.state_dict()
    for key in ("conv0./.weight", "d2.units.5.conv2/bn.running_var", "decoder.hv.u0.conv.bias"):
        assert torch.equal(loaded[key], sd[prefix + key])
    if nr_types:
        assert torch.equal(loaded["decoder.tp.u0.conv.weight"], sd[prefix + "decoder.tp.u0.conv.weight"])


def test_mismatched_checkpoint_gives_one_clear_error(tmp_path):
    from napari_histo.utils import InputFileError

    sd = _random_checkpoint(_manifest("fast_pannuke6.json"))
    path = tmp_path / "hovernet_fast_pannuke_type_tf2pytorch.tar"
    torch.save({"desc": sd}, path)
    # wrong mode: 3x3 decoder kernels into the 5x5 original model
    with pytest.raises(InputFileError) as err:
        load_hovernet(path, mode="original")
    msg = str(err.value)
    assert path.name in msg and "shape mismatches" in msg
    assert "decoder.tp.u3.conva.weight: checkpoint (256, 1024, 3, 3) vs model (256, 1024, 5, 5)" in msg
    # wrong nr_types: the tp branch is unexpected for an untyped model
    with pytest.raises(InputFileError, match=r"unexpected keys: decoder\.tp\."):
        load_hovernet(path, nr_types=0)
    # a truncated checkpoint lists its missing keys
    partial = {k: v for k, v in sd.items() if not k.startswith("decoder.hv.")}
    torch.save({"desc": partial}, path)
    with pytest.raises(InputFileError, match=r"missing keys: decoder\.hv\."):
        load_hovernet(path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputFileError, match="junk.pth"):
        read_state_dict(junk)
    with pytest.raises(InputFileError, match="not a HoVer-Net"):
        infer_config({"foo": torch.zeros(1)})


@pytest.mark.parametrize("mode,nr_types,size,out", [("fast", 6, 256, 164), ("original", None, 270, 80)])
def test_forward_shapes_symbolic(mode, nr_types, size, out):
    model = HoVerNet(mode, nr_types, init_weights=False).eval().to("meta")
    pred = model(torch.empty(2, 3, size, size, device="meta"))
    assert list(pred) == (["tp", "np", "hv"] if nr_types else ["np", "hv"])
    assert pred["np"].shape == (2, 2, out, out) and pred["hv"].shape == (2, 2, out, out)
    if nr_types:
        assert pred["tp"].shape == (2, nr_types, out, out)


@pytest.mark.slow
def test_forward_real_original_270_to_80():
    """One real forward (the fast mode's shapes are covered symbolically above)."""
    torch.manual_seed(0)
    model = HoVerNet("original", None).eval()
    seen = {}

    def record_input(_mod, inp, _out) -> None:
        seen["max_in"] = float(inp[0].max())

    model.conv0.register_forward_hook(record_input)
    x = torch.rand(1, 3, 270, 270) * 255
    with torch.inference_mode():
        pred = model(x)
    assert list(pred) == ["np", "hv"]
    assert pred["np"].shape == (1, 2, 80, 80) and pred["hv"].shape == (1, 2, 80, 80)
    assert all(torch.isfinite(v).all() for v in pred.values())
    # the model normalises 0..255 input itself (divides by 255 before conv0)
    assert 0.9 < seen["max_in"] <= 1.0
