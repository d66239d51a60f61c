"""Benchmarks for issue 5 (analysis + formats).

    .venv/bin/python benchmarks/bench_analysis.py [--n 1000000] [--vertices 24] [--cases export,export_gz,hotspots]

Each case runs in its own subprocess so that peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
belongs to that case alone:

- ``export``:   QuPath GeoJSON export of N synthetic nuclei (detections with measurements), plain
                and ``.geojson.gz``; RSS after building the table and peak RSS of the process.
- ``export_profile``: where the export's CPU time goes (one thread, cProfile on a CPU clock).
- ``read``:     QuPath GeoJSON import (``read_geojson``) of N nuclei written by the exporter (writing
                is not timed); use e.g. ``--n 50000``.
- ``hotspots``: count density map (r = 50 µm at 0.25 µm/px) + top-10 circle hotspots, and box
                hotspots, on N centroids (the table as the engine writes it, without contours).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_table(n: int, vertices: int, seed: int = 0, with_contours: bool = True):
    import pandas as pd

    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n)) + 1
    spacing = 24.0
    idx = np.arange(n)
    cx = (idx % side) * spacing + 12 + rng.uniform(-2, 2, n)
    cy = (idx // side) * spacing + 12 + rng.uniform(-2, 2, n)
    # clustered density: thin out a smooth field so hotspots exist
    types = rng.integers(1, 6, n)
    a = rng.uniform(5, 9, n)
    b = rng.uniform(3.5, 6, n)
    df = pd.DataFrame({"id": idx + 1, "x": cx, "y": cy,
                       "bbox_x0": np.floor(cx - a).astype(np.int64), "bbox_y0": np.floor(cy - a).astype(np.int64),
                       "bbox_x1": np.ceil(cx + a).astype(np.int64) + 1, "bbox_y1": np.ceil(cy + a).astype(np.int64) + 1,
                       "area_px": np.pi * a * b, "area_um2": np.pi * a * b * 0.0625, "perimeter_px": 2 * np.pi * np.sqrt((a * a + b * b) / 2),
                       "type": types, "type_prob": rng.uniform(0.5, 1, n)})
    df["circularity"] = rng.uniform(0.6, 1, n)
    df["solidity"] = rng.uniform(0.85, 1, n)
    df["eccentricity"] = rng.uniform(0.1, 0.9, n)
    df["positive"] = rng.random(n) < 0.3
    if with_contours:
        t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
        big = np.empty((n, vertices, 2), np.float32)
        big[..., 0] = cx[:, None] + a[:, None] * np.cos(t)[None]
        big[..., 1] = cy[:, None] + b[:, None] * np.sin(t)[None]
        df["contour"] = list(big)  # one (V, 2) array per nucleus, as read_table_parquet returns
    else:
        df["contour"] = None
    df.attrs = {"mpp": 0.25, "type_info": {"0": ["nolabe", [0, 0, 0]], "1": ["neopla", [255, 0, 0]], "2": ["inflam", [0, 255, 0]],
                                           "3": ["connec", [0, 0, 255]], "4": ["necros", [255, 255, 0]], "5": ["no-neo", [255, 165, 0]]}}
    return df


def _rss_mib() -> float:
    """Peak RSS of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler:
    """Highest current RSS seen every 20 ms while the block runs (the writer's own peak)."""

    def __enter__(self):
        import threading

        self.peak = _current_rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _current_rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss_mib())


def case_export(n: int, vertices: int, gz: bool, prefetch: bool = True) -> dict:
    from napari_histo.formats.geojson import write_geojson

    table = synthetic_table(n, vertices)
    write_geojson(table.iloc[:10], Path(tempfile.gettempdir()) / "warmup.geojson")  # imports outside the timing
    rss_table = _current_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("n.geojson.gz" if gz else "n.geojson")
        with _RssSampler() as sampler:
            t0, c0 = time.perf_counter(), time.process_time()
            write_geojson(table, path, prefetch=prefetch)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = path.stat().st_size
    return {"case": ("export_gz" if gz else "export") + ("" if prefetch else "_noprefetch"), "n": n, "vertices": vertices, "seconds": round(dt, 2), "cpu_seconds": round(cpu, 2),
            "file_MiB": round(size / 2**20, 1), "rss_with_table_MiB": round(rss_table), "peak_rss_during_export_MiB": round(sampler.peak),
            "peak_rss_process_MiB": round(_rss_mib())}


