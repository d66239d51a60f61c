"""MPCS: pair strategies, NT-Xent against a hand computation, views, head, folds, a training step."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch

from napari_histo.models.hagnifinder.images import mag_to_mpp, to_tensor
from src_models.hagnifinder.data import SourceImage
from src_models.mpcs.data import PairViewSampler
from src_models.mpcs.evaluate import patient_folds
from src_models.mpcs.loss import nt_xent
from src_models.mpcs.model import MPCSModel, ProjectionHead, head_dims
from src_models.mpcs.pairs import fixed_pair, get_pair_strategy, ordered_pair, random_pair

LEVELS = (40, 100, 200, 400)


def test_random_pair_is_distinct_and_covers_all_pairs():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        a, b = random_pair(LEVELS, rng)
        assert a != b and a in LEVELS and b in LEVELS
        seen.add(frozenset((a, b)))
    assert seen == {frozenset(p) for p in combinations(LEVELS, 2)}


def test_ordered_pair_follows_the_upstream_lookup_without_reversed_pairs():
    rng = np.random.default_rng(1)
    pairs = [ordered_pair(LEVELS, rng) for _ in range(4000)]
    assert set(pairs) == {(40.0, 100.0), (100.0, 200.0), (200.0, 400.0)}  # never 400 -> 200
    share = sum(p == (200.0, 400.0) for p in pairs) / len(pairs)
    assert share == pytest.approx(0.5, abs=0.03)  # drawn for 200 and for 400, as upstream


def test_fixed_pair_and_names():
    rng = np.random.default_rng(2)
    assert {fixed_pair(LEVELS[::-1], rng) for _ in range(20)} == {(200.0, 400.0)}
    assert get_pair_strategy("ordered") is ordered_pair
    with pytest.raises(ValueError):
        get_pair_strategy("xx")
    with pytest.raises(ValueError):
        random_pair((40,), rng)


def _hand_nt_xent(z1, z2, tau, symmetric):
    emb = [v / np.linalg.norm(v) for v in np.concatenate([z1, z2])]
    b = len(z1)
    terms = []
    for i in range(2 * b if symmetric else b):
        pos = i + b if i < b else i - b
        num = math.exp(float(emb[i] @ emb[pos]) / tau)
        den = sum(math.exp(float(emb[i] @ emb[k]) / tau) for k in range(2 * b) if k != i)
        terms.append(-math.log(num / den))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("symmetric", [False, True])
def test_nt_xent_matches_hand_computation(symmetric):
    rng = np.random.default_rng(3)
    z1, z2 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), 0.1, symmetric=symmetric).item()
    assert got == pytest.approx(_hand_nt_xent(z1, z2, 0.1, symmetric), rel=1e-9)
    # identical views give a lower loss than unrelated ones
    assert nt_xent(torch.tensor(z1), torch.tensor(z1)).item() < got


def test_pair_views_show_the_same_field():
    rng = np.random.default_rng(4)
    tex = rng.integers(30, 220, (120, 120, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)  # 480 px
    src = SourceImage("t", "t", None, mag_to_mpp(40), _rgb=tex)
    sampler = PairViewSampler([src], "fp", levels=(10, 20, 40), patch_size=64, augment=False)
    for _ in range(5):
        low, high, mag_low, mag_high = sampler.sample(rng)
        assert (mag_low, mag_high) == (20.0, 40.0)
        # the 20x view's centre 32 px = the 40x view shrunk 2x (box filter)
        shrunk = high.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
        assert np.abs(low[16:48, 16:48].astype(float) - shrunk).mean() < 1.0


def test_projection_head_dims_and_norm():
    assert head_dims(2048) == (1024, 128)
    assert head_dims(128) == (64, 32)
    head = ProjectionHead(2048, 1024, 128)
    assert [m.out_features for m in head.net if isinstance(m, torch.nn.Linear)] == [1024, 128]
    assert head.net[-1].affine is False
    out = head(torch.randn(4, 2048))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))


def test_patient_folds_are_patient_disjoint():
    patients = [f"p{i // 3}" for i in range(30)]
    strata = ["B" if i < 15 else "M" for i in range(30)]
    folds = patient_folds(patients, strata, 5, seed=1)
    assert len(folds) == 5
    covered = np.concatenate([te for _, te in folds])
    assert sorted(covered) == list(range(30))
    for tr, te in folds:
        assert {patients[i] for i in tr}.isdisjoint({patients[i] for i in te})


def test_pretraining_steps_lower_the_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    tex = rng.integers(30, 220, (60, 60, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    src = SourceImage("t", "t", None, mag_to_mpp(40), _rgb=tex)
    a, b = PairViewSampler([src], "rp", levels=(10, 20, 40), patch_size=32).batch(rng, 8)
    model = MPCSModel("resnet_slim", width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xa, xb = to_tensor(a), to_tensor(b)
    losses = []
    for _ in range(8):
        loss = nt_xent(model(xa), model(xb), 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_multimag_probe_reads_scale_from_features_and_scores_unseen_sources():
    """The magnification probe: fitted on one set of sources, scored on others; a field's scale
    (here the period of its stripes) is what it must read, and the error is reported in x."""
    from napari_histo.models.backbones import build_resnet
    from src_models.mpcs.evaluate import multimag_linear_evaluation

    rng = np.random.default_rng(3)

    def field(level: float, source: str) -> dict:
        period = 24 / (level / 5)  # 5x: wide stripes, 20x: narrow ones
        phase, angle = rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
        yy, xx = np.mgrid[:64, :64]
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
        grey = 128 + 90 * wave + rng.normal(0, 8, wave.shape)
        rgb = np.clip(np.stack([grey, grey * 0.7, grey * 0.9], -1), 0, 255).astype(np.uint8)
        return {"patch": rgb, "nominal": level, "source": source}

    levels = (5.0, 20.0)
    fields = {"train": [field(m, f"s{k}") for k in range(4) for m in levels for _ in range(12)],
              "held_out": [field(m, f"h{k}") for k in range(2) for m in levels for _ in range(10)]}
    torch.manual_seed(0)
    result = multimag_linear_evaluation(build_resnet("resnet_slim", width=8), fields, levels)
    assert (result["n_train"], result["n_held_out"]) == (96, 40)
    assert result["accuracy"] >= 0.9 and set(result["by_magnification"]) == {"5x", "20x"}
    assert result["mae_x"] == pytest.approx((1 - result["accuracy"]) * 15)
    # a probe on features that cannot see the stripes is at chance
    fields_blank = {k: [{**r, "patch": np.full_like(r["patch"], 128)} for r in v] for k, v in fields.items()}
    assert multimag_linear_evaluation(build_resnet("resnet_slim", width=8), fields_blank, levels)["accuracy"] == 0.5


def test_efficientnet_b2_encoder_option_has_the_published_architecture():
    import torch

    from src_models.mpcs.model import MPCSModel

    model = MPCSModel("efficientnet_b2")
    # EfficientNet-B2 without its classifier: 7,700,994 parameters (Tan & Le 2019; the
    # feature extractor of the reference implementation), 1408-d pooled features
    assert sum(p.numel() for p in model.encoder.parameters()) == 7_700_994
    assert model.encoder.out_features == 1408
    out = model.train()(torch.rand(4, 3, 96, 96))  # as pretraining runs it
    assert out.shape == (4, 88) and torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    with pytest.raises(ValueError, match="efficientnet_b9"):
        MPCSModel("efficientnet_b9")


def test_distributed_pretraining_in_two_cpu_processes_keeps_the_replicas_identical(tmp_path):
    import json

    from src_models.mpcs.config import MPCSConfig
    from src_models.mpcs.train import pretrain_ddp

    rng = np.random.default_rng(7)
    tex = rng.integers(30, 220, (64, 64, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    sampler = PairViewSampler([SourceImage("t", "t", None, mag_to_mpp(40), _rgb=tex)], "op", levels=(10, 20, 40),
                              patch_size=32)
    config = MPCSConfig(width=4, patch_size=32, batch_size=8, iters=3, checkpoint_every=1, log_every=1,
                        out_dir=str(tmp_path / "ddp"))
    pretrain_ddp(config, world_size=2, backend="gloo", sampler=sampler)
    out = tmp_path / "ddp"
    assert (out / "encoder.pt").is_file() and (out / "config.json").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3]
    check = [r for r in records if r.get("event") == "ddp_check"]
    assert check == [{**check[0], "world_size": 2, "identical": True}]
    assert "2 process(es)" in (out / "train.log").read_text()
    assert not (out / ".ddp_rendezvous").exists()


def test_grad_cam_of_a_linear_classifier_is_the_class_activation_map_and_the_command_writes_it(tmp_path):
    import torch.nn.functional as F
    from PIL import Image

    from src_models.mpcs.config import MPCSConfig
    from src_models.mpcs.gradcam import grad_cam, main, overlay, spatial_features
    from src_models.mpcs.model import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder("resnet_slim", width=8).eval()
    classifier = torch.nn.Linear(encoder.out_features, 2)
    rgb = np.random.default_rng(3).integers(40, 230, (96, 128, 3), dtype=np.uint8)
    cam, target, probs = grad_cam(encoder, classifier, rgb, target=1)
    assert cam.shape == (96, 128) and target == 1 and probs.sum() == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():  # CAM (Zhou et al. 2016): the class weights over the feature maps
        fmap = spatial_features(encoder, to_tensor(rgb[None]))
        ref = F.relu(torch.einsum("k,bkhw->bhw", classifier.weight[1], fmap))[:, None]
        ref = F.interpolate(ref, size=(96, 128), mode="bilinear", align_corners=False)[0, 0].numpy()
    assert ref.max() > 0
    np.testing.assert_allclose(cam, ref / ref.max(), atol=1e-4)
    assert overlay(rgb, cam).shape == rgb.shape
    # the command: saved encoder (+ config.json) and linear classifier -> PNG over the image + .npy map
    folder = tmp_path / "run"
    folder.mkdir()
    MPCSConfig(backbone="resnet_slim", width=8).save(folder / "config.json")
    torch.save(encoder.state_dict(), folder / "encoder.pt")
    torch.save(classifier.state_dict(), tmp_path / "linear.pt")
    Image.fromarray(rgb).save(tmp_path / "img.png")
    assert main([str(tmp_path / "img.png"), "--encoder", str(folder / "encoder.pt"), "--classifier",
                 str(tmp_path / "linear.pt"), "--target", "1", "-o", str(tmp_path / "cam.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "cam.png")).shape == (96, 128, 3)
    np.testing.assert_allclose(np.load(tmp_path / "cam.npy"), cam, atol=1e-5)


def test_bach_and_bisque_layouts_feed_the_class_probe(tmp_path):
    """A folder per class (BACH's ``Photos/InSitu`` spelling included) becomes labelled rows, folds
    are stratified by class with one image per group, and the probe separates visibly different
    classes; a missing class folder is an error naming it."""
    from PIL import Image

    from napari_histo.utils import InputFileError
    from src_models.mpcs.config import MPCSConfig
    from src_models.mpcs.data import read_class_folders
    from src_models.mpcs.evaluate import compare
    from src_models.mpcs.model import build_encoder

    rng = np.random.default_rng(2)
    colours = {"Benign": (230, 150, 200), "InSitu": (120, 60, 160), "Invasive": (90, 40, 120), "Normal": (250, 230, 240)}
    root = tmp_path / "Photos"
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for k in range(10):
            noise = rng.normal(0, 12, (48, 64, 3))
            Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(root / name / f"{k}.tif")
    rows = read_class_folders(root, "bach")
    assert len(rows) == 40 and {r.tumor_class for r in rows} == {"benign", "insitu", "invasive", "normal"}
    assert len({r.patient for r in rows}) == 40
    config = MPCSConfig(width=8, out_dir=str(tmp_path / "enc"))
    torch.manual_seed(0)
    (tmp_path / "enc").mkdir()
    torch.save(build_encoder(config.backbone, width=config.width).state_dict(), tmp_path / "enc" / "encoder.pt")
    config.save(tmp_path / "enc" / "config.json")
    result = compare(tmp_path / "enc" / "encoder.pt", root, dataset="bach", size=32)
    assert set(result["linear"]) == {"class/mpcs", "class/random"}
    probe = result["linear"]["class/random"]
    assert probe["folds"] == 5 and probe["ila_mean"] >= 0.9
    # Bisque: two classes; a missing one is named
    (tmp_path / "bisque" / "benign").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "bisque" / "benign" / "a.png")
    with pytest.raises(InputFileError, match="malignant"):
        read_class_folders(tmp_path / "bisque", "bisque")


def test_breakhis_evaluation_per_magnification(tmp_path):
    """With ``per_magnification`` the class probe also runs on each magnification's images alone,
    pretrained and random, with and without fine-tuning; folds stay patient-disjoint."""
    from PIL import Image

    from src_models.mpcs.config import MPCSConfig
    from src_models.mpcs.evaluate import compare
    from src_models.mpcs.model import build_encoder

    rng = np.random.default_rng(4)
    root = tmp_path / "breakhis"
    root.mkdir()
    lines = ["path,magnification,tumor_class,tumor_subtype,slide_id,source_repo_dir"]
    for mag in ("40X", "200X"):
        for cls, colour in (("benign", (235, 170, 210)), ("malignant", (100, 50, 140))):
            for patient in range(5):
                name = f"{cls}_{patient}_{mag}.png"
                pixels = np.clip(np.array(colour) + rng.normal(0, 10, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / name)
                lines.append(f"{name},{mag},{cls},{cls}_sub,{cls}-{patient},x")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    config = MPCSConfig(width=8)
    (tmp_path / "enc").mkdir()
    torch.manual_seed(0)
    torch.save(build_encoder(config.backbone, width=config.width).state_dict(), tmp_path / "enc" / "encoder.pt")
    config.save(tmp_path / "enc" / "config.json")
    result = compare(tmp_path / "enc" / "encoder.pt", tmp_path, targets_=("class",), size=32,
                     per_magnification=True, finetune_epochs=1)
    for key in ("class@40X/mpcs", "class@40X/random", "class@200X/mpcs", "class@200X/random"):
        assert result["linear"][key]["folds"] == 5 and key in result["finetune"]
    assert result["linear"]["class@40X/random"]["ila_mean"] >= 0.9
