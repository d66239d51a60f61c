"""MPCS pair sampling: which two magnifications of one field form a positive pair.

``levels`` are the available magnifications, sorted from low to high (BreakHis: 40, 100, 200,
400). Strategies from Chhipa et al. (WACV 2023):

- random pair (RP): two distinct levels, uniformly;
- ordered pair (OP): first level uniform, second the next higher one; a draw of the highest
  level yields the pair below it in the same order, as the upstream code does (40->100,
  100->200, 200->400, and 400 -> 200->400: the 200/400 pair is drawn twice as often and the
  reversed pair 400->200 never occurs);
- fixed pair (FP): always the two highest levels (200X and 400X).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PairFn = Callable[[Sequence[float], np.random.Generator], tuple[float, float]]


def _sorted(levels: Sequence[float]) -> list[float]:
    out = sorted(float(v) for v in levels)
    if len(out) < 2 or len(set(out)) != len(out):
        raise ValueError(f"need at least two distinct magnification levels, got {list(levels)}")
    return out


def random_pair(levels: Sequence[float], rng: np.random.Generator) -> tuple[float, float]:
    """RP: two distinct levels drawn uniformly (in random order)."""
    lv = _sorted(levels)
    i, j = rng.choice(len(lv), size=2, replace=False)
    return lv[int(i)], lv[int(j)]


def ordered_pair(levels: Sequence[float], rng: np.random.Generator) -> tuple[float, float]:
    """OP: a uniform level and its next higher neighbour; the highest level gives the pair below
    it in ascending order (upstream ``self_supervised/apply/datasets.py``: 400 loads 200->400)."""
    lv = _sorted(levels)
    i = min(int(rng.integers(len(lv))), len(lv) - 2)
    return lv[i], lv[i + 1]


def fixed_pair(levels: Sequence[float], rng: np.random.Generator) -> tuple[float, float]:  # noqa: ARG001
    """FP: always the two highest levels (BreakHis 200X, 400X)."""
    lv = _sorted(levels)
    return lv[-2], lv[-1]


PAIR_STRATEGIES: dict[str, PairFn] = {"rp": random_pair, "op": ordered_pair, "fp": fixed_pair}


def get_pair_strategy(name: str) -> PairFn:
    """The pair function for ``"rp"``, ``"op"`` or ``"fp"`` (also the long names)."""
    aliases = {"random": "rp", "ordered": "op", "fixed": "fp"}
    key = aliases.get(name.lower(), name.lower())
    if key not in PAIR_STRATEGIES:
        raise ValueError(f"unknown pair strategy {name!r}; expected one of rp, op, fp")
    return PAIR_STRATEGIES[key]
