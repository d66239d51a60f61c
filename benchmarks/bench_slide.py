"""Benchmark: field-of-view reads through the dask pyramid vs OpenSlide, and time to first screen.

Not a test. Run::

    nice -n 10 .venv/bin/python benchmarks/bench_slide.py [--n 40] [--synthetic /tmp/bench_40k.svs]

Cases
-----
* random 1024 x 1024 fields of view at level 0 (same positions for every method):
  raw ``openslide.OpenSlide.read_region`` (+ RGBA -> RGB array), ``Slide.read_region`` and the
  dask pyramid (``pyramid[0][y:y+1024, x:x+1024].compute()``), each with the automatically
  chosen backend and with ``backend="openslide"``, on the real CMU slide and on
  a synthetic 40k x 40k Aperio-style slide (tiled JPEG, 4x pyramid, generated once into /tmp
  from a few textured tiles);
* time to first screen: ``open_slide`` -> pyramid -> pixels of a 1920 x 1080 view at the level
  napari would choose (napari's own ``compute_multiscale_level``), for the whole slide fitted
  to the canvas and for a 1:1 view at level 0.

Prints a Markdown table (medians, and p90 for the FoV reads) plus the machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FOV = 1024
CANVAS = (1080, 1920)  # (rows, cols) of the screen


def make_synthetic_slide(path: Path, size: int = 40000, tile: int = 256) -> Path:
    """40k x 40k Aperio-style pyramid (downsample 4 per level) written with tifffile."""
    import tifffile

    sys.path.insert(0, str(REPO / "tests"))
    from slide_synth import synthetic_he

    rng = np.random.default_rng(0)
    texture, _ = synthetic_he(2048, 2048, seed=7)
    # tissue-like tiles cut from the texture's tissue ellipse, plus a glass tile
    tiles = [texture[y : y + tile, x : x + tile] for y in range(768, 1280, tile) for x in range(512, 1280, tile)]
    glass = np.full((tile, tile, 3), 244, np.uint8)

    def level_tiles(level_size: int):
        n = -(-level_size // tile)
        centre = (n - 1) / 2
        for row in range(n):
            for col in range(n):
                inside = ((row - centre) / (0.42 * n)) ** 2 + ((col - centre) / (0.38 * n)) ** 2 <= 1
                yield tiles[int(rng.integers(len(tiles)))] if inside else glass

    sizes = []
    level_size = size
    while level_size >= tile:
        sizes.append(level_size)
        level_size //= 4
    tmp = path.with_suffix(".part.svs")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for i, level_size in enumerate(sizes):
            head = f"Aperio Image Library v12.0.15 \r\n{size}x{size}"
            if i:
                head += f" -> {level_size}x{level_size} -"
            desc = f"{head} ({tile}x{tile}) JPEG/RGB Q=80|AppMag = 40|MPP = 0.2500"
            tif.write(
                level_tiles(level_size),
                shape=(level_size, level_size, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 80},
                description=desc,
                metadata=None,
                maxworkers=2,
            )
            if i == 0:  # Aperio: the second IFD is a stripped thumbnail
                tif.write(np.full((256, 256, 3), 240, np.uint8), photometric="rgb", description=f"{head} thumbnail", metadata=None)
    os.replace(tmp, path)
    return path


def _positions(dims: tuple[int, int], n: int, seed: int = 1) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    width, height = dims
    return [(int(rng.integers(0, max(width - FOV, 1))), int(rng.integers(0, max(height - FOV, 1)))) for _ in range(n)]


def _time_all(function, positions) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds per call; CPU time is less sensitive to a busy machine."""
    times = []
    for xy in positions:
        wall, cpu = time.perf_counter(), time.process_time()
        out = function(xy)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
        assert out.ndim == 3 and out.shape[2] == 3
    return times


