"""Where the viewer writes when the user did not choose: beside the slide, else a per-user folder;
never inside the installed package, never over an existing file."""

from __future__ import annotations

import os

import pytest

from napari_histo.utils import inside_package, sample_slide_path, user_data_dir, writable_folder_for


def test_the_per_user_folder_follows_the_environment_and_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_HISTO_DATA_DIR", str(tmp_path / "data"))
    folder = user_data_dir("exports")
    assert folder == tmp_path / "data" / "exports" and folder.is_dir()
    monkeypatch.delenv("NAPARI_HISTO_DATA_DIR")
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_data_dir", lambda name, appauthor=None: str(tmp_path / "platform" / name))
    assert user_data_dir("runs") == tmp_path / "platform" / "napari-histo" / "runs"


def test_the_shipped_sample_is_never_a_place_to_write(tmp_path):
    assert inside_package(sample_slide_path())
    assert writable_folder_for(sample_slide_path()) is None
    slide = tmp_path / "case" / "slide.svs"
    slide.parent.mkdir()
    slide.write_bytes(b"x")
    assert writable_folder_for(slide) == slide.parent.resolve()
    assert writable_folder_for(None) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_slide_folder_falls_back_to_the_user_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "s.svs").write_bytes(b"x")
    folder.chmod(0o555)
    try:
        assert writable_folder_for(folder / "s.svs") is None
    finally:
        folder.chmod(0o755)


def test_panel_defaults_beside_the_slide_or_in_the_user_folder(tmp_path, monkeypatch):
    pytest.importorskip("qtpy")
    from napari_histo._napari._exchange import default_paths
    from napari_histo._napari._segment_job import default_outdir

    monkeypatch.setenv("NAPARI_HISTO_DATA_DIR", str(tmp_path / "data"))
    sample = default_paths(sample_slide_path())
    for path in sample.values():
        assert not inside_package(path)
        assert path.parent == tmp_path / "data" / "exports"
    slide = tmp_path / "case" / "slide.svs"
    slide.parent.mkdir()
    slide.write_bytes(b"x")
    beside = default_paths(slide)
    assert all(p.parent == slide.parent.resolve() for p in beside.values())
    (slide.parent / beside["geojson"].name).write_text("{}")
    again = default_paths(slide)
    assert again["geojson"] != beside["geojson"] and not again["geojson"].exists()  # never over a file
    run_dir = default_outdir(str(slide))
    assert run_dir.parent == tmp_path / "data" / "runs" and run_dir.name.startswith("slide-")
