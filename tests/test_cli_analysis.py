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
from napari_histo.schema.table import write_table_parquet


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
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("rank"))
    assert "score" in header.split() and "count" in header.split()
    assert "ranked by score" in out
    assert hs["score"].is_monotonic_decreasing  # the rank follows the printed score
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


def test_export_never_replaces_a_file_without_overwrite(result_dir, tmp_path, capsys):
    target = tmp_path / "mine.geojson"
    target.write_text("my own annotations")
    rc = main(["export", str(result_dir), "--geojson", str(target)])
    err = capsys.readouterr().err
    assert rc != 0 and "mine.geojson: exists" in err and "--overwrite" in err
    assert target.read_text() == "my own annotations"
    assert main(["export", str(result_dir), "--geojson", str(target), "--overwrite"]) == 0
    assert len(read_geojson(target).table) == len(pd.read_parquet(result_dir / "nuclei.parquet", columns=["id"]))


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


# ---------------------------------------------------------------------------------------------
# annotation files as analysis input (QuPath / HoVer-Net / Sedeen / ASAP), format from content
# ---------------------------------------------------------------------------------------------
def _density(src, tmp_path, name, *extra):
    out = tmp_path / f"{name}.npy"
    assert main(["density", str(src), "--kind", "count", "--radius-px", "40", "-o", str(out), *extra]) == 0
    return np.load(out)


def test_density_and_hotspots_from_exported_annotation_files(result_dir, tmp_path):
    """Every export read back as analysis input gives the result folder's density and hotspots."""
    exported = {"gj": tmp_path / "n.geojson", "hov": tmp_path / "n.json", "sed": tmp_path / "slide1.session.xml"}
    assert main(["export", str(result_dir), "--geojson", str(exported["gj"]), "--hovernet-json", str(exported["hov"]),
                 "--sedeen", str(exported["sed"])]) == 0
    # the result folder knows its slide size (300 x 300); the files are given the same via a slide-less run
    reference = _density(result_dir, tmp_path, "ref")
    table = pd.read_parquet(result_dir / "nuclei.parquet", columns=["x", "y"])
    for name, path in exported.items():
        arr = _density(path, tmp_path, name)
        # files carry no slide size: their map covers the nuclei's extent, a crop of the reference grid
        assert arr.shape[0] <= reference.shape[0] and arr.shape[1] <= reference.shape[1], name
        assert arr.max() == reference.max() and arr.sum() == reference[: arr.shape[0], : arr.shape[1]].sum(), name
    assert len(table) == 100
    csv_ref, csv_file = tmp_path / "ref.csv", tmp_path / "file.csv"
    for src, csv in ((result_dir, csv_ref), (exported["gj"], csv_file)):
        assert main(["hotspots", str(src), "-k", "3", "--radius-px", "30", "--min-count", "0", "--csv", str(csv)]) == 0
    cols = ["x", "y", "count"]
    pd.testing.assert_frame_equal(pd.read_csv(csv_ref)[cols], pd.read_csv(csv_file)[cols])
    # default outputs land beside the annotation file, named after it, never on a shared name
    assert main(["density", str(exported["gj"]), "--radius-px", "40"]) == 0
    assert (tmp_path / "n_density_count.png").is_file()


def test_point_annotations_count_as_nuclei(tmp_path, capsys):
    """A QuPath file with only point annotations (manual counting) and a region: points are nuclei."""
    feats = [
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[10, 10], [20, 10], [30, 10], [40, 12], [52, 14]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[200, 200], [210, 205], [220, 200]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Stroma", "color": [0, 150, 0]}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [300, 0], [300, 300], [0, 300], [0, 0]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Region*"}}},
    ]
    src = tmp_path / "counts.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    from napari_histo.formats.auto import read_nuclei

    table = read_nuclei(src)
    info = table.attrs["type_info"]
    names = {int(k): v[0] for k, v in info.items()}
    assert sorted(names[t] for t in table["type"]) == ["Stroma"] * 3 + ["Tumor"] * 5
    assert info[str(table.loc[table["x"] == 199.5, "type"].iloc[0])][1] == [0, 150, 0]  # QuPath's 200 at pixel centres
    arr = _density(src, tmp_path, "tumor", "--type", "Tumor")
    assert arr.max() == 5  # the 5 tumour points lie within 40 px of each other; stroma is not counted
    # a file with regions only holds no nuclei: clear error naming it
    only_region = tmp_path / "regions.geojson"
    only_region.write_text(json.dumps({"type": "FeatureCollection", "features": feats[2:]}))
    assert main(["density", str(only_region), "--radius-px", "40"]) == 1
    err = capsys.readouterr().err
    assert "regions.geojson" in err and "no nuclei" in err and "Traceback" not in err
    # µm radius without any pixel size: the message says how to give one
    assert main(["density", str(src), "--radius-um", "50"]) == 1
    assert "--mpp" in capsys.readouterr().err
    assert main(["density", str(src), "--radius-um", "50", "--mpp", "0.5", "-o", str(tmp_path / "um.npy")]) == 0
    assert json.loads((tmp_path / "um.json").read_text())["radius_px"] == 100  # 50 µm at 0.5 µm/px


