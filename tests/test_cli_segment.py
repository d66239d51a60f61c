"""``napari-histo segment`` on the shipped sample slide and on a plain PNG image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_histo.cli import main
from napari_histo.engine.outputs import load_result

ROI = (1250, 1110, 400, 340)  # across one seam of the 1024-px tile grid: two tiles


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("segment")
    rc = main(["segment", "sample", "-o", str(out), "--model", "classical", "--tile-size", "1024",
               "--roi", ",".join(str(v) for v in ROI)])
    return rc, out / "cmu-1-small-region"


def test_sample_slide_with_classical_detector(sample_run):
    from napari_histo.formats.geojson import read_geojson
    from napari_histo.formats.hovernet_json import read_hovernet_json
    from napari_histo.slide import open_slide
    from napari_histo.utils import sample_slide_path

    rc, folder = sample_run
    assert rc == 0
    result = load_result(folder)
    table = result.table
    assert len(table) > 30
    x, y, w, h = ROI
    assert table["x"].between(x, x + w).all() and table["y"].between(y, y + h).all()
    with open_slide(sample_slide_path()) as slide:
        width, height = slide.dimensions
        mpp = slide.mpp[0]
    assert result.labels[0].shape == (height, width)
    assert len(result.labels) >= 3 and result.labels[1].shape == ((height + 1) // 2, (width + 1) // 2)
    labels = np.asarray(result.labels[0][y - 40:y + h + 40, x - 40:x + w + 40])
    assert set(np.unique(labels[labels > 0])) == set(table["id"])
    np.testing.assert_allclose(table["area_um2"], table["area_px"] * mpp * mpp)
    assert result.run["model"]["name"] == "classical"
    assert result.run["n_nuclei"] == len(table)
    assert (folder / "cmu-1-small-region.geojson").exists() and (folder / "cmu-1-small-region.json").exists()
    qupath = read_geojson(folder / "cmu-1-small-region.geojson")
    assert len(qupath.table) == len(table)
    np.testing.assert_allclose(np.sort(qupath.table["x"]), np.sort(table["x"]), atol=0.5)
    hover = read_hovernet_json(folder / "cmu-1-small-region.json")
    assert len(hover) == len(table)
    assert not (folder / ".partial").exists()


def test_resume_of_a_finished_run_redoes_nothing(sample_run, capsys):
    rc, folder = sample_run
    before = (folder / "nuclei.parquet").stat().st_mtime_ns
    rc2 = main(["segment", "sample", "-o", str(folder.parent), "--model", "classical", "--tile-size", "1024",
                "--roi", ",".join(str(v) for v in ROI), "--resume"])
    assert rc2 == 0
    assert (folder / "nuclei.parquet").stat().st_mtime_ns == before
    assert "already finished" in capsys.readouterr().err


def test_png_with_mpp(tmp_path):
    from PIL import Image

    from napari_histo.slide import open_slide
    from napari_histo.utils import sample_slide_path

    with open_slide(sample_slide_path()) as slide:
        crop = slide.read_region((1000, 1300), (240, 200))
    png = tmp_path / "field.png"
    Image.fromarray(crop).save(png)
    out = tmp_path / "out"
    rc = main(["segment", str(png), "-o", str(out), "--model", "classical", "--mpp", "0.5",
               "--tile-size", "512", "--no-geojson", "--no-hovernet-json"])
    assert rc == 0
    result = load_result(out / "field")
    assert len(result.table) > 10
    assert result.labels[0].shape == (200, 240)
    np.testing.assert_allclose(result.table["area_um2"], result.table["area_px"] * 0.25)
    assert not (out / "field" / "field.geojson").exists()
    run = json.loads((out / "field" / "run.json").read_text())
    assert run["parameters"]["mpp"] == 0.5 and run["plan"]["slide_mpp"] == 0.5


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    rc = main(["segment", str(tmp_path / "missing.svs"), "-o", str(tmp_path)])
    assert rc == 1 and "missing.svs: file not found" in capsys.readouterr().err
    rc = main(["segment", "sample", "-o", str(tmp_path), "--model", "classical", "--roi", "1,2,3"])
    assert rc == 1 and "--roi must be X,Y,W,H" in capsys.readouterr().err
    rc = main(["segment", "-o", str(tmp_path)])
    assert rc == 1 and "no input" in capsys.readouterr().err


def test_region_from_a_sedeen_session(tmp_path, capsys):
    """--roi FILE: nuclei only inside the regions of an annotation file (here a Sedeen session, where
    the pen colour is the class: a triangular outline in the 'tumour bed' colour and an orange
    rectangle of no known class)."""
    import shapely

    from napari_histo.formats._common import Annotation
    from napari_histo.formats.sedeen import write_sedeen

    triangle = shapely.Polygon([(1250, 1110), (1650, 1110), (1250, 1450)])
    session = write_sedeen(None, tmp_path / "cmu-1-small-region.session.xml", slide_name="cmu-1-small-region.svs",
                           rois=[Annotation(triangle, name="tumour"),
                                 Annotation(shapely.box(0, 0, 200, 200), name="other", colour=(255, 128, 0))])
    out = tmp_path / "out"
    rc = main(["segment", "sample", "-o", str(out), "--model", "classical", "--tile-size", "1024",
               "--roi", str(session), "--roi-class", "Tumour bed", "--no-geojson", "--no-hovernet-json"])
    assert rc == 0, capsys.readouterr().err
    table = load_result(out / "cmu-1-small-region").table
    assert len(table) > 20
    inside = shapely.contains_xy(triangle.buffer(0.5), table["x"].to_numpy(), table["y"].to_numpy())
    assert inside.all()
    run = json.loads((out / "cmu-1-small-region" / "run.json").read_text())
    assert run["parameters"]["roi"] == str(session) and run["parameters"]["roi_class"] == "Tumour bed"
    rc = main(["segment", "sample", "-o", str(out), "--model", "classical", "--roi", str(session), "--roi-class", "Necrosis"])
    assert rc == 1 and "(none), tumour bed" in capsys.readouterr().err


def test_summary_defaults_to_the_region_the_run_covered(sample_run, capsys):
    """A ROI run's read-out is over its ROI box: area = the box, every nucleus counted."""
    rc, folder = sample_run
    assert rc == 0
    capsys.readouterr()
    assert main(["summary", str(folder), "--csv", str(folder / "summary.csv")]) == 0
    import pandas as pd

    row = pd.read_csv(folder / "summary.csv").iloc[0]
    assert row["region"].startswith("box ") and row["area_px"] == ROI[2] * ROI[3]
    assert row["nuclei"] == len(load_result(folder).table)
    assert row["nuclei_per_mm2"] == pytest.approx(row["nuclei"] / (ROI[2] * ROI[3] * 0.499**2 * 1e-6), rel=1e-3)


