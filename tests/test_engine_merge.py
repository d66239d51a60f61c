"""Exactly-once merging: tiled-and-stitched nuclei equal a single-shot run on the whole image."""

from __future__ import annotations

import numpy as np
import pytest
from _engine_helpers import DarkBlobSegmenter, drain, planted_image, same_partition

from napari_histo.engine.outputs import load_result
from napari_histo.engine.run import run_segmentation
from napari_histo.engine.source import ArraySlide


@pytest.fixture(scope="module")
def image():
    return planted_image(520, 704, seams=128, seed=1)


def _centroids(table):
    return np.round(table.sort_values(["y", "x"])[["x", "y"]].to_numpy(), 6)


@pytest.mark.parametrize("batch_size,workers", [(1, 1), (3, 2)])
def test_tiled_equals_single_shot(tmp_path, image, batch_size, workers):
    seg = DarkBlobSegmenter(mpp=0.5, halo_px=24)
    ref_labels, ref_table = seg.segment(image)
    events, result = drain(run_segmentation(ArraySlide(image, mpp=0.5), seg, tmp_path, tile_size=128,
                                            batch_size=batch_size, workers=workers, tissue=False))
    assert result.completed and result.plan.n_cols == 6 and result.plan.n_rows == 5
    out = load_result(tmp_path)
    table, labels = out.table, np.asarray(out.labels[0][:])
    # every nucleus exactly once: same count, same centroids, same pixels
    assert len(table) == len(ref_table) > 100
    np.testing.assert_allclose(_centroids(table), _centroids(ref_table))
    assert labels.shape == image.shape[:2]
    assert same_partition(labels, ref_labels)
    # ids are 1..N, unique across the slide, and are the label values
    assert sorted(table["id"]) == list(range(1, len(table) + 1))
    assert set(np.unique(labels[labels > 0])) == set(table["id"])
    for row in table.sample(20, random_state=0).itertuples():
        inside = labels[row.bbox_y0:row.bbox_y1, row.bbox_x0:row.bbox_x1] == row.id
        assert inside.sum() == row.area_px
    assert (table["area_um2"] == table["area_px"] * 0.25).all()
    assert events[-1].stage == "done" and events[-1].done == events[-1].total == 30
    # the pyramid is strided (labels are never interpolated)
    if len(out.labels) > 1:
        np.testing.assert_array_equal(np.asarray(out.labels[1][:]), labels[::2, ::2])


def test_seam_nuclei_would_be_cut_without_halo(tmp_path, image):
    """Control: with no halo the nuclei on seams are split, so the golden test can fail."""
    seg = DarkBlobSegmenter(mpp=0.5, halo_px=0)
    ref_labels, _ = seg.segment(image)
    _, result = drain(run_segmentation(ArraySlide(image, mpp=0.5), seg, tmp_path, tile_size=128,
                                       tissue=False))
    labels = np.asarray(load_result(tmp_path).labels[0][:])
    assert not same_partition(labels, ref_labels)
    warning = next(w for w in result.warnings if "wider than the overlap between tiles" in w)
    assert "(0 px = 0 µm)" in warning and "giant" not in warning  # a zero halo says nothing of size


def test_resampled_run_maps_back_to_level0(tmp_path, image):
    """Slide at 0.25 µm/px, model at 0.5: tiles are read at half resolution and labels come
    back on the level-0 grid (nearest), matching a single-shot run on the downsampled image."""
    seg = DarkBlobSegmenter(mpp=0.5, halo_px=24)
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # 0.25 µm/px version
    ref_labels, ref_table = seg.segment(big[1::2, 1::2])
    _, result = drain(run_segmentation(ArraySlide(big, mpp=0.25), seg, tmp_path, tile_size=128,
                                       tissue=False))
    assert result.plan.scale == 2.0 and result.plan.tile0 == 256
    out = load_result(tmp_path)
    labels = np.asarray(out.labels[0][:])
    assert labels.shape == big.shape[:2]
    assert same_partition(labels, np.repeat(np.repeat(ref_labels, 2, 0), 2, 1))
    assert len(out.table) == len(ref_table)
    np.testing.assert_allclose(_centroids(out.table), _centroids(ref_table) * 2 + 0.5, atol=1e-6)
    assert out.table.attrs["mpp"] == 0.25
