"""HoVer-Net JSON writer/reader: official layout, round trip, variant keys, mag rescaling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _analysis_data import synthetic_table

from napari_histo.formats._common import AnnotationFormatError
from napari_histo.formats.hovernet_json import read_hovernet_json, write_hovernet_json


@pytest.fixture(scope="module")
def table():
    return synthetic_table(5)


def test_layout_and_round_trip(tmp_path, table):
    path = write_hovernet_json(table, tmp_path / "n.json", mag=40)
    data = json.loads(path.read_text())
    assert data["mag"] == 40 and set(data["nuc"]) == {str(i) for i in table["id"]}
    first = data["nuc"][str(table["id"].iloc[0])]
    assert set(first) == {"bbox", "centroid", "contour", "type_prob", "type"}
    (rmin, cmin), (rmax, cmax) = first["bbox"]
    row = table.iloc[0]
    assert (rmin, cmin, rmax, cmax) == (row.bbox_y0, row.bbox_x0, row.bbox_y1, row.bbox_x1)
    back = read_hovernet_json(path)
    assert back["id"].tolist() == table["id"].tolist()
    assert back["type"].tolist() == table["type"].tolist()
    np.testing.assert_allclose(back["type_prob"], table["type_prob"])
    np.testing.assert_allclose(back["area_px"], table["area_px"], rtol=1e-3)
    np.testing.assert_allclose(back[["x", "y"]], table[["x", "y"]], atol=0.02)
    assert back.attrs["type_info"]["1"][0] == "Neoplastic" and back.attrs["mpp"] == 0.25


def test_reader_variants_and_scaling(tmp_path):
    square = [[10, 10], [20, 10], [20, 20], [10, 20]]
    data = {"mag": 20, "nuc": {"7": {"box": [[0, 0], [1, 1]], "centroid": [15, 15], "contour": square, "prob": 0.8, "type": 2},
                               "9": {"bbox": None, "centroid": [1, 1], "contour": [[1, 1], [2, 2]], "type_prob": None, "type": None}}}
    path = tmp_path / "h.json"
    path.write_text(json.dumps(data))
    t = read_hovernet_json(path, base_mag=40)
    assert len(t) == 1 and t["id"].iloc[0] == 7 and t["type_prob"].iloc[0] == 0.8
    assert t["area_px"].iloc[0] == pytest.approx(400.0)  # 10x10 at 20x -> 20x20 at 40x
    assert (t.bbox_x0.iloc[0], t.bbox_x1.iloc[0]) == (20, 41)
    assert t.attrs["type_info"]["1"][0] == "neopla"  # PanNuke default


@pytest.mark.parametrize("text", ['{"mag": null}', "[]", '{"nuc": {"1": {"contour": "abc"}}}', "{"])
def test_clean_errors(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(AnnotationFormatError, match="bad.json"):
        read_hovernet_json(path)


def test_integer_contours_draw_as_the_official_notebook_draws_them(tmp_path):
    """The official notebook draws ``cv2.drawContours(img, [np.array(contour)], ...)``, which needs
    int32 points; integer contours give those, and fill the same nucleus."""
    import json

    from _analysis_data import synthetic_table
    from skimage.draw import polygon as fill_polygon

    from napari_histo.formats.hovernet_json import write_hovernet_json

    table = synthetic_table(3, spacing=40)
    path = write_hovernet_json(table, tmp_path / "int.json", integer_contours=True)
    nuc = json.loads(path.read_text())["nuc"]
    for (key, entry), (_, row) in zip(nuc.items(), table.iterrows(), strict=True):
        pts = np.asarray(entry["contour"])
        assert pts.dtype.kind == "i" and pts.shape[1] == 2  # what cv2 accepts as a contour
        exact = np.zeros((200, 200), bool)
        exact[fill_polygon(row["contour"][:, 1] + 0.5, row["contour"][:, 0] + 0.5, exact.shape)] = True
        drawn = np.zeros_like(exact)
        drawn[fill_polygon(pts[:, 1] + 0.5, pts[:, 0] + 0.5, drawn.shape)] = True
        assert (exact & drawn).sum() / (exact | drawn).sum() > 0.8, key
    # the default keeps the exact half-pixel outline
    default = json.loads(write_hovernet_json(table, tmp_path / "f.json").read_text())["nuc"]
    assert any(isinstance(v, float) for v in next(iter(default.values()))["contour"][0])
