"""Progress events, cancellation, bounded read-ahead, regions of interest."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _engine_helpers import DarkBlobSegmenter, drain, planted_image

from napari_histo.engine.compute import split_batch
from napari_histo.engine.outputs import load_result
from napari_histo.engine.run import run_segmentation
from napari_histo.engine.source import ArraySlide


@pytest.fixture(scope="module")
def image():
    return planted_image(384, 512, seams=128, seed=11)



def _reader_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("napari-histo-reader", "napari-histo-post"))]


def test_progress_events(tmp_path, image):
    events, result = drain(run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(), tmp_path,
                                            tile_size=128, tissue=False, batch_size=2))
    tiles = [e for e in events if e.stage == "tiles"]
    assert [e.done for e in tiles] == list(range(1, 13))
    assert {e.total for e in events} == {12}
    assert sorted(e.tile for e in tiles) == list(range(12))
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in tiles) and tiles[-1].eta_s == 0
    elapsed = [e.elapsed_s for e in events]
    assert elapsed == sorted(elapsed)
    nuclei = [e.nuclei for e in tiles]
    assert nuclei == sorted(nuclei)
    assert [e.stage for e in events][-2:] == ["assemble", "done"]
    assert events[-1].nuclei == result.n_nuclei == len(load_result(tmp_path).table)


def test_cancel_event_stops_and_resume_finishes(tmp_path, image):
    cancel = threading.Event()
    gen = run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(), tmp_path, tile_size=128,
                           tissue=False, cancel=cancel)
    events = []
    for event in gen:
        events.append(event)
        if event.stage == "tiles" and event.done == 3:
            cancel.set()
    assert events[-1].stage == "cancelled" and events[-1].done == 3
    assert not (tmp_path / "nuclei.parquet").exists() and not (tmp_path / "run.json").exists()
    assert not _reader_threads()
    events, result = drain(run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(), tmp_path,
                                            tile_size=128, tissue=False, resume=True))
    assert result.completed and result.stats["resumed_tiles"] == 3


def test_closing_the_generator_stops_the_threads(tmp_path, image):
    gen = run_segmentation(ArraySlide(image, mpp=0.5), DarkBlobSegmenter(delay_s=0.05), tmp_path,
                           tile_size=128, tissue=False, readers=2, workers=2)
    next(gen), next(gen)
    assert _reader_threads()
    gen.close()  # what napari's worker.quit() does
    assert not _reader_threads()
    assert not (tmp_path / "nuclei.parquet").exists()


class CountingSlide(ArraySlide):
    """Counts windows read, to measure how far reading runs ahead of inference."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = 0
        self.lock = threading.Lock()

    def read_region(self, *args, **kwargs):
        out = super().read_region(*args, **kwargs)
        with self.lock:
            self.reads += 1
        return out


class SlowModel(DarkBlobSegmenter):
    """Inference slower than reading; records the read-ahead at each batch."""

    def __init__(self, slide, **kwargs):
        super().__init__(delay_s=0.02, **kwargs)
        self.slide = slide
        self.predicted = 0
        self.ahead = []

    def predict(self, rgb):
        n = rgb.shape[0] if rgb.ndim == 4 else 1
        self.ahead.append(self.slide.reads - self.predicted)
        self.predicted += n
        return super().predict(rgb)


@pytest.mark.parametrize("prefetch", [3])
def test_read_ahead_is_bounded_by_the_queue(tmp_path, prefetch):
    img = planted_image(640, 640, seams=128, seed=2, n_random=20)
    slide = CountingSlide(img, mpp=0.5)
    model = SlowModel(slide)
    _, result = drain(run_segmentation(slide, model, tmp_path, tile_size=128, tissue=False,
                                       batch_size=2, readers=2, prefetch=prefetch))
    assert slide.reads == result.n_tiles == 25
    # queued + one window in each reader's hand + the batch being collected
    assert max(model.ahead) <= prefetch + 2 + 2
    assert max(model.ahead) >= prefetch  # the readers did run ahead
    assert result.stats["max_read_queue"] <= result.stats["read_queue_bound"] == prefetch
    assert result.stats["max_inflight"] <= result.stats["inflight_bound"]


def test_roi_keeps_nuclei_with_centroid_inside(tmp_path, image):
    from shapely.geometry import Polygon

    seg = DarkBlobSegmenter()
    _, full = seg.segment(image)
    triangle = [(20, 20), (400, 40), (100, 350)]
    _, result = drain(run_segmentation(ArraySlide(image, mpp=0.5), seg, tmp_path, roi=triangle,
                                       tile_size=128, tissue=False))
    table = load_result(tmp_path).table
    inside = np.array([Polygon(triangle).contains(Polygon([(x, y), (x + 1e-9, y), (x, y + 1e-9)]))
                       for x, y in zip(full["x"], full["y"])])
    assert len(table) == inside.sum() > 10
    assert result.n_tiles < 12  # tiles outside the triangle were not read
    _, box_result = drain(run_segmentation(ArraySlide(image, mpp=0.5), seg, tmp_path / "box",
                                           roi=(130, 0, 100, 384), tile_size=128, tissue=False))
    box_table = load_result(tmp_path / "box").table
    assert box_result.n_tiles == 6  # columns within one halo of the ROI (x 106..254)
    assert ((box_table["x"] >= 130) & (box_table["x"] <= 230)).all()
    assert len(box_table) == ((full["x"] > 130) & (full["x"] < 230)).sum()


