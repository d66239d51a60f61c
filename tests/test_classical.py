"""Classical (QuPath-like) nucleus detector on real H&E and synthetic H-DAB images."""

from __future__ import annotations

import numpy as np
import pytest
from _nuclei_helpers import disks, synthetic_stained
from conftest import shared_path

from napari_histo.nuclei.base import Segmenter
from napari_histo.nuclei.classical import ClassicalSegmenter, stain_od
from napari_histo.nuclei.metrics import instance_scores, pair_centroids
from napari_histo.schema.table import validate_table


def test_is_a_segmenter():
    seg = ClassicalSegmenter()
    assert isinstance(seg, Segmenter)
    assert seg.mpp == 0.25 and seg.halo_px > 0
    assert ClassicalSegmenter(pixel_size_um=0.5).mpp == 0.5


def test_stain_od_separates_haematoxylin_and_dab():
    inst = disks((40, 80), [(20, 20), (20, 60)], [10, 10])
    rgb = synthetic_stained(inst, positive={2})
    od = stain_od(rgb, "hdab")
    assert od[20, 20, 0] > 0.4 and od[20, 20, 1] < 0.1  # haematoxylin only
    assert od[20, 60, 1] > 0.4  # DAB
    assert od[2, 40, 0] < 0.15  # background


def test_synthetic_hdab_positive_calls():
    rng = np.random.default_rng(3)
    centres, radii = [], []
    for gy in range(6):
        for gx in range(6):
            centres.append((20 + gy * 40 + rng.integers(-4, 5), 20 + gx * 40 + rng.integers(-4, 5)))
            radii.append(int(rng.integers(7, 12)))
    inst = disks((250, 250), centres, radii)
    positive = {i for i in range(1, len(centres) + 1) if i % 3 == 0}
    rgb = synthetic_stained(inst, positive, seed=1)
    # the smallest synthetic disks (r 7 px, ~9.6 µm²) are below the default 12 µm² minimum
    seg = ClassicalSegmenter(pixel_size_um=0.25, min_area_um2=8)
    labels, table = seg.segment(rgb)
    validate_table(table)
    assert table.attrs["stains"] == "hdab"
    assert {"dab_od", "positive"} <= set(table.columns)
    scores = instance_scores(inst, labels)
    assert scores["dq"] >= 0.95 and scores["pq"] >= 0.8
    gt_xy = np.array([(c[1], c[0]) for c in centres], float)
    pairs, un_t, un_p = pair_centroids(gt_xy, table[["x", "y"]].to_numpy(), radius=6)
    assert len(un_t) == 0 and len(un_p) == 0
    truth = np.array([(i + 1) in positive for i in pairs[:, 0]])
    called = table["positive"].to_numpy()[pairs[:, 1]]
    assert (truth == called).all()
    # the same nuclei without DAB: plain H&E path, no positivity columns
    he_labels, he_table = seg.segment(synthetic_stained(inst, set(), seed=1))
    assert he_table.attrs["stains"] == "he" and "positive" not in he_table.columns
    assert abs(len(he_table) - len(centres)) <= 1


def test_size_filters_in_micrometres():
    inst = disks((120, 120), [(30, 30), (90, 90)], [4, 12])  # ~3 µm² and ~28 µm² at 0.25
    rgb = synthetic_stained(inst, set())
    _, table = ClassicalSegmenter(pixel_size_um=0.25, stains="he", min_area_um2=8).segment(rgb)
    assert len(table) == 1
    assert 20 < table["area_um2"].iloc[0] < 40
    # the same image called 0.5 µm/px: areas ×4, the small one (~12 µm²) now passes min 8 µm²
    _, t2 = ClassicalSegmenter(pixel_size_um=0.5, stains="he", min_area_um2=8).segment(rgb)
    assert len(t2) == 2


@pytest.fixture(scope="module")
def monuseg_tile():
    from napari_histo.datasets import read_monuseg

    return read_monuseg(shared_path("monuseg", "MoNuSegTestData", "TCGA-A6-6782-01A-01-BS1.tif"))


def test_real_monuseg_tile(monuseg_tile):
    s = monuseg_tile
    img, gt = s.image[:500, :500], s.inst[:500, :500]
    seg = ClassicalSegmenter(pixel_size_um=s.mpp)
    labels, table = seg.segment(img)
    validate_table(table)
    assert table.attrs["stains"] == "he"
    n_gt = len(np.unique(gt)) - 1
    assert 0.6 * n_gt < len(table) < 1.4 * n_gt
    scores = instance_scores(gt, labels)
    assert scores["dice"] > 0.65
    assert scores["aji"] > 0.35 and scores["pq"] > 0.35


