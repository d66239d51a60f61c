"""Segmentation and classification metrics on small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_histo.nuclei.metrics import (
    aji,
    aji_plus,
    dice,
    instance_scores,
    pair_centroids,
    pq,
    type_scores,
)


@pytest.fixture
def case():
    true = np.zeros((6, 6), np.int32)
    true[0:2, 0:2] = 1  # A, 4 px
    true[0:2, 4:6] = 2  # B, 4 px
    pred = np.zeros((6, 6), np.int32)
    pred[0:3, 0:2] = 5  # P1 = A + 2 px: IoU 4/6
    pred[0, 4:6] = 9  # P2 = half of B: IoU 2/4 = 0.5 (not > 0.5)
    pred[5, 0:3] = 2  # P3: false positive, 3 px
    return true, pred


def test_dice(case):
    true, pred = case
    assert dice(true, pred) == pytest.approx(12 / 19)
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_pq_strict_half_iou(case):
    true, pred = case
    dq, sq, pq_ = pq(true, pred)
    assert dq == pytest.approx(1 / 2.5)
    assert sq == pytest.approx(4 / 6, abs=1e-5)
    assert pq_ == pytest.approx(0.4 * 4 / 6, abs=1e-5)
    # below 0.5: Hungarian pairs with IoU > threshold, so B-P2 now counts
    dq2, sq2, _ = pq(true, pred, match_iou=0.4)
    assert dq2 == pytest.approx(2 / 2.5)  # TP 2, FP 1 (P3), FN 0
    assert sq2 == pytest.approx((4 / 6 + 0.5) / 2, abs=1e-5)


def test_aji_and_aji_plus(case):
    true, pred = case
    assert aji(true, pred) == pytest.approx(6 / 13)
    assert aji_plus(true, pred) == pytest.approx(6 / 13)
    # one prediction covering two GT nuclei: AJI reuses it, AJI+ cannot
    t = np.zeros((2, 4), np.int32)
    t[:, :2] = 1
    t[:, 2:] = 2
    p = np.ones((2, 4), np.int32)
    assert aji(t, p) == pytest.approx(8 / 16)
    assert aji_plus(t, p) == pytest.approx(4 / 12)


def test_perfect_and_empty():
    t = np.zeros((10, 10), np.int32)
    t[1:4, 1:4] = 3
    t[6:9, 5:9] = 7
    relabelled = np.where(t == 3, 20, np.where(t == 7, 4, 0))
    s = instance_scores(t, relabelled)
    assert s["dice"] == 1.0 and s["aji"] == 1.0 and s["aji_plus"] == 1.0 and s["dq"] == 1.0
    assert s["pq"] == pytest.approx(1.0, abs=1e-5)
    assert pq(t, np.zeros_like(t)) == (0.0, 0.0, 0.0)
    assert aji(t, np.zeros_like(t)) == 0.0
    with pytest.raises(ValueError):
        pq(t, t[:5])


def test_centroid_pairing_radius():
    pairs, un_t, un_p = pair_centroids([[0, 0], [50, 50]], [[0, 12], [50, 63]], radius=12)
    assert pairs.tolist() == [[0, 0]]
    assert un_t.tolist() == [1] and un_p.tolist() == [1]


def test_type_scores_hand_computed():
    true_xy = np.array([[0, 0], [50, 50], [100, 100]], float)
    true_t = np.array([1, 2, 1])
    pred_xy = np.array([[3, 4], [50, 60], [200, 200]], float)
    pred_t = np.array([1, 1, 2])
    empty = (np.zeros((0, 2)), np.zeros(0, int), np.zeros((0, 2)), np.zeros(0, int))
    out = type_scores([(true_xy, true_t, pred_xy, pred_t), empty])
    assert out["f1_d"] == pytest.approx(4 / 6)
    assert out["acc"] == pytest.approx(0.5)
    assert out["f1_type1"] == pytest.approx(2 / 5)
    assert out["f1_type2"] == pytest.approx(0.0)
