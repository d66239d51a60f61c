"""Sedeen session XML: real file, writer profile, merge, round trip to masks, safety, rasteriser."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _analysis_data import synthetic_table
from conftest import shared_path

from napari_histo.formats._common import AnnotationFormatError
from napari_histo.formats.colours import SedeenColourTable
from napari_histo.formats.csv import write_csv
from napari_histo.formats.rasterize import Shape, rasterize_shapes, rasterize_table
from napari_histo.formats.sedeen import MARK, read_sedeen, session_path_for, write_sedeen


@pytest.fixture(scope="module")
def table():
    return synthetic_table(6)


def test_real_session_all_graphic_types():
    s = read_sedeen(shared_path("annotation_formats", "sedeen", "sedeen1.xml"))
    assert s.identifier == "TUPAC-TE-234.svs" and s.dimensions == (27818, 31316) and s.mpp == (0.252, 0.252)
    kinds = [g.type for g in s.graphics]
    assert kinds == ["polygon", "rectangle", "ellipse", "polygon", "polyline", "text", "point", "ruler", "arrow"]
    assert s.graphics[0].points[0].tolist() == [5493.0, 23178.0]
    assert all(g.colour == "#00ff00ff" for g in s.graphics)
    rect = s.graphics[1].points
    x0, y0 = rect.min(0)
    x1, y1 = rect.max(0)
    inst, typ, info = s.to_masks((int(x0) - 10, int(y0) - 10, int(x1 - x0) + 20, int(y1 - y0) + 20))
    assert (inst == 2).sum() == pytest.approx((x1 - x0 + 1) * (y1 - y0 + 1), rel=0.01)
    assert set(np.unique(typ)) == {0, 4} and info["4"][0] == "positive strong"  # green pen
    anns = s.to_annotations()
    assert len(anns) == 9 and anns[2].is_ellipse and anns[6].geometry.geom_type == "MultiPoint"


def test_round_trip_to_masks_iou(tmp_path, table):
    path = write_sedeen(table, tmp_path / "slide.svs", dimensions=(300, 300))
    assert path == tmp_path / "slide.session.xml"
    session = read_sedeen(path)
    assert session.identifier == "slide.svs" and session.mpp == (0.25, 0.25)
    assert len(session.graphics) == len(table) and all(g.description.endswith(MARK) for g in session.graphics)
    colours = SedeenColourTable.from_type_info(table.attrs["type_info"])
    region = (0, 0, 220, 220)
    inst, typ, info = session.to_masks(region, colours)
    ref_inst, ref_typ = rasterize_table(table, region)
    assert len(np.unique(inst)) - 1 == len(table)
    # graphics are numbered in table order; match by position
    for k, nid in enumerate(table["id"], start=1):
        a, b = inst == k, ref_inst == nid
        assert (a & b).sum() / (a | b).sum() >= 0.99
        assert np.all(typ[a] == table["type"].iloc[k - 1])
    back = session.to_table(colours)
    assert back["type"].tolist() == table["type"].tolist()
    np.testing.assert_allclose(back["area_px"], table["area_px"], rtol=1e-4)


def test_merge_keeps_existing_graphics(tmp_path, table):
    existing = shared_path("annotation_formats", "sedeen", "sedeen1.xml")
    target = tmp_path / "TUPAC-TE-234.session.xml"
    target.write_bytes(existing.read_bytes())
    hotspots = pd.DataFrame({"rank": [1, 2], "name": ["Hotspot 1", "Hotspot 2"], "mode": ["box", "circle"],
                             "x0": [0.0, np.nan], "y0": [0.0, np.nan], "x1": [1000.0, np.nan], "y1": [1000.0, np.nan],
                             "x": [500.0, 3000.0], "y": [500.0, 3000.0], "radius_px": [np.nan, 200.0], "count": [5, 3]})
    write_sedeen(table.iloc[:5], target, hotspots=hotspots)
    write_sedeen(table.iloc[:7], target, hotspots=hotspots)  # re-export replaces ours, keeps theirs
    s = read_sedeen(target)
    assert s.identifier == "TUPAC-TE-234.svs" and s.dimensions == (27818, 31316)
    assert [g.type for g in s.graphics[:9]] == ["polygon", "rectangle", "ellipse", "polygon", "polyline", "text", "point", "ruler", "arrow"]
    assert s.graphics[3].points.shape == (84, 2)
    ours = s.graphics[9:]
    assert len(ours) == 7 + 2
    assert [g.type for g in ours[-2:]] == ["rectangle", "ellipse"]
    assert ours[-2].colour == "#ffff00ff" and ours[-1].colour == "#ff0000ff"
    assert ours[-2].points.tolist() == [[0, 0], [1000, 0], [1000, 1000], [0, 1000]]


def test_unknown_colour_never_reuses_previous_class(tmp_path):
    xml = ('<session><image identifier="a.svs"><overlays>'
           '<graphic type="polygon" name="a" description=""><pen color="#FF0000FF"/><point-list><point>0,0</point><point>9,0</point><point>9,9</point></point-list></graphic>'
           '<graphic type="polygon" name="b" description=""><pen color="#123456ff"/><point-list><point>20,0</point><point>29,0</point><point>29,9</point></point-list></graphic>'
           "</overlays></image></session>")
    path = tmp_path / "s.xml"
    path.write_text(xml)
    t = read_sedeen(path).to_table()
    assert t["type"].tolist() == [1, 5]  # red = negative (1); unknown colour gets a new id
    assert t.attrs["type_info"]["5"][0] == "#123456"


@pytest.mark.parametrize("xml, what", [
    ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><session>&lol2;</session>', "entity"),
    ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]><session>&ext;</session>', "entit"),
    ("<session>\n<image>\n<overlays><graphic></overlays></image></session>", "line 3"),
    ("<other/>", "not a Sedeen session"),
    ('<session><image><overlays><graphic type="polygon"><point-list><point>1;2</point></point-list></graphic></overlays></image></session>', "graphic 0"),
])
def test_unsafe_and_malformed_rejected(tmp_path, xml, what):
    path = tmp_path / "evil.session.xml"
    path.write_text(xml)
    with pytest.raises(AnnotationFormatError) as err:
        read_sedeen(path)
    assert "evil.session.xml" in str(err.value) and what in str(err.value)


def test_merge_into_malformed_session_refuses_and_keeps_file(tmp_path, table):
    path = tmp_path / "x.session.xml"
    path.write_text("<session><image>")
    with pytest.raises(AnnotationFormatError):
        write_sedeen(table, path)
    assert path.read_text() == "<session><image>"


def test_session_path_for():
    assert session_path_for("/a/b/CMU-1.svs").as_posix() == "/a/b/CMU-1.session.xml"


def test_rasterizer_order_and_shapes():
    big = Shape("rectangle", np.array([[0, 0], [19, 0], [19, 19], [0, 19]]), 1)
    small = Shape("polygon", np.array([[5, 5], [9, 5], [9, 9], [5, 9]]), 2)
    ell = Shape("ellipse", np.array([[30, 0], [40, 0], [40, 6], [30, 6]]), 3)
    pts = Shape("point", np.array([[50, 10]]), 4)
    inst, typ = rasterize_shapes([small, big, ell, pts], (0, 0, 60, 20), point_radius=2)
    assert (inst == 1).sum() == 16 and (inst == 2).sum() == 19 * 19 - 16  # small painted over big (top-left rule)
    assert typ[7, 7] == 2 and typ[0, 0] == 1 and typ[3, 35] == 3 and typ[10, 50] == 4
    assert 40 < (inst == 3).sum() < 60


def test_csv_measurements(tmp_path, table):
    t = table.copy()
    t.attrs = dict(table.attrs)
    t["probs"] = [np.array([0.1, 0.9], np.float32)] * len(t)
    path = write_csv(t, tmp_path / "m.csv")
    back = pd.read_csv(path)
    assert len(back) == len(t) and "contour" not in back and back["type_name"].iloc[0] == t.attrs["type_info"][str(t["type"].iloc[0])][0]
    assert np.allclose(back["perimeter_um"], t["perimeter_px"] * 0.25, rtol=1e-5) and "prob_nolabe" in back
