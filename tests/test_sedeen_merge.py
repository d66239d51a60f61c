"""Merging into a user's Sedeen session loses nothing and replaces only our unchanged graphics."""

from __future__ import annotations

import os
import shutil
import stat
import xml.etree.ElementTree as ET

import pytest
from _analysis_data import synthetic_table
from conftest import shared_path

from napari_histo.formats.sedeen import ID_ATTRIBUTE, read_sedeen, write_sedeen
from napari_histo.utils import InputFileError

ENRICHED = """<?xml version="1.0" encoding="UTF-8"?>
<!-- written by the user's own script -->
<?sedeen-hint keep?>
<session software="PathCore Session Printer" version="0.1.0">
  <!-- case notes follow -->
  <notes author="dr x">Tumour budding at the invasive front.</notes>
  <image identifier="first.svs">
    <dimensions>1000,800</dimensions>
    <pixel-size units="um">0.250000,0.250000</pixel-size>
    <overlays locked="true">
      <graphic type="polygon" name="Tumour" description="drawn by hand">
        <pen color="#ff0000ff" width="3" style="Solid"/>
        <point-list><point>10,10</point><point>90,10</point><point>90,90</point></point-list>
      </graphic>
      <graphic type="polygon" name="Corrected" description="a nucleus I fixed [napari-histo]">
        <pen color="#00ff00ff" width="3" style="Solid"/>
        <point-list><point>1,1</point><point>5,1</point><point>5,5</point></point-list>
      </graphic>
      <?sedeen-layer 2?>
    </overlays>
  </image>
  <image identifier="second.svs">
    <dimensions>500,500</dimensions>
    <overlays>
      <graphic type="rectangle" name="Other slide" description="keep me">
        <pen color="#0000ffff" width="3" style="Solid"/>
        <point-list><point>0,0</point><point>9,0</point><point>9,9</point><point>0,9</point></point-list>
      </graphic>
    </overlays>
  </image>
</session>
<!-- end of file -->
"""


def _enriched(tmp_path):
    path = tmp_path / "first.session.xml"
    path.write_text(ENRICHED, encoding="utf-8")
    return path


def _graphics(path, image_index=0):
    root = ET.parse(path).getroot()
    return root.findall("image")[image_index].find("overlays").findall("graphic")


def test_merge_keeps_every_element_comment_instruction_and_image(tmp_path):
    path = _enriched(tmp_path)
    table = synthetic_table(3, spacing=40)
    write_sedeen(table, path, slide_name="first.svs")
    text = path.read_text(encoding="utf-8")
    for kept in ("<!-- written by the user's own script -->", "<?sedeen-hint keep?>", "<!-- case notes follow -->",
                 "Tumour budding at the invasive front.", 'author="dr x"', 'locked="true"', "<?sedeen-layer 2?>",
                 "<!-- end of file -->", 'identifier="second.svs"', "keep me", 'software="PathCore Session Printer"'):
        assert kept in text, kept
    first = _graphics(path)
    names = [g.get("name") for g in first]
    assert names[:2] == ["Tumour", "Corrected"]  # the user's graphics, the marked one too
    assert sum(g.get(ID_ATTRIBUTE, "").startswith("nucleus:") for g in first) == len(table)
    assert [g.get("name") for g in _graphics(path, 1)] == ["Other slide"]


def test_a_second_export_replaces_only_our_unchanged_graphics_of_its_kind(tmp_path):
    path = _enriched(tmp_path)
    table = synthetic_table(3, spacing=40)
    write_sedeen(table, path)
    # the user corrects one exported nucleus in Sedeen: its points move
    root = ET.parse(path).getroot()
    ours = [g for g in root.find("image").find("overlays") if g.get(ID_ATTRIBUTE)]
    edited = ours[0]
    first_point = edited.find("point-list/point")
    first_point.text = "3.000000,4.000000"
    ET.ElementTree(root).write(path, encoding="unicode")
    hotspots = synthetic_table(1, spacing=40).assign(rank=1, mode="circle", radius_px=20.0, count=3, name="Hotspot 1")
    write_sedeen(None, path, hotspots=hotspots)  # hotspots never remove nuclei
    after_hotspots = _graphics(path)
    assert sum(g.get(ID_ATTRIBUTE, "").startswith("nucleus:") for g in after_hotspots) == len(table)
    write_sedeen(table, path)  # the same nuclei again: the unchanged ones are replaced, the edited one stays
    final = _graphics(path)
    nucleus_ids = [g for g in final if g.get(ID_ATTRIBUTE, "").startswith("nucleus:")]
    assert len(nucleus_ids) == len(table) + 1
    assert any(g.find("point-list/point").text == "3.000000,4.000000" for g in nucleus_ids)
    assert [g.get("name") for g in final[:2]] == ["Tumour", "Corrected"]
    assert sum(g.get(ID_ATTRIBUTE, "").startswith("hotspot:") for g in final) == 1


def test_the_file_keeps_its_permissions_links_are_respected(tmp_path):
    path = _enriched(tmp_path)
    os.chmod(path, 0o444)
    write_sedeen(synthetic_table(2, spacing=40), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    # a symlinked session: the link stays a link, its target gets the graphics
    target_dir = tmp_path / "shared_sessions"
    target_dir.mkdir()
    target = target_dir / "case.session.xml"
    target.write_text(ENRICHED, encoding="utf-8")
    link = tmp_path / "case.session.xml"
    link.symlink_to(target)
    write_sedeen(synthetic_table(2, spacing=40), link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(_graphics(target)) == 2 + 4
    # a hard-linked session is refused, naming the file
    other = tmp_path / "hard.session.xml"
    os.link(target, other)
    with pytest.raises(InputFileError, match="hard links"):
        write_sedeen(synthetic_table(2, spacing=40), other)
    assert target.read_text(encoding="utf-8") == other.read_text(encoding="utf-8")


@pytest.mark.shared_data
def test_real_sessions_round_trip_without_losing_a_graphic(tmp_path):
    src = shared_path("annotation_formats", "sedeen", "sedeen1.xml")
    path = tmp_path / "sedeen1.xml"
    shutil.copy(src, path)
    before = read_sedeen(path)
    table = synthetic_table(3, spacing=40)
    write_sedeen(table, path)
    write_sedeen(table, path)  # twice: the second replaces the first, the user's stay
    after = read_sedeen(path)
    assert (after.identifier, after.dimensions, after.mpp) == (before.identifier, before.dimensions, before.mpp)
    users = [(g.type, g.name, g.description, g.colour, g.points.tolist()) for g in after.graphics[:len(before.graphics)]]
    assert users == [(g.type, g.name, g.description, g.colour, g.points.tolist()) for g in before.graphics]
    assert len(after.graphics) == len(before.graphics) + len(table)
