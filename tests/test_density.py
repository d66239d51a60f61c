"""Density maps: golden values on hand-built centroid sets (brute force), geometry, kinds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_histo.analysis.density import density_map, map_geometry

TYPE_INFO = {"0": ["background", [0, 0, 0]], "1": ["tumour", [255, 0, 0]], "2": ["immune", [0, 255, 0]]}


def points_table(xy, types=None, positive=None, mpp=None):
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    n = len(xy)
    df = pd.DataFrame({"id": np.arange(1, n + 1), "x": xy[:, 0], "y": xy[:, 1],
                       "type": np.asarray(types if types is not None else np.ones(n), np.int64)})
    if positive is not None:
        df["positive"] = np.asarray(positive, bool)
    df.attrs = {"mpp": mpp, "type_info": TYPE_INFO}
    return df


def test_count_kind_equals_brute_force_disc_count():
    rng = np.random.default_rng(1)
    xy = rng.integers(0, 60, size=(300, 2)).astype(float)
    t = points_table(xy)
    d = density_map(t, "count", radius_px=4.0, shape=(60, 60))
    assert d.pixel_size == 1 and d.offset == (0.0, 0.0) and d.array.shape == (60, 60)
    rows, cols = np.mgrid[0:60, 0:60]
    brute = ((xy[:, 0][None, None] - cols[..., None]) ** 2 + (xy[:, 1][None, None] - rows[..., None]) ** 2 <= 16).sum(-1)
    np.testing.assert_array_equal(d.array, brute)
    np.testing.assert_array_equal(d.counts, brute)


def test_count_kind_fft_path_matches_direct():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 3000, size=(5000, 2))
    t = points_table(xy)
    d = density_map(t, "count", radius_px=120.0, shape=(3000, 3000))  # s = 12, r_map = 10
    assert d.pixel_size == 12 and d.offset == (5.5, 5.5)
    cx, cy = d.to_level0(np.array([100]), np.array([120]))
    # every point counted in map pixel space: brute force on binned positions
    col = np.floor((xy[:, 0] + 0.5) / 12)
    row = np.floor((xy[:, 1] + 0.5) / 12)
    expect = ((col - 120) ** 2 + (row - 100) ** 2 <= 100 + 1e-9).sum()
    assert d.array[100, 120] == expect
    assert (cx[0], cy[0]) == (120 * 12 + 5.5, 100 * 12 + 5.5)


def test_geometry_matches_qupath_rule_and_cap():
    assert map_geometry((1000, 1000), 100) == (10, (100, 100))
    assert map_geometry((1000, 500), 4) == (1, (500, 1000))
    s, (h, w) = map_geometry((40000, 20000), 100)  # cap at 1536 px wins
    assert s == 27 and w <= 1536 and h == int(np.ceil(20000 / 27))


def test_gaussian_isolated_nucleus_peaks_at_one():
    t = points_table([[50, 50], [150, 150]])
    d = density_map(t, "gaussian", radius_px=6.0, shape=(200, 200))
    assert d.pixel_size == 1
    assert d.array[50, 50] == pytest.approx(1.0, rel=0.02) and d.array[150, 150] == pytest.approx(1.0, rel=0.02)
    assert d.array.sum() == pytest.approx(2 * 2 * np.pi * 36, rel=0.02)


def test_percent_kind_and_counts_channel():
    xy = [[20, 20]] * 4 + [[80, 80]] * 5
    t = points_table(xy, types=[1] * 9, positive=[True, False, False, False, True, True, True, True, True])
    d = density_map(t, "percent", radius_px=5.0, shape=(100, 100), type="tumour")
    assert d.units == "%" and d.array[20, 20] == pytest.approx(25.0) and d.array[80, 80] == pytest.approx(100.0)
    assert d.counts[20, 20] == 4 and np.isnan(d.array[50, 50])


def test_tile_kind_floor_binning_and_rate():
    t = points_table([[49.9, 0], [50.0, 0], [50.0, 99.99], [0, 0]], types=[1, 1, 2, 1])
    d = density_map(t, "tile", tile=50, shape=(150, 100))
    assert d.array.shape == (2, 3) and d.pixel_size == 50 and d.offset == (24.5, 24.5)
    np.testing.assert_allclose(d.counts, [[2, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(d.array, d.counts / 2500)
    d1 = density_map(t, "tile", tile=50, shape=(150, 100), type="immune")
    assert d1.counts.sum() == 1 and d1.type == "immune"


def test_errors():
    t = points_table([[1, 1]])
    with pytest.raises(ValueError, match="mpp"):
        density_map(t, "count", radius_um=10)
    with pytest.raises(ValueError, match="kind"):
        density_map(t, "nope", radius_px=10)
    with pytest.raises(ValueError, match="unknown nucleus type"):
        density_map(t, "count", radius_px=10, type="macrophage")
    assert density_map(t, "count", radius_um=10, mpp=0.5).radius_px == 20


def test_report_png_has_heatmap_colour_bar_and_outlines(tmp_path):
    from PIL import Image

    from napari_histo.analysis.hotspots import find_hotspots
    from napari_histo.analysis.plots import render_density_png

    t = points_table([[100, 100]] * 8 + [[300, 200]] * 4)
    d = density_map(t, "count", radius_px=30.0, shape=(400, 300))
    hs = find_hotspots(t, 2, mode="circle", radius_px=30, shape=(400, 300))
    thumb = np.full((75, 100, 3), 200, np.uint8)
    path = render_density_png(d, tmp_path / "r.png", thumbnail=thumb, hotspots=hs, title="test", max_size=400)
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # output is 1 px per level-0 px here, with a 10 px margin and the title above: hotspot (x, y) is
    # at pixel (x + 10, y + 26). Each carries its rank on a white label, black digits, at its centre.
    for (x, y) in ((110, 126), (310, 226)):
        label = img[y - 5:y + 6, x - 6:x + 7]
        white = (label > 240).all(axis=-1).mean()
        black = (label < 60).all(axis=-1).mean()
        assert white > 0.3 and black > 0.05, (x, y, white, black)
    # the outline is black inside white: readable on any heatmap colour
    ring = img[126, 110 + 30 - 6:110 + 30 + 3]
    assert (ring < 60).all(axis=-1).any() and (ring > 240).all(axis=-1).any()
    assert img.shape[1] > 400 + 18  # heatmap + colour bar
    assert (np.abs(img[50:60, 10:30] - 200).max(axis=-1) == 0).any()  # thumbnail shows where density is 0


def test_per_type_and_total_maps_add_up():
    from napari_histo.analysis.density import density_maps

    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 400, (500, 2))
    t = points_table(xy, types=rng.integers(1, 3, 500))
    maps = density_maps(t, "count", radius_px=40.0, shape=(400, 400))
    assert set(maps) == {"all", "tumour", "immune"}
    np.testing.assert_array_equal(maps["tumour"].array + maps["immune"].array, maps["all"].array)
    assert maps["tumour"].type == "tumour" and maps["all"].pixel_size == 4
