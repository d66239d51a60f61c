"""``napari-histo magnification``: JSON output, metadata alongside, errors; real slides if present."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_path

from napari_histo.cli import main
from napari_histo.models.magnification import MagnificationPrediction, predict_magnification
from napari_histo.utils import HistoError


def test_cmu_slide_json_within_5x_and_metadata_shown(capsys):
    slide = shared_path("wsi", "cmu-1-small-region.svs")
    assert main(["magnification", str(slide), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert isinstance(results, list) and len(results) == 1
    rec = results[0]
    assert rec["path"] == str(slide)
    assert rec["metadata_magnification"] == pytest.approx(20)  # AppMag, reported, not replaced
    assert abs(rec["magnification"] - 20) <= 5
    assert rec["mpp"] == pytest.approx(10 / rec["magnification"], rel=1e-3)
    assert len(rec["per_crop"]) == 8


def test_held_out_cpm15_tiles_text_output(capsys):
    folder = shared_path("cpm15", "MICCAI_competition_dataset")
    tiles = {"image06": 20, "image14": 40}  # held out from training
    assert main(["magnification", *(str(folder / f"{k}.png") for k in tiles), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    for rec, true in zip(results, tiles.values()):
        assert rec["metadata_magnification"] is None
        assert abs(rec["magnification"] - true) <= 5, rec
    assert main(["magnification", str(folder / "image06.png")]) == 0
    assert "predicted" in capsys.readouterr().out


def test_missing_and_bad_files_give_clear_errors(tmp_path, capsys):
    assert main(["magnification", str(tmp_path / "nope.png")]) == 1
    assert "nope.png: file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["magnification", str(bad), "--json"]) == 1
    assert "bad.png" in capsys.readouterr().err


def test_api_is_deterministic_and_validates_input():
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 200, (300, 260, 3), dtype=np.uint8)
    a = predict_magnification(rgb, n_crops=3, seed=1)
    b = predict_magnification(rgb, n_crops=3, seed=1)
    assert isinstance(a, MagnificationPrediction) and a == b
    assert len(a.per_crop) == 3 and a.mpp == pytest.approx(10 / a.magnification)
    assert a.uncertainty == pytest.approx(float(np.std(a.per_crop, ddof=1)), rel=1e-6)
    small = predict_magnification(rgb[:100, :100], n_crops=4)  # padded single crop
    assert len(small.per_crop) == 1 and small.uncertainty == 0.0
    with pytest.raises(HistoError):
        predict_magnification(np.zeros((10, 10)), n_crops=2)


def test_a_soft_snapshot_gets_a_note_with_the_blur_invariant_estimate(tmp_path, capsys, sample_slide_path):
    from PIL import Image

    from napari_histo.models.hagnifinder.images import read_rgb
    from src_models.hagnifinder.data import blur_patch

    snapshot = tmp_path / "soft_snapshot.png"  # the 20x sample as a soft PNG without metadata
    Image.fromarray(blur_patch(read_rgb(sample_slide_path), 1.0)).save(snapshot)
    assert main(["magnification", str(snapshot), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["note"].startswith("image softer than the training scans")
    assert abs(rec["blur_invariant_magnification"] - 20) <= 5
    assert main(["magnification", str(snapshot)]) == 0
    assert "note: image softer" in capsys.readouterr().out


def test_an_image_without_tissue_is_an_error_for_that_file_only(tmp_path, capsys, sample_slide_path):
    """A blank field cannot show its magnification: that file gets a clear error (and an
    ``error`` entry in the JSON), the other inputs are still predicted, and the exit code is 1."""
    from PIL import Image

    from napari_histo.models.hagnifinder.images import read_rgb

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((600, 600, 3), 245, np.uint8)).save(blank)
    tissue = tmp_path / "tissue.png"
    Image.fromarray(read_rgb(sample_slide_path, (900, 1000, 1000, 1000))).save(tissue)
    assert main(["magnification", str(blank), str(tissue), "--json"]) == 1
    captured = capsys.readouterr()
    blank_rec, tissue_rec = json.loads(captured.out)
    assert blank_rec["magnification"] is None and "too little tissue" in blank_rec["error"]
    assert f"{blank}: too little tissue to predict the magnification" in captured.err
    assert abs(tissue_rec["magnification"] - 20) <= 5 and "error" not in tissue_rec
    with pytest.raises(HistoError, match="too little tissue"):
        predict_magnification(np.full((150, 150, 3), 200, np.uint8))  # one padded crop, uniform



def test_cli_and_panels_predict_a_slide_from_the_same_window(capsys, sample_slide_path):
    """One prediction per slide whatever the front end: the CLI reads the window that
    ``predict_slide_magnification`` (Slide and Magnification panels, ``segment --mpp predict``)
    reads, so the estimates are equal."""
    from napari_histo.models.magnification import predict_slide_magnification
    from napari_histo.slide import open_slide

    assert main(["magnification", str(sample_slide_path), "--json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    with open_slide(sample_slide_path) as slide:
        prediction = predict_slide_magnification(slide)
    assert rec["magnification"] == pytest.approx(prediction.magnification, abs=5e-4)  # JSON: 3 decimals
    assert rec["per_crop"] == pytest.approx(list(prediction.per_crop), abs=5e-4)


def test_small_images_are_flagged_and_tiny_ones_refused_naming_the_file(tmp_path, capsys, sample_slide_path):
    from PIL import Image

    from napari_histo.slide import open_slide

    with open_slide(sample_slide_path) as slide:
        rgb = slide.read_region((1000, 1100), (400, 400))
    for side in (100, 40, 300):
        Image.fromarray(np.ascontiguousarray(rgb[:side, :side])).save(tmp_path / f"crop{side}.png")
    assert main(["magnification", str(tmp_path / "crop100.png"), "--json"]) == 0
    small = json.loads(capsys.readouterr().out)[0]
    assert small["note"].startswith("small image (100 x 100 px)")
    assert main(["magnification", str(tmp_path / "crop300.png"), "--json"]) == 0
    assert "small image" not in (json.loads(capsys.readouterr().out)[0]["note"] or "")
    assert main(["magnification", str(tmp_path / "crop40.png"), "--json"]) == 1
    err = capsys.readouterr().err
    assert "crop40.png" in err and "at least 48 px" in err
