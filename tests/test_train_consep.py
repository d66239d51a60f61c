"""Training the typed nucleus model on CoNSeP-layout crops in the coarse vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shared_path

from napari_histo.models.hovernet.compact import CompactHoVerNet, load_compact
from napari_histo.models.hovernet.config import CompactConfig
from src_models.hovernet.config import TrainConfig
from src_models.hovernet.data import (
    CONSEP_VAL_IMAGES,
    MONUSAC_COARSE,
    PatchSampler,
    build_training_tiles,
    consep_crops,
    consep_image,
    load_consep,
    load_consep_native,
    read_consep_types,
)
from src_models.hovernet.losses import hovernet_loss
from src_models.hovernet.train import load_init_weights, train

COARSE = CompactConfig(widths=[16, 32, 64], blocks=[1, 1, 1], input_size=96, output_size=80, num_types=5,
                       type_names=["background", "other", "inflammatory", "epithelial", "spindle"])


@pytest.fixture(scope="module")
def consep_root():
    return shared_path("consep").parent


def test_consep_crops_load_with_their_types_aligned(consep_root):
    crops = consep_crops(consep_root)
    assert len(crops) == 432 and len({consep_image(c) for c in crops}) == 27
    types = read_consep_types(consep_root)
    rgb, inst, typemap = load_consep_native(consep_root, crops[0], types)
    assert rgb.shape == (256, 256, 3) and inst.shape == (256, 256)
    # every csv row of the crop paints its instance with its type
    for iid, t in types[crops[0]].items():
        assert set(np.unique(typemap[inst == iid])) == {t}
    grey = rgb.mean(axis=2)
    assert grey[inst > 0].mean() < grey[inst == 0].mean() - 20  # nuclei are the dark objects
    tile = load_consep(consep_root, crops[0], 0.5, types)
    assert tile.img.shape == (128, 128, 3) and tile.inst.shape == (128, 128)
    assert set(np.unique(tile.types)) <= {0, 1, 2, 3, 4, -1}


def test_validation_images_are_held_out_by_original_image(consep_root, tmp_path):
    val = consep_crops(consep_root, CONSEP_VAL_IMAGES)
    assert len(val) == 16 * len(CONSEP_VAL_IMAGES)
    tiles = build_training_tiles(consep_root, 0.5, list(CONSEP_VAL_IMAGES), tmp_path, sources=["consep"],
                                 type_scheme="coarse")
    names = {t.name for t in tiles}
    assert len(names) == 432 - len(val)
    assert not {consep_image(n) for n in names} & set(CONSEP_VAL_IMAGES)
    with pytest.raises(ValueError, match="coarse"):
        build_training_tiles(consep_root, 0.5, [], tmp_path, sources=["consep"], type_scheme="monusac")


def test_monusac_maps_into_the_coarse_classes_and_its_background_is_not_trusted(consep_root):
    assert MONUSAC_COARSE == {"epithelial": 3, "lymphocyte": 2, "neutrophil": 2, "macrophage": 2}
    from src_models.hovernet.data import load_monusac

    sac = load_monusac(consep_root, "A9K0_2", 0.5, MONUSAC_COARSE)
    assert set(np.unique(sac.types)) <= {0, 2, 3}
    sampler = PatchSampler([sac], 64, 0.5, seed=3, augment=False)
    _, tgt = sampler.batch(2, 0)
    # unannotated pixels of a partially annotated source are ignored, nucleus pixels are kept
    assert set(np.unique(tgt["np"])) == {-1, 1}
    assert (tgt["tp"][tgt["np"] == -1] == -1).all()


def _fixed_batch_loss(model, tiles) -> float:
    sampler = PatchSampler(tiles, 64, 0.5, seed=123, augment=False)
    imgs, tgt = sampler.batch(8, model.margin)
    model.train()
    with torch.no_grad():
        out = model(torch.from_numpy(imgs))
        loss, _ = hovernet_loss(out, {k: torch.from_numpy(v) for k, v in tgt.items()}, TrainConfig().loss_weights)
    return float(loss)


def test_a_tiny_training_run_on_consep_crops_lowers_the_loss(consep_root, tmp_path):
    types = read_consep_types(consep_root)
    tiles = [load_consep(consep_root, c, 0.5, types) for c in consep_crops(consep_root, ["train_1"])[:6]]
    cfg = TrainConfig(model=COARSE, out_dir=str(tmp_path / "run"), patch_size=64, batch_size=4, lr=3e-3,
                      max_iters=30, max_minutes=5, augment=True, jpeg_p=0.5, threads=1, type_scheme="coarse",
                      sources=["consep"], source_weights={"consep": 1.0})
    torch.manual_seed(cfg.seed)
    before = _fixed_batch_loss(CompactHoVerNet(cfg.model), tiles)
    rec = train(cfg, resume=False, tiles=tiles)
    assert rec["iter"] == 30
    model, back = load_compact(tmp_path / "run")
    assert back.type_names == COARSE.type_names
    assert _fixed_batch_loss(model, tiles) < 0.8 * before
    info = json.loads((tmp_path / "run" / "type_info.json").read_text())
    assert [info[k][0] for k in sorted(info)] == COARSE.type_names


def test_the_type_head_can_start_from_related_channels_of_other_weights(tmp_path):
    from napari_histo.utils import InputFileError

    torch.manual_seed(0)
    old = CompactHoVerNet(COARSE)
    path = tmp_path / "old.pt"
    torch.save(old.state_dict(), path)
    new = CompactHoVerNet(COARSE)
    load_init_weights(new, path, [0, 4, 2, 1, 3])
    w_old = old.state_dict()["decoders.tp.head.weight"]
    w_new = new.state_dict()["decoders.tp.head.weight"]
    for i, j in enumerate([0, 4, 2, 1, 3]):
        assert torch.equal(w_new[i], w_old[j])
    assert torch.equal(new.state_dict()["decoders.np.head.weight"], old.state_dict()["decoders.np.head.weight"])
    with pytest.raises(InputFileError, match="does not have"):
        load_init_weights(new, path, [0, 1, 2, 3, 9])


def test_a_stopped_training_keeps_its_checkpoint_and_resumes(consep_root, tmp_path):
    from src_models.hovernet.train import train, train_steps

    types = read_consep_types(consep_root)
    tiles = [load_consep(consep_root, c, 0.5, types) for c in consep_crops(consep_root, ["train_2"])[:3]]
    cfg = TrainConfig(model=COARSE, out_dir=str(tmp_path / "run"), patch_size=64, batch_size=2, max_iters=60,
                      max_minutes=5, augment=False, threads=1, type_scheme="coarse", sources=["consep"])
    steps = train_steps(cfg, resume=False, tiles=tiles)
    first = next(steps)
    assert first["iter"] == 1 and first["max_iters"] == 60
    second = next(steps)
    assert second["iter"] == 20
    steps.close()  # a cancelled job
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and (tmp_path / "run" / "model.pt").is_file()
    cfg.max_iters = 22
    record = train(cfg, resume=True, tiles=tiles)
    assert record["iter"] == 22
    log = [json.loads(line) for line in open(tmp_path / "run" / "train_log.jsonl")]
    assert any(r.get("event") == "resume" and r["iter"] == 20 for r in log)


def test_typed_points_label_the_nuclei_they_fall_in_or_near():
    from src_models.hovernet.data import types_from_points

    inst = np.zeros((40, 60), np.int32)
    inst[5:15, 5:15] = 1     # a point inside
    inst[5:15, 30:40] = 2    # a point 3 px off its edge, 8 px from its centroid
    inst[25:35, 5:15] = 3    # two points of different types: ambiguous
    inst[25:35, 30:40] = 4   # no point: a nucleus of unknown type
    points = np.array([[9.0, 10.0], [34.5, 17.0], [8.0, 28.0], [10.0, 31.0], [55.0, 38.0]])
    kinds = np.array([3, 2, 4, 1, 4])
    types = types_from_points(inst, points, kinds, radius_px=9.0)
    assert types.dtype == np.int16 and (types[inst == 0] == 0).all()
    assert (types[inst == 1] == 3).all() and (types[inst == 2] == 2).all()
    assert (types[inst == 3] == -1).all() and (types[inst == 4] == -1).all()
    # a tighter radius leaves the nucleus whose point lies outside it unlabelled; the far point labels nothing
    assert (types_from_points(inst, points, kinds, radius_px=5.0)[inst == 2] == -1).all()


def test_crchisto_points_type_predicted_nuclei(shared_data):
    from napari_histo.nuclei.classical import ClassicalSegmenter
    from src_models.hovernet.data import PARTIAL_SOURCES, load_crchisto_typed

    folder = shared_path("crchisto", "CRCHistoPhenotypes_2016_04_28", "cls_and_det", "test", "img5")
    seg = ClassicalSegmenter(pixel_size_um=0.55)  # the detector at the image's own pixel size
    tile = load_crchisto_typed(folder, 0.5, lambda rgb: seg.segment(rgb)[0])
    assert tile.source == "crchisto" and "crchisto" in PARTIAL_SOURCES
    assert tile.img.shape[:2] == tile.inst.shape == tile.types.shape
    assert abs(tile.img.shape[0] - round(500 * 0.55 / 0.5)) <= 1
    typed = np.unique(tile.types[tile.types > 0]).tolist()
    assert set(typed) <= {1, 2, 3, 4} and len(typed) >= 2  # img5 holds epithelial, fibroblast and inflammatory nuclei
    nuclei = np.unique(tile.inst[tile.inst > 0])
    with_type = np.unique(tile.inst[tile.types > 0])
    assert 0.1 < len(with_type) / len(nuclei) <= 1.0


def test_crchisto_as_a_training_source_needs_a_segmenter(shared_data, tmp_path):
    from napari_histo.nuclei.classical import ClassicalSegmenter
    from src_models.hovernet.data import build_training_tiles

    with pytest.raises(ValueError, match="give point_segmenter"):
        build_training_tiles(shared_data, 0.5, [], tmp_path, sources=["crchisto"], type_scheme="coarse")
    seg = ClassicalSegmenter(pixel_size_um=0.55)
    tiles = build_training_tiles(shared_data, 0.5, ["img5", "img36"], tmp_path, sources=["crchisto"],
                                 type_scheme="coarse", point_segmenter=lambda rgb: seg.segment(rgb)[0])
    assert sorted(t.name for t in tiles) == ["img11", "img15", "img29", "img35", "img41"]
    assert not list(tmp_path.rglob("crchisto_*"))  # outlines depend on the segmenter: never cached


def test_label_completion_types_the_nuclei_of_unknown_type(consep_root):
    """Types hidden on a CoNSeP validation crop (an image the label-completion model never saw)
    come back from the shipped model for most nuclei; known types and background are untouched,
    and a nucleus below the probability bar stays unknown."""
    from dataclasses import replace

    from napari_histo.models.label_completion.model import load_model, shipped_model_dir
    from src_models.hovernet.data import complete_unknown_types

    torch.set_num_threads(1)
    types = read_consep_types(consep_root)
    crops = consep_crops(consep_root, ["train_3"])
    tile = load_consep(consep_root, crops[5], 0.5, types)
    truth = tile.types.copy()
    hidden = tile.types.copy()
    ids = np.unique(tile.inst[tile.inst > 0])
    keep_id = ids[0]
    hidden[(tile.inst > 0) & (tile.inst != keep_id)] = -1  # one nucleus keeps its type
    model = load_model(shipped_model_dir())
    (done,), counts = complete_unknown_types([replace(tile, types=hidden)], model, 0.5, min_probability=0.0)
    assert counts["typed"] == len(ids) - 1 and counts["left_unknown"] == 0
    assert np.array_equal(done.types[tile.inst == keep_id], truth[tile.inst == keep_id])
    assert np.all(done.types[tile.inst == 0] == 0)
    inside = (tile.inst > 0) & (tile.inst != keep_id) & (truth > 0)
    assert set(np.unique(done.types[inside])) <= {1, 2, 3, 4}
    per_nucleus = [(done.types[tile.inst == i][0], truth[tile.inst == i][0]) for i in ids[1:]
                   if truth[tile.inst == i][0] > 0]
    accuracy = np.mean([a == b for a, b in per_nucleus])
    assert accuracy > 0.5, accuracy
    # nothing reaches a probability above 1: every hidden nucleus stays unknown
    (strict,), counts = complete_unknown_types([replace(tile, types=hidden)], model, 0.5, min_probability=1.01)
    assert counts["typed"] == 0 and np.array_equal(strict.types, hidden)
    # tiles of other sources are left as they are
    (other,), _ = complete_unknown_types([replace(tile, types=hidden)], model, 0.5, sources=["monuseg"])
    assert np.array_equal(other.types, hidden)
