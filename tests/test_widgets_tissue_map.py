"""Tissue map panel on the shipped sample slide: classes as Shapes layers, a few regions each, Fit
and map with the shipped nucleus module, the map as a Labels layer with a legend, exports, cancel."""

from __future__ import annotations

import numpy as np
import pytest
from _widget_helpers import open_with_slide_panel
from test_tissue_maps import SAMPLE_REGIONS

pytestmark = [pytest.mark.gui]


def _draw(panel, viewer, slide, regions):
    from napari_histo._napari import _layers

    for name, (x0, y0, x1, y1) in regions.items():
        panel.class_edit.setText(name)
        panel.add_class_button.click()
        layer = viewer.layers[f"tissue: {name}"]
        corners = _layers.level0_to_world(slide, np.array([[y0, x0], [y1, x1]], float))
        layer.add_rectangles(np.asarray([layer.world_to_data(c) for c in corners]))


def test_fit_and_map_on_sample(viewer, qtbot, sample_slide_path, tmp_path):
    from napari_histo._napari._tissue_panel import NUCLEUS_CLASSES, TISSUE_MAP, TissueMapPanel
    from napari_histo.formats.geojson import read_geojson
    from napari_histo.formats.sedeen import read_sedeen

    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    panel = TissueMapPanel(viewer)
    assert panel.layer_box.currentText() == slide.name
    panel.tile_box.setValue(64)
    _draw(panel, viewer, slide, SAMPLE_REGIONS)
    assert viewer.layers["tissue: stroma"].mode == "add_rectangle"
    job = panel.run()
    qtbot.waitUntil(lambda: not job.running, timeout=180_000)
    assert job.error is None, job.error
    result = panel.result
    assert result.class_names == ["epithelium", "glass", "stroma"]
    tissue = viewer.layers[TISSUE_MAP]
    np.testing.assert_array_equal(np.asarray(tissue.data), np.where(result.class_map >= 0, result.class_map + 1, 0))
    # the map lies over the slide: a tile's world position is its level-0 box times the slide's scale
    step = result.step_level0
    assert tuple(tissue.scale) == pytest.approx((slide.scale[0] * step, slide.scale[1] * step))
    tiles = result.features
    inside = tiles[tiles["region_class"] != ""]
    assert (inside["class_name"] == inside["region_class"]).mean() > 0.9
    for name in result.class_names:
        assert name in panel.legend.text()
    assert panel.geojson_button.isEnabled() and panel.sedeen_button.isEnabled()
    assert NUCLEUS_CLASSES in viewer.layers and viewer.layers[NUCLEUS_CLASSES].data.shape[0] == result.class_map.shape[0] * 64
    # exports
    qp = read_geojson(panel.export_geojson(tmp_path / "tiles.geojson"))
    assert len(qp.annotations) == int((result.class_map >= 0).sum())
    session = read_sedeen(panel.export_sedeen(tmp_path / "map.session.xml"))
    assert sorted({a.name for a in session.to_annotations()}) == result.class_names


def test_needs_two_classes_and_cancels(viewer, qtbot, sample_slide_path):
    from napari_histo._napari._tissue_panel import TISSUE_MAP, TissueMapPanel

    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    panel = TissueMapPanel(viewer)
    assert panel.run() is None  # no regions yet: nothing starts
    _draw(panel, viewer, slide, {"stroma": SAMPLE_REGIONS["stroma"]})
    job = panel.run()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert job.error is not None and "at least two classes" in str(job.error)
    _draw(panel, viewer, slide, {"glass": SAMPLE_REGIONS["glass"]})
    panel.tile_box.setValue(32)  # many tiles: time to cancel
    job = panel.run()
    panel.cancel()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert job.cancelled and TISSUE_MAP not in viewer.layers
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_refit_with_a_new_region_reuses_the_tile_features(viewer, qtbot, sample_slide_path):
    from napari_histo._napari._tissue_panel import TissueMapPanel

    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    panel = TissueMapPanel(viewer)
    panel.tile_box.setValue(96)
    _draw(panel, viewer, slide, {k: SAMPLE_REGIONS[k] for k in ("stroma", "glass")})
    job = panel.run()
    qtbot.waitUntil(lambda: not job.running, timeout=180_000)
    assert job.error is None and panel.result.class_names == ["glass", "stroma"]
    first_pass = panel._features[1]
    # a third class over tissue already read: refitted from the same features, no new pass
    _draw(panel, viewer, slide, {"epithelium": SAMPLE_REGIONS["epithelium"]})
    job = panel.run()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert job.error is None and panel.result.class_names == ["epithelium", "glass", "stroma"]
    assert panel._features[1] is first_pass
    assert panel.result.head.train_tiles["epithelium"] >= 1
    # a region over glass the first pass skipped: the tiles are read again
    _draw(panel, viewer, slide, {"glass": (1800, 100, 2100, 400)})
    job = panel.run()
    qtbot.waitUntil(lambda: not job.running, timeout=180_000)
    assert job.error is None and panel._features[1] is not first_pass


def test_classify_nucleus_maps_open_in_napari_over_the_slide(viewer, sample_slide_path, tmp_path):
    """``classify``'s nucleus_maps.zarr opens through the plugin as two lazy layers on the slide."""
    from napari.layers import Image, Labels

    from napari_histo._napari import _layers
    from napari_histo.cli import main
    from napari_histo.models.classification import open_nucleus_maps

    assert main(["classify", str(sample_slide_path), "-o", str(tmp_path), "--roi", "700,1300,500,400",
                 "--tile", "128"]) == 0
    store = tmp_path / sample_slide_path.stem / "nucleus_maps.zarr"
    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    layers = viewer.open(str(store), plugin="napari-histo")
    assert [type(layer) for layer in layers] == [Image, Labels]
    probability, classes = layers
    assert {probability.name, classes.name} == {_layers.NUCLEUS_PROBABILITY, _layers.NUCLEUS_CLASSES}
    _, stored, attrs = open_nucleus_maps(store)
    per_px = attrs["level0_per_px"]
    assert tuple(classes.scale) == pytest.approx((slide.scale[0] * per_px, slide.scale[1] * per_px))
    # the store's first pixel covers level-0 px 700..700+per_px (x) and 1300.. (y): its centre lands there
    centre = classes.data_to_world(np.zeros(2))
    expected = slide.data_to_world(np.array([1300 + (per_px - 1) / 2, 700 + (per_px - 1) / 2]))
    np.testing.assert_allclose(centre, expected, rtol=1e-6)
    assert classes.data.shape == stored.shape and int(np.asarray(classes.data).max()) >= 1
    # a folder that is not a nucleus-map store is left to other readers
    from napari_histo._napari._reader import get_maps_reader

    assert get_maps_reader(str(tmp_path)) is None and get_maps_reader(str(store)) is not None
