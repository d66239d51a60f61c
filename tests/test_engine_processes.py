"""Post-processing in worker processes gives the result of post-processing in threads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _engine_helpers import DarkBlobSegmenter, drain, planted_image

from napari_histo.engine.options import available_cores, post_process_count
from napari_histo.engine.outputs import load_result
from napari_histo.engine.run import run_segmentation
from napari_histo.engine.source import ArraySlide

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLUMNS = ["id", "x", "y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px", "type"]


def _same(a, b) -> None:
    ra, rb = load_result(a), load_result(b)
    assert len(ra.table) == len(rb.table) > 20
    np.testing.assert_array_equal(ra.table[COLUMNS].to_numpy(), rb.table[COLUMNS].to_numpy())
    np.testing.assert_allclose(ra.table["type_prob"].to_numpy(np.float64), rb.table["type_prob"].to_numpy(np.float64))
    assert np.array_equal(np.asarray(ra.labels[0][:]), np.asarray(rb.labels[0][:]))


def test_the_default_is_processes_on_a_gpu_and_threads_on_the_cpu():
    assert post_process_count(None, "cpu") == 0
    assert post_process_count(None, None) == 0
    assert post_process_count(None, "cuda:0") == max(1, available_cores() - 1)
    # a small run (a field of view in the viewer) does not pay for starting processes
    assert post_process_count(None, "cuda", n_tiles=3) == 0
    assert post_process_count(None, "cuda", n_tiles=40) == max(1, min(available_cores() - 1, 10))
    assert post_process_count(0, "cuda") == 0 and post_process_count(3, "cpu") == 3


def test_processes_match_threads_on_planted_nuclei(tmp_path):
    image = planted_image(400, 520, seams=128, seed=5)
    seg = DarkBlobSegmenter(mpp=0.5, halo_px=24)
    kw = dict(tile_size=128, tissue=False)
    drain(run_segmentation(ArraySlide(image, mpp=0.5), seg, tmp_path / "threads", post_processes=0, **kw))
    _, result = drain(run_segmentation(ArraySlide(image, mpp=0.5), seg, tmp_path / "procs", post_processes=2, **kw))
    assert result.completed and result.stats["post_processes"] == 2
    _same(tmp_path / "threads", tmp_path / "procs")


def test_processes_match_threads_with_the_default_model_on_the_sample(tmp_path, sample_slide_path):
    """The network's maps are sent to two processes that hold the segmenter without its network."""
    kw = dict(roi=(600, 700, 700, 600), tile_size=512, tissue=False, device="cpu")
    drain(run_segmentation(sample_slide_path, "default", tmp_path / "threads", post_processes=0, **kw))
    drain(run_segmentation(sample_slide_path, "default", tmp_path / "procs", post_processes=2, **kw))
    _same(tmp_path / "threads", tmp_path / "procs")
    run = json.loads((tmp_path / "procs" / "run.json").read_text())
    assert run["stats"]["post_processes"] == 2
