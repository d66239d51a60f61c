"""Benchmark: vectorised nucleus measurement vs a straightforward per-instance implementation.

Both run on the same label maps (MoNuSeg ground-truth tiles when ../shared/data is present,
else a synthetic 1000×1000 map of ~400 nuclei); their outputs must agree (asserted). Also
times the official HoVer-Net watershed (``instances_from_maps``) on ideal maps of the tile.

    .venv/bin/python benchmarks/bench_postproc.py [--tiles 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def naive_measure(labels: np.ndarray) -> np.ndarray:
    """Per nucleus: a full-image mask, then regionprops on it (the obvious implementation)."""
    from skimage.measure import find_contours, regionprops

    rows = []
    for i in np.unique(labels)[1:]:
        mask = labels == i
        (p,) = regionprops(mask.astype(np.uint8))
        contour = max(find_contours(np.pad(mask, 1).astype(np.float32), 0.5), key=len)
        y0, x0, y1, x1 = p.bbox
        rows.append((i, p.centroid[1], p.centroid[0], x0, y0, x1, y1, p.area, p.perimeter,
                     p.eccentricity, p.solidity, len(contour)))
    return np.array(rows, np.float64)


def vector_measure(labels: np.ndarray) -> np.ndarray:
    from napari_histo.nuclei.measure import measure_instances

    t = measure_instances(labels)
    cols = ["id", "x", "y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px", "perimeter_px",
            "eccentricity", "solidity"]
    n_vertices = np.array([len(c) + 1 for c in t["contour"]], np.float64)  # naive keeps the closing vertex
    return np.column_stack([t[cols].to_numpy(np.float64), n_vertices])


def label_maps(n_tiles: int) -> list[tuple[str, np.ndarray]]:
    data = REPO.parent / "shared" / "data" / "monuseg"
    if data.is_dir():
        from napari_histo.datasets import iter_monuseg

        out = []
        for s in iter_monuseg(data):
            out.append((s.name, s.inst))
            if len(out) >= n_tiles:
                break
        return out
    from _nuclei_helpers import disks

    rng = np.random.default_rng(0)
    centres = [(int(y), int(x)) for y in range(25, 1000, 50) for x in range(25, 1000, 50)]
    return [("synthetic", disks((1000, 1000), centres, rng.integers(8, 14, len(centres))))]


def best_of(fn, arg, repeat: int) -> tuple[float, float, object]:
    """Best wall-clock and CPU (``process_time``) seconds over ``repeat`` runs, and the output."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(arg)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from _nuclei_helpers import ideal_maps

    from napari_histo.nuclei.postproc import instances_from_maps

    print(f"{'tile':<26} {'nuclei':>6} {'naive s (cpu)':>14} {'vector s (cpu)':>15} {'speed-up cpu':>12} "
          f"{'watershed s (cpu)':>18}")
    for name, labels in label_maps(args.tiles):
        t_naive, c_naive, ref = best_of(naive_measure, labels, 1)
        t_vec, c_vec, got = best_of(vector_measure, labels, args.repeat)
        assert ref.shape == got.shape, (ref.shape, got.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
        np_map, hv = ideal_maps(labels)
        t_ws, c_ws, _ = best_of(lambda m: instances_from_maps(*m), (np_map, hv), args.repeat)
        print(f"{name[:26]:<26} {len(ref):>6} {t_naive:>6.2f} ({c_naive:>5.2f}) {t_vec:>7.3f} ({c_vec:>5.3f}) "
              f"{c_naive / c_vec:>11.1f}x {t_ws:>9.2f} ({c_ws:>5.2f})")
    print("outputs agree (id, centroid, bbox, area, perimeter, eccentricity, solidity, contour length)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
