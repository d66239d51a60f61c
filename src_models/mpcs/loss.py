"""NT-Xent (normalised temperature-scaled cross entropy), temperature 0.1 as in MPCS."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
            symmetric: bool = False) -> torch.Tensor:
    """NT-Xent between two views ``z1``, ``z2`` (B, D) of the same B fields.

    Single-view form (MPCS single-GPU): anchors are the ``z1`` rows; each anchor's contrast set
    is all 2B embeddings except itself and its positive is the same row of ``z2``:
    ``-log(exp(s(z1_i, z2_i)/t) / sum_{k != i} exp(s(z1_i, e_k)/t))`` averaged over i, with ``s``
    the cosine similarity. ``symmetric=True`` also uses the ``z2`` rows as anchors (2B terms).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"views must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    emb = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = emb @ emb.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=sim.device), float("-inf"))
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(sim.device)
    losses = F.cross_entropy(sim, positives, reduction="none")
    return losses.mean() if symmetric else losses[:b].mean()
