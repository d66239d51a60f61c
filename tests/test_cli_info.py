"""``napari-histo info``: text and JSON metadata, clean errors on bad files."""

from __future__ import annotations

import json

import pytest

from napari_histo.cli import main


def test_info_text_on_the_shipped_sample(capsys, sample_slide_path):
    assert main(["info", str(sample_slide_path)]) == 0
    out = capsys.readouterr().out
    assert "aperio / tifffile" in out
    assert "2220 x 2967" in out
    assert "0.4990" in out and "20x" in out
    assert "label, macro, thumbnail" in out


def test_info_json(capsys, sample_slide_path):
    assert main(["info", str(sample_slide_path), "--json", "--properties"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp"] == pytest.approx([0.499, 0.499])
    assert info["objective_power"] == 20
    assert info["level_dimensions"] == [[2220, 2967]]
    assert info["tile_sizes"] == [[240, 240]]
    assert info["properties"]["aperio.AppMag"] == "20"


def test_info_json_with_forced_backend(capsys, sample_slide_path):
    assert main(["info", str(sample_slide_path), "--json", "--backend", "openslide", "--properties"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "openslide" and info["mpp"] == pytest.approx([0.499, 0.499])
    assert info["properties"]["openslide.objective-power"] == "20"


def test_info_reports_unknown_mpp(capsys):
    from conftest import shared_path

    path = shared_path("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "unknown (not in metadata" in out
    assert "`napari-histo magnification FILE` predicts it" in out  # where a pixel size can come from


def test_info_bad_file_is_one_clear_error(capsys, tmp_path):
    bad = tmp_path / "notes.svs"
    bad.write_text("plain text, not a slide")
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


def _slides(tmp_path, sample_slide_path):
    """Every slide kind at hand: the sample, synthetic Aperio / generic / OME-SubIFD pyramids, a
    PNG, and the shared 40× slide when present."""
    from conftest import SHARED_DATA
    from slide_synth import (
        pyramid_levels,
        synthetic_he,
        write_aperio_svs,
        write_generic_tiff,
        write_ome_subifd,
    )

    rgb, _ = synthetic_he(1200, 1600, seed=3)
    levels = pyramid_levels(rgb, 3)
    paths = {
        "sample": sample_slide_path,
        "aperio": write_aperio_svs(tmp_path / "a.svs", levels),
        "aperio_no_mpp": write_aperio_svs(tmp_path / "b.svs", levels, mpp=None, app_mag=None),
        "generic": write_generic_tiff(tmp_path / "g.tif", levels),
        "ome": write_ome_subifd(tmp_path / "o.ome.tif", levels),
    }
    from PIL import Image

    Image.fromarray(rgb[:200, :300]).save(tmp_path / "p.png")
    paths["png"] = tmp_path / "p.png"
    tcga = SHARED_DATA / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    if tcga.is_file():
        paths["tcga"] = tcga
    return paths


def test_the_numpy_free_description_equals_the_slides_metadata(tmp_path, sample_slide_path):
    """``info``'s fast path gives exactly what opening the slide gives, backend included, for
    every file OpenSlide reads, and steps aside (None) for the others."""
    from napari_histo.slide import open_slide
    from napari_histo.slide._describe import describe_slide, tiff_header_ok, tiff_layout
    from napari_histo.slide._tiff import tiff_probe

    described = {}
    for name, path in _slides(tmp_path, sample_slide_path).items():
        if tiff_header_ok(path):  # the pure-Python IFD walk agrees with tifffile
            assert tiff_layout(path) == tiff_probe(path), name
        fast = describe_slide(path)
        described[name] = fast is not None
        with open_slide(path) as slide:
            full = slide.metadata()
        if fast is not None:
            assert fast == {**full, "path": str(path)}, name
        for backend in ("openslide", "tifffile"):
            forced = describe_slide(path, backend)
            if forced is not None:
                with open_slide(path, backend=backend) as slide:
                    assert forced == slide.metadata(), (name, backend)
    assert described["sample"] and described["aperio"] and described["aperio_no_mpp"] and described["generic"]
    assert not described["ome"] and not described["png"]  # tifffile's and Pillow's files: the full path


def test_info_fast_path_refuses_broken_files_as_the_slide_does(capsys, tmp_path, sample_slide_path):
    """A truncated slide and one declaring far more pixels than its file holds are refused by
    ``info`` with the file named, whichever path describes them."""
    data = sample_slide_path.read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: len(data) // 3])
    assert main(["info", str(cut)]) == 1
    err = capsys.readouterr().err
    assert str(cut) in err and "Traceback" not in err
