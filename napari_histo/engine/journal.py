"""Resumable runs: per-tile results on disk plus an append-only journal of finished tiles.

Layout of the work folder (``<outdir>/.partial/``)::

    journal.jsonl        line 1: {"fingerprint": ...}; then one {"tile": i, "n": n, ...} per tile
    tiles/000042.parquet owned nuclei of tile 42 (level-0 px, local ids)
    tiles/000042.labels  their int32 label crop (see merge.encode_labels)

A tile's files are renamed into place before its journal line is appended and fsync'ed, so
after a crash (``kill -9``) every journaled tile is complete; a torn last line is ignored and
that tile is simply recomputed, and so is a journaled tile whose files are not all there. The
fingerprint (slide, model, plan) must match to resume. The work folder is deleted file by file
only after ``run.json`` marks the outputs complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_histo.engine.faults import crash_point
from napari_histo.engine.merge import TileResult, decode_labels, encode_labels
from napari_histo.schema.table import read_table_parquet, write_table_parquet
from napari_histo.utils import HistoError, atomic_write

JOURNAL_VERSION = 1


def fingerprint(record: dict[str, Any]) -> str:
    """Stable hash of a JSON-able run description."""
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Journal:
    """Finished-tile bookkeeping for one run (see module docstring)."""

    def __init__(self, workdir: str | os.PathLike, fingerprint_: str, resume: bool = False):
        self.workdir = Path(workdir)
        self.tiles_dir = self.workdir / "tiles"
        self.path = self.workdir / "journal.jsonl"
        self.fingerprint = fingerprint_
        self.done: dict[int, dict[str, Any]] = {}
        if resume and self.path.exists():
            self._load()
        else:
            if self.workdir.exists():
                shutil.rmtree(self.workdir)
            self.tiles_dir.mkdir(parents=True)
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"version": JOURNAL_VERSION, "fingerprint": fingerprint_}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        try:
            header = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError) as exc:
            raise HistoError(f"{self.path}: unreadable journal; run again without --resume") from exc
        if header.get("fingerprint") != self.fingerprint:
            raise HistoError(
                f"{self.path}: the unfinished run used a different slide, model or parameters; "
                "run again without --resume to start over"
            )
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line of a killed run: that tile is recomputed
            if entry.get("n", 0) > 0 and not self._complete(int(entry["tile"])):
                continue  # a file of this tile is missing: it is recomputed
            self.done[int(entry["tile"])] = entry
        self.tiles_dir.mkdir(parents=True, exist_ok=True)

    def _complete(self, index: int) -> bool:
        """Both files of a tile with nuclei are in place."""
        return (self.tiles_dir / f"{index:06d}.parquet").is_file() and (self.tiles_dir / f"{index:06d}.labels").is_file()

    def record(self, result: TileResult, **extra: Any) -> None:
        """Persist one tile's result, then journal it (fsync)."""
        if result.n > 0:
            write_table_parquet(result.table, self.tiles_dir / f"{result.index:06d}.parquet")
            crash_point("tile table")
            with atomic_write(self.tiles_dir / f"{result.index:06d}.labels", "wb") as fh:
                fh.write(encode_labels(result.labels, result.origin))
            crash_point("tile labels")
        entry = {"tile": result.index, "n": result.n, "oversize": result.n_oversize,
                 "too_large": result.n_too_large, **extra}
        self._fh.write(json.dumps(entry) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        crash_point("journal line")
        self.done[result.index] = entry

    def table_path(self, index: int) -> Path:
        return self.tiles_dir / f"{index:06d}.parquet"

    def load_table(self, index: int) -> pd.DataFrame:
        return read_table_parquet(self.table_path(index))

    def load_labels(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        return decode_labels((self.tiles_dir / f"{index:06d}.labels").read_bytes())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()

    def remove(self) -> None:
        """Delete the work folder, file by file (only once ``run.json`` marks the outputs complete:
        a kill in between leaves a complete folder whose clean-up the next run finishes)."""
        self.close()
        remove_workdir(self.workdir)


def remove_workdir(workdir: Path) -> None:
    """Delete a run's work folder one file at a time, tiles first, the journal last."""
    tiles = workdir / "tiles"
    if tiles.is_dir():
        for path in sorted(tiles.iterdir()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            crash_point("clean-up file")
    shutil.rmtree(workdir, ignore_errors=True)
