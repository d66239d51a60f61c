"""The shared nucleus-table contract: Parquet round trip and coordinate mapping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_histo.schema.table import (
    empty_table,
    offset_table,
    read_table_parquet,
    validate_table,
    write_table_parquet,
)


def _table(n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        cx, cy = rng.uniform(10, 90, 2)
        ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        contour = np.stack([cx + 4 * np.cos(ang), cy + 3 * np.sin(ang)], 1).astype(np.float32)
        rows.append(dict(id=i + 1, x=cx, y=cy, bbox_x0=int(cx - 4), bbox_y0=int(cy - 3),
                         bbox_x1=int(cx + 5), bbox_y1=int(cy + 4), area_px=37.0, area_um2=2.3,
                         perimeter_px=22.0, type=i % 3, type_prob=0.9, contour=contour,
                         probs=np.array([0.1, 0.2, 0.7], np.float32)))
    df = pd.DataFrame(rows)
    df.attrs = {"mpp": 0.25, "type_info": {"0": ["background", [0, 0, 0]]}}
    return df


def test_parquet_round_trip_keeps_contours_probs_and_attrs(tmp_path):
    df = _table()
    path = tmp_path / "nuclei.parquet"
    write_table_parquet(df, path)
    back = read_table_parquet(path)
    validate_table(back)
    assert back.attrs == df.attrs
    for a, b in zip(df["contour"], back["contour"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.stack(back["probs"]), np.stack(df["probs"]))
    assert list(back["id"]) == list(df["id"])
    assert not list(tmp_path.glob("*.part"))


def test_offset_table_maps_working_pixels_to_level0():
    df = _table(2)
    out = offset_table(df, 100, 200, scale=2.0)
    np.testing.assert_allclose(out["x"], df["x"] * 2 + 100)
    np.testing.assert_allclose(out["area_px"], df["area_px"] * 4)
    np.testing.assert_allclose(out["contour"][0], df["contour"][0] * 2 + [100, 200])
    assert (out["bbox_x0"] <= out["x"]).all() and (out["bbox_x1"] >= out["x"]).all()


def test_validate_rejects_duplicate_ids():
    df = _table(3)
    df.loc[1, "id"] = 1
    with pytest.raises(ValueError, match="unique"):
        validate_table(df)
    validate_table(empty_table())


def test_atomic_writes_give_ordinary_file_permissions(tmp_path):
    """Results must be readable by colleagues like any file the user writes (not mkstemp's 0600)."""
    import os

    from napari_histo.utils import atomic_path, atomic_write

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = plain.stat().st_mode & 0o777
    with atomic_write(tmp_path / "a.txt") as fh:
        fh.write("x")
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == expected
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == expected
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin", "plain.txt"]


def test_table_from_contours_measures_in_blocks_with_the_same_result(monkeypatch):
    """GEOS measures a block of rings at a time (bounded memory); blocks change nothing, also with
    degenerate rings (points, segments) and closed rings among them."""
    import napari_histo.formats._common as common
    from napari_histo.formats._common import table_from_contours

    rng = np.random.default_rng(3)
    contours = []
    for i in range(40):
        if i % 7 == 3:
            contours.append(rng.uniform(0, 100, (int(rng.integers(1, 3)), 2)))  # point or segment
            continue
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        ring = np.stack([50 + 6 * np.cos(t) + i * 20, 50 + 4 * np.sin(t)], axis=1)
        contours.append(np.vstack([ring, ring[:1]]) if i % 2 else ring)  # half of them closed
    whole = table_from_contours(contours, mpp=0.5)
    monkeypatch.setattr(common, "_GEOS_BLOCK", 3)
    blocked = table_from_contours(contours, mpp=0.5)
    pd.testing.assert_frame_equal(whole.drop(columns="contour"), blocked.drop(columns="contour"))
    assert (blocked["area_px"] > 0).sum() == 40 - len([i for i in range(40) if i % 7 == 3])
    ring_area = 0.5 * 12 * 6 * 4 * np.sin(2 * np.pi / 12)  # area of the 12-gon inscribed in the ellipse
    np.testing.assert_allclose(blocked.loc[blocked["area_px"] > 0, "area_px"], ring_area)
