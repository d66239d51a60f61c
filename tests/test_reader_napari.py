"""napari adapter: get_reader declines cheaply, layers are multiscale RGB in µm, sample data."""

from __future__ import annotations

import numpy as np
import pytest
from slide_synth import mean_downsample, synthetic_he, write_aperio_svs, write_generic_tiff

from napari_histo._napari._reader import get_reader


@pytest.fixture(scope="module")
def synth_slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    rgb, _ = synthetic_he(1024, 1536, seed=4)
    levels = [rgb, mean_downsample(rgb, 2)]
    return {
        "svs": write_aperio_svs(root / "synthetic.svs", levels, mpp=0.25, app_mag=40),
        "nompp": write_generic_tiff(root / "nompp.tif", levels),
    }


def test_get_reader_declines_foreign_files_and_explains_broken_slides(tmp_path, sample_slide_path, monkeypatch):
    import napari.utils.notifications as notifications

    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    text = tmp_path / "renamed.svs"
    text.write_text("just text\n" * 20)
    unsupported = tmp_path / "data.czi"
    unsupported.write_bytes(b"ZISRAWFILE" + b"\x00" * 100)
    fake_jpg = tmp_path / "fake.jpg"
    fake_jpg.write_bytes(b"GIF89a" + b"\x00" * 50)
    for path in (unsupported, tmp_path / "missing.ndpi", tmp_path):
        assert get_reader(str(path)) is None, path
    assert get_reader([str(empty), str(sample_slide_path)]) is None
    assert callable(get_reader(str(sample_slide_path)))
    # a broken file with a slide extension: read, and the reason is the command line's
    messages: list[str] = []
    monkeypatch.setattr(notifications, "show_error", messages.append)
    for path, reason in ((empty, "file is empty (0 bytes)"), (text, "renamed.svs"), (fake_jpg, "fake.jpg")):
        reader = get_reader(str(path))
        assert reader is not None, path
        assert reader(str(path)) == [(None,)]
        assert reason in messages[-1] and str(path) in messages[-1], messages[-1]


def test_reader_returns_multiscale_rgb_layer_in_microns(synth_slides):
    path = str(synth_slides["svs"])
    layers = get_reader(path)(path)
    assert len(layers) == 1
    data, kwargs, layer_type = layers[0]
    assert layer_type == "image"
    assert kwargs["rgb"] is True and kwargs["multiscale"] is True
    assert kwargs["contrast_limits"] == (0, 255)
    assert kwargs["scale"] == pytest.approx((0.25, 0.25))
    assert kwargs["units"] == ("um", "um")
    assert [a.shape for a in data] == [(1024, 1536, 3), (512, 768, 3)]
    meta = kwargs["metadata"]
    assert meta["path"] == path
    assert meta["mpp"] == pytest.approx([0.25, 0.25])
    assert meta["objective_power"] == 40
    assert meta["vendor"] == "aperio" and meta["backend"] == "tifffile"
    assert meta["level_dimensions"] == [[1536, 1024], [768, 512]]


