"""The work done on one tile wherever it runs (local threads or a dask.distributed worker):
the network's prediction for a batch of tiles, then post-processing and the nuclei it owns."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from napari_histo.engine.merge import TileResult, select_owned
from napari_histo.engine.plan import Tile, TilePlan
from napari_histo.utils import HistoError

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.


def at_resolution(segmenter: Any, mpp: float | None) -> Any:
    """The segmenter to run on a slide of level-0 ``mpp`` µm/px: ``segmenter.for_resolution(mpp)``
    when it has one (a model whose network runs on a coarser grid than it is presented at is
    then run on that grid for slides no finer than it), else ``segmenter``."""
    choose = getattr(segmenter, "for_resolution", None)
    return segmenter if choose is None else choose(mpp)


def split_batch(raw: Any, n: int) -> list[Any]:
    """Per-tile pieces of a batched ``predict`` output (array, dict or sequence of length n)."""
    if isinstance(raw, dict):
        parts = {k: split_batch(v, n) for k, v in raw.items()}
        return [{k: parts[k][i] for k in raw} for i in range(n)]
    if isinstance(raw, list | tuple) and len(raw) == n:
        return list(raw)
    if hasattr(raw, "shape") and raw.shape[0] == n:
        return [raw[i] for i in range(n)]
    raise HistoError(f"cannot split a batched prediction of type {type(raw).__name__} into {n} tiles")


def predict_batch(segmenter: Any, rgbs: list[np.ndarray]) -> list[Any]:
    """The segmenter's raw prediction for each tile image, batched (autocast on CUDA)."""
    device = str(getattr(segmenter, "device", "cpu"))
    ctx = contextlib.nullcontext()
    if device.startswith("cuda") and not hasattr(segmenter, "amp"):
        # segmenters with an ``amp`` attribute manage autocast themselves
        import torch

        ctx = torch.autocast("cuda", dtype=torch.float16)
    with ctx:
        if len(rgbs) == 1:
            return [segmenter.predict(rgbs[0])]
        return split_batch(segmenter.predict(np.stack(rgbs)), len(rgbs))


def process_tile(segmenter: Any, raw: Any, rgb: np.ndarray, tile: Tile, plan: TilePlan,
                 roi: Any) -> TileResult:
    """Post-process one tile and keep the nuclei it owns."""
    labels, table = segmenter.postprocess(raw, rgb)
    return select_owned(np.asarray(labels), table, tile, plan, roi)


# ---- post-processing in worker processes (see SegmentationOptions.post_processes) ----

_WORKER: dict[str, Any] = {}

#: Thread limits of a post-processing process: the pool supplies the parallelism.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def post_worker_payload(segmenter: Any, plan: TilePlan) -> bytes:
    """What each post-processing process receives once: the segmenter without its network
    (``segmenter.postprocessor()`` when it has one) and the plan, pickled."""
    import pickle

    light = segmenter.postprocessor() if hasattr(segmenter, "postprocessor") else segmenter
    return pickle.dumps((light, plan), protocol=pickle.HIGHEST_PROTOCOL)


def init_post_worker(payload: bytes) -> None:
    """Process-pool initializer: one thread per process, then the segmenter and plan."""
    import os
    import pickle
    import sys

    for name in _ONE_THREAD:
        os.environ[name] = "1"
    segmenter, plan = pickle.loads(payload)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    _WORKER.update(segmenter=segmenter, plan=plan, roi=plan.roi())


def post_in_worker(raw: Any, rgb: np.ndarray, tile: Tile) -> tuple[TileResult, float]:
    """:func:`process_tile` in a post-processing process; returns the result and its seconds."""
    import time

    t0 = time.perf_counter()
    result = process_tile(_WORKER["segmenter"], raw, rgb, tile, _WORKER["plan"], _WORKER["roi"])
    return result, time.perf_counter() - t0

