"""QuPath GeoJSON writer/reader: round trip, QuPath rules (colour, finite numbers, validity), real files."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import shapely
from _analysis_data import synthetic_table
from conftest import shared_path

from napari_histo.formats._common import Annotation, AnnotationFormatError
from napari_histo.formats.geojson import read_geojson, write_geojson


@pytest.fixture(scope="module")
def table():
    return synthetic_table(6)


def _poly(c):
    return shapely.Polygon(np.asarray(c, np.float64))


def _check_round_trip(table, back):
    assert len(back.table) == len(table)
    names_in = [table.attrs["type_info"][str(t)][0] for t in table["type"]]
    names_out = [back.type_info.name(t) for t in back.table["type"]]
    assert names_out == names_in
    for a, b in zip(table["contour"], back.table["contour"], strict=True):
        pa, pb = _poly(a), _poly(b)
        iou = pa.intersection(pb).area / pa.union(pb).area
        assert iou >= 0.99


def test_round_trip_keeps_count_classes_geometry(tmp_path, table):
    path = write_geojson(table, tmp_path / "n.geojson")
    data = json.loads(path.read_text())
    feats = data["features"]
    assert data["type"] == "FeatureCollection" and len(feats) == len(table)
    for f in feats:
        props = f["properties"]
        assert props["objectType"] == "detection"
        assert set(props["classification"]) == {"name", "color"} and len(props["classification"]["color"]) == 3
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        assert all(round(v, 2) == v for pt in ring for v in pt)
        assert str(len(f["id"])) == "36"
        m = props["measurements"]
        assert {"Area px^2", "Perimeter px", "Circularity", "Solidity", "Eccentricity", "Class probability"} <= set(m)
    back = read_geojson(path, mpp=0.25)
    _check_round_trip(table, back)
    assert back.table.attrs["mpp"] == 0.25


def test_gzip_cells_and_qupath03(tmp_path, table):
    path = write_geojson(table, tmp_path / "n.geojson.gz", object_type="cell", qupath03=True)
    with gzip.open(path, "rt") as fh:
        data = json.load(fh)
    f = data["features"][0]
    assert f["properties"]["objectType"] == "cell" and f["properties"]["object_type"] == "cell"
    assert "nucleusGeometry" in f and isinstance(f["properties"]["measurements"], list)
    assert {"name", "value"} == set(f["properties"]["measurements"][0])
    _check_round_trip(table, read_geojson(path))


def test_non_finite_measurements_omitted_and_strict_json(tmp_path, table):
    t = table.copy()
    t.attrs = dict(table.attrs)
    t["dab_od"] = np.nan
    t.loc[t.index[0], "circularity"] = np.inf
    path = write_geojson(t, tmp_path / "n.geojson")
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    first = json.loads(text)["features"][0]["properties"]["measurements"]
    assert "Circularity" not in first and "DAB OD mean" not in first


def test_self_intersecting_contour_is_repaired(tmp_path, table):
    t = table.iloc[:2].copy()
    t.attrs = dict(table.attrs)
    bowtie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float32) + 100
    t.at[t.index[0], "contour"] = bowtie
    t.at[t.index[1], "contour"] = np.array([[5, 5], [6, 6]], np.float32)  # degenerate
    path = write_geojson(t, tmp_path / "n.geojson")
    feats = json.loads(path.read_text())["features"]
    assert len(feats) == 2
    for f in feats:
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid and geom.area > 0


def test_annotations_written(tmp_path, table):
    circle = shapely.Point(50, 60).buffer(20)
    anns = [Annotation(circle, name="Hotspot 1", class_name="Hotspot", colour=(255, 255, 0), is_ellipse=True,
                       measurements={"Count": 12.0, "Bad": float("nan")})]
    path = write_geojson(table, tmp_path / "n.geojson", annotations=anns)
    back = read_geojson(path)
    assert len(back.table) == len(table) and len(back.annotations) == 1
    a = back.annotations[0]
    assert a.name == "Hotspot 1" and a.object_type == "annotation" and a.is_ellipse
    assert a.measurements == {"Count": 12.0}
    assert abs(a.geometry.area - circle.area) < 1.0


def test_failed_write_leaves_no_file(tmp_path, table):
    t = table.copy()
    t.attrs = dict(table.attrs)
    t.at[t.index[3], "contour"] = "not an array"
    with pytest.raises(Exception):  # noqa: B017 - any failure must leave nothing behind
        write_geojson(t, tmp_path / "n.geojson")
    assert list(tmp_path.iterdir()) == []


def test_reader_accepts_feature_array_legacy_and_bom(tmp_path):
    feat = {"type": "Feature", "id": "PathDetectionObject",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
                                                             [[2, 2], [4, 2], [4, 4], [2, 4], [2, 2]]]},
            "properties": {"classification": {"name": "Tumor", "colorRGB": -16711165},
                           "measurements": [{"name": "Area", "value": "NaN"}]}}
    path = tmp_path / "a.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([feat, {"no": "type"}]).replace(", ", ",\r\n").encode())
    back = read_geojson(path)
    assert len(back.table) == 1 and back.type_info.name(int(back.table["type"][0])) == "Tumor"
    assert back.type_info.colour(int(back.table["type"][0])) == (1, 2, 3)  # 0xFF010203 (ARGB)
    single = tmp_path / "b.geojson"
    feat2 = dict(feat, properties={"objectType": "annotation", "classification": "Stroma"})
    feat2["geometry"] = {"type": "MultiPolygon", "coordinates": [feat["geometry"]["coordinates"]]}
    single.write_text(json.dumps(feat2))
    ann = read_geojson(single).annotations[0]
    assert ann.class_name == "Stroma" and ann.geometry.area == pytest.approx(96.0)


@pytest.mark.parametrize("text", ["", "{", '{"type": "FeatureCollection"}', '{"type": "Feature", "geometry": 5, "properties": {"objectType": "detection"}}', "[1, 2]x"])
def test_reader_clean_errors(tmp_path, text):
    path = tmp_path / "bad.geojson"
    path.write_text(text)
    with pytest.raises(AnnotationFormatError) as err:
        read_geojson(path)
    assert "bad.geojson" in str(err.value)


def test_malformed_json_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.geojson"
    path.write_text('{"type": "FeatureCollection",\n "features": [,]}')
    with pytest.raises(AnnotationFormatError) as err:
        read_geojson(path)
    assert err.value.line == 2 and err.value.column is not None


def test_real_qupath_files():
    cells = read_geojson(shared_path("annotation_formats", "qupath", "Single_cells.geojson"))
    assert len(cells.table) == 121
    assert {cells.type_info.name(t) for t in cells.table["type"]} == {"single_cells_demo"}
    assert (cells.table["area_px"] > 0).all()
    assert len(cells.annotations) == 10
    assert sum(a.geometry.geom_type == "Point" for a in cells.annotations) == 3
    small = read_geojson(shared_path("annotation_formats", "qupath", "TD_01_verysmall_mIF.geojson"))
    assert len(small.table) == 0 and len(small.annotations) == 9
    assert {a.class_name for a in small.annotations} == {"class_1", "class_2", None}


def test_prefetching_chunks_gives_the_same_features(table):
    from napari_histo.formats.geojson import iter_nucleus_feature_bytes

    def features(**kw):
        out = []
        for text in iter_nucleus_feature_bytes(table, chunk_size=7, **kw):
            f = json.loads(text)
            assert len(f.pop("id")) == 36
            out.append(f)
        return out

    threaded = features(prefetch=True)
    assert len(threaded) == len(table)
    assert threaded == features(prefetch=False)
    assert threaded[8]["geometry"]["coordinates"][0][0] == [round(float(v), 2) for v in table["contour"].iloc[8][0]]
