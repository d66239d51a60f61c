"""Provenance: the ``run.json`` record every command that writes results leaves beside them
(command line, parameters, package versions, machine, timings)."""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from napari_histo.utils import atomic_write


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results."""
    out = {"python": platform.python_version()}
    for name in ("napari-histo", "numpy", "scikit-image", "scipy", "torch", "openslide-python",
                 "openslide-bin", "tifffile", "zarr", "dask", "pandas", "pyarrow", "shapely"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_run_json(outdir: str | Path, command: str, params: dict[str, Any], **extra: Any) -> Path:
    """Write ``outdir/run.json``: command line, parameters, versions, machine, timings."""
    outdir = Path(outdir)
    record = {
        "command": command,
        "argv": sys.argv,
        "parameters": params,
        "versions": package_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    path = outdir / "run.json"
    with atomic_write(path) as fh:
        json.dump(record, fh, indent=2, default=str)
    return path