def bench_fov(path: Path, n: int) -> dict[str, list[tuple[float, float]]]:
    import openslide

    from napari_histo.slide import open_slide

    raw = openslide.OpenSlide(str(path))
    slide = open_slide(path)  # automatic backend choice, as the reader uses it
    forced = open_slide(path, backend="openslide")
    level0 = slide.pyramid()[0]
    level0_openslide = forced.pyramid()[0]
    dims = slide.dimensions
    size = (min(FOV, dims[0]), min(FOV, dims[1]))

    def view(array, xy, **kwargs):
        x, y = xy
        return array[y : y + size[1], x : x + size[0]].compute(**kwargs)

    methods = {
        "OpenSlide read_region (raw, reference)": lambda xy: np.asarray(raw.read_region(xy, 0, size))[..., :3],
        f"Slide.read_region ({slide.backend})": lambda xy: slide.read_region(xy, size),
        f"dask pyramid, {slide.backend} (threads)": lambda xy: view(level0, xy),
        f"dask pyramid, {slide.backend} (sync)": lambda xy: view(level0, xy, scheduler="sync"),
        "Slide.read_region (openslide)": lambda xy: forced.read_region(xy, size),
        "dask pyramid, openslide (threads)": lambda xy: view(level0_openslide, xy),
        "dask pyramid, openslide (sync)": lambda xy: view(level0_openslide, xy, scheduler="sync"),
    }
    for function in methods.values():  # warm-up: imports, first decode
        function((0, 0))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    # interleave methods per round so load changes on a shared machine hit all equally
    for round_index in range(3):
        positions = _positions(dims, n // 3, seed=round_index + 1)
        for name, function in methods.items():
            results[name] += _time_all(function, positions)
    raw.close()
    slide.close()
    forced.close()
    return results


def bench_first_screen(path: Path, repeats: int = 5) -> dict[str, list[float]]:
    from napari.layers.utils.layer_utils import compute_multiscale_level

    from napari_histo.slide import open_slide

    out: dict[str, list[float]] = {"fit whole slide": [], "1:1 at level 0": []}
    for _ in range(repeats):
        start = time.perf_counter()
        slide = open_slide(path)
        pyramid = slide.pyramid()
        height0, width0 = pyramid[0].shape[:2]
        zoom = min(CANVAS[0] / height0, CANVAS[1] / width0)
        requested = np.array([CANVAS[0] / zoom, CANVAS[1] / zoom])
        downsamples = np.array([[height0 / a.shape[0], width0 / a.shape[1]] for a in pyramid])
        level = int(compute_multiscale_level(requested, np.array(CANVAS), downsamples))
        pixels = np.asarray(pyramid[level])
        out["fit whole slide"].append(time.perf_counter() - start)
        assert pixels.ndim == 3
        slide.close()

        start = time.perf_counter()
        slide = open_slide(path)
        level0 = slide.pyramid()[0]
        y, x = (height0 - CANVAS[0]) // 2, (width0 - CANVAS[1]) // 2
        pixels = np.asarray(level0[max(y, 0) : y + CANVAS[0], max(x, 0) : x + CANVAS[1]])
        out["1:1 at level 0"].append(time.perf_counter() - start)
        slide.close()
    return out


def _ms(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):.1f}"


def _p90(values: list[float]) -> str:
    return f"{1000 * float(np.percentile(values, 90)):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=45, help="fields of view per method (multiple of 3)")
    parser.add_argument("--synthetic", type=Path, default=Path("/tmp/napari_histo_bench_40k.svs"))
    parser.add_argument("--cmu", type=Path, default=REPO / "resources" / "sample" / "cmu-1-small-region.svs")
    args = parser.parse_args(argv)

    if not args.synthetic.exists():
        start = time.perf_counter()
        make_synthetic_slide(args.synthetic)
        print(f"generated {args.synthetic} ({args.synthetic.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - start:.0f} s", flush=True)

    print(f"load average before: {os.getloadavg()}", flush=True)
    print("\n| slide | method | median wall ms | p90 wall ms | median CPU ms | wall vs raw | CPU vs raw |")
    print("|---|---|---|---|---|---|---|")
    for label, path in (("CMU-1-Small-Region (2220x2967, 1 level)", args.cmu), ("synthetic 40k x 40k", args.synthetic)):
        results = bench_fov(path, args.n)
        base = next(iter(results.values()))
        base_wall = statistics.median(t[0] for t in base)
        base_cpu = statistics.median(t[1] for t in base)
        for name, times in results.items():
            wall = [t[0] for t in times]
            cpu = [t[1] for t in times]
            print(
                f"| {label} | {name} | {_ms(wall)} | {_p90(wall)} | {_ms(cpu)} | "
                f"{statistics.median(wall) / base_wall - 1:+.0%} | {statistics.median(cpu) / base_cpu - 1:+.0%} |",
                flush=True,
            )

    print("\n| slide | first screen (open_slide -> 1920x1080 pixels) | median ms | max ms |")
    print("|---|---|---|---|")
    for label, path in (("CMU-1-Small-Region", args.cmu), ("synthetic 40k x 40k", args.synthetic)):
        for name, times in bench_first_screen(path).items():
            print(f"| {label} | {name} | {_ms(times)} | {1000 * max(times):.1f} |", flush=True)
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
