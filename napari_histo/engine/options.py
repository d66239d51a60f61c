"""The options of a whole-slide segmentation run, as one object.

The command line (``napari-histo segment`` flags) and the Nuclei panel (plugin settings and
panel controls) both build a :class:`SegmentationOptions` and hand it to
:func:`napari_histo.engine.run.run_segmentation`, so the same slide, model and options give the
same nuclei from either front end; ``run.json`` records the options the run used.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_histo.jsonconfig import JsonConfig

__all__ = ["SegmentationOptions"]


@dataclass
class SegmentationOptions(JsonConfig):
    """How a run reads, tiles, computes and writes.

    Attributes
    ----------
    mpp
        Level-0 µm/px overriding (or supplying) the slide's; None uses the slide's metadata.
    tile_size, halo_px
        Core side and halo in the model's px at its stated resolution (halo defaults to the
        segmenter's ``halo_px``). A model that runs on its coarser network grid for a slide no
        finer than that grid keeps the same physical tiles and halo.
    batch_size, workers, readers, prefetch
        Tiles per ``predict`` call, post-processing threads, reader threads, and the bound of
        the read-ahead queue (default ``2 * batch_size``).
    tissue
        Skip tiles without tissue (low-resolution tissue mask).
    resume
        Continue an interrupted run from its journal.
    overwrite
        Replace a finished run's outputs (else refuse).
    geojson, hovernet_json
        Also write ``<stem>.geojson`` / ``<stem>.json``.
    device
        torch device for neural models (None: CUDA when present, else CPU).
    backend
        Slide reader backend (None: chosen from the file).
    stem
        Name of the exchange files (default: the slide's file name without extension).
    threads
        CPU threads the run may use (None: torch's default for the network and ``workers``
        post-processing threads). With a number, the network uses that many threads and
        post-processing at most that many workers (see :func:`thread_budget`).
    post_processes
        Post-processing in this many worker processes instead of threads (every core busy while a
        GPU runs the network; the watershed and measurement hold Python's lock part of the time).
        None: ``available_cores() - 1`` processes when the network runs on CUDA and the run has
        enough tiles to pay for starting them (:func:`post_process_count`), threads otherwise;
        0: threads.
    tissue_mask_file
        A tissue mask image (non-zero = tissue, any size with the slide's aspect ratio) used instead
        of the detected one, as HoVer-Net's ``mask_dir``; tiles outside it are skipped.
    save_mask, save_thumb
        Also write the tissue mask used (``mask.png``) and a slide thumbnail (``thumb.png``, at most
        1024 px) into the result folder, as HoVer-Net's WSI mode does.
    max_area_um2
        Largest plausible nucleus in µm²: larger objects (keratin, debris, folds outlined as one
        "nucleus") are dropped and counted in ``run.json``. Default 200 µm², a nucleus about
        16 µm across; large pleomorphic tumour nuclei stay below it. None or 0: no bound.
    model_mpp
        µm/px an official HoVer-Net checkpoint file was trained at, i.e. the resolution the slide
        is processed at (HoVer-Net's ``--proc_mag``: 0.25 for 40×, 0.5 for 20×). None: what the
        model states (a model folder's config), 0.25 for a bare checkpoint.
    """

    mpp: float | None = None
    tile_size: int = 1024
    halo_px: int | None = None
    batch_size: int = 4
    workers: int = 2
    readers: int = 1
    prefetch: int | None = None
    tissue: bool = True
    resume: bool = False
    overwrite: bool = True
    geojson: bool = False
    hovernet_json: bool = False
    device: str | None = None
    backend: str | None = None
    stem: str | None = None
    max_area_um2: float | None = 200.0
    tissue_mask_file: str | None = None
    threads: int | None = None
    save_mask: bool = False
    save_thumb: bool = False
    model_mpp: float | None = None
    post_processes: int | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: Fewest tiles for which the automatic choice starts worker processes (each costs seconds to start).
MIN_TILES_FOR_PROCESSES = 16


def post_process_count(requested: int | None, device: str | None, n_tiles: int | None = None) -> int:
    """Worker processes for post-processing: ``requested`` when given (0: threads). Otherwise,
    when the network runs on CUDA and the run has at least :data:`MIN_TILES_FOR_PROCESSES` tiles,
    one per core but one (the feeding thread keeps a core), at most one per 4 tiles; else 0."""
    if requested is not None:
        return max(0, int(requested))
    if device is None or not str(device).startswith("cuda"):
        return 0
    if n_tiles is not None and n_tiles < MIN_TILES_FOR_PROCESSES:
        return 0
    cap = available_cores() - 1 if n_tiles is None else min(available_cores() - 1, n_tiles // 4)
    return max(1, cap)


def thread_budget(threads: int | None, workers: int) -> tuple[int | None, int]:
    """(torch threads or None for torch's default, post-processing workers) for a CPU run.

    Measured on the sample slide with two cores (``docs/BENCHMARKS.md``): splitting the cores
    between the network (1 thread) and post-processing (1 worker) took 37 s against 23 s with the
    network on both cores and two post-processing workers, for the same CPU time, so the default
    leaves torch its threads; ``threads`` caps both.
    """
    if not threads:
        return None, max(1, int(workers))
    total = max(1, int(threads))
    return total, max(1, min(int(workers), total))
