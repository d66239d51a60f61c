"""Readers for MoNuSeg, MoNuSAC, CPM-15 and CRCHistoPhenotypes, and the ImageScope XML parser."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from napari_histo.formats.imagescope import rasterize_regions, read_imagescope
from napari_histo.utils import InputFileError

XML = """<Annotations MicronsPerPixel="0.194480">
 <Annotation Id="1" LineColor="255"><Attributes><Attribute Name="Epithelial" Id="0" Value=""/></Attributes>
  <Regions><RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region"/></RegionAttributeHeaders>
   <Region Id="1" Type="0" NegativeROA="0"><Attributes/><Vertices>
    <Vertex X="2" Y="2"/><Vertex X="8" Y="2"/><Vertex X="8" Y="8"/><Vertex X="2" Y="8"/><Vertex X="2" Y="2"/>
   </Vertices></Region>
   <Region Id="2" Type="0" NegativeROA="1"><Vertices>
    <Vertex X="4" Y="4"/><Vertex X="6" Y="4"/><Vertex X="6" Y="6"/><Vertex X="4" Y="6"/>
   </Vertices></Region>
   <Region Id="3" Type="0"><Vertices><Vertex X="1" Y="1"/><Vertex X="2" Y="2"/></Vertices></Region>
  </Regions></Annotation>
 <Annotation Id="2" LineColor="65280"><Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>
  <Regions><Region Id="4"><Vertices>
    <Vertex X="12" Y="10"/><Vertex X="18.5" Y="10"/><Vertex X="18.5" Y="14"/><Vertex X="12" Y="14"/>
  </Vertices></Region></Regions></Annotation>
 <Annotation Id="3"><Attributes><Attribute Name="Macrophage" Id="0"/></Attributes><Regions/></Annotation>
