"""Fan tiles out over an existing dask.distributed cluster.

Rules (dask.distributed's ``Client(set_as_default=False)``, so that napari's own dask use is
untouched): the client is created with ``set_as_default=False`` so napari's and the
caller's dask scheduler are untouched; tasks carry data only — the slide spec (path, backend),
the tile box, a plan without its tile list, and the model spec — never open handles; each
worker process keeps small caches of open slides and loaded models. At most ``max_inflight``
tiles are submitted at a time, so the client's memory does not grow with the slide.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from napari_histo.engine.compute import at_resolution, process_tile
from napari_histo.engine.merge import TileResult
from napari_histo.engine.plan import Tile, TilePlan, read_window
from napari_histo.engine.source import slide_spec
from napari_histo.models import get_segmenter
from napari_histo.utils import HistoError

# Lazy imports: dask, distributed are imported inside the functions that use them (directly or
# through the modules named there): importing this module stays light for the CLI and the napari
# manifest.

_SLIDES: OrderedDict[Any, Any] = OrderedDict()
_MODELS: dict[Any, Any] = {}
_CACHE_LOCK = threading.Lock()
_MAX_SLIDES = 4


def _cached_slide(spec: Any):
    """Open (or reuse) a slide in this process from its picklable spec."""
    if not hasattr(spec, "open"):
        return spec  # an in-memory slide (ArraySlide) travels as data
    key = (str(spec.path), getattr(spec, "backend", None))
    with _CACHE_LOCK:
        if key in _SLIDES:
            _SLIDES.move_to_end(key)
            return _SLIDES[key]
    slide = spec.open()
    with _CACHE_LOCK:
        _SLIDES[key] = slide
        while len(_SLIDES) > _MAX_SLIDES:
            _, old = _SLIDES.popitem(last=False)
            old.close()
    return slide


def _cached_model(spec: tuple) -> Any:
    kind = spec[0]
    if kind == "object":
        return spec[1]
    if kind == "registry":
        model_mpp = spec[3] if len(spec) > 3 else None
        slide_mpp = spec[4] if len(spec) > 4 else None
        key = (spec[1], spec[2], model_mpp)
        with _CACHE_LOCK:
            if key not in _MODELS:
                _MODELS[key] = get_segmenter(spec[1], spec[2], mpp=model_mpp)
            return at_resolution(_MODELS[key], slide_mpp)
    raise HistoError(f"unknown model spec {spec!r}")


def segment_tile_task(slide_spec: Any, tile: Tile, plan: TilePlan, model_spec: tuple) -> TileResult:
    """Worker-side task: read, segment and apply the ownership rule to one tile."""
    slide = _cached_slide(slide_spec)
    segmenter = _cached_model(model_spec)
    rgb = read_window(slide, tile, plan)
    raw = segmenter.predict(rgb)
    return process_tile(segmenter, raw, rgb, tile, plan, plan.roi())


def _client(scheduler: Any):
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise HistoError("a scheduler was given but dask.distributed is not installed "
                         "(pip install 'napari-histo[distributed]')") from exc
    import dask

    timeout = dask.config.get("distributed.comm.timeouts.connect", "30s")
    try:
        return Client(scheduler, set_as_default=False, timeout=timeout)
    except OSError as exc:
        raise HistoError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from exc


def _lost_message(address: str, cause: Any) -> str:
    return (f"the dask cluster at {address} stopped computing tiles ({type(cause).__name__}: {cause}); "
            "finished tiles are kept: run again with --resume when the cluster is back")


def distributed_results(
    scheduler: Any,
    slide: Any,
    plan: TilePlan,
    tiles: list[Tile],
    model_spec: tuple,
    *,
    max_inflight: int = 8,
    stats: dict[str, Any] | None = None,
) -> Iterator[TileResult]:
    """Run ``tiles`` on the cluster at ``scheduler``; yields results as they complete."""
    from distributed import as_completed

    spec = slide_spec(slide)
    light_plan = replace(plan, tiles=())
    client = _client(scheduler)
    stats = {} if stats is None else stats
    stats["scheduler"] = str(getattr(scheduler, "scheduler_address", scheduler))
    stats["max_inflight"] = 0
    pending = list(reversed(tiles))
    futures = []
    try:
        spec_f, plan_f, model_f = client.scatter([spec, light_plan, model_spec], broadcast=True)
        ac = as_completed(loop=client.loop, with_results=True)

        def submit() -> None:
            tile = pending.pop()
            fut = client.submit(segment_tile_task, spec_f, tile, plan_f, model_f, pure=False,
                                key=f"napari-histo-tile-{tile.index}-{id(plan)}")
            futures.append(fut)
            ac.add(fut)

        for _ in range(min(max_inflight, len(pending))):
            submit()
        stats["max_inflight"] = ac.count()
        address = stats["scheduler"]
        try:
            for fut, result in ac:
                futures.remove(fut)
                if isinstance(result, BaseException) or not isinstance(result, TileResult):
                    raise HistoError(_lost_message(address, result))
                if pending:
                    submit()
                yield result
        except HistoError:
            raise
        except (OSError, RuntimeError, TimeoutError) as exc:  # the scheduler or every worker went away
            raise HistoError(_lost_message(address, exc)) from exc
    finally:
        for fut in futures:
            fut.cancel()
        client.close()