ASAP_XML = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="d" Type="Dot" PartOfGroup="lymphocyte" Color="#F4FA58">
      <Coordinates><Coordinate Order="0" X="15.5" Y="20" /></Coordinates>
    </Annotation>
    <Annotation Name="ps" Type="PointSet" PartOfGroup="lymphocyte" Color="#F4FA58">
      <Coordinates><Coordinate Order="1" X="40" Y="42" /><Coordinate Order="0" X="30" Y="32" /></Coordinates>
    </Annotation>
    <Annotation Name="tumour" Type="Polygon" PartOfGroup="tumor" Color="#F4FA58">
      <Coordinates><Coordinate Order="0" X="100" Y="100" /><Coordinate Order="1" X="180" Y="100" />
        <Coordinate Order="2" X="180" Y="160" /><Coordinate Order="3" X="100" Y="160" /></Coordinates>
    </Annotation>
    <Annotation Name="s" Type="Spline" PartOfGroup="None" Color="#00FF00">
      <Coordinates><Coordinate Order="0" X="0" Y="0" /><Coordinate Order="1" X="60" Y="0" />
        <Coordinate Order="2" X="60" Y="60" /><Coordinate Order="3" X="0" Y="60" /></Coordinates>
    </Annotation>
    <Annotation Name="m" Type="Measurement" PartOfGroup="None" Color="#00FF00">
      <Coordinates><Coordinate Order="0" X="0" Y="0" /><Coordinate Order="1" X="10" Y="0" /></Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="tumor" PartOfGroup="None" Color="#ff0000"><Attributes /></Group>
    <Group Name="lymphocyte" PartOfGroup="None" Color="#0000ff"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""


def test_asap_reader_and_import(tmp_path):
    from napari_histo.formats.asap import read_asap
    from napari_histo.formats.auto import detect_format, read_nuclei

    src = tmp_path / "camelyon_style.xml"
    src.write_text(ASAP_XML)
    assert detect_format(src) == "asap"  # not ImageScope, although it holds an <Annotations> element
    anns = {a.name: a for a in read_asap(src)}
    assert anns["d"].geometry.geom_type == "Point" and anns["d"].class_name == "lymphocyte" and anns["d"].colour == (0, 0, 255)
    assert anns["ps"].geometry.geom_type == "MultiPoint"
    assert [tuple(p.coords[0]) for p in anns["ps"].geometry.geoms] == [(30.0, 32.0), (40.0, 42.0)]  # by Order
    assert anns["tumour"].geometry.area == 80 * 60 and anns["tumour"].colour == (255, 0, 0)
    spline = anns["s"].geometry
    assert anns["s"].class_name is None and spline.geom_type == "Polygon"
    ring = np.asarray(spline.exterior.coords)
    for corner in ([0, 0], [60, 0], [60, 60], [0, 60]):  # the curve passes through its control points
        assert np.abs(ring - corner).sum(axis=1).min() < 1e-9
    assert 3600 < spline.area < 3600 * np.pi / 2  # a rounded square around them
    assert anns["m"].geometry.geom_type == "LineString"
    table = read_nuclei(src)  # dots and point sets are nuclei; the polygon and spline are regions
    assert len(table) == 3 and table.attrs["type_info"][str(table["type"].iloc[0])][0] == "lymphocyte"
    out = tmp_path / "m.npz"
    assert main(["import", str(src), "-o", str(out), "--table", str(tmp_path / "t.parquet")]) == 0
    z = np.load(out)
    info = json.loads(str(z["type_info"]))
    tumour_id = next(int(k) for k, v in info.items() if v[0] == "tumor")
    assert (z["type"] == tumour_id).sum() == pytest.approx(80 * 60, rel=0.05)
    assert len(pd.read_parquet(tmp_path / "t.parquet", columns=["id"])) == 3


