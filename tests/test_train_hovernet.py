"""Compact HoVer-Net training and the shipped default weights (real MoNuSeg / MoNuSAC data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, shared_path

from napari_histo.models.hovernet.compact import CompactHoVerNet, load_compact
from napari_histo.models.hovernet.config import CompactConfig
from src_models.hovernet.config import TrainConfig
from src_models.hovernet.data import PatchSampler, Tile, load_monusac, load_monuseg
from src_models.hovernet.losses import hovernet_loss
from src_models.hovernet.train import train

WEIGHTS = REPO / "resources" / "weights" / "hovernet_compact"


@pytest.fixture(scope="module")
def small_tiles() -> list[Tile]:
    root = shared_path()
    a = load_monuseg(root, "TCGA-21-5784-01Z-00-DX1", 0.5)
    b = load_monusac(root, "A9K0_2", 0.5)
    crop = (slice(100, 260), slice(100, 260))
    return [Tile(t.name, t.source, t.img[crop], t.inst[crop], t.types[crop], t.mpp_native) for t in (a, b)]


def test_tiles_are_resampled_and_typed(small_tiles):
    mon, sac = small_tiles
    assert mon.img.shape == (160, 160, 3) and mon.inst.max() > 10
    # untyped source: every nucleus pixel is "unknown" (-1); typed source carries MoNuSAC classes
    assert set(np.unique(mon.types)) == {-1, 0}
    assert {1, 2} <= set(np.unique(sac.types))
    # nuclei are darker than their surroundings in both (image and polygons are aligned)
    for t in small_tiles:
        grey = t.img.mean(axis=2)
        assert grey[t.inst > 0].mean() < grey[t.inst == 0].mean() - 20


def _fixed_batch_loss(model, tiles, cfg) -> float:
    sampler = PatchSampler(tiles, cfg.patch_size, cfg.model.mpp, seed=123, augment=False)
    imgs, tgt = sampler.batch(4, model.margin)
    model.train()
    with torch.no_grad():
        out = model(torch.from_numpy(imgs))
        loss, _ = hovernet_loss(out, {k: torch.from_numpy(v) for k, v in tgt.items()}, cfg.loss_weights)
    return float(loss)


def test_a_short_training_run_lowers_the_loss_and_resumes(tmp_path, small_tiles):
    cfg = TrainConfig(model=CompactConfig(widths=[16, 32, 64], blocks=[1, 1, 1], input_size=96, output_size=80),
                      out_dir=str(tmp_path / "run"), patch_size=64, batch_size=4, lr=3e-3, max_iters=25,
                      max_minutes=5, augment=False, threads=1)
    torch.manual_seed(cfg.seed)
    before = _fixed_batch_loss(CompactHoVerNet(cfg.model), small_tiles, cfg)
    rec = train(cfg, resume=False, tiles=small_tiles)
    assert rec["iter"] == 25
    model, back = load_compact(tmp_path / "run")
    assert back == cfg.model
    after = _fixed_batch_loss(model, small_tiles, cfg)
    assert after < 0.8 * before
    # resuming continues from the checkpoint instead of restarting
    cfg.max_iters = 27
    rec2 = train(cfg, resume=True, tiles=small_tiles)
    assert rec2["iter"] == 27
    log = [json.loads(line) for line in open(tmp_path / "run" / "train_log.jsonl")]
    assert any(r.get("event") == "resume" and r["iter"] == 25 for r in log)


def test_fine_tuning_starts_from_init_weights_with_a_fresh_schedule(tmp_path, small_tiles):
    from napari_histo.utils import InputFileError

    small = CompactConfig(widths=[16, 32, 64], blocks=[1, 1, 1], input_size=96, output_size=80)
    base = TrainConfig(model=small, out_dir=str(tmp_path / "base"), patch_size=64, batch_size=4, lr=3e-3,
                       max_iters=25, max_minutes=5, augment=False, threads=1)
    train(base, resume=False, tiles=small_tiles)
    trained, _ = load_compact(tmp_path / "base")
    reference = {k: v.clone() for k, v in trained.state_dict().items()}
    trained_loss = _fixed_batch_loss(trained, small_tiles, base)  # (updates BN running stats)
    # a zero-step fine-tune (max_iters=0) exports exactly the init weights, from either file kind
    for src in ("checkpoint.pt", "model.pt"):
        ft = TrainConfig(model=small, out_dir=str(tmp_path / f"ft0_{src}"), patch_size=64, batch_size=4,
                         max_iters=0, threads=1, augment=False, init_weights=str(tmp_path / "base" / src))
        train(ft, resume=True, tiles=small_tiles)
        copy, _ = load_compact(tmp_path / f"ft0_{src}")
        for k, v in reference.items():
            assert torch.equal(copy.state_dict()[k], v), (src, k)
    # a short fine-tune at a lower LR starts at iteration 0 from the trained weights (its first
    # logged loss is the trained model's level, far below a Kaiming start) and keeps them useful
    ft = TrainConfig(model=small, out_dir=str(tmp_path / "ft"), patch_size=96, batch_size=2, lr=5e-4,
                     max_iters=6, max_minutes=5, augment=False, threads=1,
                     init_weights=str(tmp_path / "base" / "checkpoint.pt"))
    rec = train(ft, resume=True, tiles=small_tiles)
    log = [json.loads(line) for line in open(tmp_path / "ft" / "train_log.jsonl")]
    assert log[0]["event"] == "init" and rec["iter"] == 6
    assert log[1]["iter"] == 1 and log[1]["lr"] < 5e-4  # warm-up of a fresh schedule
    base_log = [json.loads(line) for line in open(tmp_path / "base" / "train_log.jsonl")]
    assert log[1]["loss"] < 0.5 * base_log[0]["loss"]
    tuned, _ = load_compact(tmp_path / "ft")
    assert _fixed_batch_loss(tuned, small_tiles, base) < 1.5 * trained_loss
    # wrong architecture or missing file: a clear error naming the file
    wide = TrainConfig(model=CompactConfig(widths=[8, 16, 32], blocks=[1, 1, 1], input_size=96, output_size=80),
                       out_dir=str(tmp_path / "bad"), max_iters=1, threads=1,
                       init_weights=str(tmp_path / "base" / "model.pt"))
    with pytest.raises(InputFileError, match="do not match"):
        train(wide, resume=False, tiles=small_tiles)
    wide.init_weights = str(tmp_path / "missing.pt")
    with pytest.raises(InputFileError, match="not found"):
        train(wide, resume=False, tiles=small_tiles)


class _RunsOnUnpickle:
    """Pickles to a call of ``Path.touch``: loading it with full unpickling would create a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_init_weights_never_unpickles_arbitrary_objects(tmp_path):
    """A weights file carrying a pickled object is refused with a clear error, and its code never runs."""
    from napari_histo.utils import InputFileError
    from src_models.hovernet.train import load_init_weights

    small = CompactConfig(widths=[16, 32, 64], blocks=[1, 1, 1], input_size=96, output_size=80)
    model = CompactHoVerNet(small)
    marker = tmp_path / "code_ran"
    bad = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "extra": _RunsOnUnpickle(marker)}, bad)
    with pytest.raises(InputFileError, match="not a readable torch file"):
        load_init_weights(model, bad)
    assert not marker.exists()
    good = tmp_path / "model.pt"  # a plain state_dict still loads
    torch.save(model.state_dict(), good)
    load_init_weights(CompactHoVerNet(small), good)


