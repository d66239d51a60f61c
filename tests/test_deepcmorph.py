"""DeepCMorph: shapes for any input size, freezing, weight loading and its errors, fine-tuning."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_histo.models.backbones.efficientnet import EfficientNet, skip_channels
from napari_histo.models.deepcmorph.model import (
    DeepCMorph,
    WeightsMismatchError,
    load_deepcmorph,
    load_pretrained,
    resolve_weights,
    save_pretrained,
    upstream_key_to_ours,
)
from napari_histo.utils import HistoError

#: Names and shapes of an upstream (aiff22/DeepCMorph) B7 state dict, see its "source" field.
UPSTREAM_MANIFEST = Path(__file__).parent / "data" / "deepcmorph_upstream_b7_keys.json.gz"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_model(one_torch_thread) -> DeepCMorph:
    torch.manual_seed(0)
    return DeepCMorph(backbone="slim", num_classes=3, class_names=["a", "b", "c"]).eval()


def test_output_shapes_any_size(small_model):
    x = torch.rand(2, 3, 41, 53)  # not multiples of 16: padded internally and cropped back
    with torch.no_grad():
        logits = small_model(x)
        feats = small_model(x, return_features=True)
        seg, cls = small_model(x, return_segmentation_maps=True)
    assert logits.shape == (2, 3)
    assert feats.shape == (2, small_model.num_features) == (2, 640)
    assert seg.shape == (2, 1, 41, 53) and cls.shape == (2, 7, 41, 53)
    assert float(seg.min()) >= 0 and float(seg.max()) <= 1 and float(cls.max()) <= 1
    # numpy helpers agree with the tensor path
    rgb = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    probs = small_model.predict_proba(rgb)
    assert probs.shape == (1, 3) and np.isclose(probs.sum(), 1, atol=1e-5)
    nuclei, maps = small_model.predict_segmentation(rgb)
    assert nuclei.shape == (1, 41, 53) and maps.shape == (1, 7, 41, 53)


@pytest.fixture(scope="module")
def b7_model(one_torch_thread) -> DeepCMorph:
    """The published architecture with the COMBINED (41-class) head; built once (~90 M values)."""
    return DeepCMorph(backbone="b7", num_classes=41).eval()


def test_b0_and_b7_feature_dims(b7_model):
    assert EfficientNet("b0", num_classes=0).num_features == 1280
    assert skip_channels("b7") == {"features.2.0.block.0": 192, "features.3.0.block.0": 288,
                                   "features.4.0.block.0": 480, "features.6.0.block.0": 1344}
    model = b7_model
    assert model.classification_module.head_name == "output_41"
    assert model.classification_module.features[0].in_channels == 11
    with torch.no_grad():
        logits, feats = model.forward_all(torch.rand(1, 3, 32, 32))
    assert feats.shape == (1, 2560) and logits.shape == (1, 41)


def _trainable(model: DeepCMorph) -> tuple[set[bool], set[bool], list[str]]:
    seg = {p.requires_grad for p in model.segmentation_module.parameters()}
    cls = {p.requires_grad for n, p in model.classification_module.named_parameters() if "output" not in n}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return seg, cls, names


def test_freezing_options():
    default = DeepCMorph(backbone="slim", num_classes=2)
    seg, cls, _ = _trainable(default)
    assert seg == {False} and cls == {True}
    default.train()
    assert not default.segmentation_module.training and default.classification_module.training
    loss = default(torch.rand(2, 3, 32, 32)).sum()
    loss.backward()
    assert all(p.grad is None for p in default.segmentation_module.parameters())
    assert default.classification_module.features[0].weight.grad is not None

    head_only = DeepCMorph(backbone="slim", num_classes=2, freeze_classification_module=True)
    _, cls, names = _trainable(head_only)
    assert cls == {False}
    assert names == ["classification_module.output.weight", "classification_module.output.bias"]

    everything = DeepCMorph(backbone="slim", num_classes=2, freeze_segmentation_module=False)
    assert all(p.requires_grad for p in everything.parameters())


def test_load_weights_roundtrip_and_module_prefix(tmp_path, small_model):
    path = tmp_path / "ckpt.pth"
    torch.save({"module." + k: v for k, v in small_model.state_dict().items()}, path)
    other = DeepCMorph(backbone="slim", num_classes=3).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(other(x), small_model(x))
        report = other.load_weights(path)
        assert torch.allclose(other(x), small_model(x), atol=1e-6)
    assert report.loaded == len(small_model.state_dict()) and not report.missing


def test_load_weights_mismatch_lists_keys(tmp_path, small_model):
    state = dict(small_model.state_dict())
    state.pop("segmentation_module.nuclei_head.bias")
    state["extra.layer.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    wrong_classes = DeepCMorph(backbone="slim", num_classes=5)
    with pytest.raises(WeightsMismatchError) as err:
        wrong_classes.load_weights(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing keys (1): segmentation_module.nuclei_head.bias" in msg
    assert "unexpected keys (1): extra.layer.weight" in msg
    assert "classification_module.output.weight checkpoint (3, 640) vs model (5, 640)" in msg
    report = wrong_classes.load_weights(path, strict=False)  # loads what fits
    assert report.missing == ["segmentation_module.nuclei_head.bias"]
    assert len(report.mismatched) == 2
    with pytest.raises(HistoError, match="needs a released name"):
        wrong_classes.load_weights()


def test_upstream_key_names_map_to_ours():
    cases = {
        "module.model_preprocessing.encoder.features.6.0.block.0.1.running_var":
            "segmentation_module.features.6.0.block.0.1.running_var",
        "module.model_preprocessing.upsample_3.upconv.weight": "segmentation_module.up3.up.0.weight",
        "module.model_preprocessing.conv_4.conv.4.num_batches_tracked":
            "segmentation_module.up4.conv.4.num_batches_tracked",
        "module.model_preprocessing.conv_segmentation.bias": "segmentation_module.nuclei_head.bias",
        "model_preprocessing.conv_classification.weight": "segmentation_module.class_head.weight",
        "module.encoder.features.0.weight": "classification_module.features.0.weight",
        "module.encoder.features.8.1.weight": "classification_module.features.8.1.weight",
        "module.output_9.bias": "classification_module.output_9.bias",
        "module.output.weight": "classification_module.output.weight",
        "module.something_else.weight": "something_else.weight",
    }
    assert {k: upstream_key_to_ours(k) for k in cases} == cases


def test_released_checkpoint_layout_loads_strictly(tmp_path):
    """A state dict with exactly the upstream B7 names and shapes loads strictly, value for value.

    The manifest was produced by running the upstream model definition (torchvision
    EfficientNet-B7 feature extractors) and is independent of this implementation.
    """
    manifest = json.loads(gzip.decompress(UPSTREAM_MANIFEST.read_bytes()))
    assert "aiff22/DeepCMorph" in manifest["source"]
    gen = torch.Generator().manual_seed(0)
    ckpt = {}
    for name, shape in manifest["keys"]:
        if name.endswith("num_batches_tracked"):
            ckpt[name] = torch.tensor(len(ckpt), dtype=torch.long)
        elif name.endswith("running_var"):  # variances must be positive for finite outputs
            ckpt[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            ckpt[name] = torch.randn(shape, generator=gen) * 0.1
    assert len(ckpt) == 2085 and sum(v.numel() for v in ckpt.values()) > 89_000_000
    path = tmp_path / "DeepCMorph_Datasets_Combined_41_classes_acc_8159.pth"
    torch.save(ckpt, path)

    # a released file under its own name: B7 with the 41-class head, loaded strictly
    b7_model = load_deepcmorph(path)
    assert b7_model.config.num_classes == 41 and b7_model.config.class_names[-1] == "TUM"
    own = b7_model.state_dict()
    # every tensor of ours came from the upstream key of the same role (the 41-class head;
    # the other released heads and the generic "output" head are ignored)
    ours_from_upstream = {upstream_key_to_ours(k): k for k in ckpt}
    assert set(own) <= set(ours_from_upstream)
    for ours_name, tensor in own.items():
        assert torch.equal(tensor, ckpt[ours_from_upstream[ours_name]]), ours_name
    assert torch.equal(own["segmentation_module.up1.up.0.weight"],
                       ckpt["module.model_preprocessing.upsample_1.upconv.weight"])
    assert torch.equal(own["classification_module.output_41.weight"], ckpt["module.output_41.weight"])
    with torch.no_grad():
        logits, feats = b7_model.forward_all(torch.rand(1, 3, 32, 32))
    assert logits.shape == (1, 41) and torch.isfinite(logits).all() and feats.shape == (1, 2560)


def test_pickled_model_checkpoint_is_refused_with_advice(tmp_path):
    path = tmp_path / "full_model.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # torch.save(model): a pickled module, not a state dict
    with pytest.raises(HistoError) as err:
        DeepCMorph(backbone="slim", num_classes=2).load_weights(path)
    msg = str(err.value)
    assert str(path) in msg and "pickled model object" in msg and "state_dict()" in msg


def test_released_names_resolve_or_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_HISTO_DEEPCMORPH_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(HistoError) as err:
        resolve_weights("tcga")
    assert str(tmp_path / "DeepCMorph_Pan_Cancer_32_classes_acc_8273.pth") in str(err.value)
    assert ".napari-histo/deepcmorph" in str(err.value)
    target = tmp_path / "DeepCMorph_NCT_CRC_HE_Dataset_9_classes_acc_9699.pth"
    target.write_bytes(b"x")
    assert resolve_weights("CRC") == target
    with pytest.raises(HistoError, match="not found"):
        resolve_weights(tmp_path / "missing.pth")
    with pytest.raises(HistoError, match="cannot read checkpoint"):
        DeepCMorph(backbone="slim", num_classes=9).load_weights(dataset="CRC")


def test_save_and_load_pretrained(tmp_path, small_model):
    save_pretrained(small_model, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["backbone"] == "slim" and cfg["class_names"] == ["a", "b", "c"]
    loaded = load_pretrained(tmp_path / "m")
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.allclose(loaded(x), small_model(x), atol=1e-6)


def test_group_kfold_is_patient_wise(shared_data):
    from src_models.deepcmorph.data import (
        classification_metrics,
        group_kfold,
        load_manifest_dataset,
    )

    data = load_manifest_dataset(shared_data / "breakhis" / "manifest.csv", "tumor_class",
                                 group_column="slide_id", downscale=8)
    assert len(data.images) == 36 and data.class_names == ["benign", "malignant"]
    folds = group_kfold(data.labels, data.groups, 3, seed=0)
    for g in set(data.groups):
        assert len({int(folds[i]) for i, x in enumerate(data.groups) if x == g}) == 1
    for k in range(3):  # every fold holds both classes
        assert set(data.labels[folds == k].tolist()) == {0, 1}
    m = classification_metrics([0, 0, 0, 1], [0, 0, 0, 0], 2)
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.5


def test_finetune_folder_dataset_from_config(tmp_path):
    from PIL import Image

    from src_models.deepcmorph.train import train_from_config_file

    rng = np.random.default_rng(0)
    for cls, colour in (("pink", (230, 120, 180)), ("purple", (90, 40, 140))):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(4):
            im = np.clip(np.array(colour) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(im).save(tmp_path / "data" / cls / f"{cls}{i}.png")
    cfg = {"data": "data", "out_dir": "out", "backbone": "slim", "downscale": 1.0, "tile_size": 32,
           "epochs": 2, "batch_size": 4, "folds": 2, "lr": 0.003}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    result = train_from_config_file(tmp_path / "cfg.json")
    assert result["pooled"]["n"] == 8 and result["class_names"] == ["pink", "purple"]
    assert 0.0 <= result["pooled"]["balanced_accuracy"] <= 1.0
    for k in (0, 1):
        model = load_pretrained(tmp_path / "out" / f"fold{k}")
        assert model.config.class_names == ["pink", "purple"] and model.config.num_classes == 2
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["folds"] == 2
    resumed = train_from_config_file(tmp_path / "cfg.json", resume=True)  # all epochs done: no training
    assert "resumed" in (tmp_path / "out" / "train.log").read_text()
    assert resumed["pooled"]["n"] == 8


def test_upstream_call_forms_work(tmp_path):
    """``DeepCMorph(9)`` and ``load_weights(dataset=..., path_to_checkpoints=...)`` as upstream writes them."""
    positional = DeepCMorph(9, backbone="slim")
    assert positional.config.num_classes == 9 == DeepCMorph(backbone="slim", num_classes=9).config.num_classes
    torch.manual_seed(1)
    trained = DeepCMorph(9, backbone="slim")
    torch.save(trained.state_dict(), tmp_path / "DeepCMorph_NCT_CRC_HE_Dataset_9_classes_acc_9699.pth")
    fresh = DeepCMorph(9, backbone="slim")
    fresh.load_weights(dataset="CRC", path_to_checkpoints=tmp_path)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with pytest.raises(HistoError, match="not found at"):
        fresh.load_weights(dataset="TCGA", path_to_checkpoints=tmp_path)


def test_evaluate_takes_a_released_name(tmp_path, monkeypatch):
    """``evaluate`` resolves released names like every other entry point (here: absent, so it says
    where it looked), and refuses a nucleus module, which has no tissue classes."""
    from napari_histo.models.deepcmorph.model import DeepCMorph, save_pretrained
    from napari_histo.utils import HistoError
    from src_models.deepcmorph.evaluate import evaluate

    monkeypatch.setenv("NAPARI_HISTO_DEEPCMORPH_DIR", str(tmp_path / "released"))
    with pytest.raises(HistoError, match=r"DeepCMorph weights 'CRC' not found; looked for .*released"):
        evaluate("CRC", tmp_path)
    folder = save_pretrained(DeepCMorph(backbone="slim", num_classes=0, num_seg_classes=4), tmp_path / "nm")
    with pytest.raises(HistoError, match="a nucleus module has no tissue classes"):
        evaluate(folder, tmp_path)


def test_nucleus_module_trains_from_the_cli_and_resumes(shared_data, tmp_path):
    """``napari-histo train deepcmorph`` with a ``"task": "nuclei"`` config: a tiny run on two
    CoNSeP images lowers the loss and writes a nucleus module; ``--resume`` finds it finished."""
    import json

    from napari_histo.cli import main
    from napari_histo.models.deepcmorph.model import load_deepcmorph

    keep = {"train_1", "train_2"}
    exclude = [f"train_{k}" for k in range(1, 28) if f"train_{k}" not in keep]
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "task": "nuclei", "data_root": str(shared_data), "cache_dir": "cache", "out_dir": "out",
        "sources": ["consep"], "val_consep": [], "exclude": exclude, "patch_size": 64, "batch_size": 4,
        "iterations": 60, "checkpoint_every": 30, "threads": 1, "lr": 0.003}))
    assert main(["train", "deepcmorph", "--config", str(config)]) == 0
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history[-1]["iteration"] == 60
    assert np.mean([h["loss"] for h in history[-2:]]) < history[0]["loss"]
    model = load_deepcmorph(tmp_path / "out")
    assert not model.has_classifier and model.config.seg_class_names == ["other", "inflammatory", "epithelial",
                                                                          "spindle"]
    assert main(["train", "deepcmorph", "--config", str(config), "--resume"]) == 0
    assert json.loads((tmp_path / "out" / "history.json").read_text()) == history  # nothing trained again