def _haematoxylin_rgb(conc: np.ndarray, seed: int = 0) -> np.ndarray:
    """Beer-Lambert RGB of a haematoxylin concentration map (OD units) with a little noise."""
    haem = np.array([0.650, 0.704, 0.286])
    haem = haem / np.linalg.norm(haem)
    conc = conc + np.random.default_rng(seed).normal(0, 0.02, conc.shape)
    return np.clip(255.0 * 10.0 ** (-np.clip(conc, 0, None)[..., None] * haem), 0, 255).astype(np.uint8)


def test_local_threshold_splits_dark_nuclei_joined_by_pale_stain():
    # two dark nuclei side by side, the space between them filled by pale haematoxylin so the
    # union is one convex blob: shape alone cannot split it, a single global level keeps the bridge
    inst = disks((80, 110), [(40, 35), (40, 75)], [14, 14])
    conc = np.full(inst.shape, 0.04)
    conc[26:55, 35:76] = 0.4
    conc[inst > 0] = 0.6
    rgb = _haematoxylin_rgb(conc)
    labels, table = ClassicalSegmenter(pixel_size_um=0.25, stains="he").segment(rgb)
    assert len(table) == 2
    scores = instance_scores(inst, labels)
    assert scores["dq"] == 1.0 and scores["sq"] > 0.65  # both matched at IoU > 0.5
    # without the local threshold and the stain term the bridge merges them
    _, merged = ClassicalSegmenter(pixel_size_um=0.25, stains="he", local_radius_um=0.0,
                                   split_od_um=0.0).segment(rgb)
    assert len(merged) == 1


