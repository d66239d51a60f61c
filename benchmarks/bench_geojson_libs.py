"""Would a library do better than our GeoJSON streaming parser and our threaded gzip writer?

    .venv/bin/python benchmarks/bench_geojson_libs.py [--n 200000] [--repeat 3]

Needs ``ijson`` and ``isal`` installed beside the package (they are not dependencies). On the
same exporter output of N synthetic nuclei (24-vertex contours, measurements) it measures CPU
seconds (``time.process_time``, all threads of this process) and wall seconds, best of
``--repeat``:

- parsing: the package's incremental parser (``formats.geojson.stream``, features a chunk at a
  time, the path every file above ``STREAM_MIN_BYTES`` takes) against ``ijson.items`` on the
  ``yajl2_c`` backend (floats, not Decimals), both yielding every feature as a dict;
- gzip: the package's block-parallel gzip writer (``formats.geojson._gzip``, level 6, blocks of
  one export chunk deflated on 2 threads) against ``isal.igzip_threaded`` (2 threads, its
  default level 1 and level 2, ISA-L's highest) and against one-thread ``zlib`` level 6, on the
  plain file's bytes; output sizes are reported too.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analysis import synthetic_table  # noqa: E402


def _best(fn, repeat: int) -> tuple[float, float, object]:
    best_cpu = best_wall = float("inf")
    out = None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return best_cpu, best_wall, out


def main(argv: list[str] | None = None) -> int:
    import ijson
    from isal import igzip_threaded

    from napari_histo.formats.geojson import stream, write_geojson
    from napari_histo.formats.geojson._gzip import _deflate_block, _GzipBlocks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    report: dict = {"n": args.n, "ijson_backend": ijson.backend}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_geojson(synthetic_table(args.n, 24), Path(tmp) / "n.geojson")
        report["file_mib"] = round(path.stat().st_size / 2**20, 1)

        def ours() -> int:
            old = stream.STREAM_MIN_BYTES
            stream.STREAM_MIN_BYTES = 0
            try:
                return sum(len(chunk) for chunk in stream._feature_chunks(path))
            finally:
                stream.STREAM_MIN_BYTES = old

        def with_ijson() -> int:
            with open(path, "rb") as fh:
                return sum(1 for _ in ijson.items(fh, "features.item", use_float=True))

        for name, fn in (("parse_ours", ours), ("parse_ijson", with_ijson)):
            cpu, wall, n = _best(fn, args.repeat)
            assert n == args.n, (name, n)
            report[name] = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2)}

        text = path.read_bytes()
        chunk = 8192 * 250  # about one export chunk of text

        def ours_gz() -> int:
            buf = io.BytesIO()
            gz = _GzipBlocks(buf, 6)
            pieces = [text[i:i + chunk] for i in range(0, len(text), chunk)]
            with ThreadPoolExecutor(2) as pool:
                for piece, block in zip(pieces, pool.map(lambda t: _deflate_block(t, 6), pieces)):
                    gz.write_block(piece, block)
            gz.close()
            return len(buf.getvalue())

        def isal_gz(level: int):
            def run() -> int:
                out = Path(tmp) / f"isal{level}.gz"
                with igzip_threaded.open(out, "wb", compresslevel=level, threads=2) as fh:
                    fh.write(text)
                return out.stat().st_size
            return run

        def zlib_gz() -> int:
            import gzip

            return len(gzip.compress(text, compresslevel=6))

        for name, fn in (("gzip_ours_l6_2threads", ours_gz), ("gzip_isal_l1_2threads", isal_gz(1)),
                         ("gzip_isal_l2_2threads", isal_gz(2)), ("gzip_zlib_l6_1thread", zlib_gz)):
            cpu, wall, size = _best(fn, args.repeat)
            report[name] = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "mib": round(size / 2**20, 1)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