def _shipped_validation() -> dict:
    path = WEIGHTS / "validation.json"
    if not path.exists():
        pytest.skip("shipped weights not installed")
    return json.loads(path.read_text())


def test_shipped_weights_reproduce_the_model_card_on_a_held_out_image():
    from napari_histo.nuclei.metrics import instance_scores
    from src_models.hovernet.data import load_monuseg_native
    from src_models.hovernet.evaluate import build_segmenter, segment_native

    val = _shipped_validation()
    row = min(val["per_image"], key=lambda r: r["n_true"])
    root = shared_path()
    cfg = TrainConfig.load(WEIGHTS / "train_config.json")
    assert row["image"] in cfg.val_monuseg  # never trained on
    seg = build_segmenter(WEIGHTS)
    rgb, gt, mpp = load_monuseg_native(root, row["image"])
    pred, _ = segment_native(seg, rgb, mpp)
    got = instance_scores(gt, pred)
    for key in ("dice", "aji", "pq"):
        assert got[key] == pytest.approx(row[key], abs=0.01), key
    # the card's table is the one in validation.json
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    assert f"| {row['image']} | {row['n_true']} | {row['dice']:.3f} | {row['aji']:.3f} |" in card


def test_shipped_weights_load_through_the_model_registry():
    _shipped_validation()
    from napari_histo.models import registry

    registry.clear_cache()
    seg = registry.get_segmenter("default", device="cpu")
    cfg = CompactConfig.load(WEIGHTS / "config.json")
    # the shipped types are the product's coarse classes, with CoNSeP's ids
    from napari_histo.schema.vocabulary import COARSE_CLASSES

    assert seg.mpp == cfg.mpp and all(seg.type_info.name(i) == n for i, n in COARSE_CLASSES.items())
    rgb = np.asarray(load_monuseg(shared_path(), "TCGA-GL-6846-01A-01-BS1", cfg.mpp).img[:300, :300])
    labels, table = seg.segment(rgb)
    assert labels.shape == (300, 300) and 10 < len(table) < 400
    assert Path(WEIGHTS / "MODEL_CARD.md").read_text().count("CC BY-NC-SA 4.0") >= 1