def test_split_batch_shapes():
    arr = np.arange(24).reshape(2, 3, 4)
    assert [a.shape for a in split_batch(arr, 2)] == [(3, 4), (3, 4)]
    parts = split_batch({"np": arr, "hv": arr * 2}, 2)
    assert parts[1]["hv"][0, 0] == 24


def test_classical_stains_are_decided_once_per_slide(tmp_path, sample_slide_path):
    """An IHC-like slide with DAB only on its left half: every tile is deconvolved as H-DAB, so
    every nucleus has a DAB OD and a positive call (per-tile detection left the right half as
    H&E, without them); positives lie on the left only. run.json records the decision."""
    import json

    from napari_histo.nuclei.classical import STAIN_VECTORS, ClassicalSegmenter, stain_od
    from napari_histo.slide import open_slide

    with open_slide(sample_slide_path) as slide:
        rgb = slide.read_region((800, 1600), (1024, 1024))  # tissue on both halves
    haem = np.clip(stain_od(rgb, "he")[..., 0], 0, None)
    labels, _ = ClassicalSegmenter(pixel_size_um=0.5, stains="he").segment(rgb)
    dab = np.where((labels > 0) & (labels % 3 == 0), 0.7, 0.0)
    dab[:, 512:] = 0.0
    h_vec, d_vec = (v / np.linalg.norm(v) for v in (STAIN_VECTORS["he"][0], STAIN_VECTORS["hdab"][1]))
    ihc = np.clip(255 * 10 ** -(haem[..., None] * h_vec + dab[..., None] * d_vec), 0, 255).astype(np.uint8)
    _, result = drain(run_segmentation(ArraySlide(ihc, mpp=0.5), "classical", tmp_path, tile_size=384))
    table = load_result(tmp_path).table
    assert len(table) > 500 and table["dab_od"].notna().all() and table["positive"].notna().all()
    positive = table["positive"].astype(bool)
    assert positive.sum() > 100 and (table.loc[positive, "x"] < 520).all()
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["model"]["config"]["stains"] == "hdab"


def test_objects_above_the_area_bound_are_dropped_and_counted(tmp_path):
    """A nucleus-sized blob is kept; a 400 µm² "nucleus" (a fold, a clump) is dropped, counted in
    run.json and named in a warning; without a bound it is kept."""
    from skimage.draw import disk

    from napari_histo.engine.options import SegmentationOptions

    rgb = np.full((400, 400, 3), 235, np.uint8)
    for rr, cc in (disk((100, 100), 12), disk((250, 250), 45)):  # at 0.25 µm/px: 28 µm² and 398 µm²
        rgb[rr, cc] = 40
    seg = DarkBlobSegmenter(mpp=0.25, halo_px=100)

    def run(name, max_area):
        opts = SegmentationOptions(tile_size=512, tissue=False, max_area_um2=max_area)
        _, result = drain(run_segmentation(ArraySlide(rgb, mpp=0.25), seg, tmp_path / name, None, opts))
        return load_result(tmp_path / name)

    bounded = run("bounded", 200.0)
    assert bounded.run["stats"]["dropped_too_large"] == 1
    assert bounded.run["options"]["max_area_um2"] == 200.0
    assert len(bounded.table) == 1 and bounded.table["area_um2"].max() < 40
    assert any("larger than 200 µm²" in w for w in bounded.run["warnings"])
    assert np.asarray(bounded.labels[0][250, 250]) == 0  # gone from the label image too
    unbounded = run("unbounded", None)
    assert unbounded.run["stats"]["dropped_too_large"] == 0 and len(unbounded.table) == 2


def test_without_a_pixel_size_areas_are_nan_not_computed_at_an_assumed_scale(tmp_path):
    from napari_histo.engine.options import SegmentationOptions

    rgb = np.full((200, 200, 3), 235, np.uint8)
    rgb[40:60, 40:60] = 40
    opts = SegmentationOptions(tile_size=256, tissue=False)
    _, result = drain(run_segmentation(ArraySlide(rgb, mpp=None), DarkBlobSegmenter(mpp=0.25), tmp_path, None, opts))
    out = load_result(tmp_path)
    assert len(out.table) == 1 and out.table["area_px"].iloc[0] == 400
    assert np.isnan(out.table["area_um2"]).all()
    assert out.run["stats"]["dropped_too_large"] == 0  # no bound without a pixel size
    assert any("no mpp" in w for w in out.run["warnings"])


def test_the_thread_budget_caps_network_threads_and_workers():
    from napari_histo.engine.options import thread_budget

    assert thread_budget(None, 2) == (None, 2)  # torch's default: measured fastest on the sample
    assert thread_budget(1, 2) == (1, 1)
    assert thread_budget(4, 2) == (4, 2)
    for total in range(1, 20):
        torch_threads, post = thread_budget(total, 64)
        assert torch_threads == total and 1 <= post <= total
