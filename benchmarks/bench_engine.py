"""Whole-slide engine benchmark: tissue Mpx/s, nuclei/s, peak RSS, overhead vs its parts.

Usage (results go to docs/benchmarks/engine.md by hand)::

    nice -n 10 .venv/bin/python benchmarks/bench_engine.py --make-slides /tmp/napari_histo_bench
    nice -n 10 .venv/bin/python benchmarks/bench_engine.py --run cmu-classical synth10k-threshold ...

Each configuration runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own.
Configurations:

* ``cmu-classical``: the shipped CMU-1-Small-Region slide, classical detector, whole slide.
* ``synthNk-threshold``: synthetic pyramidal JPEG TIFF (N x 1000 px square, 0.25 µm/px, planted
  nuclei on an elliptical tissue region), a cheap threshold segmenter (connected dark pixels +
  the shared vectorised measurement) so the engine itself dominates; optional ROI.
* ``synthNk-classical``: the classical detector on a ROI of the synthetic slide.
* ``...-parts``: the same tiles read, predicted and post-processed one after another with no
  engine (no queues, threads, journal or assembly): the sum of the parts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TILE = 512


class ThresholdSegmenter:
    """Connected dark pixels (grey < 120), measured with the shared measurement code."""

    name = "threshold"
    halo_px = 32

    def __init__(self, mpp: float = 0.25):
        from napari_histo.schema.types import NUCLEUS_ONLY

        self.mpp = mpp
        self.type_info = NUCLEUS_ONLY

    def predict(self, rgb):
        return rgb.min(axis=-1) < 120

    def postprocess(self, raw, rgb):
        from scipy import ndimage as ndi

        from napari_histo.nuclei.measure import measure_instances

        labels, _ = ndi.label(raw)
        labels = labels.astype(np.int32)
        return labels, measure_instances(labels, mpp=self.mpp, type_info=self.type_info,
                                         shape_features=False)

    def segment(self, rgb):
        return self.postprocess(self.predict(rgb), rgb)


# ------------------------------------------------------------------ synthetic slides

def _variants(n: int, rng) -> list[np.ndarray]:
    """Tissue tiles: pink stroma with purple nuclei (discs, r 4-10 px at 0.25 µm/px)."""
    out = []
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    for _ in range(n):
        tile = np.empty((TILE, TILE, 3), np.uint8)
        tile[...] = (232, 170, 200)
        tile += rng.integers(0, 20, tile.shape, dtype=np.uint8)
        for _ in range(rng.integers(80, 140)):
            cy, cx, r = rng.uniform(10, TILE - 10), rng.uniform(10, TILE - 10), rng.uniform(4, 10)
            y0, y1, x0, x1 = int(cy - r - 1), int(cy + r + 2), int(cx - r - 1), int(cx + r + 2)
            disc = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
            tile[y0:y1, x0:x1][disc] = (70 + rng.integers(0, 30), 40, 110 + rng.integers(0, 30))
        out.append(tile)
    return out


def make_slide(path: Path, size: int, seed: int = 0) -> Path:
    """A tiled, pyramidal (SubIFD), JPEG-compressed RGB TIFF of ``size`` x ``size`` px."""
    import tifffile

    rng = np.random.default_rng(seed)
    variants = _variants(8, rng)
    white = np.full((TILE, TILE, 3), 245, np.uint8)
    n = -(-size // TILE)
    levels = []
    s = size
    while s > 2 * TILE:
        levels.append(s)
        s = -(-s // 2)
    levels.append(s)

    def in_tissue(row: int, col: int, nt: int) -> bool:
        cy, cx = (row + 0.5) / nt - 0.5, (col + 0.5) / nt - 0.5
        return (cy / 0.42) ** 2 + (cx / 0.47) ** 2 <= 1.0

    def tiles(level: int):
        factor = 2**level
        side = levels[level]
        nt = -(-side // TILE)
        for row in range(nt):
            for col in range(nt):
                # a coarse tile summarises factor x factor level-0 tiles by striding one variant
                r0, c0 = row * factor, col * factor
                if in_tissue(min(r0 + factor // 2, n - 1), min(c0 + factor // 2, n - 1), n):
                    v = variants[(row * 7 + col * 3 + level) % len(variants)]
                    yield v if factor == 1 else _tile_down(v, factor)
                else:
                    yield white

    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        opts = dict(tile=(TILE, TILE), compression="jpeg", photometric="rgb", dtype=np.uint8)
        tif.write(tiles(0), shape=(size, size, 3), subifds=len(levels) - 1,
                  resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER", **opts)
        for level in range(1, len(levels)):
            tif.write(tiles(level), shape=(levels[level], levels[level], 3), subfiletype=1, **opts)
    return path


def _tile_down(v: np.ndarray, factor: int) -> np.ndarray:
    small = v[::factor, ::factor] if factor <= TILE else v[:1, :1]
    reps = -(-TILE // small.shape[0])
    return np.ascontiguousarray(np.tile(small, (reps, reps, 1))[:TILE, :TILE])


# ------------------------------------------------------------------ one configuration

CONFIGS = {
    "cmu-classical": dict(slide="cmu", model="classical", roi=None),
    "synth10k-threshold": dict(slide="synth10k", model="threshold", roi=None),
    "synth40k-threshold": dict(slide="synth40k", model="threshold", roi=None),
    "synth40k-threshold-roi": dict(slide="synth40k", model="threshold", roi=(15000, 15000, 10000, 10000)),
    "synth10k-classical-roi": dict(slide="synth10k", model="classical", roi=(4000, 4000, 2000, 2000)),
    "synth40k-classical-roi": dict(slide="synth40k", model="classical", roi=(19000, 19000, 2000, 2000)),
}


def _slide_path(name: str, root: Path) -> Path:
    if name == "cmu":
        shared = REPO.parent / "shared" / "data" / "wsi" / "cmu-1-small-region.svs"
        if shared.exists():
            return shared
        from napari_histo.utils import sample_slide_path

        return sample_slide_path()
    return root / f"{name}.tif"


def _model(name: str):
    if name == "threshold":
        return ThresholdSegmenter()
    from napari_histo.models import get_segmenter

    return get_segmenter(name)


def _tissue_mpx(plan, mask) -> float:
    """Level-0 Mpx of tissue inside the processed cores (mask resolution)."""
    if mask is None:
        return sum((t.core[2] - t.core[0]) * (t.core[3] - t.core[1]) for t in plan.tiles) / 1e6
    m = np.asarray(mask.mask, bool)
    ds = float(mask.downsample)
    total = 0
    for t in plan.tiles:
        x0, y0, x1, y1 = (int(v / ds) for v in t.core)
        total += m[y0:y1, x0:x1].sum()
    return total * ds * ds / 1e6


def run_one(name: str, root: Path, parts: bool, workers: int, batch: int) -> dict:
    from napari_histo.engine.run import run_segmentation
    from napari_histo.slide import open_slide, tissue_mask

    cfg = CONFIGS[name]
    path = _slide_path(cfg["slide"], root)
    model = _model(cfg["model"])
    out = root / "out" / name
    record = {"config": name, "slide": str(path), "model": model.name, "roi": cfg["roi"],
              "workers": workers, "batch_size": batch}
    with open_slide(path) as slide:
        mpp = slide.mpp[0] if slide.mpp else 0.25
        record["slide_px"] = list(slide.dimensions)
        mask = tissue_mask(slide)
        if not np.asarray(mask.mask).any():  # as the engine does: no tissue found -> every tile
            mask = None
        t0 = time.perf_counter()
        if parts:
            record.update(_parts(slide, model, mpp, cfg["roi"], mask))
        else:
            gen = run_segmentation(slide, model, out, cfg["roi"], mpp=mpp, batch_size=batch,
                                   workers=workers, geojson=False, hovernet_json=False)
            try:
                while True:
                    next(gen)
            except StopIteration as stop:
                result = stop.value
            record.update(
                n_tiles=result.n_tiles, n_nuclei=result.n_nuclei, timings=result.timings,
                stats=result.stats, tissue_mpx=_tissue_mpx(result.plan, mask),
                tile0=result.plan.tile0, window_px=result.plan.window_px,
            )
        record["wall_s"] = time.perf_counter() - t0
    record["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return record


def _parts(slide, model, mpp, roi, mask) -> dict:
    """Read, predict and post-process the same tiles sequentially, timing each part alone."""
    from napari_histo.engine.compute import process_tile
    from napari_histo.engine.plan import make_plan, read_window

    plan = make_plan(slide, model.mpp, model.halo_px, tile_size=1024, slide_mpp=mpp, roi=roi, tissue=mask)
    read_s = predict_s = post_s = 0.0
    n = 0
    for tile in plan.tiles:
        t0 = time.perf_counter()
        rgb = read_window(slide, tile, plan)
        t1 = time.perf_counter()
        raw = model.predict(rgb)
        t2 = time.perf_counter()
        res = process_tile(model, raw, rgb, tile, plan, plan.roi())
        t3 = time.perf_counter()
        read_s, predict_s, post_s, n = read_s + t1 - t0, predict_s + t2 - t1, post_s + t3 - t2, n + res.n
    return {"n_tiles": len(plan.tiles), "n_nuclei": n, "read_s": read_s, "predict_s": predict_s,
            "postprocess_s": post_s, "sum_s": read_s + predict_s + post_s,
            "tissue_mpx": _tissue_mpx(plan, mask)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/napari_histo_bench"))
    parser.add_argument("--make-slides", action="store_true")
    parser.add_argument("--run", nargs="*", default=[], help=f"configs: {', '.join(CONFIGS)}")
    parser.add_argument("--parts", action="store_true", help="also time the parts alone")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-parts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args()
    if args.one:
        rec = run_one(args.one, args.root, args.one_parts, args.workers, args.batch_size)
        print(json.dumps(rec))
        return 0
    if args.make_slides:
        for name, size in (("synth10k", 10_000), ("synth40k", 40_000)):
            path = args.root / f"{name}.tif"
            if not path.exists():
                t0 = time.perf_counter()
                make_slide(path, size)
                print(f"{path}: {time.perf_counter() - t0:.0f} s, {path.stat().st_size / 2**20:.0f} MiB", flush=True)
    for name in args.run:
        for parts in ([False, True] if args.parts else [False]):
            cmd = [sys.executable, __file__, "--root", str(args.root), "--one", name,
                   "--workers", str(args.workers), "--batch-size", str(args.batch_size)]
            if parts:
                cmd.append("--one-parts")
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
            if proc.returncode != 0:
                print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
                continue
            line = proc.stdout.strip().splitlines()[-1]
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
