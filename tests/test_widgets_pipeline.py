"""End-to-end widget tests on the shipped sample slide: open -> nuclei -> density/hotspots ->
export -> import, and Cancel mid-run.

Runs under a virtual display (pytest-xvfb). The classical detector keeps the runs short; the
threaded job path is exercised (``NAPARI_HISTO_NOTHREADS=0``) and waited on with ``qtbot``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _widget_helpers import look_at, open_with_slide_panel

pytestmark = pytest.mark.gui

#: A tissue-rich level-0 box of the sample slide (x0, y0, x1, y1).
VIEW_BOX = (1100, 1000, 1500, 1400)


def _run_nuclei(panel, qtbot, outdir, timeout=90_000):
    job = panel.run(outdir=outdir)
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=timeout)
    return job


def test_sample_slide_end_to_end(viewer, qtbot, sample_slide_path, tmp_path):
    from napari.layers import Image, Labels, Points, Shapes

    from napari_histo._napari import _layers
    from napari_histo._napari._analysis_panel import AnalysisPanel
    from napari_histo._napari._exchange import default_paths
    from napari_histo._napari._export_panel import ExportPanel
    from napari_histo._napari._nuclei_panel import NucleiPanel

    slide_panel, slide = open_with_slide_panel(viewer, sample_slide_path)
    assert slide_panel.labels["vendor"].text().startswith("aperio")
    assert "0.4990" in slide_panel.labels["mpp"].text()
    assert slide_panel.labels["power"].text() == "20×"
    assert not slide_panel.predict_button.isVisibleTo(slide_panel)  # mpp known: nothing to predict

    # tissue mask overlay lines up with the slide and covers part of it
    slide_panel.tissue_box.setChecked(True)
    qtbot.waitUntil(lambda: _layers.TISSUE in viewer.layers, timeout=30_000)
    tissue = viewer.layers[_layers.TISSUE]
    assert isinstance(tissue, Labels) and 0.1 < tissue.data.mean() < 0.95
    np.testing.assert_allclose(
        tissue.data_to_world(np.array(tissue.data.shape, float)) - np.asarray(tissue.scale) / 2,
        slide.data_to_world(np.array(_layers.level0_shape(slide), float)) - np.asarray(slide.scale) / 2,
        rtol=0.01,
    )
    slide_panel.tissue_box.setChecked(False)
    assert not tissue.visible

    # ---- nuclei in the current field of view
    viewer.layers.selection.active = slide
    look_at(viewer, slide, VIEW_BOX)
    nuclei = NucleiPanel(viewer)
    nuclei.model_combo.setCurrentText("classical (no training)")
    nuclei.scope_combo.setCurrentText("current view")
    x, y, w, h = nuclei.region(slide)
    assert x <= VIEW_BOX[0] + 1 and y <= VIEW_BOX[1] + 1 and x + w >= VIEW_BOX[2] - 1 and y + h >= VIEW_BOX[3] - 1
    job = _run_nuclei(nuclei, qtbot, tmp_path / "run")
    assert job.error is None and not job.cancelled
    table = nuclei.table
    n = len(table)
    assert n > 30, n
    points = viewer.layers[_layers.NUCLEI_POINTS]
    labels = viewer.layers[_layers.NUCLEI_LABELS]
    assert isinstance(points, Points) and isinstance(labels, Labels)
    assert len(points.data) == n and len(points.features) == n
    assert {"type_name", "type_prob", "area_um2"} <= set(points.features.columns)
    # every centroid inside the requested region
    assert table["x"].between(x - 1, x + w).all() and table["y"].between(y - 1, y + h).all()
    # labels carry exactly the table's ids, and sit where the table says (world coordinates)
    level0 = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    assert set(np.unique(level0)) - {0} == set(table["id"])
    hits = 0
    for _, nucleus in table.iterrows():
        world = slide.data_to_world(np.array([nucleus["y"], nucleus["x"]]))
        r, c = np.round(np.asarray(labels.world_to_data(world), float)).astype(int)[-2:]
        hits += int(0 <= r < level0.shape[0] and 0 <= c < level0.shape[1] and level0[r, c] == nucleus["id"])
    assert hits >= 0.9 * n, (hits, n)
    # same world position for a nucleus in the points layer and the slide
    row = table.iloc[0]
    np.testing.assert_allclose(points.data_to_world(points.data[0]), slide.data_to_world(np.array([row["y"], row["x"]])))
    assert sum(nuclei.legend_counts().values()) == n
    shown = nuclei.show_nucleus(int(row["id"]))
    assert shown["area_px"] == pytest.approx(row["area_px"])
    assert nuclei.details.rowCount() == len(shown)
    assert not (tmp_path / "run" / ".partial").exists()

    # ---- density and hotspots
    analysis = AnalysisPanel(viewer)
    analysis.radius.setValue(40.0)
    analysis.k.setValue(2)
    ajob = analysis.run()
    qtbot.waitUntil(lambda: not ajob.running, timeout=30_000)
    assert ajob.error is None
    heat = viewer.layers[_layers.HEATMAP]
    assert isinstance(heat, Image) and heat.opacity == pytest.approx(0.6)
    # readable: a colour bar, the map's meaning and units on the canvas, zero density transparent
    assert heat.colorbar.visible and viewer.canvas.overlays.text.visible
    assert "Nuclei within the radius" in viewer.canvas.overlays.text.text and "nuclei" in viewer.canvas.overlays.text.text
    assert heat.colormap.colors[0][3] == 0.0
    assert viewer.canvas.overlays.scale_bar.visible and tuple(str(u) for u in slide.units) == ("micrometer", "micrometer")
    assert analysis.nuclei_combo.currentText() == _layers.NUCLEI_POINTS
    dmap = analysis.density
    # the map's peak cell, in world coordinates, sits over nuclei: the count within r there is
    # the map value (recount from the table around that world point)
    i, j = np.unravel_index(int(np.nanargmax(dmap.array)), dmap.shape)
    centre_yx = _layers.world_to_level0(slide, heat.data_to_world(np.array([i, j], float)))
    d = np.hypot(table["x"] - centre_yx[1], table["y"] - centre_yx[0])
    assert abs(int((d <= dmap.radius_px).sum()) - dmap.array[i, j]) <= 0.15 * dmap.array[i, j] + 2
    hotspots = viewer.layers[_layers.HOTSPOTS]
    assert isinstance(hotspots, Shapes) and 1 <= len(hotspots.data) <= 2
    assert analysis.table_widget.rowCount() == len(hotspots.data)
    analysis.go_to(0)
    spot = analysis.hotspots.iloc[0]
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], slide.data_to_world(np.array([spot["y"], spot["x"]])), atol=1e-6)

    # hotspots limited to a drawn region (a new Shapes layer in world units): a box beside the
    # best hotspot, which lies outside it
    r = float(spot["radius_px"])
    x0, y0, x1, y1 = spot["x"] + r, spot["y"] - 4 * r, spot["x"] + 9 * r, spot["y"] + 4 * r
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)
    viewer.add_shapes([_layers.level0_to_world(slide, corners)], shape_type="polygon", name="tumour outline")
    assert analysis.region_combo.findText("tumour outline") >= 0
    assert analysis.region_combo.findText(_layers.HOTSPOTS) < 0  # our own overlays are not regions
    analysis.region_combo.setCurrentText("tumour outline")
    rjob = analysis.run()
    qtbot.waitUntil(lambda: not rjob.running, timeout=30_000)
    assert rjob.error is None and len(analysis.hotspots)
    inside = analysis.hotspots
    assert ((inside["x"] - r >= x0 - 1) & (inside["x"] + r <= x1 + 1)
            & (inside["y"] - r >= y0 - 1) & (inside["y"] + r <= y1 + 1)).all()
    assert len(analysis.summary) == 1 and analysis.summary["nuclei"].iloc[0] > 0
    assert "tumour outline 1:" in analysis.status.text() and "/mm²" in analysis.status.text()
    viewer.layers.remove("tumour outline")
    assert analysis.region_combo.currentText() == "whole slide"
    analysis.region_combo.setCurrentText("whole slide")

    # ---- export beside a copy of the slide (default names), then import
    export = ExportPanel(viewer)
    for kind in export.checks:
        export.checks[kind].setChecked(True)
    defaults = default_paths(tmp_path / "cmu-1-small-region.svs")
    for kind, path in defaults.items():
        export.paths[kind].setText(str(path))
    written = export.export()
    assert set(written) == {"geojson", "sedeen", "hovernet", "csv", "heatmap"}
    geo = json.loads(written["geojson"].read_text())
    kinds = [f["properties"].get("objectType") for f in geo["features"]]
    assert kinds.count("detection") == n and kinds.count("annotation") == len(hotspots.data)
    hov = json.loads(written["hovernet"].read_text())
    assert len(hov["nuc"]) == n
    csv = pd.read_csv(written["csv"])
    assert len(csv) == n
    from napari_histo.formats.sedeen import read_sedeen

    session = read_sedeen(written["sedeen"])
    assert len(session.to_table()) == n
    assert session.dimensions == (2220, 2967)  # the slide's size, not the nuclei's extent
    assert sum(g.name.startswith("Hotspot") for g in session.graphics) == len(hotspots.data)
    from PIL import Image as PILImage

    png = PILImage.open(written["heatmap"])
    assert png.size == (dmap.shape[1], dmap.shape[0]) and png.mode == "RGBA"
    # a second export never clobbers the first
    assert export.paths["geojson"].text() != str(written["geojson"])

    def import_and_wait(path):
        job = export.import_path(path)
        qtbot.waitUntil(lambda: not job.running, timeout=30_000)
        assert job.error is None
        return export.imported

    before = len(viewer.layers)
    added = import_and_wait(written["geojson"])
    assert len(viewer.layers) == before + len(added)
    imported_points = next(layer for layer in added if isinstance(layer, Points))
    assert len(imported_points.data) == n
    # imported centroids are those of the stored outlines (simplified within 0.5 px)
    np.testing.assert_allclose(np.sort(imported_points.data[:, 1]), np.sort(points.data[:, 1]), atol=0.25)
    imported_regions = [layer for layer in added if isinstance(layer, Shapes)]
    assert imported_regions and len(imported_regions[0].data) == len(hotspots.data)
    added_xml = import_and_wait(written["sedeen"])
    assert any(isinstance(layer, Points) and len(layer.data) == n for layer in added_xml)
    # HoVer-Net JSON is recognised by its content, not its .json suffix
    added_hov = import_and_wait(written["hovernet"])
    hov_points = [layer for layer in added_hov if isinstance(layer, Points)]
    assert len(hov_points) == 1 and len(hov_points[0].data) == n


def test_cancel_mid_run_leaves_no_files_and_a_responsive_viewer(viewer, qtbot, sample_slide_path, tmp_path, monkeypatch):
    from napari_histo._napari import _layers, _nuclei_panel
    from napari_histo._napari._settings import EngineSettings

    # small tiles so the first progress event arrives quickly
    monkeypatch.setattr(_nuclei_panel, "engine_settings", lambda: EngineSettings(tile_size=512, batch_size=1))
    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    panel = _nuclei_panel.NucleiPanel(viewer)
    panel.model_combo.setCurrentText("classical (no training)")
    panel.scope_combo.setCurrentText("whole slide")
    outdir = tmp_path / "cancelled"
    job = panel.run(outdir=outdir)
    assert job is not None and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.progress.value() >= 1 or not job.running, timeout=60_000)
    assert job.running, "the run finished before it could be cancelled"
    total = panel.progress.maximum()
    preview_root = panel.preview.root  # the whole-slide labels shown during the run (zarr on disk)
    assert preview_root is not None and preview_root.exists()
    panel.cancel()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert job.cancelled and job.error is None
    assert panel.progress.value() < total
    assert not outdir.exists() or not any(outdir.rglob("*")), sorted(outdir.rglob("*"))
    assert not preview_root.exists() and panel.preview is None
    assert _layers.NUCLEI_LABELS not in viewer.layers and _layers.NUCLEI_POINTS not in viewer.layers
    assert "cancelled" in panel.status.text()
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    # the viewer still responds
    viewer.add_points(np.array([[10.0, 10.0]]), name="after cancel")
    qtbot.wait(50)
    assert "after cancel" in viewer.layers


def test_an_image_without_pixel_size_asks_for_one_before_running(viewer, qtbot, sample_slide_path, tmp_path):
    """No run at a guessed scale: the panel asks, offers a prediction, and runs with the value given."""
    from PIL import Image

    from napari_histo._napari import _layers
    from napari_histo._napari._nuclei_panel import NucleiPanel
    from napari_histo.slide import open_slide

    with open_slide(sample_slide_path) as slide:
        crop = slide.read_region((1000, 1100), (400, 400))
    png = tmp_path / "field.png"
    Image.fromarray(crop).save(png)  # a PNG states no pixel size
    _, layer = open_with_slide_panel(viewer, png)
    assert _layers.layer_mpp(layer) is None
    panel = NucleiPanel(viewer)
    panel.model_combo.setCurrentText("classical (no training)")
    panel.scope_combo.setCurrentText("whole slide")
    assert panel.run(outdir=tmp_path / "guessed") is None  # refused
    assert panel.scale_box.isVisibleTo(panel) and "pixel size" in panel.scale_text.text()
    assert not (tmp_path / "guessed").exists()
    assert panel.use_scale_and_run() is None  # nothing typed yet: still refused
    job = panel.predict_scale()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert "Predicted" in panel.scale_text.text() and "×" in panel.scale_text.text()
    # the same prediction the command line makes for this file (same window, same answer)
    from napari_histo.models.magnification import predict_slide_magnification

    with open_slide(png) as image:
        expected = predict_slide_magnification(image)
    assert f"Predicted {expected.magnification:.1f}×" in panel.scale_text.text()
    panel.scale_spin.setValue(0.5)  # the user knows better: the crop comes from a 20× scan
    job = panel.use_scale_and_run()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=90_000)
    assert not panel.scale_box.isVisibleTo(panel)
    assert _layers.layer_mpp(layer) == pytest.approx(0.5)
    assert panel.table is not None and len(panel.table) > 10
    assert np.isfinite(panel.table["area_um2"]).all()


def test_panels_work_on_the_nuclei_layer_chosen_never_the_topmost(viewer, qtbot, tmp_path, monkeypatch):
    """A segmentation and imported annotations side by side: Export and Density use the layer the
    user picks; with no pick and several layers, nothing is chosen silently."""
    from _analysis_data import synthetic_table

    from napari_histo._napari._analysis_panel import AnalysisPanel
    from napari_histo._napari._exchange import nuclei_table
    from napari_histo._napari._export_panel import ExportPanel

    segmented, imported = synthetic_table(n_side=8, seed=1), synthetic_table(n_side=5, seed=2)
    for name, table in (("segmented nuclei", segmented), ("imported cells", imported)):
        viewer.add_points(table[["y", "x"]].to_numpy(), name=name, metadata={"nuclei_table": table})
    export = ExportPanel(viewer)
    analysis = AnalysisPanel(viewer)
    names = [export.nuclei_combo.itemText(i) for i in range(export.nuclei_combo.count())]
    assert names == ["imported cells", "segmented nuclei"]
    with pytest.raises(ValueError, match="several nuclei layers"):
        nuclei_table(viewer)
    for kind in export.checks:
        export.checks[kind].setChecked(kind == "csv")
    export.paths["csv"].setText(str(tmp_path / "chosen.csv"))
    export.nuclei_combo.setCurrentText("segmented nuclei")
    written = export.export()
    assert len(pd.read_csv(written["csv"])) == len(segmented) == 64
    from napari_histo._napari import _analysis_panel

    seen: list[int] = []
    original = _analysis_panel.analysis_events

    def spy(table, params):
        seen.append(len(table))
        return (yield from original(table, params))

    monkeypatch.setattr(_analysis_panel, "analysis_events", spy)
    analysis.nuclei_combo.setCurrentText("imported cells")
    analysis.radius.setValue(20.0)
    job = analysis.run()
    qtbot.waitUntil(lambda: not job.running, timeout=30_000)
    assert job.error is None and analysis.density is not None
    assert seen == [len(imported)] == [25]


def test_the_panel_and_the_command_line_give_the_same_nuclei(viewer, qtbot, sample_slide_path, tmp_path):
    """Same slide, same model, same options object: identical nuclei, outlines and types."""
    from napari_histo._napari._nuclei_panel import NucleiPanel
    from napari_histo.cli import main
    from napari_histo.engine.outputs import load_result

    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    panel = NucleiPanel(viewer)
    panel.scope_combo.setCurrentText("whole slide")
    assert panel.model_combo.currentText().startswith("shipped default")
    job = _run_nuclei(panel, qtbot, tmp_path / "panel", timeout=300_000)
    assert job.error is None and not job.cancelled
    assert main(["segment", "sample", "-o", str(tmp_path / "cli"), "--no-geojson", "--no-hovernet-json"]) == 0
    cli = load_result(tmp_path / "cli" / "cmu-1-small-region")
    gui = load_result(tmp_path / "panel")
    # the same options; the panel states the layer's pixel size, which is the file's
    assert gui.run["options"] == cli.run["options"] | {"mpp": gui.run["options"]["mpp"]}
    assert gui.run["plan"] == cli.run["plan"]
    # the CPU is split between the network and post-processing, and the split is recorded
    for run in (gui.run, cli.run):
        assert run["stats"]["torch_threads"] >= 1 and run["stats"]["post_workers"] >= 1
    a = gui.table.sort_values(["y", "x"]).reset_index(drop=True)
    b = cli.table.sort_values(["y", "x"]).reset_index(drop=True)
    assert len(a) == len(b) > 1000
    for col in ("x", "y", "area_px", "type", "type_prob"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy(), err_msg=col)
    assert len(panel.table) == len(b)
