"""Whole-slide nucleus segmentation as a generator of progress events.

Throughput structure (local runs): reader threads prefetch tile windows into a **bounded**
queue, the calling thread batches them through ``segmenter.predict`` (autocast on CUDA), and a
thread pool post-processes and applies the ownership rule with a bounded number of tiles in
flight; finished tiles are journaled. Memory therefore grows with tile size and queue depth,
never with slide size. With ``scheduler`` the tiles fan out over an existing dask.distributed
cluster instead (:mod:`napari_histo.engine.distributed`).

Cancellation: set ``cancel`` (a ``threading.Event``) or close the generator (napari's
``worker.quit()``); work stops at the next tile and the journal allows ``resume=True`` later.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import queue
import shutil
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.engine.compute import at_resolution, predict_batch, process_tile
from napari_histo.engine.faults import crash_point
from napari_histo.engine.journal import Journal, fingerprint, remove_workdir
from napari_histo.engine.lock import folder_lock
from napari_histo.engine.merge import TileResult
from napari_histo.engine.options import SegmentationOptions, post_process_count, thread_budget
from napari_histo.engine.plan import Tile, TilePlan, make_plan, read_window
from napari_histo.engine.source import open_source, slide_mpp, slide_name
from napari_histo.models import get_segmenter
from napari_histo.provenance import write_run_json
from napari_histo.utils import HistoError, atomic_path


@dataclass
class ProgressEvent:
    """One step of a run (yielded at least once per finished tile).

    Attributes
    ----------
    done, total : int
        Finished and planned tiles (resumed tiles count as done).
    nuclei : int
        Nuclei kept so far.
    eta_s : float or None
        Estimated seconds left (None until a tile has finished in this session).
    elapsed_s : float
        Seconds since the run started.
    stage : str
        "plan", "tiles", "assemble", "done" or "cancelled".
    tile : int or None
        Index of the tile that just finished.
    tile_result : TileResult or None
        That tile's owned nuclei (table in level-0 px, int32 label crop with its level-0
        origin, tile-local ids 1..n), so a viewer can show results while the run goes on
        without reading the work folder. Only on "tiles" events; global ids are assigned at
        assembly.
    """

    done: int
    total: int
    nuclei: int
    eta_s: float | None
    elapsed_s: float
    stage: str = "tiles"
    tile: int | None = None
    tile_result: TileResult | None = field(default=None, repr=False, compare=False)


@dataclass
class RunResult:
    """Summary returned by :func:`run_segmentation` (the generator's return value)."""

    folder: Path
    completed: bool
    n_nuclei: int
    n_tiles: int
    plan: TilePlan
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


#: Diameter (µm) above which an object is not a nucleus, except a multinucleated giant cell's
#: (large tumour nuclei reach about 20-25 µm): the wording of the oversize warning.
LARGEST_NUCLEUS_UM = 30.0


def resolve_segmenter(model: Any, device: str | None = None, model_mpp: float | None = None):
    """A Segmenter from an instance or a registry spec (``"classical"``, ``"default"``, a path);
    ``model_mpp`` is the processing resolution of a checkpoint file (see :class:`SegmentationOptions`)."""
    if isinstance(model, str | Path):
        return get_segmenter(str(model), device, mpp=model_mpp or None)
    if model_mpp and abs(float(getattr(model, "mpp", model_mpp)) - float(model_mpp)) > 1e-9:
        raise HistoError(f"the model works at {model.mpp:g} µm/px; a processing resolution of {model_mpp:g} "
                         "applies to a checkpoint given by its path")
    for attr in ("mpp", "halo_px", "predict", "postprocess"):
        if not hasattr(model, attr):
            raise HistoError(f"{type(model).__name__} is not a Segmenter (missing {attr!r})")
    return model


def _for_slide(segmenter: Any, slide: Any, plan: TilePlan, n_samples: int = 8) -> Any:
    """``segmenter.for_slide`` on up to ``n_samples`` planned tiles spread over the slide's tissue."""
    if not hasattr(segmenter, "for_slide") or not plan.tiles:
        return segmenter
    step = max(1, len(plan.tiles) // n_samples)
    samples = [read_window(slide, tile, plan) for tile in plan.tiles[step // 2 :: step][:n_samples]]
    return segmenter.for_slide(samples)


def _tissue_mask(slide: Any, warnings: list[str], mask_file: str | None = None):
    try:
        from napari_histo.slide import tissue_mask
    except ImportError:
        warnings.append("tissue detection unavailable; every tile is processed")
        return None
    array = getattr(slide, "array", None)
    if array is not None:  # in-memory image: detect on a <= ~1k px view of it
        if mask_file:
            from napari_histo.slide import TissueMask
            from napari_histo.slide._tissue import _load_user_mask

            user = _load_user_mask(mask_file)  # read once; its downsample follows from the image's width
            mask = TissueMask(user, array.shape[1] / user.shape[1], source="user")
        else:
            step = max(1, max(array.shape[:2]) // 1024)
            mask = tissue_mask(array[::step, ::step], downsample=float(step))
    else:
        mask = tissue_mask(slide, mask=mask_file)
    if not np.asarray(mask.mask).any():
        warnings.append("no tissue detected; every tile is processed")
        return None
    return mask


#: Below this median probability of "any type" inside nuclei, a run warns that its types are
#: unreliable (measured with the default model: 0.00 on the 20x sample slide, whose nuclei come out
#: mostly "other"; 0.34 on a 40x MoNuSeg tile; 0.83 on a CoNSeP validation crop).
UNSURE_TYPING = 0.1


def _typed_mass(table: Any) -> list[float]:
    """Per nucleus, the type head's probability of any class but background (``1 - probs[0]``)."""
    if table is None or not len(table) or "probs" not in table.columns:
        return []
    background = [p[0] for p in table["probs"] if p is not None and len(p) > 1]
    return (1.0 - np.asarray(background, np.float64)).tolist()


def _runs_on_cpu(segmenter: Any) -> bool:
    """A neural segmenter whose network runs on the CPU (the classical detector has no network)."""
    device = getattr(segmenter, "device", None)
    return device is not None and str(device).startswith("cpu")


def _torch_threads(n: int) -> None:
    """Set torch's intra-op threads for this process (torch is loaded: the segmenter uses it)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(n))


def _current_torch_threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def _save_views(slide: Any, mask: Any, outdir: Path, opts: SegmentationOptions) -> None:
    """``mask.png`` (the tissue mask used) and ``thumb.png`` (a <= 1024 px thumbnail) on request."""
    if not (opts.save_mask or opts.save_thumb):
        return
    from PIL import Image

    outdir.mkdir(parents=True, exist_ok=True)
    if opts.save_mask and mask is not None:
        with atomic_path(outdir / "mask.png") as tmp:
            Image.fromarray(np.asarray(mask.mask, np.uint8) * 255).save(tmp, format="PNG")
    if opts.save_thumb:
        array = getattr(slide, "array", None)
        if array is not None:
            step = max(1, int(np.ceil(max(array.shape[:2]) / 1024)))
            thumb = np.ascontiguousarray(array[::step, ::step, :3])
        else:
            thumb = slide.thumbnail(1024)
        with atomic_path(outdir / "thumb.png") as tmp:
            Image.fromarray(np.asarray(thumb, np.uint8)).save(tmp, format="PNG")


def _fingerprint_record(slide: Any, segmenter: Any, plan: TilePlan, name: str) -> dict[str, Any]:
    path = getattr(slide, "path", None)
    record: dict[str, Any] = {"slide": name, "plan": plan.describe(), "segmenter": _segmenter_info(segmenter)}
    with contextlib.suppress(OSError, TypeError):
        st = Path(path).stat()
        record["slide_file"] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return record


def _segmenter_info(segmenter: Any) -> dict[str, Any]:
    info = getattr(segmenter, "type_info", None)
    record = {
        "name": getattr(segmenter, "name", type(segmenter).__name__),
        "class": f"{type(segmenter).__module__}.{type(segmenter).__qualname__}",
        "mpp": getattr(segmenter, "mpp", None),
        "halo_px": getattr(segmenter, "halo_px", None),
        "type_info": info.to_json_dict() if hasattr(info, "to_json_dict") else None,
    }
    if callable(getattr(segmenter, "config", None)):  # e.g. the classical detector's parameters
        record["config"] = segmenter.config()
    return record


def run_segmentation(
    slide_or_path: Any,
    segmenter: Any,
    outdir: str | Path,
    roi: Any = None,
    options: SegmentationOptions | None = None,
    *,
    scheduler: Any = None,
    cancel: threading.Event | None = None,
    params: dict[str, Any] | None = None,
    **overrides: Any,
) -> Generator[ProgressEvent, None, RunResult]:
    """Segment every nucleus of a slide (or a region of it) into ``outdir``.

    Parameters
    ----------
    slide_or_path
        Slide path, an open slide, or an (H, W, 3) uint8 array.
    segmenter
        A :class:`~napari_histo.nuclei.base.Segmenter` or a registry name/path.
    outdir
        Output folder (``nuclei.parquet``, ``labels.zarr``, ``run.json``, ...).
    roi
        ``(x, y, w, h)`` box, polygon vertices or shapely geometry in level-0 px; nuclei are kept
        when their centroid is inside.
    options
        How to tile, compute and write (:class:`~napari_histo.engine.options.SegmentationOptions`;
        default options when None).
    **overrides
        Single options replacing those of ``options`` (e.g. ``tile_size=512``).
    scheduler
        ``None`` (local threads), a ``tcp://`` address or a ``distributed`` cluster object.
    cancel
        Set to stop after the current tile.
    params
        Extra provenance recorded in ``run.json`` (e.g. the command-line arguments).

    Yields
    ------
    ProgressEvent

    Returns
    -------
    RunResult (as the generator's ``StopIteration.value``).
    """
    opts = replace(options or SegmentationOptions(), **overrides)
    outdir = Path(outdir)
    with folder_lock(outdir):
        return (yield from _run_locked(slide_or_path, segmenter, outdir, roi, opts, scheduler, cancel, params))


def _run_locked(slide_or_path: Any, segmenter: Any, outdir: Path, roi: Any, opts: SegmentationOptions,
                scheduler: Any, cancel: threading.Event | None, params: dict[str, Any] | None
                ) -> Generator[ProgressEvent, None, RunResult]:
    """:func:`run_segmentation` while this process holds the output folder's lock."""
    from napari_histo.engine import outputs

    t_start = time.perf_counter()
    warnings: list[str] = []
    segmenter_spec = segmenter
    segmenter = resolve_segmenter(segmenter, opts.device, opts.model_mpp)
    resolved = segmenter
    slide, owned = open_source(slide_or_path, opts.backend)
    try:
        name = slide_name(slide_or_path, slide)
        stem = opts.stem or Path(name).stem
        run_path = outdir / outputs.RUN_NAME
        if run_path.exists() and not opts.resume and not opts.overwrite:
            raise HistoError(f"{outdir}: a finished run is already there (use overwrite)")
        for folder in (outdir, outdir / ".partial" / "tiles"):
            remove_part_files(folder)  # temporaries of a killed run's writes
        if opts.resume and run_path.exists():
            # run.json is written after every output: the run had finished, at most its
            # clean-up was interrupted
            remove_workdir(outdir / ".partial")
            return (yield from _already_complete(outdir, t_start))
        previous_files = _previous_outputs(run_path)
        if run_path.exists():  # starting over: from now on the folder holds no finished run
            run_path.unlink()
            crash_point("previous run.json removed")
        level0_mpp = slide_mpp(slide, opts.mpp)
        if level0_mpp is None:
            warnings.append(f"{name}: no mpp; processed at native resolution (areas in µm² are NaN)")
        presented = segmenter
        segmenter = resolved = at_resolution(segmenter, level0_mpp)
        # tile size and halo are in the model's px at its stated resolution: a model run on its
        # coarser network grid keeps the same physical tiles
        px_ratio = float(presented.mpp) / float(segmenter.mpp) if segmenter is not presented else 1.0
        tile_size = max(64, int(round(opts.tile_size * px_ratio)))
        halo = int(segmenter.halo_px if opts.halo_px is None else round(opts.halo_px * px_ratio))
        mask = (_tissue_mask(slide, warnings, opts.tissue_mask_file)
                if opts.tissue or opts.tissue_mask_file else None)
        _save_views(slide, mask, outdir, opts)
        plan = make_plan(slide, segmenter.mpp, halo, tile_size=tile_size, slide_mpp=level0_mpp,
                         roi=roi, tissue=mask)
        if opts.max_area_um2 and level0_mpp:
            plan = dataclasses.replace(plan, max_area_px=float(opts.max_area_um2) / level0_mpp**2)
        segmenter = _for_slide(segmenter, slide, plan)
        fp_record = _fingerprint_record(slide, segmenter, plan, name)
        journal = Journal(outdir / ".partial", fingerprint(fp_record), resume=opts.resume)
        try:
            pending = [t for t in plan.tiles if t.index not in journal.done]
            total = len(plan.tiles)
            done = total - len(pending)
            nuclei = sum(int(e.get("n", 0)) for e in journal.done.values())
            yield ProgressEvent(done, total, nuclei, None, time.perf_counter() - t_start, "plan")
            stats: dict[str, Any] = {"resumed_tiles": done}
            timings: dict[str, float] = collections.defaultdict(float)
            if scheduler is not None:
                from napari_histo.engine.distributed import distributed_results

                # a segmenter settled for this slide travels as an object, not as its registry name
                model_spec = _model_spec(segmenter_spec if segmenter is resolved else segmenter, segmenter, opts.device,
                                         opts.model_mpp, level0_mpp)
                results = distributed_results(scheduler, slide, plan, pending, model_spec,
                                              max_inflight=max(2 * opts.workers, 4), stats=stats)
            else:
                workers = opts.workers
                if _runs_on_cpu(segmenter):
                    torch_threads, workers = thread_budget(opts.threads, opts.workers)
                    if torch_threads is not None:
                        _torch_threads(torch_threads)
                    stats.update(torch_threads=_current_torch_threads(), post_workers=workers)
                processes = post_process_count(opts.post_processes, getattr(segmenter, "device", None), len(pending))
                if processes:
                    stats.update(post_processes=processes)
                results = local_results(slide, plan, pending, segmenter, batch_size=opts.batch_size,
                                        workers=workers, readers=opts.readers, prefetch=opts.prefetch,
                                        stats=stats, timings=timings, processes=processes)
            t_tiles = time.perf_counter()
            n_new = 0
            oversize = sum(int(e.get("oversize", 0)) for e in journal.done.values())
            too_large = sum(int(e.get("too_large", 0)) for e in journal.done.values())
            typed_mass: list[float] = []
            try:
                for result in results:
                    journal.record(result)
                    done += 1
                    n_new += 1
                    nuclei += result.n
                    oversize += result.n_oversize
                    too_large += result.n_too_large
                    typed_mass.extend(_typed_mass(result.table))
                    elapsed = time.perf_counter() - t_start
                    rate = (time.perf_counter() - t_tiles) / n_new
                    yield ProgressEvent(done, total, nuclei, rate * (total - done), elapsed, "tiles",
                                        result.index, result)
                    if cancel is not None and cancel.is_set():
                        break
            finally:
                close = getattr(results, "close", None)
                if close is not None:
                    close()
            timings["tiles_s"] = time.perf_counter() - t_tiles
            if oversize:
                model_mpp = getattr(segmenter, "mpp", None)
                halo_um = halo * model_mpp if model_mpp else None
                size = f"{halo} px" + (f" = {halo_um:.0f} µm" if halo_um is not None else "")
                if halo_um is not None and halo_um >= LARGEST_NUCLEUS_UM:
                    size += ", wider than nuclei other than giant cells"
                warnings.append(
                    f"{oversize} objects were wider than the overlap between tiles ({size}) and were dropped "
                    "where they crossed a tile border; if they are nuclei, widen the overlap (--halo)"
                )
            stats["dropped_too_large"] = too_large
            if typed_mass:
                confidence = float(np.median(typed_mass))
                stats["median_type_confidence"] = round(confidence, 4)
                if confidence < UNSURE_TYPING:
                    warnings.append(
                        f"the type head is unsure on this image: for the median nucleus it gives {confidence:.0%} "
                        "probability to any type (the rest to background), so the types are unreliable here "
                        "(an image unlike the model's training data); check them before counting them"
                    )
            stats["dropped_at_tile_edge"] = oversize
            if too_large:
                warnings.append(
                    f"{too_large} objects larger than {opts.max_area_um2:g} µm² (debris, folds or clumps outlined "
                    "as one nucleus) were dropped; raise --max-area (0: no bound) to keep them"
                )
            if done < total:
                yield ProgressEvent(done, total, nuclei, None, time.perf_counter() - t_start, "cancelled")
                return RunResult(outdir, False, nuclei, total, plan, dict(timings), stats, warnings)

            # ---- assemble: each output appears under its final name only when complete
            yield ProgressEvent(done, total, nuclei, None, time.perf_counter() - t_start, "assemble")
            t_asm = time.perf_counter()
            # run.json is written last and marks a complete folder
            run_path.unlink(missing_ok=True)
            attrs = {
                "mpp": level0_mpp,
                "type_info": _segmenter_info(segmenter)["type_info"],
                "segmenter": getattr(segmenter, "name", None),
                "slide": name,
            }
            offsets = outputs.id_offsets(plan, journal)
            n_nuclei = outputs.write_table(plan, journal, offsets, outdir / outputs.TABLE_NAME, attrs)
            crash_point("nuclei.parquet")
            outputs.write_labels(plan, journal, offsets, outdir / outputs.LABELS_NAME)
            crash_point("labels.zarr")
            files = [outputs.TABLE_NAME, outputs.LABELS_NAME]
            mag = getattr(slide, "objective_power", None)
            try:
                files += outputs.write_exchange_formats(outdir / outputs.TABLE_NAME, outdir, stem,
                                                        opts.geojson, opts.hovernet_json, mag)
            except ImportError as exc:
                warnings.append(f"exchange formats not written: {exc}")
            crash_point("exchange formats")
            for stale in sorted(set(previous_files) - set(files)):  # a previous run's, not rewritten
                (outdir / stale).unlink(missing_ok=True)
                crash_point("stale output removed")
            timings["assemble_s"] = time.perf_counter() - t_asm
            timings["total_s"] = time.perf_counter() - t_start
            _write_provenance(outdir, opts, name=name, segmenter=segmenter, plan=plan, params=params,
                              timings=timings, stats=stats, warnings=warnings, n_nuclei=n_nuclei,
                              files=files, scheduler=scheduler, fingerprint=journal.fingerprint)
            crash_point("run.json")
            journal.remove()
            yield ProgressEvent(done, total, n_nuclei, 0.0, time.perf_counter() - t_start, "done")
            return RunResult(outdir, True, n_nuclei, total, plan, dict(timings), stats, warnings)
        finally:
            journal.close()
    finally:
        if owned:
            slide.close()


def _already_complete(outdir: Path, t_start: float) -> Generator[ProgressEvent, None, RunResult]:
    """A resumed run that had already finished: report it without redoing anything."""
    record = json.loads((outdir / "run.json").read_text(encoding="utf-8"))
    plan_d = dict(record.get("plan", {}))
    for key in ("n_tiles", "tile_indices_hash"):
        plan_d.pop(key, None)
    plan = TilePlan(**plan_d, tiles=())
    n_tiles = int(record.get("tiles", {}).get("processed", 0))
    n_nuclei = int(record.get("n_nuclei", 0))
    yield ProgressEvent(n_tiles, n_tiles, n_nuclei, 0.0, time.perf_counter() - t_start, "done")
    return RunResult(outdir, True, n_nuclei, n_tiles, plan, {"total_s": 0.0}, {"already_complete": True},
                     ["the run had already finished; nothing was redone"])


#: Outputs a run may leave beside the table and labels, removed by a later run that does not
#: write them again (a GeoJSON from ``--geojson`` must not outlive a re-run without it).
_EXCHANGE_SUFFIXES = (".geojson", ".json")


def _previous_outputs(run_path: Path) -> list[str]:
    """Exchange files a finished run in this folder listed in its ``run.json`` (plain file names
    only: a name with a folder in it is ignored, the record is data, never a path to act on)."""
    try:
        record = json.loads(run_path.read_text(encoding="utf-8"))
        files = record.get("files", []) if isinstance(record, dict) else []
    except (OSError, ValueError):
        return []
    return [f for f in files if isinstance(f, str) and f == Path(f).name and f not in ("", ".", "..")
            and f != "run.json" and f.endswith(_EXCHANGE_SUFFIXES)]


def remove_part_files(outdir: Path) -> None:
    """Delete the temporaries a killed write left in ``outdir`` (``.<name>.<random>.part*``, the
    names :func:`napari_histo.utils.atomic_write` uses); only the lock holder calls this."""
    for path in outdir.glob(".*.part*"):
        if path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _model_spec(spec: Any, segmenter: Any, device: str | None, model_mpp: float | None = None,
                slide_mpp: float | None = None) -> Any:
    """What distributed tasks carry to rebuild the segmenter: a registry spec (with the slide's
    µm/px, for :func:`~napari_histo.engine.compute.at_resolution`) or the object."""
    if isinstance(spec, str | Path):
        return ("registry", str(spec), device, model_mpp, slide_mpp)
    return ("object", segmenter)


def _write_provenance(outdir: Path, opts: SegmentationOptions, *, name: str, segmenter: Any,
                      plan: TilePlan, params: dict[str, Any] | None, timings: dict[str, float],
                      stats: dict[str, Any], warnings: list[str], n_nuclei: int, files: list[str],
                      scheduler: Any, fingerprint: str) -> None:
    """``run.json`` of a finished run: the options it ran with, the model, plan and timings."""
    parameters = {"batch_size": opts.batch_size, "workers": opts.workers,
                  "scheduler": None if scheduler is None else str(scheduler), **(params or {})}
    write_run_json(
        outdir, "segment", parameters,
        options=opts.to_dict(),
        fingerprint=fingerprint,
        slide=name,
        model=_segmenter_info(segmenter),
        plan=plan.describe(),
        tiles={"processed": len(plan.tiles), "grid": [plan.n_rows, plan.n_cols]},
        n_nuclei=n_nuclei,
        timings=dict(timings),
        stats=stats,
        warnings=warnings,
        files=files,
    )


# ---------------------------------------------------------------- local pipeline

_DONE = object()


def local_results(
    slide: Any,
    plan: TilePlan,
    tiles: list[Tile],
    segmenter: Any,
    *,
    batch_size: int = 4,
    workers: int = 2,
    readers: int = 1,
    prefetch: int | None = None,
    stats: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
    processes: int = 0,
) -> Iterator[TileResult]:
    """Read -> batched predict -> pooled post-process, overlapped with bounded queues.

    Post-processing runs in ``workers`` threads, or with ``processes`` > 0 in that many worker
    processes (started with "spawn"; each gets the segmenter without its network once).
    Yields one :class:`TileResult` per tile in plan order. Closing the iterator stops the
    readers and cancels queued post-processing.
    """
    stats = {} if stats is None else stats
    timings = collections.defaultdict(float) if timings is None else timings
    batch_size, workers, readers = max(1, int(batch_size)), max(1, int(workers)), max(1, int(readers))
    processes = max(0, int(processes))
    bound = int(prefetch) if prefetch else 2 * batch_size
    max_inflight = 2 * (processes or workers)
    stats.update(read_queue_bound=bound, inflight_bound=max_inflight + batch_size, max_read_queue=0,
                 max_inflight=0)
    roi = plan.roi()
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for tile in tiles:
        todo.put(tile)
    read_q: queue.Queue = queue.Queue(maxsize=bound)
    stop = threading.Event()
    lock = threading.Lock()

    def reader() -> None:
        while not stop.is_set():
            try:
                tile = todo.get_nowait()
            except queue.Empty:
                break
            t0 = time.perf_counter()
            try:
                item = (tile, read_window(slide, tile, plan))
            except BaseException as exc:  # reported to the consumer, which re-raises
                item = (tile, exc)
            with lock:
                timings["read_s"] += time.perf_counter() - t0
            while not stop.is_set():
                try:
                    read_q.put(item, timeout=0.1)
                    with lock:
                        stats["max_read_queue"] = max(stats["max_read_queue"], read_q.qsize())
                    break
                except queue.Full:
                    continue
        _put_until_stopped(read_q, _DONE, stop)

    def post(raw, rgb, tile) -> TileResult:
        t0 = time.perf_counter()
        result = process_tile(segmenter, raw, rgb, tile, plan, roi)
        with lock:
            timings["postprocess_s"] += time.perf_counter() - t0
        return result

    threads = [threading.Thread(target=reader, name=f"napari-histo-reader-{i}", daemon=True)
               for i in range(min(readers, max(1, len(tiles))))]
    for th in threads:
        th.start()
    if processes:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from napari_histo.engine.compute import (
            init_post_worker,
            post_in_worker,
            post_worker_payload,
        )

        pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_post_worker, initargs=(post_worker_payload(segmenter, plan),))

        def submit(raw, rgb, tile):
            return pool.submit(post_in_worker, raw, rgb, tile)

        def collect(fut) -> TileResult:
            result, seconds = fut.result()
            timings["postprocess_s"] += seconds
            return result
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="napari-histo-post")

        def submit(raw, rgb, tile):
            return pool.submit(post, raw, rgb, tile)

        def collect(fut) -> TileResult:
            return fut.result()
    inflight: collections.deque = collections.deque()
    finished_readers = 0
    try:
        while finished_readers < len(threads):
            batch: list[tuple[Tile, np.ndarray]] = []
            while len(batch) < batch_size and finished_readers < len(threads):
                try:
                    item = read_q.get(timeout=0.05 if batch else None)
                except queue.Empty:
                    break  # predict a partial batch rather than idle the device
                if item is _DONE:
                    finished_readers += 1
                    continue
                if isinstance(item[1], BaseException):
                    raise item[1]
                batch.append(item)
            if not batch:
                continue
            t0 = time.perf_counter()
            raws = predict_batch(segmenter, [rgb for _, rgb in batch])
            timings["predict_s"] += time.perf_counter() - t0
            for (tile, rgb), raw in zip(batch, raws):
                inflight.append(submit(raw, rgb, tile))
            stats["max_inflight"] = max(stats["max_inflight"], len(inflight))
            while len(inflight) > max_inflight or (inflight and inflight[0].done()):
                yield collect(inflight.popleft())
        while inflight:
            yield collect(inflight.popleft())
    finally:
        stop.set()
        for fut in inflight:
            fut.cancel()
        with contextlib.suppress(queue.Empty):
            while True:
                read_q.get_nowait()
        pool.shutdown(wait=True, cancel_futures=True)
        for th in threads:
            th.join(timeout=30)


def _put_until_stopped(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def plan_only(slide: Any, segmenter: Any, **kwargs: Any) -> TilePlan:
    """The plan a run would use (for previews and tests)."""
    return make_plan(slide, segmenter.mpp, segmenter.halo_px, **kwargs)


__all__ = ["ProgressEvent", "RunResult", "run_segmentation", "local_results", "resolve_segmenter",
           "plan_only"]
