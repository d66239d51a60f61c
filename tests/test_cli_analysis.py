"""CLI: density, hotspots, export, import on a small synthetic segmentation result folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _analysis_data import synthetic_table
from conftest import shared_path

from napari_histo.cli import main
from napari_histo.formats.geojson import read_geojson
from napari_histo.formats.sedeen import read_sedeen
from napari_histo.nuclei.table import write_table_parquet


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("res") / "slide1"
    folder.mkdir()
    t = synthetic_table(10, spacing=25)
    t["positive"] = np.arange(len(t)) % 3 == 0
    write_table_parquet(t, folder / "nuclei.parquet")
    (folder / "run.json").write_text(json.dumps({"command": "segment", "slide": "slide1.svs",
                                                  "plan": {"width": 300, "height": 300, "slide_mpp": 0.25}}))
    return folder


def test_density_png_and_npy(result_dir, tmp_path, capsys):
    png = tmp_path / "d.png"
    assert main(["density", str(result_dir), "--kind", "gaussian", "--radius-um", "10", "-o", str(png)]) == 0
    from PIL import Image

    img = np.asarray(Image.open(png))
    assert img.ndim == 3 and img.shape[0] > 100
    side = json.loads(png.with_suffix(".json").read_text())
    assert side["pixel_size"] == 4 and side["radius_px"] == 40 and side["kind"] == "gaussian"
    npy = tmp_path / "d.npy"
    assert main(["density", str(result_dir), "--kind", "tile", "--tile", "30", "--type", "Neoplastic", "-o", str(npy)]) == 0
    arr = np.load(npy)
    assert arr.shape == (10, 10)
    t = pd.read_parquet(result_dir / "nuclei.parquet", columns=["type"])
    assert arr.sum() * 900 == pytest.approx((t["type"] == 1).sum())
    assert (result_dir / "run.json").read_text().startswith('{"command": "segment"')  # untouched


def test_hotspots_outputs(result_dir, tmp_path, capsys):
    csv = tmp_path / "h.csv"
    png = tmp_path / "h.png"
    session = tmp_path / "s.session.xml"
    gj = tmp_path / "h.geojson"
    rc = main(["hotspots", str(result_dir), "-k", "3", "--radius-px", "30", "--min-count", "0", "--csv", str(csv),
               "--png", str(png), "--sedeen", str(session), "--geojson", str(gj)])
    assert rc == 0
    hs = pd.read_csv(csv)
    assert hs["name"].tolist() == ["Hotspot 1", "Hotspot 2", "Hotspot 3"] and (hs["count"] > 0).all()
    assert [g.type for g in read_sedeen(session).graphics] == ["ellipse"] * 3
    anns = read_geojson(gj).annotations
    assert [a.name for a in anns] == hs["name"].tolist()
    assert png.stat().st_size > 1000
    rc = main(["hotspots", str(result_dir), "-k", "2", "--mode", "box", "--tile", "20", "--window", "4", "--type", "positive", "--csv", str(csv)])
    assert rc == 0 and pd.read_csv(csv)["mode"].eq("box").all()


def test_export_all_formats(result_dir, tmp_path):
    rc = main(["export", str(result_dir), "--geojson", str(tmp_path / "n.geojson.gz"), "--qupath03", "--sedeen",
               str(tmp_path / "slide1.svs"), "--hovernet-json", str(tmp_path / "n.json"), "--csv", str(tmp_path / "n.csv")])
    assert rc == 0
    n = len(pd.read_parquet(result_dir / "nuclei.parquet", columns=["id"]))
    assert len(read_geojson(tmp_path / "n.geojson.gz").table) == n
    s = read_sedeen(tmp_path / "slide1.session.xml")
    assert len(s.graphics) == n and s.identifier == "slide1.svs" and s.mpp == (0.25, 0.25)
    assert len(pd.read_csv(tmp_path / "n.csv")) == n
    assert len(json.loads((tmp_path / "n.json").read_text())["nuc"]) == n


def test_import_round_trip_masks(result_dir, tmp_path):
    main(["export", str(result_dir), "--geojson", str(tmp_path / "n.geojson")])
    out = tmp_path / "m.npz"
    assert main(["import", str(tmp_path / "n.geojson"), "--region", "0,0,150,150", "-o", str(out), "--table", str(tmp_path / "t.parquet")]) == 0
    z = np.load(out)
    assert z["inst"].shape == (150, 150) and set(np.unique(z["type"])) <= set(range(6))
    info = json.loads(str(z["type_info"]))
    assert "Neoplastic" in [v[0] for v in info.values()]
    tif = tmp_path / "m.tif"
    assert main(["import", str(tmp_path / "n.geojson"), "--region", "0,0,150,150", "-o", str(tif)]) == 0
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tif)[0], z["inst"])


def test_import_real_sedeen_and_errors(tmp_path, capsys):
    src = shared_path("annotation_formats", "sedeen", "sedeen1.xml")
    out = tmp_path / "s.npz"
    assert main(["import", str(src), "--region", "11000,20000,2000,2000", "-o", str(out)]) == 0
    assert (np.load(out)["inst"] > 0).sum() > 100000
    bad = tmp_path / "bad.xml"
    bad.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><session>&x;</session>')
    assert main(["import", str(bad), "-o", str(tmp_path / "x.npz")]) == 1
    err = capsys.readouterr().err
    assert "bad.xml" in err and "entity" in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()
    assert main(["density", str(tmp_path / "nope")]) == 1


def test_import_imagescope_monuseg(tmp_path):
    src = shared_path("monuseg", "MoNuSegTrainData", "TCGA-E2-A1B5-01Z-00-DX1.xml")
    pytest.importorskip("napari_histo.formats.imagescope")
    out = tmp_path / "m.npz"
    assert main(["import", str(src), "--region", "0,0,1000,1000", "-o", str(out)]) == 0
    z = np.load(out)
    n = len(np.unique(z["inst"])) - 1
    assert 100 < n < 2000 and set(np.unique(z["type"])) == {0, 1}
