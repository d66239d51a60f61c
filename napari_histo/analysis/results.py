"""Load nuclei for analysis: a segmentation output folder (nuclei table, provenance, slide size)
or any supported annotation file (QuPath GeoJSON, HoVer-Net JSON, Sedeen, ImageScope, ASAP)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from napari_histo.formats.auto import read_nuclei
from napari_histo.provenance import package_versions
from napari_histo.schema.table import read_table_parquet, validate_table
from napari_histo.slide import open_slide
from napari_histo.utils import HistoError, InputFileError, atomic_write, positive_float

__all__ = ["ResultFolder", "load_result_folder"]


@dataclass
class ResultFolder:
    """A segmentation result: ``table`` (nucleus table), ``run`` (run.json dict or {}), ``folder``.

    ``source`` is the annotation file the nuclei were read from (None for a result folder);
    ``slide_dimensions`` the level-0 (w, h) of a slide named by the caller.
    """

    folder: Path
    table: pd.DataFrame
    run: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    slide_dimensions: tuple[int, int] | None = None

    @property
    def stem(self) -> str:
        if self.source is not None:
            return self.source.name.split(".")[0]
        name = self.run.get("slide")
        stem = Path(name).stem if isinstance(name, str) else ""
        return stem if stem not in ("", ".", "..") else self.folder.name

    @property
    def input_path(self) -> Path:
        """What the user named: the annotation file, else the result folder (for messages)."""
        return self.source if self.source is not None else self.folder

    def output_path(self, name: str) -> Path:
        """Default output ``name`` in the result folder, or ``<stem>_name`` beside an annotation file."""
        return self.folder / (name if self.source is None else f"{self.stem}_{name}")

    @property
    def dimensions(self) -> tuple[int, int] | None:
        """Level-0 (w, h) from run.json's tile plan, else from the slide given, else None."""
        plan = self.run.get("plan")
        if isinstance(plan, dict):
            width, height = positive_float(plan.get("width")), positive_float(plan.get("height"))
            if width and height and width < 2**31 and height < 2**31:
                return int(width), int(height)
        return self.slide_dimensions

    @property
    def mpp(self) -> float | None:
        mpp = positive_float(self.table.attrs.get("mpp"))
        if not mpp:
            plan = self.run.get("plan")
            mpp = positive_float(plan.get("slide_mpp")) if isinstance(plan, dict) else None
        return mpp if mpp and mpp < 1e6 else None

    def slide_path(self) -> Path | None:
        """The slide named in run.json when it still exists (absolute, or beside/above the folder)."""
        name = self.run.get("slide")
        parameters = self.run.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        for key in ("slide_path", "input"):
            value = parameters.get(key) or self.run.get(key)
            if isinstance(value, str) and value and Path(value).is_file():
                return Path(value)
        if isinstance(name, str) and name:
            for base in (self.folder, self.folder.parent, self.folder.parent.parent):
                cand = base / str(name)
                if cand.is_file():
                    return cand
        return None


def load_result_folder(path: str | os.PathLike, *, mpp: float | None = None,
                       slide: str | os.PathLike | None = None) -> ResultFolder:
    """Open ``RESULT_DIR`` (with ``nuclei.parquet``), a ``nuclei.parquet`` file, or an annotation file.

    Parameters
    ----------
    path : path
        Result folder, nucleus table, or a QuPath GeoJSON / HoVer-Net JSON / Sedeen session /
        ImageScope or ASAP XML file (:func:`napari_histo.formats.auto.read_nuclei`: nucleus
        outlines, else point annotations).
    mpp : float, optional
        Level-0 µm/px, overriding what the table carries (annotation files rarely carry it).
    slide : path, optional
        The slide the nuclei belong to: supplies the mpp when it is still unknown and the level-0
        size when run.json does not give it.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file or folder")
    source = None
    if path.is_file() and not path.name.lower().endswith(".parquet"):
        source, folder, table = path, path.parent, read_nuclei(path, mpp=mpp)
    else:
        parquet = path if path.is_file() else path / "nuclei.parquet"
        folder = parquet.parent
        if not parquet.is_file():
            raise InputFileError(path, "not a segmentation result: nuclei.parquet is missing")
        try:
            table = read_table_parquet(parquet)
            validate_table(table)
        except HistoError:
            raise
        except Exception as exc:  # pyarrow raises many kinds
            raise InputFileError(parquet, f"cannot read the nucleus table ({exc})") from None
    run: dict[str, Any] = {}
    run_path = folder / "run.json"
    if source is None and run_path.is_file():
        try:
            run = json.loads(run_path.read_text(encoding="utf-8-sig"))
        except (ValueError, OSError):
            run = {}
    if not isinstance(run, dict):
        run = {}
    for key in ("parameters", "plan"):  # run.json is data from anywhere: shapes checked once here
        if key in run and not isinstance(run[key], dict):
            run[key] = {}
    if mpp:
        table.attrs["mpp"] = float(mpp)
    if not table.attrs.get("mpp") and isinstance(run.get("plan"), dict) and run["plan"].get("slide_mpp"):
        table.attrs["mpp"] = float(run["plan"]["slide_mpp"])
    dimensions = None
    if slide is not None:
        with open_slide(slide) as s:
            dimensions = tuple(int(v) for v in s.dimensions)
            if not table.attrs.get("mpp") and s.mpp:
                table.attrs["mpp"] = float(s.mpp[0])
    return ResultFolder(folder, table, run, source=source, slide_dimensions=dimensions)


def slide_thumbnail(result: ResultFolder, slide: str | os.PathLike | None = None, max_size: int = 1024):
    """(thumbnail RGB, level-0 px per thumbnail px) of the result's slide, or (None, None)."""
    path = Path(slide) if slide else result.slide_path()
    if path is None or not path.is_file():
        return None, None

    with open_slide(path) as s:
        thumb = s.thumbnail(max_size)
        return thumb, s.dimensions[0] / thumb.shape[1]


def write_sidecar(path: str | os.PathLike, command: str, params: dict[str, Any], **extra: Any) -> Path:
    """Provenance next to an analysis output (``<output>.json``): never touches the result's run.json."""
    path = Path(path)
    record = {"command": command, "argv": sys.argv, "parameters": params, "versions": package_versions(),
              "machine": {"platform": platform.platform()}, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    with atomic_write(path, encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, default=str)
    return path
