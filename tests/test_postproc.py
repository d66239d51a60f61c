"""HoVer-Net post-processing (official algorithm), typing and vectorised measurement."""

from __future__ import annotations

import numpy as np
import pytest
from _nuclei_helpers import disks, ideal_maps
from conftest import shared_path

from napari_histo.nuclei.measure import measure_instances
from napari_histo.nuclei.metrics import instance_scores, pq
from napari_histo.nuclei.postproc import (
    HoverPostParams,
    instances_from_maps,
    postprocess_maps,
    sobel_kernels,
    type_instances,
)
from napari_histo.schema.table import validate_table

MONUSEG_TILE = ("monuseg", "MoNuSegTrainData", "TCGA-21-5784-01Z-00-DX1.tif")


@pytest.fixture(scope="session")
def monuseg_gt():
    from napari_histo.datasets import read_monuseg

    return read_monuseg(shared_path(*MONUSEG_TILE))


def test_sobel_kernels_match_opencv():
    # cv2.getDerivKernels(1, 0, 5) -> kx = [-1, -2, 0, 2, 1], ky = [1, 4, 6, 4, 1]
    d, s = sobel_kernels(5)
    assert d.tolist() == [-1, -2, 0, 2, 1]
    assert s.tolist() == [1, 4, 6, 4, 1]
    d3, s3 = sobel_kernels(3)
    assert d3.tolist() == [-1, 0, 1] and s3.tolist() == [1, 2, 1]
    d21, s21 = sobel_kernels(21)
    assert len(d21) == 21 and s21.sum() == 2**20 and d21.sum() == 0
    with pytest.raises(ValueError):
        sobel_kernels(4)


def test_separated_nuclei_are_recovered_exactly():
    inst = disks((128, 160), [(30, 30), (30, 90), (90, 40), (95, 120)], [10, 12, 8, 14])
    np_map, hv = ideal_maps(inst)
    labels = instances_from_maps(np_map, hv)
    assert labels.dtype == np.int32
    assert pq(inst, labels)[2] == pytest.approx(1.0, abs=1e-5)


def test_touching_nuclei_are_split():
    inst = disks((120, 160), [(40, 40), (40, 62), (85, 100), (85, 121)], [12, 12, 11, 11])
    assert len(np.unique(inst)) == 5
    from scipy import ndimage as ndi

    assert ndi.label(inst > 0)[1] == 2  # two merged blobs of two nuclei each
    np_map, hv = ideal_maps(inst)
    labels = instances_from_maps(np_map, hv)
    dq, sq, pq_ = pq(inst, labels)
    assert dq == 1.0
    assert pq_ > 0.95


def test_small_blobs_and_markers_are_removed():
    inst = disks((64, 64), [(20, 20), (50, 50)], [10, 1.2])  # second blob: 5 px < 10
    np_map, hv = ideal_maps(inst)
    labels = instances_from_maps(np_map, hv)
    assert len(np.unique(labels)) == 2
    assert labels[50, 50] == 0
    one = disks((40, 40), [(20, 20)], [5])  # 81 px
    np_one, hv_one = ideal_maps(one)
    assert instances_from_maps(np_one, hv_one).max() == 1
    assert instances_from_maps(np_one, hv_one, HoverPostParams(min_blob_px=81)).max() == 1
    assert instances_from_maps(np_one, hv_one, HoverPostParams(min_blob_px=82)).max() == 0
    assert instances_from_maps(np_one, hv_one, HoverPostParams(min_marker_px=82)).max() == 0


def test_empty_and_hv_layout():
    assert instances_from_maps(np.zeros((40, 50)), np.zeros((40, 50, 2))).max() == 0
    inst = disks((64, 64), [(30, 30)], [9])
    np_map, hv = ideal_maps(inst)
    a = instances_from_maps(np_map, hv)
    b = instances_from_maps(np_map, np.moveaxis(hv, -1, 0))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        instances_from_maps(np_map, hv[:10])


def test_ideal_maps_from_monuseg_ground_truth(monuseg_gt):
    inst = monuseg_gt.inst[:500, :500]
    np_map, hv = ideal_maps(inst)
    labels = instances_from_maps(np_map, hv)
    scores = instance_scores(inst, labels)
    assert scores["pq"] >= 0.95
    assert scores["dice"] >= 0.99


