"""Label completion: pseudo-label rule, sparse loss, three stages on tiny data, N x 2 I/O, adapters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_histo.models.label_completion.inference import nucleus_crops
from napari_histo.models.label_completion.model import LabelCompletionConfig, LabelSet, load_model
from src_models.label_completion.data import AnnotatedImage
from src_models.label_completion.losses import mutual_pseudo_labels, sparse_label_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pseudo_label_rule_threshold():
    big = 12.0  # softmax of [12, 0, 0] is 0.99998 > 0.99; [4.6, 0, 0] gives 0.98 < 0.99
    mlp = torch.tensor([[big, 0, 0], [0, 4.6, 0], [0, 0, big], [0, 0, 0]])
    base = torch.tensor([[0, 0, 0], [0, big, 0], [big, 0, 0], [0, 0, 4.6]])
    tb, mb, tm, mm = mutual_pseudo_labels(base, mlp, 0.99)
    assert mb.tolist() == [True, False, True, False]  # MLP confident -> supervises base
    assert tb[mb].tolist() == [0, 2]
    assert mm.tolist() == [False, True, True, False]  # base confident -> supervises MLP
    assert tm[mm].tolist() == [1, 0]
    # a lower threshold admits the 0.98-confident rows
    _, mb2, _, mm2 = mutual_pseudo_labels(base, mlp, 0.9)
    assert mb2.tolist() == [True, True, True, False] and mm2.tolist() == [False, True, True, True]


def test_sparse_loss_touches_only_own_slice():
    logits = torch.zeros(3, 7, requires_grad=True)
    offsets = [0, 4, 7]
    loss = sparse_label_loss(logits, torch.tensor([0, 1, 1]), torch.tensor([2, -1, 0]), offsets)
    loss.backward()
    g = logits.grad
    assert torch.all(g[0, 4:] == 0) and torch.any(g[0, :4] != 0)  # set-0 sample: only slice 0
    assert torch.all(g[1] == 0)  # unlabelled sample: no gradient
    assert torch.all(g[2, :4] == 0) and torch.any(g[2, 4:] != 0)
    assert np.isclose(float(loss), (np.log(4) + np.log(3)) / 2, atol=1e-5)


def _synthetic_images(rng: np.random.Generator) -> dict[str, list[AnnotatedImage]]:
    """Two 'datasets' whose nucleus types differ by stain colour/size; a few unlabelled nuclei."""
    colours = {"A": [(40, 20, 120), (150, 40, 90)], "B": [(40, 20, 120), (150, 40, 90), (90, 140, 60)]}
    out = {}
    for name, cols in colours.items():
        images = []
        for k in range(2):
            rgb = np.full((96, 96, 3), 235, np.uint8)
            centres, boxes, labels = [], [], []
            for i in range(36):
                cx, cy = 8 + (i % 6) * 16, 8 + (i // 6) * 16
                lab = int(rng.integers(0, len(cols)))
                rgb[cy - 4:cy + 4, cx - 4:cx + 4] = cols[lab]
                centres.append([cx, cy])
                boxes.append([cx - 4, cy - 4, cx + 4, cy + 4])
                labels.append(lab if i % 9 else -1)
            images.append(AnnotatedImage(f"{name}{k}", rgb, 0.5, np.array(centres, float),
                                         np.array(boxes, float), np.array(labels), np.arange(1, 37)))
        out[name] = images
    return out


def _tiny_config(tmp_path, **kw) -> LabelCompletionConfig:
    base = dict(label_sets=[LabelSet("A", ["a0", "a1"]), LabelSet("B", ["b0", "b1", "b2"])],
                heldout={"A": {"images": ["A1"]}, "B": {"x_fraction": 0.7}}, out_dir=str(tmp_path / "run"),
                crop_um=8.0, input_size=16, encoder_widths=[8, 16], mlp_hidden=16, base_epochs=3,
                correlation_epochs=3, completion_epochs=2, batch_size=32, base_lr=3e-3, threshold=0.99)
    base.update(kw)
    return LabelCompletionConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from src_models.label_completion.samples import build_samples
    from src_models.label_completion.train import train_stages

    tmp = tmp_path_factory.mktemp("lc")
    torch.manual_seed(0)
    cfg = _tiny_config(tmp)
    samples = build_samples(cfg, _synthetic_images(np.random.default_rng(0)))
    logs: list[str] = []
    metrics = train_stages(cfg, samples=samples, log=logs.append)
    return cfg, samples, metrics, logs


def test_three_stages_run_and_resume(trained):
    from src_models.label_completion.train import train_stages

    cfg, samples, metrics, logs = trained
    assert list(metrics["stages"]) == ["base", "correlation", "completion"]
    out = cfg.out_dir
    model = load_model(out)
    assert model.mlps_trained.tolist() == [True, True]
    assert model.mlps[0].net[0].in_features == 3 and model.mlps[1].net[0].in_features == 2
    assert {"A", "B"} <= set(metrics["stages"]["completion"]["heldout"])
    assert any("pseudo-labels" in line for line in logs)
    # held-out definition: all of image A1, and B nuclei right of 70 % of the width
    assert set(samples.image[samples.heldout & (samples.set_index == 0)]) == {"A1"}
    # resume: every stage is done, so nothing trains again
    again: list[str] = []
    train_stages(cfg, samples=samples, resume=True, log=again.append)
    assert any("resumed after stage completion" in line for line in again)
    assert not any("epoch" in line for line in again)


def test_completion_without_correlation_is_refused(tmp_path):
    from src_models.label_completion.samples import build_samples
    from src_models.label_completion.train import train_stages

    cfg = _tiny_config(tmp_path, stages=["base", "completion"], base_epochs=1)
    samples = build_samples(cfg, _synthetic_images(np.random.default_rng(1)))
    with pytest.raises(ValueError, match="correlation stage first"):
        train_stages(cfg, samples=samples, log=lambda m: None)


def test_classify_instances_n_by_2(trained):
    from napari_histo.models.label_completion.inference import classify_instances

    cfg, _, _, _ = trained
    model = load_model(cfg.out_dir)
    img = _synthetic_images(np.random.default_rng(2))["A"][0]
    mask = np.zeros(img.rgb.shape[:2], np.int32)
    ids = [3, 7, 20, 36]
    for i in ids:
        x0, y0, x1, y1 = img.bboxes[i - 1].astype(int)
        mask[y0:y1, x0:x1] = i * 10  # arbitrary instance ids
    out = classify_instances(img.rgb, mask, model, mpp=0.5)
    assert set(out) == {"A", "B"}
    for name, n_types in (("A", 2), ("B", 3)):
        arr = out[name]
        assert arr.shape == (4, 2) and arr.dtype == np.int64
        assert arr[:, 0].tolist() == [30, 70, 200, 360]
        assert set(arr[:, 1].tolist()) <= set(range(n_types))  # 0-based, as the method writes them
    one = classify_instances(img.rgb, mask, model, mpp=0.5, one_based=True)
    for name in ("A", "B"):
        assert (one[name][:, 1] == out[name][:, 1] + 1).all()
    with pytest.raises(Exception, match="not in the model"):
        classify_instances(img.rgb, mask, model, mpp=0.5, label_sets=["C"])
    empty = classify_instances(img.rgb, np.zeros_like(mask), model, mpp=0.5, label_sets=["B"])
    assert empty["B"].shape == (0, 2)


def test_type_table_adds_columns(trained):
    from napari_histo.models.label_completion.inference import type_table
    from napari_histo.schema.table import empty_table

    cfg, _, _, _ = trained
    model = load_model(cfg.out_dir)
    img = _synthetic_images(np.random.default_rng(3))["B"][0]
    rows = []
    for i in range(5):
        x0, y0, x1, y1 = img.bboxes[i]
        rows.append({"id": i + 1, "x": img.centres[i, 0] + 1000, "y": img.centres[i, 1] + 500,
                     "bbox_x0": int(x0) + 1000, "bbox_y0": int(y0) + 500, "bbox_x1": int(x1) + 1000,
                     "bbox_y1": int(y1) + 500, "area_px": 64.0, "area_um2": 16.0, "perimeter_px": 32.0,
                     "type": 0, "type_prob": 1.0, "contour": np.zeros((4, 2), np.float32)})
    table = pd.concat([empty_table(mpp=0.5), pd.DataFrame(rows)], ignore_index=True)
    table.attrs["mpp"] = 0.5
    typed = type_table(table, img.rgb, model, offset=(1000, 500), set_type="B")
    assert typed["type_A"].between(1, 2).all() and typed["type_B"].between(1, 3).all()
    assert typed["type_B_prob"].between(1 / 3, 1).all()
    assert (typed["type"] == typed["type_B"]).all()
    assert typed.attrs["type_info"]["3"][0] == "b2" and typed.attrs["label_sets"]["A"] == ["a0", "a1"]
    # crops follow the offset: typing the same nuclei through classify_instances agrees
    assert "type_A" not in table.columns


def test_nucleus_crops_sizes():
    rgb = np.zeros((50, 60, 3), np.uint8)
    rgb[:, 30:] = 255
    crops = nucleus_crops(rgb, np.array([[2.0, 2.0], [45.0, 25.0]]),
                          np.array([[0, 0, 4, 4], [20, 5, 58, 45]], float), mpp=0.5, crop_um=8, input_size=12)
    assert crops.shape == (2, 3, 12, 12) and crops.dtype == np.float32
    assert crops.min() >= -1.0001 and crops.max() <= 1.0001
    assert np.isclose(crops[0].max(), -1)  # corner crop in the black half, mirror-padded


def test_monusac_adapter(shared_data):
    from src_models.label_completion.data import load_monusac, polygons_to_instance_mask

    images = load_monusac(shared_data / "monusac" / "sample_original")
    counts = np.bincount(np.concatenate([im.labels for im in images]), minlength=4)
    assert counts.tolist() == [329, 299, 5, 7]  # Epithelial, Lymphocyte, Neutrophil, Macrophage
    third = images[2]
    assert third.rgb.shape == (185, 497, 3) and np.isclose(third.mpp, 0.19448)
    mask = polygons_to_instance_mask(third.polygons, third.rgb.shape[:2])
    assert sorted(np.unique(mask))[1:] == [1, 2, 3, 4, 5]


def test_crchisto_adapter(shared_data):
    from src_models.label_completion.data import load_crchisto

    root = shared_data / "crchisto" / "CRCHistoPhenotypes_2016_04_28" / "cls_and_det" / "test"
    images = load_crchisto(root)
    assert [im.name for im in images] == ["img5", "img11", "img15", "img29", "img35", "img36", "img41"]
    labels = np.concatenate([im.labels for im in images])
    assert np.bincount(labels[labels >= 0], minlength=4).tolist() == [207, 217, 716, 40]
    assert (labels == -1).sum() > 1000  # detected but unclassified nuclei
    assert all(im.rgb.shape == (500, 500, 3) for im in images)


def test_completion_loss_pools_terms_over_label_sets():
    """mean(L0) + mean(L1) over all per-sample terms of every set, as the method defines it (a sum of
    per-set means would weigh a set with 2 nuclei like one with 2,000)."""
    import torch.nn.functional as F

    from napari_histo.models.label_completion.model import LabelCompletionModel
    from src_models.label_completion.losses import completion_loss

    torch.manual_seed(0)
    cfg = LabelCompletionConfig(label_sets=[LabelSet("A", ["a0", "a1"]), LabelSet("B", ["b0", "b1", "b2"])],
                                encoder_widths=[4], mlp_hidden=8)
    model = LabelCompletionModel(cfg).eval()
    logits = torch.randn(6, 5) * 8
    mlp_logits = [torch.randn(6, 2) * 8, torch.randn(6, 3) * 8]
    set_index = torch.tensor([0, 0, 0, 1, 1, 1])
    labels = torch.tensor([1, 0, -1, 2, 1, 0])
    loss, stats = completion_loss(model, logits, mlp_logits, set_index, labels, 0.9, [0, 1])
    l0, l1 = [], []
    for d, sl in ((0, slice(0, 2)), (1, slice(2, 5))):
        own = (set_index == d) & (labels >= 0)
        l0.append(F.cross_entropy(logits[own, sl], labels[own], reduction="none")
                  + F.cross_entropy(mlp_logits[d][own], labels[own], reduction="none"))
        other = set_index != d
        pm, pb = torch.softmax(mlp_logits[d][other], 1), torch.softmax(logits[other, sl], 1)
        mb, mm = pm.max(1).values > 0.9, pb.max(1).values > 0.9
        l1.append(F.cross_entropy(logits[other, sl][mb], pm.argmax(1)[mb], reduction="none"))
        l1.append(F.cross_entropy(mlp_logits[d][other][mm], pb.argmax(1)[mm], reduction="none"))
    expected = torch.cat(l0).mean() + torch.cat(l1).mean()
    assert stats["pseudo_base"] + stats["pseudo_mlp"] == len(torch.cat(l1)) > 0
    torch.testing.assert_close(loss, expected)


def _generic_dataset(root, rng, with_types=True):
    from PIL import Image

    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    if with_types:
        (root / "type").mkdir()
    for k in range(2):
        rgb = np.full((48, 64, 3), 230, np.uint8)
        mask = np.zeros((48, 64), np.int32)
        rows = []
        for i, (x, y) in enumerate([(8, 8), (30, 10), (50, 30), (12, 36)]):
            iid = 10 * (i + 1)
            mask[y - 4:y + 4, x - 4:x + 4] = iid
            rgb[y - 4:y + 4, x - 4:x + 4] = (60, 30, 120) if i % 2 else (150, 50, 90)
            rows.append([iid, i % 2])
        rows[-1][1] = -1  # one nucleus without a label
        Image.fromarray(rgb).save(root / "img" / f"im{k}.png")
        np.save(root / "mask" / f"im{k}.npy", mask)
        if with_types:
            np.save(root / "type" / f"im{k}.npy", np.asarray(rows[:3] + [rows[3]], np.int64))
    return root


def test_generic_layout_loader(tmp_path):
    from napari_histo.utils import InputFileError
    from src_models.label_completion.data import load_generic
    from src_models.label_completion.samples import build_samples

    root = _generic_dataset(tmp_path / "ds", np.random.default_rng(0))
    with pytest.raises(InputFileError, match="pixel size unknown"):
        load_generic(root, ["x", "y"])
    (root / "dataset.json").write_text('{"mpp": 0.5}')
    images = load_generic(root, ["x", "y"])
    assert [im.name for im in images] == ["im0", "im1"]
    assert images[0].instance_ids.tolist() == [10, 20, 30, 40]
    assert images[0].labels.tolist() == [0, 1, 0, -1]
    np.testing.assert_allclose(images[0].centres[0], [8, 8])
    np.testing.assert_allclose(images[0].bboxes[2], [46, 26, 54, 34])
    # a config pointing at such a folder uses it whatever the label set is called
    cfg = _tiny_config(tmp_path, label_sets=[LabelSet("mine", ["x", "y"])], heldout={"mine": {"images": ["im1"]}},
                       data={"mine": str(root)})
    samples = build_samples(cfg)
    assert len(samples) == 8 and samples.heldout.sum() == 4 and (samples.labels == -1).sum() == 2
    with pytest.raises(InputFileError, match=r"type 5 outside the 2 labels"):
        np.save(root / "type" / "im0.npy", np.array([[10, 5]]))
        load_generic(root, ["x", "y"])


def test_type_nuclei_cli_writes_n_by_2_overlay_and_table(trained, tmp_path, capsys):
    from PIL import Image

    from napari_histo.cli import main

    cfg, _, _, _ = trained
    root = _generic_dataset(tmp_path / "ds", np.random.default_rng(1), with_types=False)
    image, mask = root / "img" / "im0.png", root / "mask" / "im0.npy"
    out = tmp_path / "out"
    assert main(["type-nuclei", str(image), "--mask", str(mask), "-o", str(out), "--model", cfg.out_dir]) == 1
    assert "im0.png: no pixel size stated: give --mpp" in capsys.readouterr().err
    assert main(["type-nuclei", str(image), "--mask", str(mask), "-o", str(out), "--model", cfg.out_dir,
                 "--mpp", "0.5"]) == 0
    model = load_model(cfg.out_dir)
    from napari_histo.models.label_completion.inference import classify_instances

    rgb = np.asarray(Image.open(image).convert("RGB"))
    expected = classify_instances(rgb, np.load(mask), model, 0.5)
    for name in ("A", "B"):
        arr = np.load(out / f"im0_{name}.npy")
        assert arr.dtype == np.int64 and arr.shape == (4, 2)
        np.testing.assert_array_equal(arr, expected[name])
        overlay = np.asarray(Image.open(out / f"im0_overlay_{name}.png"))
        assert overlay.shape == rgb.shape and (overlay != rgb).any(axis=2).sum() > 50
    table = pd.read_csv(out / "im0_types.csv")
    assert table["id"].tolist() == [10, 20, 30, 40]
    assert set(table["type_B"]) <= {"b0", "b1", "b2"} and table["type_A_prob"].between(0.5, 1).all()
    np.testing.assert_allclose(table[["x", "y"]].to_numpy()[0], [7.5, 7.5])
    # 1-based on request, and a refusal to overwrite
    assert main(["type-nuclei", str(image), "--mask", str(mask), "-o", str(out), "--model", cfg.out_dir,
                 "--mpp", "0.5", "--one-based", "--label-set", "B"]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["type-nuclei", str(image), "--mask", str(mask), "-o", str(out), "--model", cfg.out_dir,
                 "--mpp", "0.5", "--one-based", "--label-set", "B", "--overwrite"]) == 0
    np.testing.assert_array_equal(np.load(out / "im0_B.npy")[:, 1], expected["B"][:, 1] + 1)
    # a mask that does not fit the image is named
    np.save(tmp_path / "bad.npy", np.zeros((10, 10), np.int32))
    assert main(["type-nuclei", str(image), "--mask", str(tmp_path / "bad.npy"), "-o", str(out), "--model",
                 cfg.out_dir, "--mpp", "0.5", "--overwrite"]) == 1
    assert "bad.npy: mask (10, 10) does not match image (48, 64)" in capsys.readouterr().err


def test_type_table_from_slide_reads_blocks_as_one_region(trained, sample_slide_path):
    """Typing a slide block by block gives what typing one region read whole gives."""
    import openslide

    from napari_histo.models.label_completion.inference import type_table, type_table_from_slide
    from napari_histo.schema.table import empty_table

    cfg, _, _, _ = trained
    model = load_model(cfg.out_dir)
    rng = np.random.default_rng(4)
    xy = rng.uniform([700, 900], [1500, 2200], size=(40, 2))
    rows = [{"id": i + 1, "x": x, "y": y, "bbox_x0": int(x) - 5, "bbox_y0": int(y) - 4, "bbox_x1": int(x) + 5,
             "bbox_y1": int(y) + 6, "area_px": 80.0, "area_um2": 20.0, "perimeter_px": 30.0, "type": 0,
             "type_prob": 1.0, "contour": np.zeros((4, 2), np.float32)} for i, (x, y) in enumerate(xy)]
    table = pd.concat([empty_table(mpp=0.499), pd.DataFrame(rows)], ignore_index=True)
    table.attrs["mpp"] = 0.499
    blocks = type_table_from_slide(table, sample_slide_path, model, block=256, set_type="B")
    with openslide.OpenSlide(str(sample_slide_path)) as s:
        rgb = np.asarray(s.read_region((600, 800), 0, (1000, 1500)).convert("RGB"))
    whole = type_table(table, rgb, model, offset=(600, 800), set_type="B")
    assert blocks["id"].tolist() == table["id"].tolist()
    for col in ("type_A", "type_B", "type"):
        assert blocks[col].tolist() == whole[col].tolist()
    np.testing.assert_allclose(blocks["type_B_prob"], whole["type_B_prob"], atol=1e-5)
    assert blocks.attrs["type_info"] == whole.attrs["type_info"]


def test_shipped_model_types_held_out_consep_nuclei(shared_data, tmp_path):
    """``type-nuclei`` with the shipped merged model on a CoNSeP validation crop (never trained on):
    the CoNSeP-taxonomy types agree with the ground truth about as often as the model card says."""
    from PIL import Image

    from napari_histo.cli import main

    root = shared_data / "consep"
    crop = "train_8_005"
    mask = np.asarray(Image.open(root / "labels" / f"{crop}.png")).astype(np.int32)
    np.save(tmp_path / "mask.npy", mask)
    assert main(["type-nuclei", str(root / "images" / f"{crop}.jpg"), "--mask", str(tmp_path / "mask.npy"),
                 "-o", str(tmp_path / "out"), "--mpp", "0.25"]) == 0
    typed = np.load(tmp_path / "out" / f"{crop}_consep.npy")
    truth = pd.read_csv(root / "nuclei.csv")
    truth = truth[truth["crop"] == crop].set_index("instance_id")["type"]
    assert set(typed[:, 0]) == set(np.unique(mask[mask > 0]))
    known = [(t, truth[i] - 1) for i, t in typed if i in truth.index]
    agreement = np.mean([a == b for a, b in known])
    assert len(known) > 20 and agreement > 0.6, agreement
    for name in ("monusac", "crchisto"):
        assert (tmp_path / "out" / f"{crop}_{name}.npy").exists()
