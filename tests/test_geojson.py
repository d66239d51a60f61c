"""QuPath GeoJSON writer/reader: round trip, QuPath rules (colour, finite numbers, validity), real files."""

from __future__ import annotations

import gzip
import json
import uuid

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
        read_geojson(path, strict=True)
    assert "bad.geojson" in str(err.value)


def test_one_malformed_feature_is_skipped_and_counted_unless_strict(tmp_path):
    good = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
            "properties": {"objectType": "detection", "classification": {"name": "Tumor", "color": [255, 0, 0]}}}
    bad = {"type": "Feature", "geometry": 5, "properties": {"objectType": "detection"}}
    broken = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, "x"], [2, 2], [0, 0]]]},
              "properties": {"objectType": "detection", "measurements": {"Class probability": 0.5}}}
    path = tmp_path / "mixed.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [good, bad, good, broken]}))
    with pytest.warns(UserWarning, match=r"skipped 2 malformed feature\(s\), the first: feature 1"):
        back = read_geojson(path)
    assert len(back.table) == 2 and back.table.attrs["skipped"] == {"malformed features": 2}
    with pytest.raises(AnnotationFormatError, match="feature 1"):
        read_geojson(path, strict=True)


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
    # QuPath's coordinates put the origin at a pixel's corner: the table's pixel centres + 0.5
    assert threaded[8]["geometry"]["coordinates"][0][0] == [round(float(v) + 0.5, 2) for v in table["contour"].iloc[8][0]]


# ------------------------------------------------------------------ fast writer == plain json.dumps
def _reference_geometry(contour, bbox):
    """The writer's contract, written plainly: moved by half a pixel to QuPath's pixel-corner
    coordinates, rounded ring kept when still valid, else repaired."""
    from napari_histo.formats.geojson._geometry import _geometry_dict

    ring = np.asarray(contour, np.float64).reshape(-1, 2) + 0.5
    if len(ring) > 1 and (ring[0] == ring[-1]).all():
        ring = ring[:-1]
    if len(ring) >= 3:
        rounded = np.round(ring, 2)
        poly = shapely.Polygon(rounded)
        if poly.is_valid and poly.area > 0:
            return {"type": "Polygon", "coordinates": [rounded.tolist() + [rounded[0].tolist()]]}
        geom = _geometry_dict(shapely.Polygon(ring))
        if geom is not None:
            return geom
    x0, y0, x1, y1 = (float(v) + 0.5 for v in bbox)
    x1, y1 = max(x1, x0 + 0.01), max(y1, y0 + 0.01)
    x0, y0, x1, y1 = (round(v, 2) for v in (x0, y0, x1, y1))
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _reference_features(table, object_type="detection", qupath03=False, measurements=True):
    from napari_histo.formats._common import table_type_info
    from napari_histo.formats.geojson import MEASUREMENT_COLUMNS

    info = table_type_info(table)
    mpp = table.attrs.get("mpp")
    out = []
    for _, row in table.iterrows():
        bbox = (row["bbox_x0"], row["bbox_y0"], row["bbox_x1"], row["bbox_y1"])
        nucleus = _reference_geometry(row["contour"], bbox)
        values = {MEASUREMENT_COLUMNS[c]: row[c] for c in MEASUREMENT_COLUMNS if c in table.columns}
        if mpp:
            values["Perimeter \u00b5m"] = row["perimeter_px"] * mpp
        meas = {k: float(np.round(v, 4)) for k, v in values.items() if np.isfinite(v)}
        props = {"objectType": object_type}
        if qupath03:
            props["object_type"] = object_type
        t = int(row["type"])
        props["classification"] = {"name": info.name(t), "color": list(info.colour(t))}
        if measurements:
            props["measurements"] = [{"name": k, "value": v} for k, v in meas.items()] if qupath03 else meas
        feature = {"type": "Feature", "geometry": nucleus}
        if object_type == "cell":
            feature["geometry"] = _reference_geometry(row["cell_contour"], bbox) if "cell_contour" in table.columns else nucleus
            feature["nucleusGeometry"] = nucleus
        feature["properties"] = props
        out.append(json.loads(json.dumps(feature, allow_nan=False)))
    return out