def test_truncated_slide_reports_one_clear_error_and_no_layer(tmp_path, sample_slide_path, monkeypatch):
    import napari.utils.notifications as notifications

    data = sample_slide_path.read_bytes()
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(data[: len(data) // 2])
    messages = []
    monkeypatch.setattr(notifications, "show_error", messages.append)
    reader = get_reader(str(truncated))
    assert reader is not None  # the TIFF header is intact, so the cheap checks accept it
    assert reader(str(truncated)) == [(None,)]
    assert len(messages) == 1 and str(truncated) in messages[0]


@pytest.mark.gui
def test_reader_in_a_real_viewer(make_napari_viewer, synth_slides):
    viewer = make_napari_viewer()
    layers = viewer.open(str(synth_slides["svs"]), plugin="napari-histo")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.multiscale and layer.rgb
    assert len(layer.data) == 2
    np.testing.assert_allclose(layer.scale, (0.25, 0.25))
    assert str(layer.units[0]) in ("micrometer", "um")
    assert layer.metadata["objective_power"] == 40
    # the visible data level is computed from dask without errors
    viewer.reset_view()
    assert np.asarray(layer.data[-1][:16, :16]).dtype == np.uint8


@pytest.mark.gui
def test_slide_without_mpp_opens_in_pixels(make_napari_viewer, synth_slides):
    viewer = make_napari_viewer()
    layers = viewer.open(str(synth_slides["nompp"]), plugin="napari-histo")
    layer = layers[0]
    np.testing.assert_allclose(layer.scale, (1.0, 1.0))
    assert layer.metadata["mpp"] is None
    assert layer.metadata["scale_units"] == "pixel"


@pytest.mark.gui
def test_sample_data_opens_the_shipped_slide(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-histo", "cmu-1-small-region")
    assert len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.multiscale
    assert [d.shape[:2] for d in layer.data] == [(2967, 2220), (1483, 1110), (741, 555)]
    np.testing.assert_allclose(layer.scale, (0.499, 0.499))
    assert layer.metadata["path"].endswith("cmu-1-small-region.svs")


def test_get_reader_takes_annotation_files_by_content(tmp_path):
    from napari_histo._napari._reader import read_annotations

    config = tmp_path / "config.json"
    config.write_text('{"tile_size": 512}')
    other_xml = tmp_path / "pom.xml"
    other_xml.write_text("<project><name>x</name></project>")
    hov = tmp_path / "nuclei.json"  # HoVer-Net JSON: recognised by its "nuc" key, not the suffix
    hov.write_text('{"mag": 40, "nuc": {"1": {"bbox": [[0, 0], [4, 4]], "centroid": [2, 2], '
                   '"contour": [[0, 0], [4, 0], [4, 4], [0, 4]], "type_prob": 1.0, "type": 1}}}')
    for path in (config, other_xml, tmp_path / "missing.geojson"):
        assert get_reader(str(path)) is None, path
    assert get_reader(str(hov)) is read_annotations
    assert get_reader([str(hov), str(config)]) is None


@pytest.mark.gui
def test_annotation_files_open_aligned_with_the_slide(make_napari_viewer, synth_slides, tmp_path):
    from _analysis_data import synthetic_table
    from napari.layers import Labels, Points, Shapes

    from napari_histo.formats.geojson import write_geojson
    from napari_histo.formats.hovernet_json import write_hovernet_json

    table = synthetic_table(6, spacing=40)
    gj = write_geojson(table, tmp_path / "cells.geojson")
    hov = write_hovernet_json(table, tmp_path / "cells.json")
    asap = tmp_path / "regions.xml"
    asap.write_text('<ASAP_Annotations><Annotations><Annotation Name="t" Type="Polygon" PartOfGroup="None" Color="#ff0000">'
                    '<Coordinates><Coordinate Order="0" X="100" Y="100"/><Coordinate Order="1" X="300" Y="100"/>'
                    '<Coordinate Order="2" X="300" Y="200"/></Coordinates></Annotation></Annotations></ASAP_Annotations>')
    viewer = make_napari_viewer()
    viewer.open(str(synth_slides["svs"]), plugin="napari-histo")  # 0.25 µm/px
    for path in (gj, hov):
        layers = viewer.open(str(path), plugin="napari-histo")
        assert len(layers) == 2 and isinstance(layers[0], Labels) and isinstance(layers[1], Points)
        outlines, points = layers
        # outlines drawn where the nuclei are, one label per nucleus, coloured by type, in µm
        np.testing.assert_allclose(outlines.scale, (0.25, 0.25))
        assert len(np.unique(outlines.data)) - 1 == len(table)
        first = table.iloc[0]
        world = points.data_to_world(np.array([first["y"], first["x"]]))
        r, c = np.round(np.asarray(outlines.world_to_data(world), float)).astype(int)[-2:]
        assert outlines.data[r, c] > 0
        np.testing.assert_allclose(points.scale, (0.25, 0.25))  # level-0 px drawn on the slide in µm
        assert len(points.data) == len(table)
        np.testing.assert_allclose(np.sort(points.data[:, 1]), np.sort(table["x"].to_numpy()), atol=0.02)
        assert len(points.metadata["nuclei_table"]) == len(table)
    (regions,) = viewer.open(str(asap), plugin="napari-histo")
    assert isinstance(regions, Shapes) and len(regions.data) == 1
    np.testing.assert_allclose(regions.scale, (0.25, 0.25))


@pytest.mark.gui
def test_annotation_reader_returns_layer_data_and_adds_nothing_itself(make_napari_viewer, synth_slides, tmp_path):
    """The reader hands napari layer data aligned with the open slide; only napari adds layers."""
    from _analysis_data import synthetic_table

    from napari_histo._napari import _reader
    from napari_histo.formats.geojson import write_geojson

    table = synthetic_table(5, spacing=40)
    gj = write_geojson(table, tmp_path / "nuclei.geojson")
    viewer = make_napari_viewer()
    viewer.open(str(synth_slides["svs"]), plugin="napari-histo")
    before = [layer.name for layer in viewer.layers]
    tuples = _reader.read_annotations(str(gj))
    assert [layer.name for layer in viewer.layers] == before
    points = [t for t in tuples if t[2] == "points"]
    assert len(points) == 1 and len(points[0][0]) == len(table)
    np.testing.assert_allclose(points[0][1]["scale"], (0.25, 0.25))


@pytest.mark.gui
def test_first_use_makes_napari_histo_the_reader_of_slides_without_replacing_a_choice(make_napari_viewer,
                                                                                      sample_slide_path):
    from napari.settings import get_settings

    from napari_histo._napari._reader_preference import SLIDE_PATTERNS, prefer_this_reader

    viewer = make_napari_viewer()
    plugins = get_settings().plugins
    saved = dict(plugins.extension2reader)
    try:
        plugins.extension2reader = {"*.ndpi": "another-reader"}  # the user chose for .ndpi
        added = prefer_this_reader(notify=False)
        assert "*.svs" in added and "*.ndpi" not in added
        prefs = dict(plugins.extension2reader)
        assert prefs["*.ndpi"] == "another-reader"
        assert all(prefs[p] == "napari-histo" for p in SLIDE_PATTERNS if p != "*.ndpi")
        assert "*.tif" not in prefs and "*.png" not in prefs
        assert prefer_this_reader(notify=False) == []  # once
        # opening without naming a plugin (a drop or File > Open: plugin=None) takes napari-histo's reader
        layers = viewer.open(str(sample_slide_path), plugin=None)
        assert len(layers) == 1 and layers[0].multiscale and "slide_spec" in layers[0].metadata
    finally:
        plugins.extension2reader = saved


@pytest.mark.gui
def test_annotations_from_another_slide_warn_with_the_offset(make_napari_viewer, synth_slides, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications
    from _analysis_data import synthetic_table

    from napari_histo.formats.geojson import write_geojson

    table = synthetic_table(4, spacing=40)
    for col in ("x", "bbox_x0", "bbox_x1"):
        table[col] = table[col] + 5000  # beyond the 1536-px-wide slide
    table["contour"] = [c + np.float32([5000, 0]) for c in table["contour"]]
    gj = write_geojson(table, tmp_path / "elsewhere.geojson")
    messages: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", messages.append)
    viewer = make_napari_viewer()
    viewer.open(str(synth_slides["svs"]), plugin="napari-histo")
    viewer.open(str(gj), plugin="napari-histo")
    assert len(messages) == 1
    assert "16 of 16 nuclei lie outside synthetic.svs" in messages[0] and "offset" in messages[0]
