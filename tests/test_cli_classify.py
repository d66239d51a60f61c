"""``napari-histo classify`` and the tile-classification core on the sample slide."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from napari_histo.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, one_torch_thread):
    from napari_histo.models.deepcmorph.model import DeepCMorph, save_pretrained

    torch.manual_seed(0)
    model = DeepCMorph(backbone="slim", num_classes=3, class_names=["tumour", "stroma", "other"], tile_size=32)
    return save_pretrained(model, tmp_path_factory.mktemp("w") / "dcm")


@pytest.fixture(scope="module")
def sample_png(tmp_path_factory, sample_slide_path):
    """A 150 x 100 region of the sample slide with a white (glass) band at the right."""
    import openslide
    from PIL import Image

    with openslide.OpenSlide(str(sample_slide_path)) as s:
        rgb = np.asarray(s.read_region((900, 1400), 0, (150, 100)).convert("RGB")).copy()
    rgb[:, 96:] = 255
    path = tmp_path_factory.mktemp("img") / "region.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


def test_classify_image_writes_outputs(tmp_path, model_dir, sample_png):
    path, rgb = sample_png
    rc = main(["classify", str(path), "-o", str(tmp_path), "--weights", str(model_dir), "--tile", "32"])
    assert rc == 0
    out = tmp_path / "region"
    class_map = np.load(out / "class_map.npy")
    assert class_map.shape == (4, 5)  # ceil(100/32) x ceil(150/32)
    assert (class_map[:, 3:] == -1).all()  # white glass tiles skipped
    assert (class_map[:, :3] >= 0).all()
    df = pd.read_parquet(out / "tiles.parquet")
    assert len(df) == int((class_map >= 0).sum()) == 12
    assert {"x0", "y0", "x1", "y1", "class", "class_name", "prob_tumour", "f0", "f639"} <= set(df.columns)
    probs = df[["prob_tumour", "prob_stroma", "prob_other"]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (df["class"].to_numpy() == probs.argmax(1)).all()
    row = df[(df["row"] == 1) & (df["col"] == 2)].iloc[0]
    assert (row.x0, row.y0, row.x1, row.y1) == (64, 32, 96, 64)
    assert class_map[1, 2] == row["class"]
    from PIL import Image

    png = np.asarray(Image.open(out / "class_map.png"))
    assert png.shape[2] == 3 and png.shape[0] / class_map.shape[0] == png.shape[1] / class_map.shape[1]
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "classify" and [c["name"] for c in run["classes"]] == ["tumour", "stroma", "other"]
    assert run["skipped_tiles"] == 8
    # nothing is clobbered without --overwrite
    assert main(["classify", str(path), "-o", str(tmp_path), "--weights", str(model_dir)]) == 1


def test_classify_slide_at_mpp_maps_tiles_to_level0(tmp_path, model_dir, sample_slide_path):
    from napari_histo.models.classification import iter_classify_tiles
    from napari_histo.models.deepcmorph.model import load_pretrained

    model = load_pretrained(model_dir)
    events = list(iter_classify_tiles(sample_slide_path, model, 32, roi=(800, 1200, 256, 192), mpp=2.0))
    assert [e.done for e in events[:-1]] == list(range(1, len(events)))
    result = events[-1].result
    step = 32 * 2.0 / 0.499  # slide level 0 is 0.499 µm/px
    assert np.isclose(result.step_level0, step)
    assert result.class_map.shape == (int(np.ceil(192 / step)), int(np.ceil(256 / step)))
    df = result.features
    assert df["x0"].min() == 800 and df["y0"].min() == 1200
    assert np.allclose(df["x1"] - df["x0"], step, atol=1)
    assert df.attrs["mpp"] == 2.0 and df.attrs["class_names"] == ["tumour", "stroma", "other"]


def test_classify_rgb_array_matches_model(model_dir, sample_png):
    from napari_histo.models.classification import classify_tiles
    from napari_histo.models.deepcmorph.model import load_pretrained

    model = load_pretrained(model_dir)
    _, rgb = sample_png
    class_map, df = classify_tiles(rgb, model, 32, tissue_only=False)
    assert class_map.shape == (4, 5) and len(df) == 20
    tile = rgb[32:64, 0:32]
    expected = model.predict_proba(tile)[0]
    got = df[(df["row"] == 1) & (df["col"] == 0)][["prob_tumour", "prob_stroma", "prob_other"]].to_numpy()[0]
    assert np.allclose(got, expected, atol=1e-5)


def test_released_name_without_file_is_a_clear_error(tmp_path, monkeypatch, capsys, sample_png):
    monkeypatch.setenv("NAPARI_HISTO_DEEPCMORPH_DIR", str(tmp_path / "weights"))
    rc = main(["classify", str(sample_png[0]), "-o", str(tmp_path / "o"), "--weights", "COMBINED"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "DeepCMorph_Datasets_Combined_41_classes_acc_8159.pth" in err and str(tmp_path / "weights") in err
    rc = main(["classify", str(tmp_path / "missing.svs"), "-o", str(tmp_path / "o"), "--weights", "COMBINED"])
    assert rc == 1 and "no such file" in capsys.readouterr().err
