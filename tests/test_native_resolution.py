"""20× images run on the default model's network grid (0.5 µm/px), never upsampled to 0.25 first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_histo.engine.run import run_segmentation
from napari_histo.engine.source import ArraySlide
from napari_histo.models import get_segmenter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def default():
    return get_segmenter("default", device="cpu")


def _drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _detour(segmenter):
    import copy

    old = copy.copy(segmenter)
    old.for_resolution = lambda mpp: old
    return old


def test_the_segmenter_switches_to_its_network_grid_only_for_coarser_images(default):
    assert default.mpp == 0.25 and default.work_downsample == 2
    for mpp in (None, 0.2, 0.25, 0.2465, 0.26):
        assert default.for_resolution(mpp) is default
    native = default.for_resolution(0.499)
    assert native is not default and native.model is default.model  # same weights, not a copy
    assert (native.mpp, native.work_downsample, native.work_mpp) == (0.5, 1, 0.5)
    assert native.post_params == default.post_params  # the constants were already the grid's
    # the same physical halo (network margin + the largest nucleus)
    assert native.halo_px * native.mpp == pytest.approx(default.halo_px * default.mpp)
    assert native.for_resolution(0.5) is native
    # the classical detector has no network grid: unchanged
    classical = get_segmenter("classical")
    assert getattr(classical, "for_resolution", None) is None


def test_a_20x_slide_is_read_natively_with_the_same_physical_tiles(default, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(150, 230, (700, 900, 3), dtype=np.uint8)
    result = _drain(run_segmentation(ArraySlide(image, mpp=0.5), default, tmp_path / "native",
                                     tile_size=512, tissue=False))
    plan = result.plan
    assert (plan.work_mpp, plan.scale) == (0.5, 1.0)  # level 0 as it is: no resampling
    assert plan.tile0 == 256  # 512 model px at 0.25 µm/px = 128 µm = 256 px at 0.5
    old = _drain(run_segmentation(ArraySlide(image, mpp=0.5), _detour(default), tmp_path / "detour",
                                  tile_size=512, tissue=False))
    assert (old.plan.work_mpp, old.plan.tile0) == (0.25, 256)
    # a 40× slide keeps the model's presented resolution
    big = _drain(run_segmentation(ArraySlide(image, mpp=0.25), default, tmp_path / "forty",
                                  tile_size=512, tissue=False))
    assert (big.plan.work_mpp, big.plan.scale, big.plan.tile0) == (0.25, 1.0, 512)


@pytest.mark.skipif(not (SHARED / "monuseg").is_dir(), reason="needs ../shared/data/monuseg")
def test_native_20x_is_as_accurate_as_40x_and_no_worse_than_the_detour(default):
    """A held-out MoNuSeg tile averaged 2 × 2 to 20×: the native path scores against the
    ground truth at least as well as the old upsampling detour and as the 40× tile itself."""
    from napari_histo.models.segment import resize_labels, segment_image
    from napari_histo.nuclei.hovernet_segmenter import block_mean
    from napari_histo.nuclei.metrics import instance_scores
    from src_models.hovernet.data import load_monuseg_native

    rgb, inst, mpp = load_monuseg_native(SHARED, "TCGA-AO-A0J2-01A-01-BSA")
    rgb, inst = rgb[:600, :600], inst[:600, :600]
    small = np.clip(np.rint(block_mean(rgb, 2)), 0, 255).astype(np.uint8)
    small_inst = resize_labels(inst, small.shape[:2])
    native, _ = segment_image(small, 2 * mpp, model=default)
    detour, _ = segment_image(small, 2 * mpp, model=_detour(default))
    forty, _ = segment_image(rgb, mpp, model=default)
    pq_native = instance_scores(small_inst, native)["pq"]
    pq_detour = instance_scores(small_inst, detour)["pq"]
    pq_forty = instance_scores(inst, forty)["pq"]
    assert native.shape == small.shape[:2]
    assert pq_native >= pq_detour - 0.01
    assert pq_native >= pq_forty - 0.03
    assert pq_native > 0.45


def test_distributed_workers_rebuild_the_segmenter_at_the_slides_resolution():
    """A registry model travels by name with the slide's µm/px; the worker picks the same grid."""
    from napari_histo.engine.distributed import _cached_model
    from napari_histo.engine.run import _model_spec

    spec = _model_spec("default", None, "cpu", None, 0.499)
    assert _cached_model(spec).mpp == 0.5
    assert _cached_model(_model_spec("default", None, "cpu", None, 0.25)).mpp == 0.25
    assert _cached_model(_model_spec("default", None, "cpu")).mpp == 0.25