def _awkward_table():
    """Realistic nuclei plus every contour the fast path must not take for granted."""
    rng = np.random.default_rng(5)
    t = synthetic_table(9)
    t.attrs = dict(t.attrs)
    contours = list(t["contour"])
    contours[0] = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float32) + 100  # bow-tie
    contours[1] = np.array([[5, 5], [6, 6]], np.float32)  # 2 vertices
    contours[2] = np.array([[0, 0], [5, 5], [10, 10]], np.float32) + 50  # collinear, zero area
    contours[3] = np.array([[0, 0], [4, 0], [4, 4], [2, 2], [0, 4], [4, 8], [0, 8], [2, 2]], np.float32) + 300  # touches itself
    contours[4] = np.array([[0, 0], [9, 0], [9, 9], [6, 9], [6, 3], [3, 3], [3, 9], [0, 9]], np.float32) + 400  # concave, valid
    c = contours[5]
    contours[5] = np.vstack([c, c[:1]])  # repeated closing vertex
    c = contours[6].astype(np.float64)
    contours[6] = np.vstack([c[:3], c[2:3] + 0.001, c[3:]])  # two vertices that merge when rounded
    contours[7] = contours[7] - np.float32(2000)  # negative coordinates
    contours[8] = contours[8].astype(np.float64) + 2_345_678.123  # beyond 10**6 px: wide rows
    contours[9] = np.array([[0.001, 0.001], [0.004, 0.001], [0.004, 0.004]], np.float64)  # vanishes at 0.01 px
    spiral = [(np.cos(a) * r, np.sin(a) * r) for a, r in zip(np.linspace(0, 5 * np.pi, 40), np.linspace(3, 12, 40), strict=True)]
    contours[10] = np.array(spiral + spiral[::-1][1:-1], np.float32) + 600  # degenerate, folded back
    contours[11] = (contours[11] - contours[11].mean(0)) * 0.004 + contours[11].mean(0)  # sub-pixel nucleus
    t["contour"] = contours
    t["dab_od"] = rng.uniform(0, 1, len(t))
    t.loc[t.index[12], "dab_od"] = np.nan
    t.loc[t.index[13], "circularity"] = np.inf
    t.loc[t.index[14], "solidity"] = -np.inf
    t.loc[t.index[15], "type_prob"] = 3e12  # beyond the fixed-point grid: written by json
    t.loc[t.index[16], "eccentricity"] = -0.00004  # rounds to zero: "0", not "-0"
    t.loc[t.index[17], ["area_px", "area_um2", "perimeter_px", "circularity", "eccentricity", "solidity", "type_prob", "dab_od"]] = np.nan
    t["cell_contour"] = [np.asarray(c, np.float64) * 1.0 for c in contours[::-1]]
    return t


@pytest.mark.parametrize(("object_type", "qupath03", "chunk", "measurements"),
                         [("detection", False, 8192, True), ("detection", True, 16, True), ("cell", False, 7, True),
                          ("cell", True, 33, True), ("detection", False, 50, False)])
def test_fast_writer_matches_plain_json_reference(tmp_path, object_type, qupath03, chunk, measurements, monkeypatch):
    from napari_histo.formats.geojson import fast_writer

    table = _awkward_table()
    monkeypatch.setattr(fast_writer, "_CHUNK", chunk)
    path = write_geojson(table, tmp_path / "n.geojson", object_type=object_type, qupath03=qupath03,
                         include_measurements=measurements)
    text = path.read_text(encoding="ascii")
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    got = data["features"]
    ids = [f.pop("id") for f in got]
    assert len(set(ids)) == len(ids) and all(str(uuid.UUID(i, version=4)) == i for i in ids)
    expected = _reference_features(table, object_type, qupath03, measurements)
    assert len(got) == len(expected) == len(table)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"feature {i} differs"
    for f in got:
        for key in ("geometry", "nucleusGeometry"):
            if key in f:
                geom = shapely.geometry.shape(f[key])
                assert geom.is_valid and geom.area > 0
    assert '"eccentricity"' not in text and "-0," not in text and "-0}" not in text


