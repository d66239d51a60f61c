"""Hotspots: golden results on hand-built centroid sets (ordering, ties, overlap, ROI erosion,
min count, exact recount), both circle (QuPath) and box (seed pipeline) modes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import shapely
from test_density import points_table

from napari_histo.analysis.hotspots import find_hotspots, hotspot_annotations


def cluster(x, y, n):
    return [[x, y]] * n


def test_circle_ranking_spacing_and_ties():
    xy = cluster(100, 100, 10) + cluster(130, 100, 8) + cluster(300, 100, 8) + cluster(300, 300, 8) + cluster(450, 450, 3)
    t = points_table(xy)
    hs = find_hotspots(t, 4, mode="circle", radius_px=20, shape=(500, 500))
    assert hs["name"].tolist() == ["Hotspot 1", "Hotspot 2", "Hotspot 3", "Hotspot 4"]
    # A (10) and C (8, 30 px away) fit in one 20 px circle: the best centre lies between them (18);
    # then B and D tie at 8 -> row order first; E (3) last. Nothing else is >= 2r from all of them.
    centres = hs[["x", "y"]].to_numpy()
    assert 110 <= centres[0, 0] <= 120 and abs(centres[0, 1] - 100) <= 1.5
    assert np.abs(centres[1] - [300, 100]).max() <= 1.5
    assert np.abs(centres[2] - [300, 300]).max() <= 1.5
    assert np.abs(centres[3] - [450, 450]).max() <= 1.5
    assert hs["count"].tolist() == [18, 8, 8, 3]
    assert hs["score"].tolist() == [18, 8, 8, 3]
    d = np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1))
    assert (d[np.triu_indices(4, 1)] >= 40).all()


def test_circle_recount_is_exact():
    rng = np.random.default_rng(3)
    xy = np.concatenate([rng.normal(200, 15, (200, 2)), rng.uniform(0, 600, (300, 2))])
    t = points_table(xy, types=rng.integers(1, 3, len(xy)), positive=rng.random(len(xy)) < 0.3)
    hs = find_hotspots(t, 3, mode="circle", radius_px=30, shape=(600, 600))
    for _, h in hs.iterrows():
        inside = np.hypot(xy[:, 0] - h.x, xy[:, 1] - h.y) <= 30
        assert h["count"] == inside.sum() == h["count_all"]
        assert h["count_tumour"] + h["count_immune"] == inside.sum()
        assert h["positive_pct"] == pytest.approx(100 * t["positive"][inside].mean())
    assert np.hypot(hs.x[0] - 200, hs.y[0] - 200) < 15


def test_circle_roi_erosion_keeps_circles_inside():
    xy = cluster(10, 200, 12) + cluster(200, 200, 5)
    t = points_table(xy)
    roi = (0, 0, 400, 400)
    hs = find_hotspots(t, 1, mode="circle", radius_px=20, roi=roi)
    assert abs(hs.x[0] - 200) <= 1.5  # the denser cluster is 10 px from the edge: eroded away
    poly = shapely.Polygon([(0, 0), (400, 0), (400, 400), (0, 400)])
    hs2 = find_hotspots(t, 1, mode="circle", radius_px=20, roi=poly.buffer(30))
    assert hs2.x[0] < 25 and hs2["count"][0] == 12  # the map starts at x = 0: the plateau is cut there
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        small = find_hotspots(t, 1, mode="circle", radius_px=20, roi=(190, 190, 30, 30))
    assert len(small) == 0 and "found 0 of 1" in str(w[-1].message)


def test_circle_min_count_is_strict():
    t = points_table(cluster(50, 50, 3) + cluster(200, 200, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hs = find_hotspots(t, 5, mode="circle", radius_px=10, min_count=3, shape=(300, 300))
    assert len(hs) == 1 and hs["count"][0] == 4
    hs = find_hotspots(t, 2, mode="circle", radius_px=10, min_count=2, shape=(300, 300))
    assert hs["count"].tolist() == [4, 3]


def test_circle_type_filter():
    xy = cluster(50, 50, 6) + cluster(200, 200, 4)
    t = points_table(xy, types=[1] * 6 + [2] * 4)
    hs = find_hotspots(t, 1, mode="circle", radius_px=10, type="immune", shape=(300, 300))
    assert abs(hs.x[0] - 200) <= 1.5 and hs["count"][0] == 4 and hs["count_immune"][0] == 4


def tile_points(cells):
    """One nucleus at the centre of each listed (row, col) tile of 10 px, repeated n times."""
    xy = []
    for (r, c), n in cells.items():
        xy += [[c * 10 + 5, r * 10 + 5]] * n
    return xy


def test_box_overlap_rule_bounds_and_recount():
    cells = {(0, 0): 3, (1, 1): 3, (2, 2): 3, (0, 3): 2, (0, 4): 2, (6, 6): 1}
    t = points_table(tile_points(cells))
    hs = find_hotspots(t, 3, mode="box", tile=10, window=3, shape=(100, 100), min_count=0)
    first = hs.iloc[0]
    assert (first.x0, first.y0, first.x1, first.y1) == (0, 0, 30, 30) and first["count"] == 9
    second = hs.iloc[1]
    # best non-overlapping window: cols 3-5 of rows 0-2 (adjacent, no shared tile)
    assert (second.x0, second.y0, second.x1, second.y1) == (30, 0, 60, 30) and second["count"] == 4
    for _, h in hs.iterrows():
        inside = (t.x >= h.x0) & (t.x < h.x1) & (t.y >= h.y0) & (t.y < h.y1)
        assert h["count"] == inside.sum() == h["score"]
        for _, o in hs.iterrows():
            if o["rank"] != h["rank"]:
                assert o.x1 <= h.x0 or h.x1 <= o.x0 or o.y1 <= h.y0 or h.y1 <= o.y0


def test_box_fork_rule_is_stricter():
    cells = {(0, 0): 3, (1, 1): 3, (2, 2): 3, (0, 3): 2, (0, 4): 2, (6, 6): 1}
    t = points_table(tile_points(cells))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hs = find_hotspots(t, 3, mode="box", tile=10, window=3, shape=(100, 100), min_count=0, box_rule="fork")
    # OR rule: any window within 3 rows or 3 columns of (0, 0) is rejected
    assert [(h.y0, h.x0) for _, h in hs.iterrows()][:2] == [(0, 0), (40, 40)]


def test_box_ties_break_by_row_then_column():
    t = points_table(tile_points({(5, 0): 2, (0, 5): 2}))
    hs = find_hotspots(t, 2, mode="box", tile=10, window=2, shape=(100, 100), min_count=0)
    # every window holding one cluster scores 2; the first in raster order wins
    assert (hs.y0[0], hs.x0[0]) == (0, 40) and (hs.y0[1], hs.x0[1]) == (40, 0)


def test_hotspot_annotations():
    t = points_table(cluster(100, 100, 5))
    hs = find_hotspots(t, 1, mode="circle", radius_px=20, shape=(200, 200))
    (ann,) = hotspot_annotations(hs)
    assert ann.name == "Hotspot 1" and ann.is_ellipse and ann.geometry.area == pytest.approx(np.pi * 400, rel=0.01)
    assert ann.measurements["Count"] == 5
