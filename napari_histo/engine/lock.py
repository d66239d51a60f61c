"""One run per output folder: an exclusive OS lock on the folder itself.

POSIX: ``flock`` on the folder's own file descriptor; Windows: ``msvcrt.locking`` on
``<outdir>/.napari-histo.lock``. The operating system releases the lock when the process ends,
however it ends, so a lock is never stale. While a run holds it, ``.napari-histo.lock`` names
the holder (process id, host, start time) for the message another run gets; the run removes
that note when it ends (on POSIX the lock never depended on it).
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


def _lock_fd(outdir: Path) -> int | None:
    """A locked descriptor for ``outdir``, or None when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: lock a file in the folder
        import msvcrt

        fd = os.open(outdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            return None
        return fd
    fd = os.open(outdir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


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
    note = outdir / LOCK_NAME
    fd = _lock_fd(outdir)
    if fd is None:
        raise HistoError(f"{outdir}: another napari-histo run is writing this folder "
                         f"({_holder(note)}); wait for it to finish or choose another output folder")
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with contextlib.suppress(OSError):
            note.write_text(json.dumps(info), encoding="utf-8")
        yield outdir
    finally:
        with contextlib.suppress(OSError):
            note.unlink()
        os.close(fd)  # releases the lock
