"""Kill -9 a run after some tiles are journaled, resume it, and get the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from _engine_helpers import DarkBlobSegmenter, drain, planted_image

from napari_histo.engine.outputs import load_result
from napari_histo.engine.run import run_segmentation
from napari_histo.engine.source import ArraySlide
from napari_histo.utils import HistoError, InputFileError

TESTS = Path(__file__).resolve().parent
SHAPE, SEED = (384, 512), 7



def _run(out, **kw):
    image = planted_image(*SHAPE, seams=128, seed=SEED)
    return drain(run_segmentation(ArraySlide(image, mpp=0.5, name="planted.png"), DarkBlobSegmenter(),
                                  out, tile_size=128, tissue=False, **kw))


SCRIPT = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(TESTS)!r})
    from _engine_helpers import DarkBlobSegmenter, planted_image
    from napari_histo.engine.run import run_segmentation
    from napari_histo.engine.source import ArraySlide
    image = planted_image({SHAPE[0]}, {SHAPE[1]}, seams=128, seed={SEED})
    seg = DarkBlobSegmenter(delay_s=0.4)
    for event in run_segmentation(ArraySlide(image, mpp=0.5, name="planted.png"), seg, sys.argv[1],
                                  tile_size=128, tissue=False, batch_size=1, workers=1):
        print(event.stage, event.done, flush=True)
""")


def _journaled(out: Path) -> int:
    path = out / ".partial" / "journal.jsonl"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def test_kill_and_resume_gives_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    _run(reference)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while _journaled(out) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run journaled no tiles in time"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    n_before = _journaled(out)
    assert 3 <= n_before < 12
    # nothing that looks complete after the kill
    for name in ("nuclei.parquet", "labels.zarr", "run.json", "labels.zarr.partial"):
        assert not (out / name).exists(), name
    with pytest.raises(InputFileError, match="did not finish"):
        load_result(out)
    # a torn last line (killed mid-write) is ignored
    with open(out / ".partial" / "journal.jsonl", "a") as fh:
        fh.write('{"tile": 9')

    events, result = _run(out, resume=True)
    assert result.completed
    assert result.stats["resumed_tiles"] == n_before
    assert events[0].stage == "plan" and events[0].done == n_before
    assert not (out / ".partial").exists()
    a, b = load_result(reference), load_result(out)
    cols = ["id", "x", "y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px", "area_um2"]
    np.testing.assert_array_equal(a.table[cols].to_numpy(), b.table[cols].to_numpy())
    for ca, cb in zip(a.table["contour"], b.table["contour"]):
        np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(np.asarray(a.labels[0][:]), np.asarray(b.labels[0][:]))


def test_resume_refuses_a_different_run(tmp_path):
    image = planted_image(*SHAPE, seams=128, seed=SEED)
    gen = run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(), tmp_path, tile_size=128,
                           tissue=False)
    next(gen), next(gen)
    gen.close()  # interrupted after one tile
    assert (tmp_path / ".partial" / "journal.jsonl").exists()
    other = run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(), tmp_path,
                             tile_size=256, tissue=False, resume=True)
    with pytest.raises(HistoError, match="different slide, model or parameters"):
        drain(other)
