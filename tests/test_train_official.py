"""Official HoVer-Net training: the two-phase schedule, encoder weights, patch folders, model folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_histo.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def sample_tile(sample_slide_path):
    """A real 300² crop of the sample (0.499 µm/px) outlined by the weight-free detector, two types by size."""
    from napari_histo.models.segment import segment_image
    from napari_histo.nuclei.classical import ClassicalSegmenter
    from napari_histo.slide import open_slide
    from src_models.hovernet.data import Tile

    with open_slide(sample_slide_path) as slide:
        rgb = slide.read_region((1000, 1100), (300, 300))
    labels, table = segment_image(rgb, 0.499, model=ClassicalSegmenter())
    small = set(table.loc[table["area_px"] < table["area_px"].median(), "id"].astype(int))
    types = np.where(labels > 0, np.where(np.isin(labels, list(small)), 1, 2), 0).astype(np.int16)
    return Tile("crop", "own", rgb, labels.astype(np.int32), types, 0.499)


def _state(path):
    from napari_histo.models.hovernet.checkpoint import read_state_dict

    return read_state_dict(path)


def test_phase_one_keeps_the_encoder_phase_two_trains_every_layer_and_a_stopped_run_resumes(sample_tile, tmp_path):
    from napari_histo.models.hovernet.net import HoVerNet
    from src_models.hovernet.official_train import (
        OfficialTrainConfig,
        Phase,
        encoder_parameters,
        train_official_steps,
    )

    torch.manual_seed(3)
    start = tmp_path / "start.tar"
    torch.save({"desc": HoVerNet(mode="fast", nr_types=3).state_dict()}, start)
    out = tmp_path / "run"
    cfg = OfficialTrainConfig(mode="fast", type_names=["background", "small", "large"],
                              type_colours=[[0, 0, 0], [0, 0, 255], [255, 0, 0]], mpp=0.499,
                              phases=[Phase(1, True, 1e-3, 1), Phase(1, False, 1e-3, 1)], init_weights=str(start),
                              out_dir=str(out), threads=2)
    steps = train_official_steps(cfg, [sample_tile], resume=True)
    first = next(steps)
    assert first["phase"] == 1 and first["frozen_encoder"] is True
    steps.close()  # stopped after phase 1: its weights are written and the run can resume
    initial, phase1 = _state(start), _state(out / "hovernet.tar")
    frozen = set(encoder_parameters(HoVerNet(mode="fast", nr_types=3)))
    assert frozen and all(torch.equal(initial[k], phase1[k]) for k in frozen)
    learnt = [k for k in phase1 if k.startswith("decoder.") and k.endswith("weight")]
    assert all(not torch.equal(initial[k], phase1[k]) for k in learnt)
    assert not torch.equal(initial["conv0./.weight"], phase1["conv0./.weight"])  # upstream trains conv0 in phase 1

    records = list(train_official_steps(cfg, [sample_tile], resume=True))
    assert [r["phase"] for r in records] == [2] and records[0]["frozen_encoder"] is False
    phase2 = _state(out / "hovernet.tar")
    model = HoVerNet(mode="fast", nr_types=3)
    trainable = [name for name, _ in model.named_parameters()]
    unchanged = [k for k in trainable if torch.equal(phase1[k], phase2[k])]
    assert unchanged == []
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" for r in log) and log[-1]["event"] == "done" and log[-1]["iter"] == 2


def test_encoder_weights_load_only_the_encoder_and_a_wrong_file_is_named(tmp_path):
    from napari_histo.models.hovernet.net import HoVerNet
    from napari_histo.utils import InputFileError
    from src_models.hovernet.official_train import ENCODER_PREFIXES, _load_tensors

    torch.manual_seed(1)
    donor = HoVerNet(mode="original", nr_types=None).state_dict()
    path = tmp_path / "ImageNet-ResNet50-Preact_pytorch.tar"
    torch.save({"desc": {k: v for k, v in donor.items() if k.startswith(ENCODER_PREFIXES)}}, path)
    torch.manual_seed(2)
    model = HoVerNet(mode="original", nr_types=None)
    counts = _load_tensors(model, path, ENCODER_PREFIXES)
    state = model.state_dict()
    assert counts["loaded"] > 200 and counts["missing"] == 0
    assert torch.equal(state["d3.units.2.conv3.weight"], donor["d3.units.2.conv3.weight"])
    assert not torch.equal(state["decoder.np.u3.conva.weight"], donor["decoder.np.u3.conva.weight"])
    wrong = tmp_path / "other.pth"
    torch.save({"desc": {"fc.weight": torch.zeros(2, 2)}}, wrong)
    with pytest.raises(InputFileError, match="other.pth.*no tensor matches"):
        _load_tensors(model, wrong, ENCODER_PREFIXES)


def _annotate(folder, tile, size):
    """The top-left ``size``² of the crop as a user's annotated image: PNG + QuPath GeoJSON with class names."""
    from PIL import Image
    from scipy import ndimage as ndi

    from napari_histo.formats.geojson import write_geojson
    from napari_histo.nuclei.measure import measure_instances
    from napari_histo.schema.types import TypeInfo

    inst, types = tile.inst[:size, :size], tile.types[:size, :size]
    Image.fromarray(np.ascontiguousarray(tile.img[:size, :size])).save(folder / "crop.png")
    table = measure_instances(inst, mpp=0.499, type_info=TypeInfo({0: "background", 1: "lymphocyte", 2: "tumour"}))
    table["type"] = ndi.maximum(types, inst, table["id"].to_numpy()).astype(int)
    write_geojson(table, folder / "crop.geojson")
    return folder


