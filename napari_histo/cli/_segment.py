"""``napari-histo segment``: whole-slide (or whole-image) nucleus segmentation.

Writes ``OUTDIR/<stem>/`` per input: ``nuclei.parquet``, ``labels.zarr``, ``run.json`` and, by
default, ``<stem>.geojson`` (QuPath) and ``<stem>.json`` (HoVer-Net).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from napari_histo.cli._common import ROI_HELP

# Lazy imports: pandas, shapely are imported inside the functions that use them (directly or
# through the modules named there): napari-histo --help and napari's plugin discovery import this
# module.


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment nuclei in slides or images (tiled, resumable, optionally distributed)",
        description=(
            "Segment every nucleus of whole-slide images or plain images (png/jpg/tif) into "
            "OUTDIR/<stem>/: nuclei.parquet, labels.zarr (multiscale labels), run.json, and "
            "QuPath GeoJSON / HoVer-Net JSON. Input 'sample' (or --sample) is the shipped slide."
        ),
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="slide or image files, or folders of them ('sample' = shipped slide)")
    parser.add_argument("-o", "--outdir", required=True, type=Path, help="output folder")
    parser.add_argument("--sample", action="store_true", help="also run on the shipped CMU-1-Small-Region slide")
    parser.add_argument("--model", default="default",
                        help="'classical', 'default' (shipped model; classical until weights ship) or a weights path")
    parser.add_argument("--mpp", type=_mpp_value, default=None, metavar="MPP|predict|objective",
                        help="level-0 µm/px, supplies or overrides the file's (plain images usually need it); "
                             "'predict': for a file without one, the predicted magnification's; 'objective': "
                             "the one standard objective (5/10/20/40x) inside its 90 %% interval, for a "
                             "converted scan. A file's own pixel size is never replaced by a prediction")
    parser.add_argument("--model-mpp", type=float, default=None, metavar="MPP",
                        help="µm/px a HoVer-Net checkpoint file was trained at: the slide is processed at this "
                             "resolution (HoVer-Net's proc_mag; 0.25 = 40x, 0.5 = 20x; default 0.25; model folders "
                             "state their own)")
    parser.add_argument("--roi", default=None, metavar="X,Y,W,H|FILE",
                        help="nuclei with centroid inside this region: " + ROI_HELP)
    parser.add_argument("--roi-class", default=None, help="with --roi FILE: only the file's regions of this class")
    parser.add_argument("--device", default=None, help="torch device (default: cuda > mps > cpu)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per inference batch")
    parser.add_argument("--workers", type=int, default=2, help="post-processing threads (at most)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the network, and at most as many post-processing workers "
                             "(default: torch's own choice); recorded in run.json")
    parser.add_argument("--post-processes", type=int, default=None, metavar="N",
                        help="post-process tiles in N worker processes (default: one per core but one when the "
                        "network runs on CUDA, threads otherwise; 0: threads)")
    parser.add_argument("--readers", type=int, default=1, help="tile reader threads")
    parser.add_argument("--stains", choices=["auto", "he", "hdab"], default="auto",
                        help="classical detector: H&E or H-DAB (IHC) deconvolution; 'auto' decides once per slide "
                        "(H-DAB when DAB shows and eosin does not). Give 'hdab' for IHC with few positive cells")
    parser.add_argument("--tile-size", type=int, default=1024, help="tile core side in model px")
    parser.add_argument("--halo", type=int, default=None, help="tile halo in model px (default: the model's)")
    parser.add_argument("--mask", default=None, metavar="FILE|DIR",
                        help="tissue mask image (non-zero = tissue, the slide's aspect ratio) instead of the detected "
                             "one; a folder holds one <stem>.png per input (HoVer-Net's mask_dir)")
    parser.add_argument("--save-mask", action="store_true", help="also write the tissue mask used (mask.png)")
    parser.add_argument("--save-thumb", action="store_true", help="also write a slide thumbnail (thumb.png)")
    parser.add_argument("--max-area", type=float, default=200.0, metavar="UM2",
                        help="drop objects larger than this many µm² (debris, folds), counted in run.json; "
                             "0 keeps every object (default: %(default)g)")
    parser.add_argument("--no-tissue-mask", dest="tissue", action="store_false",
                        help="process every tile, not only those with tissue")
    parser.add_argument("--scheduler", default=None,
                        help="'local' (threads, default) or a dask.distributed address tcp://host:8786 "
                             "(default from NAPARI_HISTO_SCHEDULER or DASK_SCHEDULER_ADDRESS)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--backend", default=None, help="slide reader backend (default: automatic)")
    parser.add_argument("--geojson", action=argparse.BooleanOptionalAction, default=True,
                        help="write <stem>.geojson (QuPath detections)")
    parser.add_argument("--hovernet-json", action=argparse.BooleanOptionalAction, default=True,
                        help="write <stem>.json (HoVer-Net JSON)")
    parser.set_defaults(func=handler)
    return parser


def _mpp_value(value: str) -> float | str:
    from napari_histo.models.magnification import MPP_CHOICES

    if value in MPP_CHOICES:
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected µm/px or one of {MPP_CHOICES}, got {value!r}") from None


def _level0_mpp(path: Path, how: float | str | None, backend: str | None, stem: str) -> tuple[float | None, dict]:
    """(mpp passed to the run, provenance) for ``--mpp``: a number, or predicted for files without one.

    A file without a pixel size and no ``--mpp`` is refused: a nucleus model applied at the
    wrong scale gives wrong nuclei without any sign of it.
    """
    from napari_histo.models.magnification import pixel_size_for
    from napari_histo.slide import open_slide
    from napari_histo.utils import HistoError, InputFileError

    if isinstance(how, float):
        return how, {"mpp_source": "given"}
    if how is None:
        from napari_histo.engine.source import slide_mpp

        with open_slide(path, backend) as slide:
            if slide_mpp(slide) is None:
                raise InputFileError(
                    path, "the file does not state its pixel size, and nuclei found at a guessed scale are wrong; "
                          "give it with --mpp VALUE (µm/px, e.g. 0.25 for a 40x scan), or let napari-histo "
                          "predict it with --mpp predict (the predicted value) or --mpp objective (the "
                          "nearest scanner objective)")
        return None, {}

    with open_slide(path, backend) as slide:
        try:
            mpp, record = pixel_size_for(slide, how)
        except InputFileError:
            raise
        except HistoError as exc:
            raise InputFileError(path, str(exc)) from exc
    if mpp is None:
        print(f"{stem}: the file states its pixel size; it is used (--mpp {how} predicts only without one)")
    else:
        interval = record["interval"]
        span = (f", {100 * record['interval_level']:.0f} % interval {interval[0]:.1f}–{interval[1]:.1f}x"
                if interval else "")
        print(f"{stem}: no pixel size in the file; predicted {record['predicted_magnification']:.1f}x{span}; "
              f"using {mpp:.4g} µm/px ({record['mpp_source']})")
        if record["note"]:
            print(f"{stem}: warning: {record['note']}", file=sys.stderr)
    return mpp, record


def _mask_for(mask: str | None, stem: str) -> str | None:
    """The tissue mask of one input: ``--mask FILE``, or ``<stem>.png`` in ``--mask DIR``."""
    if not mask:
        return None
    from napari_histo.utils import InputFileError, check_input_file

    path = Path(mask)
    if path.is_dir():
        candidates = [path / f"{stem}{ext}" for ext in (".png", ".PNG", ".tif", ".tiff", ".jpg")]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise InputFileError(path, f"holds no tissue mask for {stem} (looked for {stem}.png, .tif, .jpg)")
        return str(found)
    check_input_file(path, "tissue mask image")
    return str(path)


def _scheduler(value: str | None) -> str | None:
    """CLI > NAPARI_HISTO_SCHEDULER > DASK_SCHEDULER_ADDRESS > local threads."""
    for candidate in (value, os.environ.get("NAPARI_HISTO_SCHEDULER"), os.environ.get("DASK_SCHEDULER_ADDRESS")):
        if candidate:
            return None if candidate.strip().lower() in ("local", "threads", "none") else candidate.strip()
    return None


def _roi(value: str | None, class_name: str | None = None):
    """None, an (x, y, w, h) box, or the union of an annotation file's polygon regions."""
    from napari_histo.cli._common import parse_roi

    roi = parse_roi(value, class_name)
    if isinstance(roi, list):
        import shapely

        return shapely.union_all([r.geometry for r in roi])
    return roi