def test_star_proof_never_accepts_an_invalid_ring():
    from napari_histo.formats.geojson._geometry import _star_simple

    rng = np.random.default_rng(11)
    lengths = rng.integers(3, 9, 20000)
    total = int(lengths.sum())
    qx, qy = rng.integers(-4, 5, total), rng.integers(-4, 5, total)  # a tiny grid: many degenerate rings
    starts = np.cumsum(lengths) - lengths
    proven = _star_simple(qx, qy, starts, lengths)
    rings = shapely.polygons(shapely.linearrings(np.stack([qx, qy], 1).astype(float), indices=np.repeat(np.arange(len(lengths)), lengths)))
    valid = shapely.is_valid(rings) & (shapely.area(rings) > 0)
    assert proven.sum() > 1000  # the proof does accept plenty of rings
    assert not (proven & ~valid).any()
    ellipses = synthetic_table(6)["contour"]  # and every realistic nucleus
    q = [np.rint(np.asarray(c, np.float64) * 100).astype(np.int64) for c in ellipses]
    lens = np.array([len(c) for c in q])
    allq = np.concatenate(q)
    assert _star_simple(allq[:, 0], allq[:, 1], np.cumsum(lens) - lens, lens).all()


def test_reader_mixed_rings_keep_order_and_python_nan(tmp_path):
    square = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    cube = [[20, 0, 1], [30, 0, 1], [30, 10, 1], [20, 10, 1], [20, 0, 1]]  # 3-D positions
    feats = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
         "properties": {"objectType": "detection", "classification": {"name": "A", "color": [1, 2, 3]},
                        "measurements": {"Class probability": 0.25}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]},
         "properties": {"objectType": "detection", "classification": {"name": "B", "color": [4, 5, 6]}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [cube]},
         "properties": {"objectType": "detection", "classification": {"name": "a", "color": [9, 9, 9]},
                        "measurements": {"Class probability": float("nan"), "type_prob": 0.5}}},
    ]
    path = tmp_path / "mixed.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))  # bare NaN, as Python writes
    back = read_geojson(path)
    assert len(back.table) == 2 and len(back.annotations) == 1
    assert back.annotations[0].geometry.geom_type == "Point" and back.annotations[0].class_name == "B"
    # QuPath's pixel-corner coordinates -> the table's pixel centres: half a pixel up and left
    np.testing.assert_array_equal(back.table["contour"].iloc[0], np.asarray(square[:-1], np.float32) - 0.5)
    np.testing.assert_array_equal(back.table["contour"].iloc[1], np.asarray([c[:2] for c in cube[:-1]], np.float32) - 0.5)
    assert back.table["type"].tolist() == [1, 1]  # class names match case-insensitively
    assert back.table["type_prob"].tolist() == [0.25, 1.0]  # NaN probability -> 1.0
    assert back.table["area_px"].tolist() == [100.0, 100.0]


def test_gzip_output_is_one_standard_member_across_chunks(tmp_path, table, monkeypatch):
    import zlib

    from napari_histo.formats.geojson import fast_writer

    monkeypatch.setattr(fast_writer, "_CHUNK", 5)  # several independently deflated chunks
    anns = [Annotation(shapely.box(0, 0, 50, 50), name="ROI", class_name="Region", colour=(0, 0, 255))]
    plain = write_geojson(table, tmp_path / "n.geojson", annotations=anns)
    packed = write_geojson(table, tmp_path / "n.geojson.gz", annotations=anns)
    raw = packed.read_bytes()
    member = zlib.decompressobj(wbits=31)  # one gzip member; CRC-32 and length are checked
    text = member.decompress(raw)
    assert member.eof and member.unused_data == b""
    assert gzip.decompress(raw) == text

    def strip_ids(data):
        for f in data["features"]:
            assert len(f.pop("id")) == 36
        return data

    assert strip_ids(json.loads(text)) == strip_ids(json.loads(plain.read_bytes()))
    assert len(read_geojson(packed).table) == len(table)


def test_real_hand_drawn_outlines_export_valid(tmp_path):
    """MoNuSeg outlines often touch themselves: every one must come out valid, none lost."""
    from napari_histo.formats._common import table_from_contours
    from napari_histo.formats.imagescope import read_imagescope

    regions = read_imagescope(shared_path("monuseg", "MoNuSegTrainData", "TCGA-21-5784-01Z-00-DX1.xml")).regions
    contours = [r.vertices for r in regions if len(r.vertices) >= 3]
    table = table_from_contours(contours, [1] * len(contours), mpp=0.25)
    invalid_in = sum(not shapely.Polygon(c).is_valid for c in contours)
    assert invalid_in > len(contours) // 4  # the repair path is really exercised
    path = write_geojson(table, tmp_path / "monuseg.geojson")
    feats = json.loads(path.read_bytes())["features"]
    assert len(feats) == len(contours)
    for f, c in zip(feats, contours, strict=True):
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid and geom.area > 0
        filled = shapely.Polygon(c).buffer(0)  # the outline's area as GEOS fills it
        if filled.area > 20:
            assert abs(geom.area - filled.area) <= 0.6 * filled.area


