"""A result folder from someone else is data: paths in its run.json never decide where we write."""

from __future__ import annotations

import json

import numpy as np
from _analysis_data import synthetic_table

from napari_histo.cli import main
from napari_histo.formats.sedeen import read_sedeen
from napari_histo.schema.table import write_table_parquet


def _hostile_result(tmp_path):
    """A result folder whose run.json points at an existing file elsewhere and at a sibling
    project's slide: both exist, so an export that trusted them would write beside them."""
    elsewhere = tmp_path / "any" / "dir"
    elsewhere.mkdir(parents=True)
    (elsewhere / "notes.txt").write_text("the user's notes")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "report.svs").write_bytes(b"not really a slide")
    folder = tmp_path / "shared_results" / "case"
    folder.mkdir(parents=True)
    table = synthetic_table(6, spacing=25)
    table["positive"] = np.arange(len(table)) % 2 == 0
    write_table_parquet(table, folder / "nuclei.parquet")
    run = {"command": "segment", "slide": "../../victim/report.svs",
           "parameters": {"slide_path": str(elsewhere / "notes.txt")},
           "plan": {"width": 300, "height": 300, "slide_mpp": 0.25}}
    (folder / "run.json").write_text(json.dumps(run))
    return folder, elsewhere, victim


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_export_and_hotspots_write_only_into_the_result_folder(tmp_path):
    folder, elsewhere, victim = _hostile_result(tmp_path)
    outside_before = _files(elsewhere) + _files(victim)
    assert main(["export", str(folder), "--sedeen", "--geojson", "--hovernet-json", "--csv"]) == 0
    assert main(["hotspots", str(folder), "-k", "2", "--radius-um", "10", "--sedeen", "--geojson"]) == 0
    assert _files(elsewhere) + _files(victim) == outside_before  # nothing created or merged outside
    session = read_sedeen(folder / "report.session.xml")
    n = len(synthetic_table(6, spacing=25))
    kinds = [g.name.split()[0] for g in session.graphics]
    assert kinds.count("Nucleus") == n and kinds.count("Hotspot") == 2  # hotspots merged beside the nuclei
    assert (elsewhere / "notes.txt").read_text() == "the user's notes"


def test_a_slide_named_in_the_command_is_a_destination(tmp_path):
    folder, _, victim = _hostile_result(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    slide = mine / "case.svs"
    slide.write_bytes(b"x")
    assert main(["export", str(folder), "--sedeen", str(slide)]) == 0
    assert (mine / "case.session.xml").is_file() and not (victim / "report.session.xml").exists()
