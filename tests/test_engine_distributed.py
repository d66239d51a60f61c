"""Tiles fanned out over a process-based dask.distributed cluster give the local result."""

from __future__ import annotations

import faulthandler

import numpy as np
import pytest
from _engine_helpers import DarkBlobSegmenter, drain, planted_image, same_partition

from napari_histo.engine.outputs import load_result
from napari_histo.engine.run import run_segmentation
from napari_histo.engine.source import ArraySlide

distributed = pytest.importorskip("distributed")



@pytest.fixture(scope="module")
def cluster():
    faulthandler.dump_traceback_later(240, exit=True)  # a hung cluster must not hang CI
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=40) as lc:
        yield lc
    faulthandler.cancel_dump_traceback_later()


def test_distributed_matches_local(tmp_path, cluster):
    import dask.base
    from distributed.client import _get_global_client

    image = planted_image(400, 512, seams=128, seed=3)
    seg = DarkBlobSegmenter(mpp=0.5, halo_px=24)
    scheduler_before = dask.base.get_scheduler()
    drain(run_segmentation(ArraySlide(image, mpp=0.5), seg, tmp_path / "local", tile_size=128,
                           tissue=False))
    _, result = drain(run_segmentation(ArraySlide(image, mpp=0.5), seg, tmp_path / "dist",
                                       tile_size=128, tissue=False, scheduler=cluster.scheduler_address))
    assert result.completed
    local, dist = load_result(tmp_path / "local"), load_result(tmp_path / "dist")
    assert len(dist.table) == len(local.table) > 50
    cols = ["id", "x", "y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px"]
    np.testing.assert_array_equal(dist.table[cols].to_numpy(), local.table[cols].to_numpy())
    assert np.array_equal(np.asarray(dist.labels[0][:]), np.asarray(local.labels[0][:]))
    assert same_partition(np.asarray(dist.labels[0][:]), seg.segment(image)[0])
    # the caller's dask scheduler is untouched: no default client was installed
    assert _get_global_client() is None
    assert dask.base.get_scheduler() is scheduler_before
    assert dist.run["parameters"]["scheduler"] == cluster.scheduler_address


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    import dask

    from napari_histo.utils import HistoError

    image = planted_image(200, 200, seams=128, seed=4, n_random=5)
    gen = run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(), tmp_path, tile_size=128,
                           tissue=False, scheduler="tcp://127.0.0.1:9")
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(HistoError, match="cannot reach the dask scheduler"):
            drain(gen)


def test_slide_path_travels_as_spec(tmp_path, cluster, sample_slide_path):
    """A slide opened from a file is reopened in each worker from its (path, backend) spec."""
    seg = DarkBlobSegmenter(mpp=0.5, halo_px=40, threshold=110)
    kw = dict(roi=(600, 700, 500, 400), tile_size=256, tissue=False)
    drain(run_segmentation(sample_slide_path, seg, tmp_path / "local", **kw))
    drain(run_segmentation(sample_slide_path, seg, tmp_path / "dist", scheduler=cluster.scheduler_address, **kw))
    local, dist = load_result(tmp_path / "local"), load_result(tmp_path / "dist")
    assert len(dist.table) == len(local.table) > 20
    np.testing.assert_array_equal(dist.table[["x", "y", "area_px"]].to_numpy(),
                                  local.table[["x", "y", "area_px"]].to_numpy())


def test_losing_the_whole_cluster_is_a_clear_error_and_the_run_resumes(tmp_path):
    """Scheduler and both workers gone mid-run: a clear error, the finished tiles kept, and
    ``--resume`` (here: locally) finishes the same result."""
    from napari_histo.utils import HistoError

    image = planted_image(384, 512, seams=128, seed=9)
    reference = tmp_path / "reference"
    drain(run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(), reference, tile_size=128, tissue=False))
    lost = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                    silence_logs=50)
    out = tmp_path / "dist"
    gen = run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(delay_s=0.3), out, tile_size=128,
                           tissue=False, scheduler=lost.scheduler_address, workers=1)
    try:
        with pytest.raises(HistoError, match="stopped computing tiles.*--resume"):
            for event in gen:
                if event.stage == "tiles" and event.done >= 2:
                    lost.close()
    finally:
        lost.close()
    drain(run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(), out, tile_size=128, tissue=False,
                           resume=True))
    assert same_partition(np.asarray(load_result(reference).labels[0]), np.asarray(load_result(out).labels[0]))