def _read_both_ways(path, monkeypatch, block=None):
    """(whole-file parse, incremental parse in chunks of 2 features, ``block`` characters read at a
    time) of one file."""
    import napari_histo.formats.geojson.stream as gj

    whole = read_geojson(path)
    with monkeypatch.context() as m:
        m.setattr(gj, "STREAM_MIN_BYTES", 0)
        m.setattr(gj, "_READ_CHUNK", 2)
        if block:
            m.setattr(gj, "_STREAM_BLOCK", block)
        streamed = read_geojson(path)
    return whole, streamed


def _same_objects(a, b):
    assert a.table.drop(columns="contour").equals(b.table.drop(columns="contour"))
    for x, y in zip(a.table["contour"], b.table["contour"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert dict(a.type_info.names) == dict(b.type_info.names)
    assert [(n.class_name, n.geometry.wkt) for n in a.annotations] == [(n.class_name, n.geometry.wkt) for n in b.annotations]


@pytest.mark.parametrize("block", [None, 5, 37])
def test_big_files_are_read_incrementally_with_the_same_result(tmp_path, table, monkeypatch, block):
    """Files above STREAM_MIN_BYTES are parsed a chunk of features at a time from the file, read
    ``block`` characters at a time (tiny blocks cut every token somewhere)."""
    import napari_histo.formats.geojson.stream as gj

    anns = [Annotation(shapely.Polygon([(0, 0), (50, 0), (50, 50)]), name="roi", class_name="Tumor", colour=(200, 0, 0))]
    written = write_geojson(table, tmp_path / "n.geojson", annotations=anns)
    written_gz = write_geojson(_awkward_table(), tmp_path / "awkward.geojson.gz", gzip=True)
    square = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    det = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
           "properties": {"objectType": "detection", "classification": {"name": "A", "color": [1, 2, 3]}}}
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]},
             "properties": {"objectType": "detection", "classification": {"name": "B", "color": [4, 5, 6]}}}
    parent = dict(det, properties={"objectType": "annotation", "classification": "Stroma"}, childObjects=[det, point, det])
    layouts = {
        "array.json": "\ufeff" + json.dumps([det, point, {"no": "type"}, det, parent]).replace(", ", ",\r\n"),
        "trailing_members.geojson": json.dumps({"type": "FeatureCollection", "features": [det, point, det],
                                                "bbox": [0, 0, 10, 10], "note": {"a": [1, 2]}}, indent=2),
        "features_first.geojson": json.dumps({"features": [det, det, point], "type": "FeatureCollection"}),
        "empty.geojson": '{"type": "FeatureCollection", "features": [ ]}',
        "nan.geojson": json.dumps({"type": "FeatureCollection", "features": [
            dict(det, properties=dict(det["properties"], measurements={"Class probability": float("nan")}))] * 5}),
    }
    paths = [written, written_gz]
    for name, text in layouts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        paths.append(tmp_path / name)
    for path in paths:
        whole, streamed = _read_both_ways(path, monkeypatch, block)
        _same_objects(whole, streamed)
    whole, _ = _read_both_ways(written, monkeypatch)
    assert len(whole.table) == len(table) and len(whole.annotations) == 1
    nested, _ = _read_both_ways(tmp_path / "array.json", monkeypatch)
    assert len(nested.table) == 4 and len(nested.annotations) == 3  # 2 + 2 child detections; 2 points + the parent

    # broken big files: a clean error naming the file, with the line of the fault
    monkeypatch.setattr(gj, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(gj, "_READ_CHUNK", 2)
    if block:
        monkeypatch.setattr(gj, "_STREAM_BLOCK", block)
    for text in ['{"type": "FeatureCollection", "features": [\n' + json.dumps(det) + ',\n{"type": }]}',
                 "[" + json.dumps(det) + "]\n]",
                 '{"type": "FeatureCollection", "features": [] "x": 1}',
                 "[" + json.dumps(det) + ",\n" + json.dumps(det),
                 '{"type": "FeatureCollection", "features": [],\n "bbox": [0, 0,, 1]}',
                 "[" + json.dumps(det) + ',\n  {"type": "Feature", "properties": {"name": "x\n"}}]']:
        with pytest.raises(json.JSONDecodeError) as whole_err:  # where the whole-text parser stops
            json.loads(text)
        line, col = whole_err.value.lineno, whole_err.value.colno
        bad = tmp_path / "bad.geojson"
        bad.write_text(text)
        with pytest.raises(AnnotationFormatError) as err:
            read_geojson(bad)
        assert "bad.geojson" in str(err.value) and (err.value.line, err.value.column) == (line, col), (text, err.value)


def test_three_dimensional_positions_keep_x_and_y(tmp_path):
    """GeoJSON positions may carry an altitude ([x, y, z]); every path keeps x, y only."""
    from napari_histo.formats.auto import read_nuclei

    square = [[[10, 10, 0], [30, 10, 0], [30, 30, 1], [10, 30, 0], [10, 10, 0]]]
    feats = [
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [square]},
         "properties": {"objectType": "detection"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[50, 50, 2], [60, 50, 2], [60, 60, 2], [50, 60, 2], [50, 50, 2]]]},
         "properties": {"objectType": "detection"}},
    ]
    src = tmp_path / "z.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    table = read_geojson(src).table
    assert [c.shape[1] for c in table["contour"]] == [2, 2]
    assert table["area_px"].tolist() == [400.0, 100.0]
    points = tmp_path / "zp.geojson"
    points.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[5, 6, 7], [8, 9, 10]]},
         "properties": {"objectType": "annotation"}}]}))
    assert read_nuclei(points)[["x", "y"]].to_numpy().tolist() == [[4.5, 5.5], [7.5, 8.5]]