def test_real_asap_file():
    from napari_histo.formats.asap import read_asap

    anns = read_asap(shared_path("annotation_formats", "sedeen", "asap1.xml"))
    assert [a.shape for a in anns] == ["point", "rectangle", "polygon", "spline", "line"]
    assert anns[1].geometry.bounds == pytest.approx((5954.99219, 24058.1719, 8336.99023, 26360.7676))


def test_hotspots_inside_a_region_from_an_annotation_file(result_dir, tmp_path, capsys):
    """The pathologist's ROI (e.g. a tumour outline drawn in QuPath) limits the hotspot search."""
    def region(cls, x0, x1):
        ring = [[x0, 0], [x1, 0], [x1, 300], [x0, 300], [x0, 0]]
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation", "classification": {"name": cls}}}

    rois = tmp_path / "regions.geojson"
    rois.write_text(json.dumps({"type": "FeatureCollection", "features": [region("Tumor", 160, 300), region("Stroma", 0, 120)]}))
    csv = tmp_path / "h.csv"

    def centres(*roi_args):
        assert main(["hotspots", str(result_dir), "-k", "4", "--radius-px", "20", "--min-count", "0",
                     "--csv", str(csv), *roi_args]) == 0
        return pd.read_csv(csv)

    tumour = centres("--roi", str(rois), "--roi-class", "tumor")
    assert len(tumour) and (tumour["x"] - 20 >= 160 - 0.5).all()  # circles lie inside the ROI
    both = centres("--roi", str(rois))  # every region of the file
    assert not ((both["x"] > 120 - 20) & (both["x"] < 160 + 20)).any()  # no circle reaches the gap
    box = centres("--roi", "0,0,150,300")
    assert (box["x"] + 20 <= 150).all()
    assert main(["hotspots", str(result_dir), "--radius-px", "20", "--roi", str(rois), "--roi-class", "Necrosis"]) == 1
    err = capsys.readouterr().err
    assert "regions.geojson" in err and "Necrosis" in err and "Stroma, Tumor" in err
    assert main(["hotspots", str(result_dir), "--radius-px", "20", "--roi", "10,10"]) == 1
    assert "--roi" in capsys.readouterr().err


def test_region_summary_counts_densities_and_positivity(result_dir, tmp_path, capsys):
    import shapely

    from napari_histo.analysis.summary import region_summary

    table = pd.read_parquet(result_dir / "nuclei.parquet")
    table.attrs["mpp"] = 0.25
    box = (0, 0, 150, 300)  # the left half of the 300 x 300 px result
    left = region_summary(table, box).iloc[0]
    in_box = (table["x"] < 149.5) & (table["y"] < 299.5)
    assert left["nuclei"] == in_box.sum() > 0
    assert left["area_px"] == 150 * 300
    assert left["area_mm2"] == pytest.approx(150 * 300 * 0.25**2 * 1e-6)
    assert left["nuclei_per_mm2"] == pytest.approx(in_box.sum() / left["area_mm2"])
    assert left["positive"] == (in_box & table["positive"]).sum()
    assert left["positive_pct"] == pytest.approx(100 * left["positive"] / left["nuclei"])
    assert left["Neoplastic"] == (in_box & (table["type"] == 1)).sum()
    assert left["mean_area_um2"] == pytest.approx(table.loc[in_box, "area_px"].mean() * 0.0625)
    # two polygons in one call, a triangle among them: centroid-inside counting
    tri = shapely.Polygon([(0, 0), (300, 0), (0, 300)])
    rows = region_summary(table, [tri, shapely.box(200, 200, 300, 300)])
    assert rows["nuclei"].tolist() == [int(shapely.contains_xy(tri, table["x"], table["y"]).sum()),
                                       int(((table["x"] > 200) & (table["y"] > 200)).sum())]
    # the CLI over the result folder (mpp from run.json) and a regions file
    rois = tmp_path / "rois.geojson"
    rois.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [150, 0], [150, 300], [0, 300], [0, 0]]]},
         "properties": {"objectType": "annotation", "name": "left", "classification": {"name": "Tumor"}}}]}))
    csv = tmp_path / "s.csv"
    assert main(["summary", str(result_dir), "--roi", str(rois), "--csv", str(csv)]) == 0
    out = pd.read_csv(csv)
    assert out["region"].tolist() == ["left"] and out["nuclei"].iloc[0] == left["nuclei"]
    assert out["nuclei_per_mm2"].iloc[0] == pytest.approx(left["nuclei_per_mm2"])
    assert json.loads(csv.with_suffix(".json").read_text())["command"] == "summary"
    assert "left" in capsys.readouterr().out
    # without any pixel size: densities per megapixel and a note saying so
    gj = tmp_path / "n.geojson"
    main(["export", str(result_dir), "--geojson", str(gj)])
    capsys.readouterr()
    assert main(["summary", str(gj)]) == 0
    assert "no pixel size" in capsys.readouterr().out