def test_typing_vote_type_prob_and_mean_softmax():
    labels = np.zeros((10, 10), np.int32)
    labels[:5, :5] = 3  # 25 px
    labels[6:, 6:] = 8  # 16 px
    argmax = np.zeros((10, 10), np.int64)
    argmax[:5, :5] = 0
    argmax[:2, :5] = 2  # instance 3: 15 bg, 10 type-2 votes -> runner-up 2
    argmax[6:, 6:] = 1
    argmax[6, 6:] = 4  # instance 8: 12 type-1, 4 type-4
    types, tprob, probs = type_instances(labels, argmax)
    assert types.tolist() == [2, 1]
    assert tprob == pytest.approx([10 / (25 + 1e-6), 12 / (16 + 1e-6)])
    assert probs is None
    soft = np.zeros((10, 10, 5), np.float32)
    soft[..., 0] = 1.0
    soft[6:, 6:] = [0.0, 0.7, 0.0, 0.0, 0.3]
    types2, _, probs2 = type_instances(labels, soft)
    assert types2.tolist() == [0, 1]  # all-background vote with no other class stays 0
    assert probs2.shape == (2, 5)
    assert probs2[1] == pytest.approx([0.0, 0.7, 0.0, 0.0, 0.3], abs=1e-6)
    assert probs2.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_nucleus_typing_rule_never_lets_background_win():
    labels = np.zeros((10, 10), np.int32)
    labels[:5, :5] = 3
    labels[6:, 6:] = 8
    soft = np.zeros((10, 10, 5), np.float32)
    soft[..., 0] = 1.0
    soft[:5, :5] = [0.7, 0.05, 0.2, 0.05, 0.0]  # background-dominated nucleus, lymphocyte-leaning
    soft[6:, 6:] = [0.1, 0.6, 0.0, 0.0, 0.3]
    official, _, _ = type_instances(labels, soft)
    assert official.tolist() == [0, 1]
    types, tprob, probs = type_instances(labels, soft, rule="nucleus")
    assert types.tolist() == [2, 1]
    assert tprob == pytest.approx([0.2 / 0.3, 0.6 / 0.9])  # renormalised over the classes > 0
    assert probs[0] == pytest.approx([0.7, 0.05, 0.2, 0.05, 0.0], abs=1e-6)
    argmax = np.zeros((10, 10), np.int64)
    argmax[6, 6:] = 4  # instance 8: 4 votes for class 4, the rest background; instance 3: none
    types_a, tprob_a, _ = type_instances(labels, argmax, rule="nucleus")
    assert types_a.tolist() == [0, 4] and tprob_a.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="typing rule"):
        type_instances(labels, soft, rule="majority")


def test_postprocess_maps_gives_a_valid_typed_table():
    inst = disks((96, 96), [(25, 25), (60, 65)], [10, 12])
    np_map, hv = ideal_maps(inst)
    soft = np.zeros((96, 96, 3), np.float32)
    soft[..., 0] = 1
    soft[inst == 1] = [0.1, 0.8, 0.1]
    soft[inst == 2] = [0.1, 0.2, 0.7]
    labels, table = postprocess_maps(np_map, hv, soft, mpp=0.25)
    validate_table(table)
    assert len(table) == 2
    by_pos = table.sort_values("x")
    assert by_pos["type"].tolist() == [1, 2]
    np.testing.assert_allclose(np.stack(by_pos["probs"])[:, 1:], [[0.8, 0.1], [0.2, 0.7]], atol=1e-5)
    assert (table["area_um2"] == table["area_px"] * 0.0625).all()
    # table ids are exactly the label-map ids
    assert sorted(table["id"]) == sorted(np.unique(labels)[1:].tolist())


def _regionprops_table(labels):
    from skimage.measure import regionprops

    rows = []
    for p in regionprops(labels):
        y0, x0, y1, x1 = p.bbox
        rows.append((p.label, p.centroid[1], p.centroid[0], x0, y0, x1, y1, p.area,
                     p.eccentricity))
    return np.array(rows, np.float64)


def test_vectorised_measurement_matches_regionprops(monuseg_gt):
    labels = monuseg_gt.inst[:400, :400]
    table = measure_instances(labels, mpp=monuseg_gt.mpp)
    validate_table(table)
    ref = _regionprops_table(labels)
    got = table[["id", "x", "y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px",
                 "eccentricity"]].to_numpy(np.float64)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    # solidity of the outline polygon (QuPath's) is within 0.04 of regionprops' pixel-count one
    from skimage.measure import regionprops

    pixel_solidity = np.array([p.solidity for p in regionprops(labels)])
    assert np.abs(table["solidity"].to_numpy() - pixel_solidity).max() < 0.04
    assert (table["solidity"] <= 1.0).all()
    # perimeter and circularity are those of the exact 0.5 iso-line polygon (QuPath's ROI measures)
    from shapely.geometry import Polygon
    from skimage.measure import find_contours

    for row in table.sample(40, random_state=1).itertuples():
        crop = np.pad(labels == row.id, 1).astype(float)
        ring = max(find_contours(crop, 0.5), key=len)
        poly = Polygon(ring[:, ::-1])
        assert row.perimeter_px == pytest.approx(poly.length, rel=1e-9)
        assert row.circularity == pytest.approx(min(1.0, 4 * np.pi * poly.area / poly.length**2), rel=1e-9)
        assert row.solidity == pytest.approx(min(1.0, poly.area / poly.convex_hull.area), rel=1e-9)
    # contours lie on the instance boundary and inside its bbox
    for row in table.head(50).itertuples():
        c = row.contour
        assert c.shape[1] == 2 and len(c) >= 4
        assert c[:, 0].min() >= row.bbox_x0 - 0.5 and c[:, 0].max() <= row.bbox_x1 - 0.5
        assert c[:, 1].min() >= row.bbox_y0 - 0.5 and c[:, 1].max() <= row.bbox_y1 - 0.5