# ------------------------------------------------------------------ pixel convention (QuPath's)
def _qupath_pixels(ring: list, shape: tuple[int, int]) -> np.ndarray:
    """Pixels QuPath fills for a polygon: Java2D's rule, pixel (i, j) is inside when its centre
    (j + 0.5, i + 0.5) in QuPath's coordinates (origin at the top-left pixel's corner) is."""
    ii, jj = np.mgrid[: shape[0], : shape[1]]
    centres = shapely.points(jj.ravel() + 0.5, ii.ravel() + 0.5)
    return shapely.contains(shapely.Polygon(ring), centres).reshape(shape)


def test_exported_nuclei_cover_the_same_pixels_in_qupath(tmp_path):
    from napari_histo.nuclei.measure import measure_instances

    labels = np.zeros((40, 48), np.int32)
    labels[5:9, 3:5] = 1  # a 4 x 2 block: its edges are where a half-pixel shift shows most
    yy, xx = np.mgrid[:40, :48]
    labels[(yy - 22) ** 2 + (xx - 30) ** 2 <= 36] = 2  # a disc
    labels[30:37, 6:9] = 3
    labels[33:35, 9:15] = 3  # an L shape (concave corner)
    table = measure_instances(labels, mpp=0.25)
    data = json.loads(write_geojson(table, tmp_path / "px.geojson").read_text())
    for feature, nid in zip(data["features"], table["id"], strict=True):
        filled = _qupath_pixels(feature["geometry"]["coordinates"][0], labels.shape)
        assert np.array_equal(filled, labels == nid), f"nucleus {nid} moved or changed in QuPath"
    # and back: the table's contours are where they were (pixel-centre coordinates)
    back = read_geojson(tmp_path / "px.geojson").table
    for a, b in zip(table["contour"], back["contour"], strict=True):
        np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64), atol=0.005)


def test_a_qupath_square_imports_as_its_pixels(tmp_path):
    """A QuPath ROI from (10, 20) to (14, 23) is the 4 x 3 pixels columns 10-13, rows 20-22."""
    from napari_histo.formats.rasterize import rasterize_table

    square = [[10, 20], [14, 20], [14, 23], [10, 23], [10, 20]]
    path = tmp_path / "sq.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
         "properties": {"objectType": "detection"}}]}))
    table = read_geojson(path).table
    assert table["area_px"].tolist() == [12.0]
    assert (table["x"].iloc[0], table["y"].iloc[0]) == (11.5, 21.0)  # centre of columns 10-13, rows 20-22
    inst, _ = rasterize_table(table, (0, 0, 30, 30))
    expected = np.zeros((30, 30), bool)
    expected[20:23, 10:14] = True
    assert np.array_equal(inst > 0, expected)