def test_shipped_model_types_every_nucleus_of_the_sample_slide(sample_slide_path):
    """The shipped config's typing rule: no nucleus of the (never trained on) sample slide is left
    'unclassified', and type_prob is a probability over the four classes."""
    from napari_histo.models.hovernet.compact import compact_segmenter
    from napari_histo.models.segment import segment_image
    from napari_histo.slide import open_slide

    seg = compact_segmenter(WEIGHTS)
    assert seg.type_rule == CompactConfig.load(WEIGHTS / "config.json").type_rule == "nucleus"
    with open_slide(sample_slide_path) as slide:
        rgb = slide.read_region((800, 1200), (400, 400))
        mpp = slide.mpp[0]
    _, table = segment_image(rgb, mpp, model=seg)
    assert len(table) > 50
    assert set(table["type"]) <= {1, 2, 3, 4} and 0 not in set(table["type"])
    assert ((table["type_prob"] >= 0.25) & (table["type_prob"] <= 1.0)).all()


def test_coarse_grid_postprocessing_matches_the_fine_grid_watershed():
    """The shipped shortcut (watershed at the network's 0.5 µm/px, instances mapped back) finds
    the nuclei the watershed on the upsampled 0.25 µm/px maps finds, on a held-out image."""
    from napari_histo.models.hovernet.compact import compact_segmenter
    from napari_histo.nuclei.hovernet_segmenter import HoverNetSegmenter
    from napari_histo.nuclei.metrics import instance_scores
    from napari_histo.nuclei.postproc import HoverPostParams

    _shipped_validation()
    cfg = CompactConfig.load(WEIGHTS / "config.json")
    if not cfg.postproc_at_network_mpp:
        pytest.skip("shipped config post-processes on the fine grid")
    rgb = np.asarray(load_monuseg(shared_path(), "TCGA-GL-6846-01A-01-BS1", cfg.mpp).img[:360, :400])
    coarse = compact_segmenter(WEIGHTS, device="cpu")
    assert coarse.work_downsample == 2 and coarse.work_mpp == cfg.network_mpp
    model, _ = load_compact(WEIGHTS)
    fine = HoverNetSegmenter(model, cfg.input_size, cfg.output_size, cfg.mpp, type_info=coarse.type_info,
                             device="cpu", post_params=HoverPostParams(**cfg.postproc), type_rule=coarse.type_rule)
    raw = coarse.predict(rgb)
    assert raw["np"].shape == (180, 200)  # maps stay on the network grid
    lab_c, tab_c = coarse.postprocess(raw, rgb)
    lab_f, tab_f = fine.segment(rgb)
    assert lab_c.shape == lab_f.shape == rgb.shape[:2]
    agree = instance_scores(lab_f, lab_c)
    assert agree["dice"] > 0.9 and agree["dq"] > 0.8, agree
    assert abs(len(tab_c) - len(tab_f)) <= 0.15 * len(tab_f)
    # table in 0.25 µm/px tile px, typed, ids matching the labels
    assert tab_c.attrs["mpp"] == cfg.mpp and set(tab_c["id"]) == set(np.unique(lab_c)) - {0}
    # typing on the coarse grid, same rule: same vocabulary, about as many nuclei left untyped (0)
    assert tab_c["type"].isin(range(cfg.num_types)).all()
    assert abs((tab_c["type"] > 0).mean() - (tab_f["type"] > 0).mean()) < 0.1