</Annotations>"""


def test_imagescope_parsing_and_rasterising(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(XML)
    ann = read_imagescope(path)
    assert ann.mpp == pytest.approx(0.19448)
    assert len(ann) == 3  # the 2-vertex ring is skipped
    first, hole, other = ann.regions
    assert first.class_name == "Epithelial" and len(first.vertices) == 4  # closing vertex dropped
    assert first.line_color == (255, 0, 0)  # COLORREF 255 = red
    assert hole.negative and not first.negative
    assert other.class_name is None  # "Description" is not a class
    assert other.line_color == (0, 255, 0)
    inst, types = rasterize_regions(ann, (20, 20), class_ids={"epithelial": 1})
    assert inst.max() == 2
    assert inst[3, 3] == 1 and inst[5, 5] == 0  # hole cleared
    assert types[3, 3] == 1 and types[12, 15] == 0 and inst[12, 15] == 2
    # ImageScope's coordinates start at the top-left pixel's corner: the square from 2 to 8 is
    # pixels 2..7 (vertices at pixel-centre coordinates 1.5..7.5), minus the 2 x 2 hole
    assert first.vertices[0].tolist() == [1.5, 1.5]
    assert inst[7, 7] == 1 and inst[8, 8] == 0 and inst[1, 1] == 0
    assert (inst == 1).sum() == 6 * 6 - 2 * 2


def test_imagescope_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_imagescope(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<Annotations><Annotation>")
    with pytest.raises(InputFileError, match="bad.xml"):
        read_imagescope(bad)
    other = tmp_path / "other.xml"
    other.write_text("<session/>")
    with pytest.raises(InputFileError, match="ImageScope"):
        read_imagescope(other)
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><Annotations>&b;</Annotations>')
    with pytest.raises(InputFileError, match="unsafe"):
        read_imagescope(bomb)


def test_monuseg_tile():
    from napari_histo.datasets import read_monuseg

    s = read_monuseg(shared_path("monuseg", "MoNuSegTrainData", "TCGA-21-5784-01Z-00-DX1.tif"))
    assert s.image.shape == (1000, 1000, 3) and s.image.dtype == np.uint8
    assert s.mpp == pytest.approx(0.2527) and s.mpp_source == "file"
    assert len(np.unique(s.inst)) - 1 == 398  # README: 398 nuclei
    # a typical nucleus at 40x is 20-80 µm²
    areas = np.bincount(s.inst.ravel())[1:] * s.mpp**2
    assert 15 < np.median(areas) < 80


def test_monuseg_missing_mpp_falls_back():
    from napari_histo.formats.imagescope import read_imagescope as rd

    xml = shared_path("monuseg", "MoNuSegTrainData", "TCGA-NH-A8F7-01A-01-TS1.xml")
    ann = rd(xml)
    assert ann.mpp is None and len(ann) == 363


def test_monusac_types():
    from napari_histo.datasets import MONUSAC_TYPES, read_monusac

    s = read_monusac(shared_path("monusac", "sample_original", "A9K0_2.svs"))
    assert s.image.shape == (763, 756, 3)
    assert s.mpp == pytest.approx(0.19448)
    ids = np.unique(s.inst)[1:]
    types = np.array([np.bincount(s.types[s.inst == i]).argmax() for i in ids])
    lym, epi = MONUSAC_TYPES.id_of("Lymphocyte"), MONUSAC_TYPES.id_of("Epithelial")
    # README: 15 epithelial, 299 lymphocytes (a few may be fully overwritten by overlaps)
    assert abs((types == epi).sum() - 15) <= 1 and abs((types == lym).sum() - 299) <= 3


def test_cpm15_manifest_and_image04():
    from napari_histo.datasets import iter_cpm15

    root = shared_path("cpm15")
    samples = {s.name: s for s in iter_cpm15(root, include_unaligned=True)}
    assert len(samples) == 13
    assert samples["image01"].mpp == 0.5 and samples["image08"].mpp == 0.25
    assert samples["image01"].inst.max() == 351
    assert not samples["image04"].aligned and "does not match" in samples["image04"].notes[0]
    assert all(s.aligned for k, s in samples.items() if k != "image04")
    assert "image04" not in {s.name for s in iter_cpm15(root)}


def test_crchisto_points():
    from napari_histo.datasets import CRCHISTO_TYPES, read_crchisto

    folder = shared_path("crchisto", "CRCHistoPhenotypes_2016_04_28", "cls_and_det", "test", "img5")
    s = read_crchisto(folder)
    assert s.image.shape == (500, 500, 3) and s.mpp == 0.55 and s.mpp_source == "assumed"
    assert len(s.points) >= 203
    counts = np.bincount(s.point_types, minlength=5)
    assert counts[CRCHISTO_TYPES.id_of("epithelial")] == 35
    assert counts[CRCHISTO_TYPES.id_of("inflammatory")] == 109
    assert (s.points >= -1).all() and (s.points < 500).all()


def test_detect_dataset():
    from napari_histo.datasets import detect_dataset

    assert detect_dataset(shared_path("cpm15")) == "cpm15"
    assert detect_dataset(shared_path("monusac")) == "monusac"
    assert detect_dataset(shared_path("monuseg")) == "monuseg"


def test_evaluate_cli_on_cpm15(tmp_path, capsys):
    import json

    from napari_histo.cli import main

    root = shared_path("cpm15")
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(root), "--model", "classical", "--limit", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "image01" in printed and "mean (1 images)" in printed
    record = json.loads(out.read_text())
    row = record["images"][0]
    assert row["n_gt"] == 351 and row["mpp"] == 0.5
    assert 0.0 < row["aji"] <= 1.0 and 0.0 < row["pq"] <= 1.0 and 0.0 < row["dice"] <= 1.0
    assert record["mean"]["pq"] == row["pq"]


def test_evaluate_cli_bad_folder(tmp_path, capsys):
    from napari_histo.cli import main

    assert main(["evaluate", str(tmp_path), "--model", "classical"]) == 1
    assert "cannot tell the dataset" in capsys.readouterr().err


def _square(x0: int, y0: int, side: int) -> str:
    corners = [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]
    return "<Region><Vertices>" + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in corners) + "</Vertices></Region>"


def test_official_monuseg_masks_start_a_pixel_up_left_and_the_earlier_nucleus_owns_the_overlap(tmp_path):
    import tifffile

    from napari_histo.datasets import iter_dataset, read_monuseg

    tif = tmp_path / "tile.tif"
    tifffile.imwrite(tif, np.full((40, 40, 3), 200, np.uint8))
    tif.with_suffix(".xml").write_text(
        '<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>'
        + _square(10, 10, 10) + _square(15, 15, 10) + "</Regions></Annotation></Annotations>")
    project = read_monuseg(tif).inst
    official = read_monuseg(tif, masks="official").inst
    assert project[18, 18] == 2 and official[18, 18] == 1  # the overlap: later vs earlier region
    # the project's squares are exactly the pixels inside ImageScope's edges (10 <= x < 20) ...
    assert np.argwhere(project == 1).min(axis=0).tolist() == [10, 10]
    assert np.argwhere(project == 2).tolist() == np.argwhere(np.pad(np.ones((10, 10)), ((15, 15), (15, 15)))).tolist()
    # ... MATLAB's 1-based pixel centres put the official edges on pixel centres 9 and 19 (24 for
    # the second square): half a pixel up and left, both edge rows filled
    assert np.argwhere(official == 1).min(axis=0).tolist() == [9, 9]
    assert np.argwhere(official == 2).max(axis=0).tolist() == [24, 24]
    assert (official > 0).sum() == 2 * 11 * 11 - 6 * 6
    via_cli_reader = next(iter_dataset(tmp_path, "monuseg", monuseg_masks="official"))
    assert np.array_equal(via_cli_reader.inst, official)
    with pytest.raises(ValueError, match="masks must be one of"):
        read_monuseg(tif, masks="matlab")
