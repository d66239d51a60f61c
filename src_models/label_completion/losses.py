"""Training losses of label completion: the sparse (per label set) base loss, mutual pseudo
labels between the base head and the correlation MLPs, and the completion-stage loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_histo.models.label_completion.model import LabelCompletionModel


# ---------------------------------------------------------------------------- losses
def sparse_label_loss(logits: torch.Tensor, set_index: torch.Tensor, labels: torch.Tensor,
                      offsets: list[int], class_weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Mean NLL of each labelled sample's label under the softmax of *its own* label set's slice.

    Samples with ``labels < 0`` contribute nothing; other slices get no gradient.
    """
    total = logits.new_zeros(())
    count = 0
    for d in range(len(offsets) - 1):
        sel = (set_index == d) & (labels >= 0)
        if sel.any():
            w = class_weights[d] if class_weights is not None else None
            total = total + F.cross_entropy(logits[sel, offsets[d]:offsets[d + 1]], labels[sel],
                                            weight=w, reduction="sum")
            count += int(sel.sum())
    return total / max(count, 1)


def mutual_pseudo_labels(base_logits: torch.Tensor, mlp_logits: torch.Tensor, threshold: float = 0.99):
    """The completion stage's pseudo-label rule for nuclei without a label in this set.

    Returns ``(base_target, base_mask, mlp_target, mlp_mask)``: where the MLP's softmax confidence
    exceeds ``threshold`` its argmax supervises the base slice (``base_mask``); where the base
    slice's confidence exceeds it, its argmax supervises the MLP (``mlp_mask``). Targets are
    detached.
    """
    with torch.no_grad():
        p_mlp = torch.softmax(mlp_logits, 1)
        p_base = torch.softmax(base_logits, 1)
        conf_mlp, arg_mlp = p_mlp.max(1)
        conf_base, arg_base = p_base.max(1)
    return arg_mlp, conf_mlp > threshold, arg_base, conf_base > threshold


def completion_loss(model: LabelCompletionModel, logits: torch.Tensor, mlp_logits: list[torch.Tensor],
                    set_index: torch.Tensor, labels: torch.Tensor, threshold: float,
                    train_sets: list[int]) -> tuple[torch.Tensor, dict[str, int]]:
    """``mean(L0) + mean(L1)`` as the dataset-merging method defines the completion stage
    (Dataset_Merger, ``WinnieLaugh/Dataset_Merger``): each term is averaged over all its
    per-sample losses, pooled across the trained label sets, not summed per set.

    L0: for each set ``d``, its own labelled samples: CE on the base slice + CE on the MLP
    (one term per sample). L1: samples not from ``d`` (other labelled sets and unlabelled
    nuclei): the mutual pseudo-labels above ``threshold`` (one term per pseudo-label).
    """
    l0: list[torch.Tensor] = []
    l1: list[torch.Tensor] = []
    stats = {"pseudo_base": 0, "pseudo_mlp": 0}
    for d in train_sets:
        base_d = model.slice(logits, d)
        own = (set_index == d) & (labels >= 0)
        if own.any():
            l0.append(F.cross_entropy(base_d[own], labels[own], reduction="none")
                      + F.cross_entropy(mlp_logits[d][own], labels[own], reduction="none"))
        other = set_index != d
        if other.any():
            tb, mb, tm, mm = mutual_pseudo_labels(base_d[other], mlp_logits[d][other], threshold)
            if mb.any():
                l1.append(F.cross_entropy(base_d[other][mb], tb[mb], reduction="none"))
            if mm.any():
                l1.append(F.cross_entropy(mlp_logits[d][other][mm], tm[mm], reduction="none"))
            stats["pseudo_base"] += int(mb.sum())
            stats["pseudo_mlp"] += int(mm.sum())
    loss = logits.new_zeros(())
    if l0:
        loss = loss + torch.cat(l0).mean()
    if l1:
        loss = loss + torch.cat(l1).mean()
    return loss, stats