def test_circularity_never_exceeds_one_even_for_small_round_nuclei():
    from skimage.draw import disk

    labels = np.zeros((200, 200), np.int32)
    for k, r in enumerate([1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 8, 10, 14], start=1):
        cy, cx = 18 + (k - 1) // 4 * 60, 18 + (k - 1) % 4 * 48
        labels[disk((cy, cx), r, shape=labels.shape)] = k
    table = measure_instances(labels, mpp=0.25)
    assert (table["circularity"] <= 1.0).all()
    # discs are round: the larger ones close to 1
    assert (table.loc[table["area_px"] > 100, "circularity"] > 0.85).all()


def test_outlines_are_simplified_within_half_a_pixel_and_rasterise_back_to_the_same_nuclei(monuseg_gt):
    import shapely
    from skimage.segmentation import expand_labels

    from napari_histo.formats.rasterize import paint_polygons
    from napari_histo.nuclei.metrics import instance_scores

    truth = monuseg_gt.inst[:500, :500]
    labels = expand_labels(truth, 1)  # a "prediction" close to, not equal to, the truth
    exact = measure_instances(labels, contour_tolerance=0)
    simple = measure_instances(labels)
    n_exact = sum(len(c) for c in exact["contour"])
    n_simple = sum(len(c) for c in simple["contour"])
    assert n_exact >= 3 * n_simple  # >= 3x fewer vertices
    for a, b in zip(exact["contour"], simple["contour"], strict=True):
        d = shapely.hausdorff_distance(shapely.Polygon(a), shapely.Polygon(b))
        assert d <= 0.5 + 1e-6
    # the measurements do not depend on the stored outline
    cols = ["area_px", "perimeter_px", "circularity", "solidity"]
    np.testing.assert_array_equal(exact[cols].to_numpy(), simple[cols].to_numpy())
    # painted back, the simplified outlines score against the truth as the exact ones do
    back_exact, _ = paint_polygons(list(exact["contour"]), labels.shape, edges="top-left")
    back_simple, _ = paint_polygons(list(simple["contour"]), labels.shape, edges="top-left")
    pq_labels = instance_scores(truth, labels)["pq"]
    pq_exact = instance_scores(truth, back_exact)["pq"]
    pq_simple = instance_scores(truth, back_simple)["pq"]
    assert abs(pq_labels - pq_exact) < 0.002 and abs(pq_exact - pq_simple) < 0.005


def test_measurement_with_sparse_ids_and_empty():
    labels = np.zeros((50, 50), np.int64)
    labels[5:10, 5:12] = 10**9
    labels[20:30, 20:25] = 7
    table = measure_instances(labels)
    assert table["id"].tolist() == [7, 10**9]
    assert table["area_px"].tolist() == [50.0, 35.0]
    assert table[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].iloc[1].tolist() == [5, 5, 12, 10]
    assert np.isnan(table["area_um2"]).all()
    empty = measure_instances(np.zeros((8, 8), np.int32), mpp=0.5)
    validate_table(empty)
    assert len(empty) == 0 and empty.attrs["mpp"] == 0.5


def test_constants_rescaled_for_20x():
    from napari_histo.nuclei.postproc import cv_ellipse

    assert HoverPostParams.for_mpp(0.25) == HoverPostParams()
    p20 = HoverPostParams.for_mpp(0.5)
    assert (p20.sobel_ksize, p20.min_blob_px, p20.min_marker_px, p20.opening_size) == (11, 2, 2, 3)
    assert cv_ellipse(5).sum() == 17 and cv_ellipse(5)[0].tolist() == [0, 0, 1, 0, 0]
    # small (20x-sized) touching nuclei: the rescaled constants split them, as 40x ones do at 40x
    inst = disks((64, 80), [(20, 20), (20, 31), (45, 55)], [6, 6, 5])
    np_map, hv = ideal_maps(inst)
    assert pq(inst, instances_from_maps(np_map, hv, p20))[0] == 1.0
