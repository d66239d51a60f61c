"""One run per output folder: an exclusive OS lock on ``<outdir>/.napari-histo.lock``.

The lock is an ``flock`` (``msvcrt.locking`` on Windows) on a small file that names its holder
(process id, host, start time). The operating system releases it when the process ends, however
it ends, so a lock is never stale: the file left behind by a killed run is simply taken over.
The file is never deleted, so two runs cannot each lock a different file of the same name.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from napari_histo.utils import HistoError

LOCK_NAME = ".napari-histo.lock"


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        return f"process {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
    except (OSError, ValueError):
        return "another process"


@contextlib.contextmanager
def folder_lock(outdir: str | os.PathLike) -> Iterator[Path]:
    """Hold the folder's lock for the duration of the block; a clear error when another run
    holds it."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise HistoError(f"{outdir}: another napari-histo run is writing this folder "
                             f"({_holder(path)}); wait for it to finish or choose another output folder")
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        yield path
    finally:
        os.close(fd)  # releases the lock
