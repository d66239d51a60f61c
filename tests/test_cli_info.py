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
