"""A gzip writer that deflates blocks in worker threads and still writes one standard gzip
member (CRC-32 and length over the whole text).
"""

from __future__ import annotations

import struct
import time
import zlib


def _deflate_block(text: bytes | bytearray, level: int) -> bytes:
    """Raw deflate of ``text`` on its own, ending byte-aligned and not final (``Z_SYNC_FLUSH``)."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH)


class _GzipBlocks:
    """One standard gzip member built from independently deflated blocks (the layout of ``pigz``).

    Each block is compressed without reference to earlier ones, so the chunk builders compress
    in parallel (zlib releases the GIL); here the blocks are only concatenated, the CRC-32 and
    length accumulated, and the final empty block and trailer written. Any gzip reader (Java's
    ``GZIPInputStream`` in QuPath, Python's ``gzip``) sees an ordinary single-member file.
    """

    def __init__(self, fh, level: int):
        self.fh, self.level, self.crc, self.size = fh, level, 0, 0
        fh.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", int(time.time()) & 0xFFFFFFFF) + b"\x00\xff")

    def write(self, text: bytes | bytearray) -> None:
        self.write_block(text, _deflate_block(text, self.level))

    def write_block(self, text: bytes | bytearray, block: bytes) -> None:
        self.fh.write(block)
        self.crc = zlib.crc32(text, self.crc)
        self.size += len(text)

    def close(self) -> None:
        self.fh.write(zlib.compressobj(self.level, zlib.DEFLATED, -15).flush())  # empty final block
        self.fh.write(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
