"""A run killed between any two filesystem steps leaves a folder that is complete or resumable;
one run per output folder; nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _engine_helpers import DarkBlobSegmenter, drain, planted_image

from napari_histo.engine.outputs import load_result
from napari_histo.engine.run import run_segmentation
from napari_histo.engine.source import ArraySlide
from napari_histo.utils import HistoError, InputFileError

TESTS = Path(__file__).resolve().parent
SHAPE, SEED = (256, 384), 11
OPTIONS = {"tile_size": 128, "tissue": False, "batch_size": 1, "workers": 1, "geojson": True, "hovernet_json": True}

SCRIPT = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(TESTS)!r})
    from _engine_helpers import DarkBlobSegmenter, planted_image
    from napari_histo.engine.run import run_segmentation
    from napari_histo.engine.source import ArraySlide
    image = planted_image({SHAPE[0]}, {SHAPE[1]}, seams=128, seed={SEED})
    for _ in run_segmentation(ArraySlide(image, mpp=0.5, name="planted.png"), DarkBlobSegmenter(), sys.argv[1],
                              **{OPTIONS!r}):
        pass
""")


def _run(out, **kw):
    image = planted_image(*SHAPE, seams=128, seed=SEED)
    return drain(run_segmentation(ArraySlide(image, mpp=0.5, name="planted.png"), DarkBlobSegmenter(), out,
                                  **{**OPTIONS, **kw}))


def _same_result(a: Path, b: Path) -> None:
    ra, rb = load_result(a), load_result(b)
    cols = [c for c in ra.table.columns if c != "contour"]
    pd.testing.assert_frame_equal(ra.table[cols], rb.table[cols])
    np.testing.assert_array_equal(np.asarray(ra.labels[0]), np.asarray(rb.labels[0]))
    assert (a / "planted.json").read_bytes() == (b / "planted.json").read_bytes()


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()
                  if p.name in (".partial", "labels.zarr.partial", "labels.zarr.old") or ".part" in p.name)


def test_a_kill_between_any_two_filesystem_steps_loses_nothing(tmp_path):
    reference = tmp_path / "reference"
    _, result = _run(reference)
    assert result.completed
    kills = 0
    for step in range(1, 400):
        out = tmp_path / f"killed_{step}"
        env = {**os.environ, "NAPARI_HISTO_CRASH_AT": str(step)}
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, timeout=120)
        if proc.returncode == 0:  # the run has fewer steps than this: every step was tried
            break
        assert proc.returncode == 137, proc.stderr.decode()[-2000:]
        kills += 1
        # right after the kill: complete and loadable, or refused as unfinished
        if (out / "run.json").exists():
            _same_result(reference, out)
        else:
            with pytest.raises(InputFileError):
                load_result(out)
        _, resumed = _run(out, resume=True)
        assert resumed.completed
        _same_result(reference, out)
        assert _leftovers(out) == [], step
    assert kills >= 20  # tiles (table, labels, journal line), assembly, run.json, clean-up


def test_a_re_run_removes_what_it_no_longer_writes_and_stale_temporaries(tmp_path):
    out = tmp_path / "run"
    _run(out)
    assert (out / "planted.geojson").exists() and (out / "planted.json").exists()
    (out / ".nuclei.parquet.abc123.part").write_bytes(b"half a file from a killed write")
    _run(out, geojson=False)
    assert not (out / "planted.geojson").exists()  # no GeoJSON of the previous run beside the new one
    assert (out / "planted.json").exists()
    assert _leftovers(out) == []


def test_one_run_per_output_folder(tmp_path):
    image = planted_image(*SHAPE, seams=128, seed=SEED)
    first = run_segmentation(ArraySlide(image, mpp=0.5, name="planted.png"), DarkBlobSegmenter(), tmp_path, **OPTIONS)
    next(first)  # planned: the first run holds the folder
    second = run_segmentation(ArraySlide(image, mpp=0.5, name="planted.png"), DarkBlobSegmenter(), tmp_path, **OPTIONS)
    with pytest.raises(HistoError, match=rf"another napari-histo run is writing this folder \(process {os.getpid()} on"):
        next(second)
    drain(first)
    assert load_result(tmp_path).table is not None
    _, again = _run(tmp_path)  # released when the first run ended
    assert again.completed
