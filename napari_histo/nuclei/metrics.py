"""Nucleus segmentation and classification metrics, as HoVer-Net's ``compute_stats.py``.

All instance metrics first relabel ground truth and prediction to contiguous ids, build the
pairwise intersection table in one ``bincount`` (no per-instance image pass) and then follow
``metrics/stats_utils.py`` of https://github.com/vqdang/hover_net.

Public functions
----------------
- :func:`dice` -- binary Dice of foreground vs foreground.
- :func:`aji` -- Aggregated Jaccard Index (max-IoU pairing, predictions may be reused).
- :func:`aji_plus` -- AJI+ (unique Hungarian pairing).
- :func:`pq` -- ``(DQ, SQ, PQ)`` with IoU > 0.5 matching (Hungarian for lower thresholds).
- :func:`instance_scores` -- all of the above for one image as a dict.
- :func:`pair_centroids` -- Hungarian centroid matching within a radius (12 px).
- :func:`type_scores` -- detection F1, type accuracy and per-type F1 pooled over images.
"""

from __future__ import annotations

import numpy as np

# Lazy imports: pandas, scipy are imported inside the functions that use them (directly or through
# the modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = [
    "dice",
    "aji",
    "aji_plus",
    "pq",
    "instance_scores",
    "pair_centroids",
    "type_scores",
    "overlap_table",
]


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    from napari_histo.nuclei.measure import compact_ids

    ids, lab = compact_ids(np.asarray(labels))
    return lab, len(ids)


def overlap_table(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersections (G, P), GT areas (G,) and prediction areas (P,) of two label maps.

    Ids are relabelled to 1..G and 1..P first; index ``i`` stands for id ``i + 1``.
    """
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"ground truth {true.shape} and prediction {pred.shape} differ in shape")
    t, g = _relabel(true)
    p, n = _relabel(pred)
    joint = np.bincount(t.ravel().astype(np.int64) * (n + 1) + p.ravel(), minlength=(g + 1) * (n + 1))
    joint = joint.reshape(g + 1, n + 1)
    t_area = joint.sum(axis=1)[1:]
    p_area = joint.sum(axis=0)[1:]
    return joint[1:, 1:].astype(np.float64), t_area.astype(np.float64), p_area.astype(np.float64)


def _iou(inter: np.ndarray, t_area: np.ndarray, p_area: np.ndarray) -> np.ndarray:
    union = t_area[:, None] + p_area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Binary Dice ``2|T∩P| / (|T| + |P|)`` of the foregrounds (1.0 when both are empty)."""
    t = np.asarray(true) > 0
    p = np.asarray(pred) > 0
    denom = t.sum() + p.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(t, p).sum() / denom)


def aji(true: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar 2017 / MoNuSeg, as ``get_fast_aji``).

    Each GT is paired with its max-IoU prediction (predictions may be reused); AJI =
    Σ intersections / (Σ unions of pairs + area of unpaired GT + area of never-used predictions).
    """
    inter, t_area, p_area = overlap_table(true, pred)
    if len(t_area) == 0:
        return 1.0 if len(p_area) == 0 else 0.0
    if len(p_area) == 0:
        return 0.0
    iou = _iou(inter, t_area, p_area)
    best = iou.argmax(axis=1)
    paired = iou[np.arange(len(t_area)), best] > 0
    rows = np.flatnonzero(paired)
    cols = best[paired]
    overall_inter = inter[rows, cols].sum()
    overall_union = (t_area[rows] + p_area[cols] - inter[rows, cols]).sum()
    overall_union += t_area[~paired].sum()
    used = np.zeros(len(p_area), bool)
    used[cols] = True
    overall_union += p_area[~used].sum()
    return float(overall_inter / overall_union) if overall_union > 0 else 0.0


def aji_plus(true: np.ndarray, pred: np.ndarray) -> float:
    """AJI+ (``get_fast_aji_plus``): unique Hungarian pairing maximising IoU, pairs with IoU > 0."""
    from scipy.optimize import linear_sum_assignment

    inter, t_area, p_area = overlap_table(true, pred)
    if len(t_area) == 0:
        return 1.0 if len(p_area) == 0 else 0.0
    if len(p_area) == 0:
        return 0.0
    iou = _iou(inter, t_area, p_area)
    rows, cols = linear_sum_assignment(-iou)
    ok = iou[rows, cols] > 0
    rows, cols = rows[ok], cols[ok]
    overall_inter = inter[rows, cols].sum()
    overall_union = (t_area[rows] + p_area[cols] - inter[rows, cols]).sum()
    t_un = np.ones(len(t_area), bool)
    t_un[rows] = False
    p_un = np.ones(len(p_area), bool)
    p_un[cols] = False
    overall_union += t_area[t_un].sum() + p_area[p_un].sum()
    return float(overall_inter / overall_union) if overall_union > 0 else 0.0


def pq(true: np.ndarray, pred: np.ndarray, match_iou: float = 0.5) -> tuple[float, float, float]:
    """Panoptic quality ``(DQ, SQ, PQ)`` (``get_fast_pq``).

    With ``match_iou >= 0.5`` a pair is a true positive when IoU > ``match_iou`` (unique by
    construction); below 0.5 a Hungarian assignment on -IoU picks the pairs first.
    """
    from scipy.optimize import linear_sum_assignment

    inter, t_area, p_area = overlap_table(true, pred)
    g, n = len(t_area), len(p_area)
    if g == 0 and n == 0:
        return 1.0, 1.0, 1.0
    iou = _iou(inter, t_area, p_area) if g and n else np.zeros((g, n))
    if match_iou >= 0.5:
        rows, cols = np.nonzero(iou > match_iou)
    else:
        rows, cols = linear_sum_assignment(-iou)
        ok = iou[rows, cols] > match_iou
        rows, cols = rows[ok], cols[ok]
    tp = len(rows)
    fp = n - tp
    fn = g - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(iou[rows, cols].sum()) / (tp + 1.0e-6)
    return float(dq), float(sq), float(dq * sq)


def instance_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Dice, AJI, AJI+, DQ, SQ, PQ of one image (the ``compute_stats`` columns)."""
    dq, sq, pq_ = pq(true, pred)
    return {
        "dice": dice(true, pred),
        "aji": aji(true, pred),
        "aji_plus": aji_plus(true, pred),
        "dq": dq,
        "sq": sq,
        "pq": pq_,
    }