def test_stains_option(tmp_path, capsys):
    out = tmp_path / "ihc"
    rc = main(["segment", "sample", "-o", str(out), "--model", "classical", "--stains", "hdab",
               "--roi", ",".join(str(v) for v in ROI), "--no-geojson", "--no-hovernet-json"])
    assert rc == 0
    table = load_result(out / "cmu-1-small-region").table
    assert {"dab_od", "positive"} <= set(table.columns)
    run = json.loads((out / "cmu-1-small-region" / "run.json").read_text())
    assert run["parameters"]["stains"] == "hdab" and run["model"]["config"]["stains"] == "hdab"
    assert main(["segment", "sample", "-o", str(out), "--stains", "he"]) == 1
    assert "--model classical" in capsys.readouterr().err


def test_png_without_pixel_size_gets_the_predicted_scan_objective(tmp_path, capsys):
    """--mpp objective on a 20x field exported without its pixel size: the run uses 0.5 µm/px
    and says where it came from; --mpp predict uses the continuous estimate; a file that states
    its pixel size keeps it."""
    from PIL import Image

    from napari_histo.slide import open_slide
    from napari_histo.utils import sample_slide_path

    with open_slide(sample_slide_path()) as slide:
        crop = slide.read_region((900, 1000), (1100, 1000))
    png = tmp_path / "export.png"
    Image.fromarray(crop).save(png)
    common = ["--model", "classical", "--tile-size", "1024", "--no-geojson", "--no-hovernet-json"]
    assert main(["segment", str(png), "-o", str(tmp_path / "a"), "--mpp", "objective", *common]) == 0
    assert "no pixel size in the file; predicted" in capsys.readouterr().out
    run = json.loads((tmp_path / "a" / "export" / "run.json").read_text())
    params = run["parameters"]
    assert params["mpp_source"] == "predicted (standard objective)" and params["scan_objective"] == 20.0
    assert params["level0_mpp"] == 0.5 and run["plan"]["slide_mpp"] == 0.5
    lo, hi = params["interval"]
    assert lo <= params["predicted_magnification"] <= hi

    assert main(["segment", str(png), "-o", str(tmp_path / "b"), "--mpp", "predict", *common]) == 0
    params = json.loads((tmp_path / "b" / "export" / "run.json").read_text())["parameters"]
    assert params["mpp_source"] == "predicted"
    assert params["level0_mpp"] == pytest.approx(10 / params["predicted_magnification"], rel=1e-3)

    assert main(["segment", "sample", "-o", str(tmp_path / "c"), "--mpp", "predict", "--roi", "1250,1110,300,300",
                 *common]) == 0
    assert "the file states its pixel size; it is used" in capsys.readouterr().out
    run = json.loads((tmp_path / "c" / "cmu-1-small-region" / "run.json").read_text())
    assert run["parameters"]["mpp_source"] == "metadata" and run["plan"]["slide_mpp"] == pytest.approx(0.499)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((400, 500, 3), 245, np.uint8)).save(blank)
    assert main(["segment", str(blank), "-o", str(tmp_path / "e"), "--mpp", "predict", *common]) == 1
    assert f"{blank}: too little tissue to predict the magnification" in capsys.readouterr().err
    assert not (tmp_path / "e" / "blank" / "run.json").exists()
    with pytest.raises(SystemExit):  # argparse: usage error
        main(["segment", str(png), "-o", str(tmp_path / "d"), "--mpp", "sometimes"])
    assert "expected µm/px or one of ('predict', 'objective'), got 'sometimes'" in capsys.readouterr().err


