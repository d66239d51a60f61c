"""Widget infrastructure: jobs (threaded and synchronous), cancellation, layer alignment, settings."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from napari_histo._napari import _layers
from napari_histo._napari._workers import CANCELLED, Job


def _counting(n: int, log: list):
    try:
        for i in range(n):
            log.append(("tick", i))
            yield {"done": i + 1, "total": n}
        return "complete"
    finally:
        log.append("closed")


@pytest.mark.parametrize("nothreads", ["1", "0"])
def test_job_returns_value_and_reports_progress(nothreads, monkeypatch, qtbot):
    monkeypatch.setenv("NAPARI_HISTO_NOTHREADS", nothreads)
    log: list = []
    seen, returned, finished = [], [], []
    job = Job(_counting, 5, log, on_yield=seen.append, on_return=returned.append, on_finish=lambda: finished.append(1))
    job.start()
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert [e["done"] for e in seen] == [1, 2, 3, 4, 5]
    assert returned == ["complete"]
    assert log[-1] == "closed"
    assert not job.running and not job.cancelled


def _counting_until_seen(n: int, log: list, seen: threading.Event):
    """As :func:`_counting`, but after the third event it waits until the GUI thread has handled
    it: the cancel it asks for then reaches the job before the generator could run on (a worker
    thread on a loaded machine could otherwise finish all ``n`` ticks first)."""
    try:
        for i in range(n):
            log.append(("tick", i))
            yield {"done": i + 1, "total": n}
            if i == 2:
                assert seen.wait(timeout=30), "the GUI thread never handled the third event"
        return "complete"
    finally:
        log.append("closed")


@pytest.mark.parametrize("nothreads", ["1", "0"])
def test_job_cancel_closes_core_generator(nothreads, monkeypatch, qtbot):
    monkeypatch.setenv("NAPARI_HISTO_NOTHREADS", nothreads)
    log: list = []
    returned, finished = [], []
    seen = threading.Event()
    job = Job(_counting_until_seen, 1000, log, seen, on_return=returned.append, on_finish=lambda: finished.append(1))

    def on_yield(event):
        if event["done"] == 3:
            job.cancel()
            seen.set()

    job.on_yield = on_yield
    job.start()
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert returned == [CANCELLED]
    ticks = [entry for entry in log if entry != "closed"]
    assert len(ticks) < 1000  # stopped early
    assert log[-1] == "closed"  # the core generator's finally ran
    assert job.cancelled


@pytest.mark.parametrize("nothreads", ["1", "0"])
def test_job_error_becomes_callback_not_exception(nothreads, monkeypatch, qtbot):
    monkeypatch.setenv("NAPARI_HISTO_NOTHREADS", nothreads)

    def failing():
        yield 1
        raise ValueError("slide.svs: truncated tile")

    errors, finished = [], []
    Job(failing, on_error=errors.append, on_finish=lambda: finished.append(1)).start()
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert len(errors) == 1 and "truncated" in str(errors[0])


def test_heatmap_cells_are_centred_on_their_level0_blocks():
    """napari grid rule: cell (i, j) of a P-px grid sits on level-0 pixels [P*i, P*i+P)."""
    from napari.layers import Image

    slide = Image(np.zeros((640, 480, 3), np.uint8), rgb=True, scale=(0.5, 0.5), translate=(10.0, -4.0))
    p = 32
    checker = (np.indices((640 // p, 480 // p)).sum(0) % 2).astype(np.float32)
    data, meta, kind = _layers.heatmap_layer_data(checker, p, slide)
    heat = Image(data, **meta)
    for i, j in [(0, 0), (3, 7), (19, 14)]:
        cell_world = heat.data_to_world(np.array([i, j], float))
        block_centre = np.array([p * i + (p - 1) / 2, p * j + (p - 1) / 2])
        np.testing.assert_allclose(cell_world, slide.data_to_world(block_centre))
    # the first cell's outer edge coincides with the first slide pixel's outer edge
    heat_edge = heat.data_to_world(np.zeros(2)) - np.asarray(heat.scale) / 2
    slide_edge = slide.data_to_world(np.zeros(2)) - np.asarray(slide.scale) / 2
    np.testing.assert_allclose(heat_edge, slide_edge)


def _table_from_labels(labels: np.ndarray, mpp: float) -> pd.DataFrame:
    from skimage.measure import regionprops

    rows = []
    for r in regionprops(labels):
        y, x = r.centroid
        rows.append({
            "id": r.label, "x": x, "y": y, "bbox_x0": r.bbox[1], "bbox_y0": r.bbox[0],
            "bbox_x1": r.bbox[3], "bbox_y1": r.bbox[2], "area_px": float(r.area),
            "area_um2": r.area * mpp * mpp, "perimeter_px": r.perimeter, "type": 1 + r.label % 2,
            "type_prob": 0.9, "contour": np.zeros((0, 2), np.float32),
        })
    df = pd.DataFrame(rows)
    df.attrs["mpp"] = mpp
    df.attrs["type_info"] = {"0": ["background", [0, 0, 0]], "1": ["tumour", [255, 0, 0]], "2": ["lymphocyte", [0, 0, 255]]}
    return df


def test_points_and_labels_follow_the_slide_and_types():
    from napari.layers import Image, Labels, Points
    from skimage.draw import disk

    labels = np.zeros((200, 300), np.int32)
    centres = [(30, 40), (100, 150), (160, 260), (60, 220)]
    for k, c in enumerate(centres, 1):
        labels[disk(c, 9, shape=labels.shape)] = k
    table = _table_from_labels(labels, 0.25)
    slide = Image(np.zeros((200, 300, 3), np.uint8), rgb=True, scale=(0.25, 0.25))

    data, meta, kind = _layers.points_layer_data(table, slide)
    points = Points(data, **meta)
    assert kind == "points" and len(points.data) == 4
    # centroid world position = slide world position of the nucleus centre pixel
    np.testing.assert_allclose(points.data_to_world(points.data[1]), slide.data_to_world(np.array(centres[1], float)), atol=1e-6)
    assert list(points.features["type_name"]) == ["lymphocyte", "tumour", "lymphocyte", "tumour"]
    np.testing.assert_allclose(points.face_color[0], [0, 0, 1, 1])
    np.testing.assert_allclose(points.face_color[1], [1, 0, 0, 1])

    ldata, lmeta, lkind = _layers.labels_layer_data(labels, table, slide)
    layer = Labels(ldata, **lmeta)
    assert lkind == "labels"
    rgba = layer.colormap.map(np.array([0, 1, 2]))
    np.testing.assert_allclose(rgba[0, 3], 0)  # background transparent
    np.testing.assert_allclose(rgba[1], [0, 0, 1, 1])  # id 1 -> type 2 (lymphocyte, blue)
    np.testing.assert_allclose(rgba[2], [1, 0, 0, 1])
    assert layer.features.loc[layer.features["index"] == 3, "type_name"].item() == "lymphocyte"

    counts = _layers.type_counts(table)
    assert [(name, n) for _, name, _, n in counts] == [("tumour", 2), ("lymphocyte", 2)]


def test_plugin_settings_come_from_the_manifest(tmp_path, monkeypatch):
    import napari.settings as ns

    from napari_histo._napari._settings import DEFAULTS, engine_settings

    monkeypatch.delenv("NAPARI_HISTO_SCHEDULER", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    ns._clear_plugin_settings_cache()
    try:  # a private settings folder: the user's napari configuration is never touched
        settings = ns.get_plugin_settings("napari-histo", path_dir=tmp_path)
    except KeyError:
        pytest.skip("napari-histo is not registered with npe2 in this environment")
    assert settings.engine.tile_size == DEFAULTS.tile_size
    settings.engine.tile_size = 2048
    try:
        assert engine_settings().tile_size == 2048
        monkeypatch.setenv("NAPARI_HISTO_SCHEDULER", "tcp://10.0.0.1:8786")
        assert engine_settings().scheduler_address == "tcp://10.0.0.1:8786"
    finally:
        settings.engine.tile_size = DEFAULTS.tile_size
        ns._clear_plugin_settings_cache()


def test_viewport_culling_shows_only_points_near_the_view(make_napari_viewer):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    yx = rng.uniform(0, 20_000, (30_000, 2))
    points = viewer.add_points(yx, scale=(0.5, 0.5), size=4)
    culling = _layers.ViewportCulling(viewer, points, margin=0.0, min_points=20_000)
    viewer.scene.camera.center = (2500.0, 2500.0)  # world units (0.5 per data px)
    viewer.scene.camera.zoom = 1.0  # canvas (h, w) world units on screen
    h, w = viewer.canvas.size
    world = yx * 0.5
    expected = (np.abs(world[:, 0] - 2500.0) <= h / 2) & (np.abs(world[:, 1] - 2500.0) <= w / 2)
    assert 0 < expected.sum() < len(yx)
    np.testing.assert_array_equal(points.shown, expected)
    viewer.reset_view()  # whole layer in view: everything shown
    assert points.shown.all()
    culling.disconnect()


@pytest.mark.parametrize("n_points", [30_000, 2_000])  # a culled layer, and one too small to cull
def test_viewport_culling_keeps_user_hidden_points_hidden(make_napari_viewer, n_points):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    yx = rng.uniform(0, 20_000, (n_points, 2))
    features = pd.DataFrame({"type": rng.integers(1, 4, n_points)})
    points = viewer.add_points(yx, scale=(0.5, 0.5), size=4, features=features)
    culling = _layers.ViewportCulling(viewer, points, margin=0.0, min_points=20_000)
    culled = n_points >= 20_000
    world = yx * 0.5

    def in_view() -> np.ndarray:
        if not culled:
            return np.ones(n_points, bool)
        h, w = viewer.canvas.size
        zoom = viewer.scene.camera.zoom
        cy, cx = viewer.scene.camera.center[-2:]
        return (np.abs(world[:, 0] - cy) <= h / 2 / zoom) & (np.abs(world[:, 1] - cx) <= w / 2 / zoom)

    viewer.scene.camera.center, viewer.scene.camera.zoom = (2500.0, 2500.0), 1.0
    # a features filter hides one type
    keep = points.features["type"].to_numpy() != 2
    points.shown = keep
    np.testing.assert_array_equal(points.shown, in_view() & keep)  # culled at once, filter kept
    np.testing.assert_array_equal(culling.user_shown, keep)
    views = [((7000.0, 3000.0), 1.0), ((5000.0, 5000.0), 0.2), ((9000.0, 8000.0), 2.0), ((2500.0, 2500.0), 1.0)]
    for centre, zoom in views:
        viewer.scene.camera.center = centre
        viewer.scene.camera.zoom = zoom
        assert not points.shown[~keep].any(), f"a hidden point came back at {centre}, zoom {zoom}"
        np.testing.assert_array_equal(points.shown, in_view() & keep)
    viewer.reset_view()  # whole layer in view: exactly the user's choice
    np.testing.assert_array_equal(points.shown, keep)

    # deleting points keeps every other point's choice
    hidden, visible = int(np.flatnonzero(~keep)[0]), int(np.flatnonzero(keep)[0])
    points.selected_data = {hidden, visible}
    points.remove_selected()
    keep = np.delete(keep, [hidden, visible])
    world = np.delete(world, [hidden, visible], axis=0)
    n_points -= 2
    np.testing.assert_array_equal(culling.user_shown, keep)
    viewer.scene.camera.center, viewer.scene.camera.zoom = (6000.0, 6000.0), 1.0
    np.testing.assert_array_equal(points.shown, in_view() & keep)

    # showing everything again: culling alone decides
    points.shown = np.ones(n_points, bool)
    viewer.scene.camera.center = (3000.0, 9000.0)
    np.testing.assert_array_equal(points.shown, in_view())
    assert points.shown.sum() < n_points if culled else points.shown.all()
    culling.disconnect()