def case_export_profile(n: int, vertices: int) -> dict:
    """Where the export's CPU goes: one thread, ``cProfile`` with a CPU-time clock (load-proof)."""
    import cProfile
    import pstats

    from napari_histo.formats.geojson import write_geojson

    table = synthetic_table(n, vertices)
    write_geojson(table.iloc[:10], Path(tempfile.gettempdir()) / "warmup.geojson")
    prof = cProfile.Profile(time.process_time)
    with tempfile.TemporaryDirectory() as tmp:
        prof.runcall(write_geojson, table, Path(tmp) / "n.geojson", prefetch=False)
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    total = sum(v[2] for v in stats.values())

    def cum(name: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[2] == name)

    def own(name: str) -> float:
        return sum(v[2] for k, v in stats.items() if name in k[2])

    steps = {
        "round + validity (_prepare_rings: star proof, shapely for doubtful rings)": cum("_prepare_rings"),
        "  of which star proof (_star_simple)": cum("_star_simple"),
        "vertex text (vertex_words)": cum("vertex_words"),
        "classification + measurements (_tail_words)": cum("_tail_words"),
        "UUIDs (uuid4_block)": cum("uuid4_block"),
        "row assembly (assemble_rows)": cum("assemble_rows"),
        "  of which NUL removal (bytearray.translate)": own("translate"),
        "file writes": own("'write' of"),
    }
    return {"case": "export_profile", "n": n, "cpu_seconds_profiled": round(total, 2),
            "share_percent": {k: round(100 * v / total, 1) for k, v in steps.items()}}


def case_read(n: int, vertices: int) -> dict:
    from napari_histo.formats.geojson import read_geojson, write_geojson

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "n.geojson"
        table = synthetic_table(n, vertices)
        write_geojson(table, path)
        read_geojson(write_geojson(table.iloc[:10], Path(tmp) / "warm.geojson"))  # imports outside the timing
        del table
        rss_before = _current_rss_mib()
        with _RssSampler() as sampler:
            t0, c0 = time.perf_counter(), time.process_time()
            back = read_geojson(path)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = path.stat().st_size
    return {"case": "read", "n": n, "vertices": vertices, "nuclei_read": len(back.table), "seconds": round(dt, 2), "cpu_seconds": round(cpu, 2),
            "file_MiB": round(size / 2**20, 1), "rss_before_MiB": round(rss_before), "peak_rss_during_read_MiB": round(sampler.peak)}


def case_hotspots(n: int) -> dict:
    from napari_histo.analysis.density import density_map
    from napari_histo.analysis.hotspots import find_hotspots

    table = synthetic_table(n, 0, with_contours=False)
    small = synthetic_table(1000, 0, with_contours=False)  # warm-up: imports outside the timing
    find_hotspots(small, 1, mode="circle", radius_um=50)
    find_hotspots(small, 1, mode="box")
    t0, c0 = time.perf_counter(), time.process_time()
    d = density_map(table, "count", radius_um=50)
    hs = find_hotspots(table, 10, mode="circle", radius_um=50, dmap=d)
    t1, c1 = time.perf_counter(), time.process_time()
    hb = find_hotspots(table, 10, mode="box", tile=50, window=20)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"case": "density+hotspots", "n": n, "map_shape": list(d.array.shape), "map_px": d.pixel_size,
            "circle_seconds": round(t1 - t0, 3), "circle_cpu_seconds": round(c1 - c0, 3), "found_circle": len(hs), "box_seconds": round(t2 - t1, 3), "box_cpu_seconds": round(c2 - c1, 3), "found_box": len(hb),
            "peak_rss_MiB": round(_rss_mib())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--vertices", type=int, default=24)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cases", default="export,export_gz,hotspots", help="comma list of export, export_gz, export_noprefetch, export_profile, read, hotspots")
    args = parser.parse_args()
    if args.case:
        if args.case == "hotspots":
            out = case_hotspots(args.n)
        elif args.case == "read":
            out = case_read(args.n, args.vertices)
        elif args.case == "export_profile":
            out = case_export_profile(args.n, args.vertices)
        else:
            out = case_export(args.n, args.vertices, gz=args.case == "export_gz", prefetch=args.case != "export_noprefetch")
        print(json.dumps(out))
        return
    for case in args.cases.split(","):
        proc = subprocess.run([sys.executable, __file__, "--case", case, "--n", str(args.n), "--vertices", str(args.vertices)],
                              capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode:
            print(json.dumps({"case": case, "error": proc.stderr[-2000:]}))
        else:
            print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