def test_objective_is_refused_when_the_interval_leaves_several(monkeypatch):
    from napari_histo.models import magnification
    from napari_histo.models.magnification import MagnificationPrediction, pixel_size_for
    from napari_histo.utils import HistoError

    class Unscaled:  # an image without pixel size whose prediction leaves 20x and 40x open
        mpp, path = None, "screenshot.png"

    monkeypatch.setattr(magnification, "predict_slide_magnification", lambda slide: MagnificationPrediction(
        29.0, 10 / 29, 1.0, interval=(19.0, 41.0), interval_level=0.9))

    with pytest.raises(HistoError, match="no single standard objective fits the predicted 29.0x"):
        pixel_size_for(Unscaled(), "objective")
    mpp, record = pixel_size_for(Unscaled(), "predict")
    assert mpp == pytest.approx(10 / 29) and record["scan_objective"] is None
    with pytest.raises(HistoError, match="unknown pixel-size source"):
        pixel_size_for(Unscaled(), "guess")


def test_cli_default_area_bound_is_the_engine_default():
    import argparse

    from napari_histo.cli._segment import register
    from napari_histo.engine.options import SegmentationOptions

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["segment", "x.png", "-o", "out"])
    assert args.max_area == SegmentationOptions().max_area_um2


def test_an_image_without_pixel_size_is_refused_with_the_ways_to_give_one(tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "camera.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(png)
    rc = main(["segment", str(png), "-o", str(tmp_path / "out"), "--model", "classical"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "camera.png" in err and "pixel size" in err
    assert "--mpp VALUE" in err and "--mpp predict" in err and "--mpp objective" in err
    assert not (tmp_path / "out" / "camera" / "nuclei.parquet").exists()


def test_a_folder_as_input_runs_every_image_inside(tmp_path, capsys):
    from PIL import Image

    from napari_histo.slide import open_slide
    from napari_histo.utils import sample_slide_path

    folder = tmp_path / "tiles"
    folder.mkdir()
    with open_slide(sample_slide_path()) as slide:
        for i, x in enumerate((1000, 1300)):
            Image.fromarray(slide.read_region((x, 1200), (160, 160))).save(folder / f"tile{i}.png")
    (folder / "notes.txt").write_text("not an image")
    rc = main(["segment", str(folder), "-o", str(tmp_path / "out"), "--model", "classical", "--mpp", "0.5",
               "--no-geojson", "--no-hovernet-json"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tile0", "tile1"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["segment", str(empty), "-o", str(tmp_path / "o2")]) == 1
    assert "folder holds no slide or image file" in capsys.readouterr().err


def test_hovernet_tile_outputs_mat_and_overlay(sample_run, tmp_path):
    from PIL import Image
    from scipy.io import loadmat

    rc, folder = sample_run
    x, y, w, h = ROI
    region = f"{x},{y},{w},{h}"
    assert main(["export", str(folder), "--mat", str(tmp_path / "t.mat"), "--overlay", str(tmp_path / "t.png"),
                 "--region", region]) == 0
    table = load_result(folder).table
    mat = loadmat(tmp_path / "t.mat")
    n = int(mat["inst_uid"].shape[0])
    assert mat["inst_map"].shape == (h, w) and mat["inst_uid"].shape == (n, 1) and n > 20
    assert set(np.unique(mat["inst_map"])) - {0} == set(range(1, n + 1))
    assert "inst_type" not in mat  # the classical detector is untyped, as upstream leaves it out
    # each centroid lies in its own instance
    cx, cy = np.round(mat["inst_centroid"]).astype(int).T
    hits = mat["inst_map"][np.clip(cy, 0, h - 1), np.clip(cx, 0, w - 1)] == np.arange(1, n + 1)
    assert hits.mean() > 0.9
    assert n == int(((table["x"] >= x) & (table["x"] < x + w) & (table["y"] >= y) & (table["y"] < y + h)).sum())
    overlay = np.asarray(Image.open(tmp_path / "t.png").convert("RGB"))
    assert overlay.shape == (h, w, 3)
    yellow = (overlay[..., 0] > 240) & (overlay[..., 1] > 240) & (overlay[..., 2] < 30)  # "nucleus" outlines
    assert yellow.sum() > 20 * n
    assert main(["export", str(folder), "--mat", str(tmp_path / "t.mat"), "--region", region]) == 1  # exists


def test_a_tissue_mask_given_limits_the_tiles_and_views_are_saved(tmp_path):
    """HoVer-Net's WSI options: --mask (file or folder of <stem>.png), --save-mask, --save-thumb."""
    from PIL import Image

    from napari_histo.slide import open_slide
    from napari_histo.utils import sample_slide_path

    with open_slide(sample_slide_path()) as slide:
        width, height = slide.dimensions
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((height // 8, width // 8), np.uint8)
    mask[: mask.shape[0] // 4, : mask.shape[1] // 4] = 255  # only the top-left corner
    Image.fromarray(mask).save(masks / "cmu-1-small-region.png")
    out = tmp_path / "out"
    rc = main(["segment", "sample", "-o", str(out), "--model", "classical", "--mask", str(masks),
               "--save-mask", "--save-thumb", "--no-geojson", "--no-hovernet-json"])
    assert rc == 0
    result = load_result(out / "cmu-1-small-region")
    saved = np.asarray(Image.open(out / "cmu-1-small-region" / "mask.png"))
    np.testing.assert_array_equal(saved > 0, mask > 0)
    thumb = Image.open(out / "cmu-1-small-region" / "thumb.png")
    assert max(thumb.size) <= 1024 and abs(thumb.size[0] / thumb.size[1] - width / height) < 0.01
    # nuclei only near the masked corner (a tile reaches at most one tile beyond it)
    assert result.table["x"].max() < width / 4 + 2100 and result.table["y"].max() < height / 4 + 2100
    assert result.run["plan"]["n_tiles"] < 22
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    assert main(["segment", "sample", "-o", str(out / "x"), "--mask", str(wrong)]) == 1


def test_a_run_warns_when_the_type_head_is_unsure(tmp_path):
    """The default model's type head gives almost no probability to any type on the 20x sample
    slide: the run says its types are unreliable instead of reporting them silently."""
    from PIL import Image

    from napari_histo.slide import open_slide
    from napari_histo.utils import sample_slide_path

    with open_slide(sample_slide_path()) as slide:
        crop = slide.read_region((1000, 1100), (400, 400))
    png = tmp_path / "field.png"
    Image.fromarray(crop).save(png)
    assert main(["segment", str(png), "-o", str(tmp_path / "out"), "--mpp", "0.499", "--no-geojson",
                 "--no-hovernet-json"]) == 0
    run = load_result(tmp_path / "out" / "field").run
    assert run["stats"]["median_type_confidence"] < 0.1
    assert any("type head is unsure" in w for w in run["warnings"])