@pytest.mark.parametrize("gap_px", [22, 18])
def test_splits_two_overlapping_discs(gap_px):
    # two equally stained discs (r 14 px = 3.5 µm) whose centres are closer than the sum of their
    # radii: one connected blob with a neck; shape (distance transform) must cut it in two
    inst = disks((70, 100), [(35, 50 - gap_px // 2), (35, 50 + gap_px - gap_px // 2)], [14, 14])
    conc = np.where(inst > 0, 0.55, 0.04)
    labels, table = ClassicalSegmenter(pixel_size_um=0.25, stains="he").segment(_haematoxylin_rgb(conc))
    assert len(table) == 2
    scores = instance_scores(inst, labels)
    assert scores["dq"] == 1.0 and scores["sq"] > 0.8
    # each half stays on its own side of the neck
    assert len(np.unique(labels[35, : 50 - gap_px // 2 + 1])) == 2  # background + left nucleus


@pytest.fixture(scope="module")
def dense_monuseg_tile():
    from napari_histo.datasets import read_monuseg

    return read_monuseg(shared_path("monuseg", "MoNuSegTrainData", "TCGA-CH-5767-01Z-00-DX1.tif"))


def test_dense_real_tile_floor(dense_monuseg_tile):
    # crowded lung adenocarcinoma tile with pale vesicular nuclei: a single global threshold and
    # ragged outlines fragment and merge them. The default (closing, pale-threshold, per-nucleus
    # outline smoothing) must clear a floor that the previous defaults miss.
    s = dense_monuseg_tile
    seg = ClassicalSegmenter(pixel_size_um=s.mpp)
    labels, table = seg.segment(s.image)
    validate_table(table)
    scores = instance_scores(s.inst, labels)
    assert scores["aji"] >= 0.40 and scores["pq"] >= 0.30, scores
    # every nucleus is one 4-connected region (one outline in the table and in exports)
    from skimage.measure import label as connected

    assert connected(labels, background=0, connectivity=1).max() == len(table) == labels.max()
    previous = ClassicalSegmenter(pixel_size_um=s.mpp, threshold_scale=1.0, close_um=0.0,
                                  smooth_boundary_um=0.0)
    old = instance_scores(s.inst, previous.segment(s.image)[0])
    assert old["aji"] < 0.40 and old["pq"] < 0.30, old


def test_strongly_stained_he_is_not_mistaken_for_hdab(sample_slide_path):
    """The H&E sample slide (strong eosin) is H&E in every region; the same haematoxylin with DAB
    on a third of its nuclei and no eosin (an IHC-like image) is H-DAB."""
    from napari_histo.nuclei.classical import STAIN_VECTORS, _detect_stains
    from napari_histo.slide import open_slide

    with open_slide(sample_slide_path) as slide:
        regions = [slide.read_region((x, y), (1024, 1024)) for x in (0, 1024) for y in (0, 1024)]
    assert [_detect_stains(rgb) for rgb in regions] == ["he"] * 4
    _, table = ClassicalSegmenter(pixel_size_um=0.5).segment(regions[0][:512, :512])
    assert table.attrs["stains"] == "he" and "positive" not in table.columns
    # IHC-like: the sample's own haematoxylin, DAB (0.6 OD) in every third nucleus, no eosin
    haem = np.clip(stain_od(regions[0], "he")[..., 0], 0, None)
    labels, _ = ClassicalSegmenter(pixel_size_um=0.5, stains="he").segment(regions[0])
    dab = np.where((labels > 0) & (labels % 3 == 0), 0.6, 0.0)
    h_vec, d_vec = (v / np.linalg.norm(v) for v in (STAIN_VECTORS["he"][0], STAIN_VECTORS["hdab"][1]))
    ihc = np.clip(255 * 10 ** -(haem[..., None] * h_vec + dab[..., None] * d_vec), 0, 255).astype(np.uint8)
    assert _detect_stains(ihc) == "hdab"


def test_a_chain_of_three_overlapping_nuclei_is_split_as_an_outsized_object():
    # five single nuclei set the image's typical size; three overlapping ones in a row form one
    # blob about 2.5x that size whose necks are too shallow for the first watershed
    cen = [(30, 30), (30, 90), (30, 150), (90, 30), (90, 90), (140, 67), (140, 80), (140, 93)]
    inst = disks((180, 200), cen, [12] * 8)
    rgb = _haematoxylin_rgb(np.where(inst > 0, 0.55, 0.04))
    labels, table = ClassicalSegmenter(pixel_size_um=0.25, stains="he").segment(rgb)
    assert len(table) == 8
    assert len(np.unique(labels[140, 55:106])) == 4  # background + three nuclei along the chain
    _, merged = ClassicalSegmenter(pixel_size_um=0.25, stains="he", large_split_factor=0.0).segment(rgb)
    assert len(merged) == 6


def test_a_cluster_above_the_size_limit_is_split_not_dropped():
    # 16 dark nuclei in a block of moderately stained tissue: the first pass joins some of them
    # into objects above max_area; re-thresholding each at its own level recovers every nucleus
    cen = [(40 + i * 24, 40 + j * 24) for i in range(4) for j in range(4)]
    inst = disks((152, 152), cen, [11] * 16)
    conc = np.full(inst.shape, 0.04)
    conc[28:125, 28:125] = 0.4
    conc[inst > 0] = 0.7
    rgb = _haematoxylin_rgb(conc)
    labels, table = ClassicalSegmenter(pixel_size_um=0.25, stains="he").segment(rgb)
    assert len(table) == 16
    assert instance_scores(inst, labels)["dq"] > 0.95
    _, dropped = ClassicalSegmenter(pixel_size_um=0.25, stains="he", resplit_oversize=False).segment(rgb)
    assert len(dropped) < 8


def test_small_nuclei_are_kept_only_when_they_stand_out():
    # a ~10 µm² nucleus (below min_area 12 µm²) is kept when it is much darker than its ring
    inst = disks((120, 200), [(40, 40), (40, 110), (90, 170)], [14, 14, 7])
    conc = np.where(inst > 0, 0.6, 0.04)
    conc[inst == 3] = 0.9
    _, table = ClassicalSegmenter(pixel_size_um=0.25, stains="he").segment(_haematoxylin_rgb(conc))
    assert len(table) == 3 and table["area_um2"].min() < 12
    _, off = ClassicalSegmenter(pixel_size_um=0.25, stains="he", rescue_min_area_um2=12.0).segment(
        _haematoxylin_rgb(conc))
    assert len(off) == 2
    conc[inst == 3] = 0.25  # the same small object, pale: dropped
    _, pale = ClassicalSegmenter(pixel_size_um=0.25, stains="he").segment(_haematoxylin_rgb(conc))
    assert len(pale) == 2