@pytest.fixture(scope="module")
def annotated_folder(tmp_path_factory, sample_tile):
    return _annotate(tmp_path_factory.mktemp("annotated"), sample_tile, 300)


@pytest.fixture(scope="module")
def small_annotated_folder(tmp_path_factory, sample_tile):
    """160² px: the official network's CPU inference stays short."""
    return _annotate(tmp_path_factory.mktemp("annotated_small"), sample_tile, 160)


def test_official_fast_trains_from_annotated_images_in_two_phases_then_segments(small_annotated_folder, tmp_path,
                                                                                 capsys):
    annotated_folder = small_annotated_folder
    from napari_histo.models.hovernet.net import HoVerNet
    from src_models.hovernet.official_train import ENCODER_PREFIXES

    encoder = tmp_path / "preact.tar"
    torch.manual_seed(5)
    torch.save({"desc": {k: v for k, v in HoVerNet(mode="fast").state_dict().items()
                         if k.startswith(ENCODER_PREFIXES)}}, encoder)
    out = tmp_path / "fast_model"
    assert main(["train", "hovernet", "--data", str(annotated_folder), "-o", str(out), "--mode", "fast",
                 "--iterations", "2", "--batch-size", "1", "--mpp", "0.499", "--encoder-weights", str(encoder)]) == 0
    info = json.loads((out / "model_info.json").read_text())
    assert info["mode"] == "fast" and info["mpp"] == 0.25 and info["type_names"] == ["background", "lymphocyte",
                                                                                      "tumour"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log if "phase" in r and "iter" in r] == [1, 2]
    assert json.loads((out / "run.json").read_text())["command"] == "train"
    capsys.readouterr()
    # the folder is a model: segment and evaluate take it as it is
    assert main(["segment", str(annotated_folder / "crop.png"), "-o", str(tmp_path / "seg"), "--model", str(out),
                 "--mpp", "0.499", "--tile-size", "320", "--halo", "0", "--no-geojson", "--no-hovernet-json"]) == 0
    run = json.loads((tmp_path / "seg" / "crop" / "run.json").read_text())
    assert run["model"]["name"] == "fast_model" and run["model"]["mpp"] == pytest.approx(0.25)
    assert main(["evaluate", str(annotated_folder), "--model", str(out), "--mpp", "0.499",
                 "--json", str(tmp_path / "scores.json")]) == 0
    assert [r["image"] for r in json.loads((tmp_path / "scores.json").read_text())["images"]] == ["crop"]
    # the folder states its resolution; a bare checkpoint takes one from --model-mpp
    assert main(["segment", str(annotated_folder / "crop.png"), "-o", str(tmp_path / "seg2"), "--model", str(out),
                 "--mpp", "0.499", "--model-mpp", "0.5"]) == 1
    assert "trained at 0.25" in capsys.readouterr().err
    from napari_histo.models import get_segmenter

    assert get_segmenter(str(out / "hovernet.tar"), "cpu", mpp=0.5).mpp == 0.5
    assert get_segmenter(str(out / "hovernet.tar"), "cpu").mpp == 0.25


def test_patches_are_cut_as_upstream_previewed_and_trained_on(annotated_folder, tmp_path, capsys):
    from PIL import Image

    from src_models.hovernet.patches import read_patch, window_starts

    out = tmp_path / "patches"
    preview = tmp_path / "preview.png"
    assert main(["patches", str(annotated_folder), "-o", str(out), "--mpp", "0.499", "--size", "256",
                 "--step", "128", "--preview", str(preview)]) == 0
    info = json.loads((out / "patches.json").read_text())
    assert info["mpp"] == 0.25 and info["type_names"] == ["background", "lymphocyte", "tumour"]
    files = sorted(out.glob("crop_*.npy"))
    side = round(300 * 0.499 / 0.25) + 2 * 64  # resampled, mirror-padded by (size - step) / 2
    assert len(files) == len(window_starts(side, 256, 128)) ** 2
    rgb, inst, types = read_patch(files[0])
    assert rgb.shape == (256, 256, 3) and inst.max() > 5 and set(np.unique(types)) <= {0, 1, 2}
    assert set(np.unique(types[inst > 0])) == {1, 2}
    grid = np.asarray(Image.open(preview))
    assert grid.shape[0] > 256 and grid.shape[1] > 256  # a grid of patches, outlines drawn
    capsys.readouterr()
    model = tmp_path / "from_patches"
    assert main(["train", "hovernet", "--data", str(out), "-o", str(model), "--iterations", "2"]) == 0
    assert json.loads((model / "config.json").read_text())["type_names"][1:] == ["lymphocyte", "tumour"]
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "x.npy", np.zeros((8, 8, 3)))
    assert main(["train", "hovernet", "--data", str(bad), "-o", str(tmp_path / "m"), "--mpp", "0.25"]) == 1
    assert "x.npy" in capsys.readouterr().err