def test_tuning_tiles_are_training_tiles_only():
    from src_models.hovernet.evaluate import TUNING_TILES, tuning_tiles

    held_out = TrainConfig().val_monuseg
    assert tuning_tiles(None, held_out) == TUNING_TILES
    wide = tuning_tiles("wide", held_out)
    assert len(wide) == 8 and not set(wide) & set(held_out)
    # every named tile exists in MoNuSeg and is one the training set includes
    from src_models.hovernet.data import monuseg_stems

    assert set(wide) <= set(monuseg_stems(shared_path())) - set(held_out)
    assert tuning_tiles(" TCGA-21-5784-01Z-00-DX1 ,", held_out) == ["TCGA-21-5784-01Z-00-DX1"]
    with pytest.raises(ValueError, match="held-out"):
        tuning_tiles(f"TCGA-21-5784-01Z-00-DX1,{held_out[1]}", held_out)


def test_model_card_describes_a_fine_tuned_release():
    from src_models.hovernet.ship import model_card, shipped_config

    row = {"image": "TCGA-X", "n_true": 10, "dice": 0.8, "aji": 0.6, "dq": 0.7, "sq": 0.75, "pq": 0.55,
           "classical_aji": 0.5, "classical_pq": 0.5}
    val = {"per_image": [row], "mean": {k: row[k] for k in ("dice", "aji", "dq", "sq", "pq")},
           "classical_mean": {"aji": 0.5, "pq": 0.5}}
    done = {"iter": 1500, "elapsed_s": 4800.0, "loss": 4.0}
    tuned_post = {"np_threshold": 0.55, "min_blob_px": 2, "sobel_ksize": 9, "marker_threshold": 0.4,
                  "min_marker_px": 2, "opening_size": 3}
    for init in (None, "runs/a/checkpoint.pt"):
        cfg = TrainConfig(init_weights=init, patch_size=256, lr=5e-4)
        mcfg = shipped_config(cfg, network_postproc=tuned_post if init else None)
        card = model_card(TrainConfig.from_dict({**cfg.to_dict(), "model": mcfg.to_dict()}), val, done, None,
                          1000, 10**9, history="first run 3219 iterations")
        assert ("Fine-tuned from earlier weights" in card) == bool(init)
        assert ("Single phase from random" in card) != bool(init)
        assert "batch 8 × 256² px" in card and "1500 iterations in 80 min" in card
        assert "| TCGA-X | 10 | 0.800 | 0.600 |" in card and "- first run 3219 iterations" in card
        # the card quotes the watershed constants the segmenter will use
        assert (json.dumps(tuned_post) in card) == bool(init)


def test_shipped_weights_reproduce_their_consep_validation_on_one_crop():
    """The model card's CoNSeP figures come from these weights: one validation crop, re-scored."""
    from napari_histo.nuclei.metrics import instance_scores
    from src_models.hovernet.data import CONSEP_MPP, load_consep_native, read_consep_types
    from src_models.hovernet.evaluate import build_segmenter, segment_native

    val = _shipped_validation()
    if "consep_validation" not in val:
        pytest.skip("the shipped model has no CoNSeP validation")
    row = max(val["consep_validation"]["per_crop"], key=lambda r: r["n_true"])
    root = shared_path("consep").parent
    seg = build_segmenter(WEIGHTS)
    rgb, inst, _ = load_consep_native(root, row["crop"], read_consep_types(root))
    labels, table = segment_native(seg, rgb, CONSEP_MPP)
    assert len(table) == row["n_pred"]
    assert instance_scores(inst, labels)["pq"] == pytest.approx(row["pq"], abs=0.01)