def _inputs(args) -> list[Path]:
    from napari_histo.utils import HistoError, check_input_file, sample_slide_path

    paths = []
    for given in args.inputs:
        path = sample_slide_path() if str(given) == "sample" else Path(given)
        if path.is_dir():  # a folder: every slide or image inside it (not its sub-folders)
            from napari_histo.slide._describe import SUPPORTED_EXTENSIONS

            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
            if not found:
                raise HistoError(f"{path}: folder holds no slide or image file "
                                 f"({', '.join(sorted(SUPPORTED_EXTENSIONS))})")
            paths.extend(found)
        else:
            paths.append(path)
    if args.sample:
        paths.append(sample_slide_path())
    if not paths:
        raise HistoError("no input: give slide or image files, or --sample")
    for path in paths:
        check_input_file(path, "slide or image file")
    stems = [_stem(p) for p in paths]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise HistoError(f"inputs share output names {dupes}; run them into different output folders")
    return paths


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def handler(args) -> int:
    from napari_histo.cli._common import drain_with_progress
    from napari_histo.engine.options import SegmentationOptions
    from napari_histo.engine.run import resolve_segmenter, run_segmentation
    from napari_histo.utils import HistoError

    paths = _inputs(args)
    roi = _roi(args.roi, args.roi_class)
    scheduler = _scheduler(args.scheduler)
    if args.stains != "auto":
        if args.model != "classical":
            raise HistoError("--stains applies to the classical detector (--model classical)")
        from napari_histo.models import get_segmenter

        segmenter = get_segmenter("classical", stains=args.stains)
        model = segmenter  # carried as an object to dask workers too
    else:
        segmenter = resolve_segmenter(args.model, args.device, args.model_mpp)  # fail early, before any slide work
        model = args.model if scheduler is not None else segmenter
    params = {
        "model": args.model, "model_mpp": args.model_mpp, "stains": args.stains, "mpp": args.mpp, "device": args.device,
        "roi": args.roi if args.roi and Path(args.roi).exists() else roi, "roi_class": args.roi_class,
        "tile_size": args.tile_size, "halo": args.halo, "readers": args.readers,
        "tissue_mask": args.tissue, "resume": args.resume, "backend": args.backend,
    }
    for path in paths:
        stem = _stem(path)
        folder = args.outdir / stem
        mpp, mpp_record = _level0_mpp(path, args.mpp, args.backend, stem)
        options = SegmentationOptions(
            mpp=mpp, tile_size=args.tile_size, halo_px=args.halo, batch_size=args.batch_size,
            workers=args.workers, readers=args.readers, tissue=args.tissue, resume=args.resume,
            geojson=args.geojson, hovernet_json=args.hovernet_json, device=args.device,
            backend=args.backend, stem=stem, max_area_um2=args.max_area or None,
            tissue_mask_file=_mask_for(args.mask, stem), save_mask=args.save_mask, save_thumb=args.save_thumb,
            threads=args.threads, model_mpp=args.model_mpp, post_processes=args.post_processes,
        )
        events = run_segmentation(
            path, model, folder, roi, options, scheduler=scheduler,
            params={**params, "input": str(path), **mpp_record, "level0_mpp": mpp},
        )
        returned: list = []
        for _ in drain_with_progress(_with_result(events, returned.append), None, stem):
            pass
        result = returned[0] if returned else None
        if result is None or not result.completed:
            print(f"{stem}: interrupted; rerun with --resume to continue", file=sys.stderr)
            return 130
        for warning in result.warnings:
            print(f"{stem}: warning: {warning}", file=sys.stderr)
        print(f"{stem}: {result.n_nuclei} nuclei in {result.n_tiles} tiles, "
              f"{result.timings.get('total_s', 0.0):.1f} s -> {folder}")
    return 0


def _with_result(gen, on_return):
    """Pass a generator's events through and hand its return value to ``on_return``."""
    value = yield from gen
    on_return(value)
