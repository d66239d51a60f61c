"""Nuclei appear as Labels while a run goes on, for a drawn-region run (in-memory preview, the
path of field-of-view runs too) and a whole-slide run (multiscale zarr preview), on the shipped sample slide.

The runs are synchronous (``NAPARI_HISTO_NOTHREADS=1``) and a hook on the panel's progress
callback looks at the viewer after each event, i.e. while the run is still going on.
"""

from __future__ import annotations

import numpy as np
import pytest
from _widget_helpers import look_at, open_with_slide_panel

pytestmark = pytest.mark.gui

#: A tissue-rich level-0 box of the sample slide (x0, y0, x1, y1). With its context, at the
#: classical detector's 0.25 µm/px, it spans two 384-px tiles.
ROI_BOX = (1150, 1100, 1400, 1190)


@pytest.fixture
def nuclei_panel(make_napari_viewer, monkeypatch, sample_slide_path):
    """(viewer, slide layer, Nuclei panel with the classical detector and small tiles).

    Tiles of 384 px (the smallest the classical detector's 128-px halo allows) give several
    tiles even for a 500-px field of view."""
    from napari_histo._napari import _nuclei_panel
    from napari_histo._napari._settings import EngineSettings

    monkeypatch.setenv("NAPARI_HISTO_NOTHREADS", "1")
    monkeypatch.setattr(_nuclei_panel, "engine_settings", lambda: EngineSettings(tile_size=384, batch_size=1))
    # redraw at every event, so that each tile's redraw can be checked
    monkeypatch.setattr(_nuclei_panel, "FLUSH_MIN_S", 0.0)
    monkeypatch.setattr(_nuclei_panel, "FLUSH_COST_RATIO", 0.0)
    viewer = make_napari_viewer()
    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    viewer.layers.selection.active = slide
    panel = _nuclei_panel.NucleiPanel(viewer)
    panel.model_combo.setCurrentText("classical (no training)")
    return viewer, slide, panel


def _tile_mask(update, shape):
    """Pixels of the preview covered by the finished tile's nuclei (bool, preview level 0)."""
    result = update.event.tile_result
    ox, oy = result.origin
    mask = np.zeros(shape, bool)
    h, w = result.labels.shape
    mask[oy:oy + h, ox:ox + w] = result.labels > 0
    return mask


def _spy(panel, check):
    """Call ``check(update)`` after the panel has handled each progress event."""
    handle = panel._on_event
    seen = []

    def on_event(update):
        handle(update)
        seen.append(check(update))

    panel._on_event = on_event
    return seen


def test_roi_run_shows_labels_tile_by_tile(nuclei_panel, tmp_path):
    from napari_histo._napari import _layers
    from napari_histo._napari._preview import type_of_display_value

    viewer, slide, panel = nuclei_panel
    x0, y0, x1, y1 = ROI_BOX
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)
    viewer.add_shapes([_layers.level0_to_world(slide, corners)], shape_type="rectangle", name="ROI")
    viewer.layers.selection.active = slide
    look_at(viewer, slide, ROI_BOX)
    panel.scope_combo.setCurrentText("drawn shape")
    assert panel.shapes_combo.currentText() == "ROI"

    def check(update):
        event = update.event
        if event.stage != "tiles" or update.box is None:
            return None
        layer = viewer.layers[_layers.NUCLEI_LABELS]
        assert layer.metadata.get("napari_histo_preview") and not layer.multiscale
        data = np.asarray(layer.data)
        tile = _tile_mask(update, data.shape)
        painted = data[tile]
        # every pixel of this tile's nuclei is labelled, in the type's slot (classical: type 1)
        assert (painted > 0).all()
        types = event.tile_result.table["type"].to_numpy()
        assert set(type_of_display_value(np.unique(painted)).tolist()) == set(types.tolist())
        colours = layer.colormap.map(np.unique(painted))
        np.testing.assert_allclose(colours[:, :3], 1.0 * np.array([[1.0, 1.0, 0.0]]).repeat(len(colours), 0))
        # the tile region was redrawn: its nuclei outlines are on the displayed texture
        shown = np.asarray(layer._slice.image.view)
        assert shown[tile].any()
        assert sum(panel.legend_counts().values()) == event.nuclei  # legend counts so far
        return event.done, event.total, int(np.count_nonzero(data))

    seen = _spy(panel, check)
    job = panel.run(outdir=tmp_path / "run")
    assert job is not None and job.error is None and not job.cancelled
    tiles = [s for s in seen if s is not None]
    assert len(tiles) >= 2, tiles
    done, total, nonzero = tiles[0]
    assert done < total and nonzero > 0  # labels were on screen before the run finished
    assert [s[2] for s in tiles] == sorted(s[2] for s in tiles)  # painted area only grows
    # the finished run's layer (true ids) replaced the preview
    labels = viewer.layers[_layers.NUCLEI_LABELS]
    assert not labels.metadata.get("napari_histo_preview")
    final = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    assert set(np.unique(final)) - {0} == set(panel.table["id"])
    assert panel.preview is None
    assert len(viewer.layers[_layers.NUCLEI_POINTS].data) == len(panel.table)


