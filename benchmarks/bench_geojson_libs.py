"""Would a library do better than our GeoJSON streaming parser and our threaded gzip writer?

    .venv/bin/python benchmarks/bench_geojson_libs.py [--n 200000] [--repeat 3]

Needs ``ijson`` installed beside the package (``isal`` is a dependency since these figures;
``ijson`` is not, see docs/BENCHMARKS.md). The zlib writer the package used before is rebuilt
here for the comparison. On the
same exporter output of N synthetic nuclei (24-vertex contours, measurements) it measures CPU
seconds (``time.process_time``, all threads of this process) and wall seconds, best of
``--repeat``:

- parsing: the package's incremental parser (``formats.geojson.stream``, features a chunk at a
  time, the path every file above ``STREAM_MIN_BYTES`` takes) against ``ijson.items`` on the
  ``yajl2_c`` backend (floats, not Decimals), both yielding every feature as a dict;
- gzip: the block-parallel zlib writer the package used before (rebuilt below, level 1 as
  ``write_geojson`` used it, and level 6; blocks of about one export chunk deflated on 2
  threads) against ``isal.igzip_threaded`` (2 threads, levels 1 and 2) and one-thread ``zlib``
  level 6, on the plain file's bytes; output sizes are reported too.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analysis import synthetic_table  # noqa: E402


def _deflate_block(text: bytes, level: int) -> bytes:
    """Raw deflate of ``text`` on its own, byte-aligned and not final (``Z_SYNC_FLUSH``)."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH)


class _GzipBlocks:
    """One gzip member from independently deflated blocks (pigz's layout): the zlib writer
    ``write_geojson`` used before ISA-L."""

    def __init__(self, fh, level: int):
        self.fh, self.level, self.crc, self.size = fh, level, 0, 0
        fh.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", int(time.time()) & 0xFFFFFFFF) + b"\x00\xff")

    def write_block(self, text: bytes, block: bytes) -> None:
        self.fh.write(block)
        self.crc = zlib.crc32(text, self.crc)
        self.size += len(text)

    def close(self) -> None:
        self.fh.write(zlib.compressobj(self.level, zlib.DEFLATED, -15).flush())
        self.fh.write(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))


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

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-parse", action="store_true", help="measure gzip only")
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

        for name, fn in () if args.skip_parse else (("parse_ours", ours), ("parse_ijson", with_ijson)):
            cpu, wall, n = _best(fn, args.repeat)
            assert n == args.n, (name, n)
            report[name] = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2)}

        text = path.read_bytes()
        chunk = 8192 * 250  # about one export chunk of text

        def ours_gz(level: int):
            def run() -> int:
                buf = io.BytesIO()
                gz = _GzipBlocks(buf, level)
                pieces = [text[i:i + chunk] for i in range(0, len(text), chunk)]
                with ThreadPoolExecutor(2) as pool:
                    for piece, block in zip(pieces, pool.map(lambda t: _deflate_block(t, level), pieces)):
                        gz.write_block(piece, block)
                gz.close()
                return len(buf.getvalue())
            return run

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

        for name, fn in (("gzip_ours_l1_2threads", ours_gz(1)), ("gzip_ours_l6_2threads", ours_gz(6)),
                         ("gzip_isal_l1_2threads", isal_gz(1)),
                         ("gzip_isal_l2_2threads", isal_gz(2)), ("gzip_zlib_l6_1thread", zlib_gz)):
            cpu, wall, size = _best(fn, args.repeat)
            report[name] = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "mib": round(size / 2**20, 1)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