def pair_centroids(
    true_xy: np.ndarray, pred_xy: np.ndarray, radius: float = 12.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian matching of centroids on Euclidean distance, keeping pairs ≤ ``radius``.

    Returns ``(pairs (K, 2) [true_idx, pred_idx], unpaired_true, unpaired_pred)``.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    true_xy = np.asarray(true_xy, np.float64).reshape(-1, 2)
    pred_xy = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    if len(true_xy) == 0 or len(pred_xy) == 0:
        return np.zeros((0, 2), np.int64), np.arange(len(true_xy)), np.arange(len(pred_xy))
    dist = cdist(true_xy, pred_xy)
    rows, cols = linear_sum_assignment(dist)
    ok = dist[rows, cols] <= radius
    pairs = np.stack([rows[ok], cols[ok]], axis=1).astype(np.int64)
    un_t = np.setdiff1d(np.arange(len(true_xy)), pairs[:, 0])
    un_p = np.setdiff1d(np.arange(len(pred_xy)), pairs[:, 1])
    return pairs, un_t, un_p


def type_scores(
    images: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    radius: float = 12.0,
    type_ids: list[int] | None = None,
    exhaustive: bool = True,
) -> dict[str, float]:
    """Detection and classification scores pooled over images (``compute_stats`` type mode).

    Parameters
    ----------
    images : list of (true_xy, true_type, pred_xy, pred_type)
        Per image: centroids (N, 2) and type ids. Empty images are allowed.
    radius : float
        Matching radius in px (12 at 40×).
    type_ids : list of int, optional
        Types to score; default every type > 0 present in the ground truth.
    exhaustive : bool
        When False, GT type -1 means "unlabelled": such pairs are ignored for typing.

    Returns
    -------
    dict with ``f1_d``, ``acc`` and ``f1_type<k>`` per type.
    """
    paired_t, paired_p, un_t_types, un_p_types = [], [], [], []
    n_tp = n_fp = n_fn = 0
    for true_xy, true_type, pred_xy, pred_type in images:
        true_type = np.asarray(true_type, np.int64).ravel()
        pred_type = np.asarray(pred_type, np.int64).ravel()
        pairs, un_t, un_p = pair_centroids(true_xy, pred_xy, radius)
        n_tp += len(pairs)
        n_fn += len(un_t)
        n_fp += len(un_p)
        paired_t.append(true_type[pairs[:, 0]])
        paired_p.append(pred_type[pairs[:, 1]])
        un_t_types.append(true_type[un_t])
        un_p_types.append(pred_type[un_p])
    pt = np.concatenate(paired_t) if paired_t else np.zeros(0, np.int64)
    pp = np.concatenate(paired_p) if paired_p else np.zeros(0, np.int64)
    ut = np.concatenate(un_t_types) if un_t_types else np.zeros(0, np.int64)
    up = np.concatenate(un_p_types) if un_p_types else np.zeros(0, np.int64)

    denom = 2 * n_tp + n_fp + n_fn
    out = {"f1_d": (2 * n_tp / denom) if denom else 1.0}
    if not exhaustive:
        keep = pt != -1
        pt, pp = pt[keep], pp[keep]
    out["acc"] = float((pt == pp).mean()) if len(pt) else float("nan")
    if type_ids is None:
        all_gt = np.concatenate([pt, ut])
        type_ids = sorted(int(t) for t in np.unique(all_gt) if t > 0)
    for c in type_ids:
        sel = (pt == c) | (pp == c)
        t_c, p_c = pt[sel], pp[sel]
        tp_c = int(((t_c == c) & (p_c == c)).sum())
        tn_c = int(((t_c != c) & (p_c != c)).sum())
        fp_c = int(((t_c != c) & (p_c == c)).sum())
        fn_c = int(((t_c == c) & (p_c != c)).sum())
        fp_dc = int((up == c).sum())
        fn_dc = int((ut == c).sum())
        d = 2 * (tp_c + tn_c) + 2 * fp_c + 2 * fn_c + fp_dc + fn_dc
        out[f"f1_type{c}"] = (2 * (tp_c + tn_c) / d) if d else float("nan")
    return out