def test_whole_slide_run_paints_a_multiscale_preview_and_cancel_cleans_up(nuclei_panel, tmp_path, monkeypatch):
    from napari_histo._napari import _layers, _nuclei_panel
    from napari_histo._napari._settings import EngineSettings

    viewer, slide, panel = nuclei_panel
    monkeypatch.setattr(_nuclei_panel, "engine_settings", lambda: EngineSettings(tile_size=512, batch_size=1))
    viewer.reset_view()
    panel.scope_combo.setCurrentText("whole slide")
    roots = []

    def check(update):
        event = update.event
        if event.stage != "tiles" or update.box is None:
            return None
        layer = viewer.layers[_layers.NUCLEI_LABELS]
        assert layer.metadata.get("napari_histo_preview") and layer.multiscale
        # drawn filled and half transparent: no outline computation on each refresh
        assert layer.contour == 0 and layer.opacity == pytest.approx(_nuclei_panel.PREVIEW_FILLED_OPACITY)
        levels = layer.data
        assert tuple(levels[0].shape) == _layers.level0_shape(slide)
        assert type(levels[0]).__module__.startswith("zarr")  # on disk, not a level-0 numpy array
        x0, y0, x1, y1 = update.box
        region = np.asarray(levels[0][y0:y1, x0:x1])
        tile = _tile_mask(update, levels[0].shape)[y0:y1, x0:x1]
        assert (region[tile] > 0).all()
        # coarser levels are the level-0 labels strided (as the final pyramid is built)
        for k in range(1, len(levels)):
            step = 2**k
            r0, c0 = -(-y0 // step), -(-x0 // step)
            coarse = np.asarray(levels[k][r0:-(-y1 // step), c0:-(-x1 // step)])
            np.testing.assert_array_equal(coarse, region[r0 * step - y0::step, c0 * step - x0::step][:coarse.shape[0], :coarse.shape[1]])
        # the displayed slice (whole slide in view) holds this tile's display values
        assert np.isin(np.unique(region[tile]), np.asarray(layer._slice.image.raw)).any()
        roots.append(panel.preview.root)
        if len(roots) == 2:
            panel.cancel()
        return event.done, event.total

    seen = _spy(panel, check)
    outdir = tmp_path / "whole"
    job = panel.run(outdir=outdir)
    assert job is not None and job.error is None
    assert job.cancelled
    tiles = [s for s in seen if s is not None]
    assert len(tiles) == 2 and tiles[-1][0] < tiles[-1][1]
    # cancelled: no run files, no preview pyramid, no preview layer, a responsive viewer
    assert not outdir.exists() or not any(outdir.rglob("*")), sorted(outdir.rglob("*"))
    assert roots[0] is not None and not roots[0].exists()
    assert _layers.NUCLEI_LABELS not in viewer.layers and _layers.NUCLEI_POINTS not in viewer.layers
    assert "cancelled" in panel.status.text() and panel.run_button.isEnabled()
    viewer.add_points(np.array([[10.0, 10.0]]), name="after cancel")
    assert "after cancel" in viewer.layers


def test_multiscale_preview_matches_a_strided_pyramid(tmp_path):
    """Overlapping crops never erase each other; every level is level 0 strided by 2^k."""
    from napari_histo._napari._preview import CYCLE, LabelPreview, type_of_display_value

    preview = LabelPreview((1300, 1100), multiscale=True, root=tmp_path / "preview.zarr")
    rng = np.random.default_rng(0)
    reference = np.zeros((1300, 1100), np.int32)
    for _ in range(6):
        h, w = rng.integers(100, 500, 2)
        ox, oy = int(rng.integers(-50, 1000)), int(rng.integers(-50, 1200))
        crop = np.zeros((h, w), np.int32)
        n = 5
        for i in range(1, n + 1):  # a few rectangles as nuclei
            y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
            crop[y:y + 15, x:x + 15] = i
        types = rng.integers(0, 5, n)
        box = preview.paint(crop, (ox, oy), types, None)
        ys, xs = np.nonzero(crop)
        inside = (ys + oy >= 0) & (ys + oy < 1300) & (xs + ox >= 0) & (xs + ox < 1100)
        if box is not None:
            painted = np.asarray(preview.levels[0])[ys[inside] + oy, xs[inside] + ox]
            np.testing.assert_array_equal(type_of_display_value(painted), types[crop[ys[inside], xs[inside]] - 1])
            reference[ys[inside] + oy, xs[inside] + ox] = painted
    level0 = np.asarray(preview.levels[0])
    np.testing.assert_array_equal(level0, reference)
    assert level0.max() <= 5 * CYCLE
    for k, level in enumerate(preview.levels[1:], 1):
        np.testing.assert_array_equal(np.asarray(level), level0[::2**k, ::2**k])
    assert preview.levels[-1].shape == (325, 275)
    preview.close()
    assert not (tmp_path / "preview.zarr").exists()


def test_results_beyond_65k_nuclei_are_drawn_coloured_by_type(make_napari_viewer):
    """napari's direct label colormap needs numba past 2**16 ids; big results still draw, by type,
    and a click still finds the nucleus under it."""
    from types import SimpleNamespace

    import pandas as pd

    from napari_histo._napari import _layers
    from napari_histo._napari._nuclei_panel import NucleiPanel

    viewer = make_napari_viewer()
    n = 66_000
    ids = np.arange(1, n + 1)
    row, col = np.divmod(ids - 1, 300)
    labels = np.zeros((720, 900), np.int32)
    for dy in range(2):
        for dx in range(2):
            labels[row * 3 + dy, col * 3 + dx] = ids  # 2x2-px nuclei on a 3-px grid
    table = pd.DataFrame({"id": ids, "x": col * 3 + 0.5, "y": row * 3 + 0.5, "type": 1 + ids % 3,
                          "type_prob": 0.9, "area_px": 4.0})
    table.attrs["type_info"] = {"0": ["background", [0, 0, 0]], "1": ["tumour", [255, 0, 0]],
                                "2": ["lymphocyte", [0, 255, 0]], "3": ["stroma", [0, 0, 255]]}
    panel = NucleiPanel(viewer)
    panel.show_result(table, [labels])
    layer = viewer.layers[_layers.NUCLEI_LABELS]
    shown = np.asarray(layer.data)
    # every nucleus pixel carries its type's colour
    sample = ids[::997]
    values = shown[row[sample - 1] * 3, col[sample - 1] * 3]
    expected = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float)[(1 + sample % 3) - 1]
    np.testing.assert_allclose(layer.colormap.map(values)[:, :3], expected)
    # neighbours stay distinct, so outlines separate them
    assert (shown[0, 0:900:3][:-1] != shown[0, 3:900:3]).all()
    # the displayed slice maps to texture values (per-id colormaps raise here without numba)
    texture = layer.colormap._data_to_texture(np.asarray(layer._slice.image.raw))
    assert texture.max() > 0
    # a click on a nucleus shows that nucleus's measurements
    target = 54_321
    world = layer.data_to_world(np.array([row[target - 1] * 3, col[target - 1] * 3], float))
    panel._label_clicked(layer, SimpleNamespace(type="mouse_press", position=world))
    details = {panel.details.item(r, 0).text(): panel.details.item(r, 1).text() for r in range(panel.details.rowCount())}
    assert int(details["id"]) == target


def test_stains_choice_reaches_the_classical_detector(nuclei_panel, tmp_path):
    """The Stains box applies to the classical detector only; H-DAB gives DAB OD and positive calls."""
    from napari_histo._napari import _layers

    viewer, slide, panel = nuclei_panel
    assert panel.stains_combo.isEnabled()
    panel.model_combo.setCurrentText("shipped default (HoVer-Net compact)")
    assert not panel.stains_combo.isEnabled()
    panel.model_combo.setCurrentText("classical (no training)")
    assert panel.model_spec() == "classical"  # auto: decided per slide by the engine
    panel.stains_combo.setCurrentText("H-DAB (IHC)")
    spec = panel.model_spec()
    assert spec.params.stains == "hdab"
    look_at(viewer, slide, ROI_BOX)
    panel.scope_combo.setCurrentText("current view")
    job = panel.run(outdir=tmp_path / "run")
    assert job is not None and job.error is None
    assert {"dab_od", "positive"} <= set(panel.table.columns)
    assert "positive" in viewer.layers[_layers.NUCLEI_POINTS].features.columns
