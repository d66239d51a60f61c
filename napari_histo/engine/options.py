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
        Core side and halo in working px (halo defaults to the segmenter's ``halo_px``).
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
        CPU cores the run may use (None: all the process may run on). On the CPU the network gets
        half of them (at least one) and post-processing the rest, instead of torch taking every
        core while the post-processing threads compete for them (see :func:`thread_budget`).
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


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_budget(threads: int | None, workers: int) -> tuple[int, int]:
    """(torch threads, post-processing workers) for a CPU run on ``threads`` cores (None: all).

    The network takes half the cores (at least one) and post-processing the others (at least one,
    at most ``workers``): network and post-processing of different tiles overlap, so giving torch
    every core only makes them compete (2 torch threads on 2 cores cost 1.8x the CPU of 1 for a
    1.2x shorter network step).
    """
    total = max(1, int(threads) if threads else available_cores())
    torch_threads = max(1, total // 2)
    post = max(1, min(int(workers), total - torch_threads)) if total > 1 else 1
    return torch_threads, post
