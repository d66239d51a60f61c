"""Train the nucleus model from a folder of the user's own annotated images, then use it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_histo.cli import main


@pytest.fixture(scope="module")
def annotated_folder(tmp_path_factory, sample_slide_path):
    """Two real crops of the sample, annotated as a user would: outlines typed by size, one saved
    as QuPath GeoJSON (classification names), one as a Sedeen session (pen colours)."""
    from PIL import Image

    from napari_histo.formats.geojson import write_geojson
    from napari_histo.formats.sedeen import write_sedeen
    from napari_histo.models.segment import segment_image
    from napari_histo.nuclei.classical import ClassicalSegmenter
    from napari_histo.schema.types import TypeInfo
    from napari_histo.slide import open_slide

    folder = tmp_path_factory.mktemp("annotated")
    info = TypeInfo({0: "background", 1: "lymphocyte", 2: "tumour"}, {1: (0, 0, 255), 2: (255, 0, 0)})
    with open_slide(sample_slide_path) as slide:
        crops = {"tile_a": slide.read_region((1000, 1100), (256, 256)),
                 "tile_b": slide.read_region((1300, 1400), (256, 256))}
    for name, rgb in crops.items():
        Image.fromarray(rgb).save(folder / f"{name}.png")
        _, table = segment_image(rgb, 0.499, model=ClassicalSegmenter())
        table = table.copy()
        table["type"] = np.where(table["area_px"] < np.median(table["area_px"]), 1, 2)
        table.attrs["type_info"] = info.to_json_dict()
        if name == "tile_a":
            write_geojson(table, folder / f"{name}.geojson")
        else:
            write_sedeen(table, folder / f"{name}.session.xml", dimensions=(256, 256), mpp=0.499,
                         slide_name=f"{name}.png")
    return folder


def test_train_from_annotated_images_then_segment_and_evaluate(annotated_folder, tmp_path, capsys):
    out = tmp_path / "my_model"
    rc = main(["train", "hovernet", "--data", str(annotated_folder), "-o", str(out), "--iterations", "3",
               "--mpp", "0.499"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["images"] == ["tile_a", "tile_b"] and summary["iterations"] == 3
    assert "lymphocyte" in summary["types"] and "tumour" in summary["types"]
    config = json.loads((out / "config.json").read_text())
    assert "lymphocyte" in config["type_names"] and config["num_types"] == len(config["type_names"])
    from napari_histo.utils import resource_path

    shipped = json.loads(resource_path("weights", "hovernet_compact", "config.json").read_text())
    # the thresholds tuned with the starting weights travel with the fine-tuned ones
    for key in ("postproc", "network_postproc", "type_rule", "max_tile_px", "mpp", "internal_downsample"):
        assert config[key] == shipped[key], key
    assert (out / "model.pt").is_file() and (out / "run.json").is_file()
    # the new model segments an image and scores the annotated folder
    seg_out = tmp_path / "seg"
    assert main(["segment", str(annotated_folder / "tile_a.png"), "-o", str(seg_out), "--model", str(out),
                 "--mpp", "0.499", "--no-geojson", "--no-hovernet-json"]) == 0
    assert (seg_out / "tile_a" / "nuclei.parquet").is_file()
    assert main(["evaluate", str(annotated_folder), "--model", str(out), "--mpp", "0.499",
                 "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert [r["image"] for r in scores["images"]] == ["tile_a", "tile_b"]
    assert 0.0 <= scores["mean"]["pq"] <= 1.0


def test_the_type_head_starts_from_the_shipped_class_of_the_same_coarse_class():
    from src_models.hovernet.own_data import head_channels

    shipped = ["unclassified", "epithelial", "lymphocyte", "neutrophil", "macrophage"]
    assert head_channels(["background", "tumour", "plasma cell", "fibroblast", "lymphocyte"], shipped) == [0, 1, 2, 0, 2]


def test_folders_without_pixel_size_or_annotations_are_refused(annotated_folder, tmp_path, capsys):
    assert main(["train", "hovernet", "--data", str(annotated_folder), "-o", str(tmp_path / "m")]) == 1
    assert "pixel size" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "hovernet", "--data", str(empty), "-o", str(tmp_path / "m"), "--mpp", "0.5"]) == 1
    assert "no image with a same-stem annotation file" in capsys.readouterr().err
    assert main(["train", "hovernet", "--data", str(annotated_folder), "-o", str(tmp_path / "m"), "--mpp", "0.5",
                 "--encoder-weights", "preact.tar"]) == 1
    assert "applies to the official HoVer-Net" in capsys.readouterr().err
