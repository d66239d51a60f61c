"""Widget tests on a real MoNuSeg tile (skipped when ../shared/data is absent): open through the
reader, set the pixel size, segment a drawn polygon, select a nucleus, compare with the
ground-truth count."""

from __future__ import annotations

import numpy as np
import pytest
from _widget_helpers import open_with_slide_panel
from conftest import shared_path

pytestmark = [pytest.mark.gui, pytest.mark.shared_data]

TILE = "TCGA-21-5784-01Z-00-DX1"


def test_monuseg_tile_drawn_polygon(viewer, qtbot, tmp_path):
    import shapely

    from napari_histo._napari import _layers
    from napari_histo._napari._magnification_actions import apply_mpp
    from napari_histo._napari._nuclei_panel import NucleiPanel
    from napari_histo.formats.imagescope import read_imagescope

    tif = shared_path("monuseg", "MoNuSegTrainData", f"{TILE}.tif")
    truth = read_imagescope(shared_path("monuseg", "MoNuSegTrainData", f"{TILE}.xml"))
    slide_panel, tile = open_with_slide_panel(viewer, tif)
    assert _layers.level0_shape(tile) == (1000, 1000)
    if slide_panel.info["mpp"] is None:
        # no pixel size in the TIFF: the panel offers a prediction; here the annotation's is used
        assert slide_panel.predict_button.isVisibleTo(slide_panel)
        apply_mpp(viewer, tile, float(truth.mpp))
        slide_panel._refresh()
    assert _layers.layer_mpp(tile) == pytest.approx(truth.mpp, rel=0.05)

    # a polygon (world coordinates) over the middle of the tile
    poly_level0 = np.array([[150, 150], [150, 850], [600, 850], [850, 500], [600, 150]], float)  # (y, x)
    shapes = viewer.add_shapes([_layers.level0_to_world(tile, poly_level0)], shape_type="polygon", name="ROI")
    viewer.layers.selection.active = tile
    panel = NucleiPanel(viewer)
    panel.model_combo.setCurrentText("classical (no training)")
    panel.scope_combo.setCurrentText("drawn shape")
    assert panel.shapes_combo.currentText() == shapes.name
    job = panel.run(outdir=tmp_path / "run")
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=90_000)
    assert job.error is None
    table = panel.table
    polygon = shapely.Polygon(poly_level0[:, ::-1])
    inside = shapely.contains_xy(polygon.buffer(1.0), table["x"].to_numpy(), table["y"].to_numpy())
    assert inside.all(), "nuclei outside the drawn polygon"
    truth_centroids = np.array([r.vertices.mean(0) for r in truth.regions])
    n_truth = int(shapely.contains_xy(polygon, truth_centroids[:, 0], truth_centroids[:, 1]).sum())
    assert 0.5 * n_truth <= len(table) <= 1.5 * n_truth, (len(table), n_truth)
    points = viewer.layers[_layers.NUCLEI_POINTS]
    assert len(points.data) == len(table)
    # areas in µm² follow the applied pixel size
    np.testing.assert_allclose(table["area_um2"], table["area_px"] * truth.mpp**2, rtol=0.02)

    # selecting a nucleus in the Points layer shows its measurements
    points.selected_data = {3}
    qtbot.waitUntil(lambda: panel.details.rowCount() > 0, timeout=5000)
    shown = {panel.details.item(r, 0).text(): panel.details.item(r, 1).text() for r in range(panel.details.rowCount())}
    assert int(shown["id"]) == int(points.features["id"].iloc[3])