def test_summary_over_the_slide_tissue(tmp_path, sample_slide_path, capsys):
    """Without a ROI, a result whose slide is known is read out per mm² of tissue."""
    from napari_histo.slide import open_slide, tissue_mask

    folder = tmp_path / "whole"
    folder.mkdir()
    table = synthetic_table(20, spacing=100, mpp=0.499)  # 400 nuclei over 2,000 x 2,000 px
    write_table_parquet(table, folder / "nuclei.parquet")
    (folder / "run.json").write_text(json.dumps({"command": "segment", "slide": sample_slide_path.name,
                                                  "parameters": {"input": str(sample_slide_path)}}))
    csv = tmp_path / "s.csv"
    assert main(["summary", str(folder), "--csv", str(csv)]) == 0
    row = pd.read_csv(csv).iloc[0]
    with open_slide(sample_slide_path) as slide:
        mask = tissue_mask(slide)
    assert row["region"] == "tissue"
    assert row["area_px"] == pytest.approx(mask.mask.sum() * mask.downsample**2)
    on_tissue = sum(mask.contains(x, y) for x, y in zip(table["x"], table["y"], strict=True))
    assert row["nuclei"] == on_tissue and 0 < on_tissue < len(table)


def test_info_describes_annotation_files(result_dir, tmp_path, capsys):
    gj = tmp_path / "n.geojson"
    main(["export", str(result_dir), "--geojson", str(gj)])
    asap = tmp_path / "a.xml"
    asap.write_text(ASAP_XML)
    capsys.readouterr()
    assert main(["info", str(gj), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    table = pd.read_parquet(result_dir / "nuclei.parquet", columns=["type"])
    assert info["format"] == "QuPath GeoJSON" and info["nuclei"] == len(table)
    assert info["nuclei_by_type"]["Neoplastic"] == int((table["type"] == 1).sum())
    assert main(["info", str(asap), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "ASAP XML" and info["nuclei"] == 0 and info["points"] == 3
    assert info["regions_by_class"] == {"lymphocyte": {"points": 3}, "tumor": {"polygons": 1},
                                        "(no class)": {"polygons": 1, "lines": 1}}
    assert info["extent_xyxy"] == [-7.5, -7.5, 180.0, 160.0]  # the closed spline bulges past its corners
    assert main(["info", str(asap)]) == 0 and "tumor: 1 polygons" in capsys.readouterr().out


def test_unwritable_output_is_a_clear_error(result_dir, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    assert main(["density", str(result_dir), "--radius-px", "40", "-o", str(blocker / "d.png")]) == 1
    err = capsys.readouterr().err
    assert "not_a_folder" in err and "Traceback" not in err


def test_import_masks_take_the_image_size(tmp_path, capsys):
    """Masks line up with the image: its size from --image or from the session, never silently
    the objects' extent (which shifts every mask by the extent's origin)."""
    from napari_histo.formats.sedeen import write_sedeen
    from napari_histo.utils import sample_slide_path

    table = synthetic_table(3, spacing=40)
    table["x"] += 500
    table["bbox_x0"] += 500
    table["bbox_x1"] += 500
    table["contour"] = [c + np.float32([500, 0]) for c in table["contour"]]
    session = write_sedeen(table, tmp_path / "s.session.xml", dimensions=(2220, 2967), mpp=0.499, slide_name="x.svs")
    out = tmp_path / "m.npz"
    assert main(["import", str(session), "-o", str(out)]) == 0
    z = np.load(out)
    assert z["inst"].shape == (2967, 2220) and tuple(z["region"]) == (0, 0, 2220, 2967)
    first = table.iloc[0]
    assert z["inst"][int(round(first["y"])), int(round(first["x"]))] > 0  # the mask sits where the nucleus is
    assert main(["import", str(session), "-o", str(out), "--image", str(sample_slide_path())]) == 0
    assert np.load(out)["inst"].shape == (2967, 2220)
    gj = tmp_path / "n.geojson"
    from napari_histo.formats.geojson import write_geojson

    write_geojson(table, gj)
    assert main(["import", str(gj), "-o", str(out)]) == 0
    assert "give --image or --region" in capsys.readouterr().out
