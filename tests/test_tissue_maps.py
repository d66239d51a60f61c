"""Few-shot tissue maps: the logistic-regression head, regions -> training tiles, the nucleus-module
DeepCMorph (no classifier) and its nucleus-map store, and ``classify --train-regions`` on the sample."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import shapely
import torch

from napari_histo.cli import main
from napari_histo.formats._common import Annotation
from napari_histo.models.tissue_maps import TissueHead, TrainingRegions, fit_tissue_head
from napari_histo.utils import HistoError

#: Level-0 boxes (x0, y0, x1, y1) of the sample slide (CMU-1 small region, 0.499 µm/px): epidermis,
#: dermis (stroma) and glass, as a user would outline them.
SAMPLE_REGIONS = {
    "epithelium": (1112, 1978, 1260, 2225),
    "stroma": (667, 1483, 915, 1780),
    "glass": (100, 250, 500, 740),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def regions_geojson(path, regions=SAMPLE_REGIONS):
    def box(x0, y0, x1, y1, cls):
        return {"type": "Feature", "geometry": {"type": "Polygon",
                "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
                "properties": {"objectType": "annotation", "classification": {"name": cls, "color": [255, 0, 0]}}}
    path.write_text(json.dumps({"type": "FeatureCollection",
                                "features": [box(*b, c) for c, b in regions.items()]}), encoding="utf-8")
    return path


def test_head_separates_classes_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0] * 5, [3.0] * 5, [0.0, 3.0, 0.0, 3.0, 0.0]])
    x = np.concatenate([c + rng.normal(0, 1.0, (20, 5)) for c in centres])
    y = np.repeat([0, 1, 2], 20)
    head = fit_tissue_head(x, y, ["a", "b", "c"])
    test = np.concatenate([c + rng.normal(0, 1.0, (50, 5)) for c in centres])
    accuracy = (head.predict_proba(test).argmax(1) == np.repeat([0, 1, 2], 50)).mean()
    assert accuracy > 0.85
    assert head.train_tiles == {"a": 20, "b": 20, "c": 20}
    again = TissueHead.load(head.save(tmp_path / "head.json"))
    np.testing.assert_allclose(again.predict_proba(test), head.predict_proba(test), atol=1e-6)
    # fitting is deterministic: the same tiles give the same head
    np.testing.assert_allclose(fit_tissue_head(x, y, ["a", "b", "c"]).weight, head.weight, atol=1e-8)


def test_head_needs_two_classes_with_tiles():
    x = np.random.default_rng(1).normal(size=(6, 3))
    with pytest.raises(HistoError, match="no tile lies inside a region of 'b'"):
        fit_tissue_head(x, np.zeros(6, int), ["a", "b"])
    with pytest.raises(HistoError, match="at least two classes"):
        fit_tissue_head(x, np.zeros(6, int), ["a"])


def test_regions_label_tiles_by_centre():
    regions = TrainingRegions.from_annotations([
        Annotation(shapely.box(0, 0, 100, 100), class_name="tumour"),
        Annotation(shapely.box(200, 0, 300, 100), class_name="Stroma"),
        Annotation(shapely.box(250, 50, 400, 100), class_name="stroma"),  # same class, any case
        Annotation(shapely.Point(10, 10), class_name="tumour"),  # points are not regions
    ], classes=["stroma", "TUMOUR"])
    assert regions.classes == ["Stroma", "tumour"]
    boxes = np.array([[0, 0, 64, 64], [90, 90, 150, 150], [220, 10, 260, 50], [330, 60, 370, 90], [500, 0, 540, 40]])
    assert regions.label_tiles(boxes).tolist() == [1, -1, 0, 0, -1]
    with pytest.raises(HistoError, match="no region of class 'necrosis'"):
        TrainingRegions.from_annotations([Annotation(shapely.box(0, 0, 1, 1), class_name="tumour")], ["necrosis"])


def test_nucleus_module_has_features_and_no_classes(tmp_path):
    from napari_histo.models.deepcmorph.model import DeepCMorph, load_deepcmorph, save_pretrained

    torch.manual_seed(0)
    model = DeepCMorph(backbone="slim", num_classes=0, num_seg_classes=4,
                       seg_class_names=["other", "inflammatory", "epithelial", "spindle"], mpp=0.5, tile_size=64)
    assert not model.has_classifier and model.num_features == 336 + 32 + 1 + 8
    x = torch.rand(2, 3, 50, 70)
    logits, feats, seg, cls = model.forward_maps(x)
    assert logits is None and feats.shape == (2, model.num_features)
    assert seg.shape == (2, 1, 50, 70) and cls.shape == (2, 4, 50, 70)
    with pytest.raises(HistoError, match="nucleus module alone"):
        model(x)
    # the class-share features are each class map's share of the nucleus pixels
    share = feats[:, -4:]
    expected = (seg * cls).mean((2, 3)) / seg.mean((2, 3))
    torch.testing.assert_close(share, expected)
    # a full DeepCMorph checkpoint gives its segmentation module to a nucleus module
    full = DeepCMorph(backbone="slim", num_classes=3, num_seg_classes=4)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    model.load_weights(tmp_path / "full.pt")
    for k, v in full.segmentation_module.state_dict().items():
        assert torch.equal(model.segmentation_module.state_dict()[k], v)
    loaded = load_deepcmorph(save_pretrained(model, tmp_path / "nm"))
    assert not loaded.has_classifier and loaded.config.seg_class_names[2] == "epithelial"


def test_shipped_nucleus_module_classifies_sample_with_regions(tmp_path, sample_slide_path):
    """``classify`` with no download: nucleus maps and features; with regions, a tissue map."""
    from napari_histo.formats.geojson import read_geojson
    from napari_histo.formats.sedeen import read_sedeen
    from napari_histo.models.classification import open_nucleus_maps

    out = tmp_path / "out"
    assert main(["classify", str(sample_slide_path), "-o", str(out), "--tile", "96",
                 "--roi", "600,1200,900,1200"]) == 0
    plain = out / sample_slide_path.stem
    df = pd.read_parquet(plain / "tiles.parquet")
    assert len(df) > 20 and "class" not in df.columns and not (plain / "class_map.npy").exists()
    assert {"nucleus_fraction", "nuclei_epithelial", "nuclei_spindle", "f0"} <= set(df.columns)
    # tissue tiles hold nuclei; the maps are written over the whole tile grid
    assert df["nucleus_fraction"].median() > 0.02
    nuclei, classes, attrs = open_nucleus_maps(plain / "nucleus_maps.zarr")
    run = json.loads((plain / "run.json").read_text())
    assert nuclei.shape == (run["grid"]["rows"] * 96, run["grid"]["cols"] * 96)
    assert attrs["class_ids"] == {"other": 1, "inflammatory": 2, "epithelial": 3, "spindle": 4}
    c = np.asarray(classes[:])
    assert set(np.unique(c)) <= {0, 1, 2, 3, 4} and (c > 0).mean() > 0.01
    assert ((np.asarray(nuclei[:]) >= 128) == (c > 0)).all()

    regions = regions_geojson(tmp_path / "regions.geojson")
    mapped = tmp_path / "mapped"
    assert main(["classify", str(sample_slide_path), "-o", str(mapped), "--train-regions", str(regions),
                 "--tile", "64", "--no-maps"]) == 0
    target = mapped / sample_slide_path.stem
    class_map = np.load(target / "class_map.npy")
    run = json.loads((target / "run.json").read_text())
    names = [c["name"] for c in run["classes"]]
    assert names == ["epithelium", "glass", "stroma"]
    assert run["training_tiles"]["glass"] > 10 and run["training_tiles"]["epithelium"] >= 4
    tiles = pd.read_parquet(target / "tiles.parquet")
    inside = tiles[tiles["region_class"] != ""]
    assert (inside["class_name"] == inside["region_class"]).mean() > 0.9
    # most tissue outside the training regions is stroma or epithelium, not glass
    outside = tiles[(tiles["region_class"] == "") & (tiles["tissue_fraction"] > 0.5)]
    assert (outside["class_name"] != "glass").mean() > 0.8
    assert not (target / "nucleus_maps.zarr").exists()
    # exports: QuPath tiles and Sedeen regions, one per class
    qp = read_geojson(target / "tissue_tiles.geojson")
    assert len(qp.annotations) == int((class_map >= 0).sum())
    assert {a.class_name for a in qp.annotations} == set(names)
    session = read_sedeen(target / "tissue_map.session.xml")
    assert sorted({a.name for a in session.to_annotations()}) == sorted(names)
    # the saved head classifies another run identically
    again = tmp_path / "again"
    assert main(["classify", str(sample_slide_path), "-o", str(again), "--head", str(target / "tissue_head.json"),
                 "--tile", "64", "--no-maps", "--all-tiles"]) == 0
    other = np.load(again / sample_slide_path.stem / "class_map.npy")
    assert (other[class_map >= 0] == class_map[class_map >= 0]).mean() > 0.99


def test_classify_regions_errors_name_the_problem(tmp_path, sample_slide_path, capsys):
    one_class = regions_geojson(tmp_path / "one.geojson", {"stroma": SAMPLE_REGIONS["stroma"]})
    out = str(tmp_path / "o")
    assert main(["classify", str(sample_slide_path), "-o", out, "--train-regions", str(one_class)]) == 1
    assert "one.geojson: a tissue map needs regions of at least two classes" in capsys.readouterr().err
    regions = regions_geojson(tmp_path / "r.geojson")
    assert main(["classify", str(sample_slide_path), "-o", out, "--train-regions", str(regions),
                 "--roi-class", "necrosis", "--roi-class", "stroma"]) == 1
    assert "no region of class 'necrosis'; the regions' classes: epithelium, glass, stroma" in capsys.readouterr().err
    assert main(["classify", str(sample_slide_path), "-o", out, "--roi-class", "stroma"]) == 1
    assert "--roi-class selects classes of --train-regions" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written for a refused run


def test_class_runs_cover_the_tiles_exactly_without_holes():
    from types import SimpleNamespace

    from napari_histo.models.tissue_maps import class_run_annotations

    class_map = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, -1, 0]])  # class 1 enclosed by class 0
    result = SimpleNamespace(class_map=class_map, class_names=["stroma", "tumour"], origin=(100, 50), step_level0=10.0)
    runs = class_run_annotations(result)
    assert all(len(a.geometry.interiors) == 0 for a in runs)
    for k, name in enumerate(result.class_names):
        union = shapely.union_all([a.geometry for a in runs if a.name == name])
        assert union.area == pytest.approx(100.0 * (class_map == k).sum())
    tumour = shapely.union_all([a.geometry for a in runs if a.name == "tumour"])
    assert tumour.bounds == (110.0, 60.0, 130.0, 70.0)
    assert len(runs) == 6  # row 0: one run; row 1: three; row 2: two (the skipped tile splits it)


def test_an_image_without_pixel_size_needs_one(tmp_path, sample_slide_path, capsys):
    """A PNG states no pixel size: the nucleus module (0.5 µm/px) is not run at a guessed scale."""
    import openslide
    from PIL import Image

    with openslide.OpenSlide(str(sample_slide_path)) as s:
        rgb = np.asarray(s.read_region((700, 1300), 0, (400, 300)).convert("RGB"))
    png = tmp_path / "field.png"
    Image.fromarray(rgb).save(png)
    out = tmp_path / "out"
    assert main(["classify", str(png), "-o", str(out), "--tile", "64"]) == 1
    assert "field.png: no pixel size stated, and the model works at 0.5 µm/px: give the image's pixel size" in \
        capsys.readouterr().err
    assert main(["classify", str(png), "-o", str(out), "--tile", "64", "--image-mpp", "0.499"]) == 0
    df = pd.read_parquet(out / "field" / "tiles.parquet")
    assert df["x1"].max() <= 400 + 65 and len(df) >= 10  # 64 px at 0.5 µm/px = 64 level-0 px at 0.499
    run = json.loads((out / "field" / "run.json").read_text())
    assert run["parameters"]["image_mpp"] == 0.499
    # a stated pixel size is never replaced
    assert main(["classify", str(sample_slide_path), "-o", str(out), "--image-mpp", "0.25", "--roi", "0,0,10,10"]) == 1
    assert "states 0.499 µm/px; --image-mpp 0.25 would replace it" in capsys.readouterr().err


def test_penalty_is_chosen_by_leaving_out_whole_regions():
    from napari_histo.models.tissue_maps import L2_GRID, choose_l2

    rng = np.random.default_rng(0)
    # noise: 24 tiles, 200 features, labels unrelated -> the strongest penalty (predict the prior)
    x = rng.normal(size=(24, 200))
    y = np.tile([0, 1], 12)
    groups = np.repeat(np.arange(6), 4)
    assert choose_l2(x, y, groups, 2) == L2_GRID[-1]
    # clean signal: two well separated classes -> a weak penalty fits best
    x = np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(0, 1, (60, 3)) + [6, 0, 0]])
    y = np.repeat([0, 1], 60)
    groups = np.concatenate([np.repeat(np.arange(6), 10), np.repeat(np.arange(6, 12), 10)])
    assert choose_l2(x, y, groups, 2) < 1.0
    # a class in one region only: no fold keeps every class for training -> the middle of the grid
    assert choose_l2(x, y, np.repeat([0, 1], 60), 2) == L2_GRID[len(L2_GRID) // 2]
