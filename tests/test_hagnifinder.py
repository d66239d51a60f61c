"""Hagnifinder: ASM statistics, the three training steps on tiny data, resume, metrics, API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_histo.models.hagnifinder.config import HagnifinderConfig
from napari_histo.models.hagnifinder.images import mag_to_mpp
from napari_histo.models.hagnifinder.model import AdaptiveScaling, HagnifinderNet, build_model
from src_models.hagnifinder.data import SourceImage
from src_models.hagnifinder.metrics import accuracy_within, mean_absolute_error, summarise
from src_models.hagnifinder.train import phase_of, train


@pytest.mark.parametrize("scale", [1e-4, 1.0, 300.0])
def test_asm_sets_the_batch_variance_to_ev(scale):
    torch.manual_seed(0)
    x = torch.randn(16, 20) * scale + 0.3 * scale
    out, m = AdaptiveScaling(2.2)(x)
    assert out.var(unbiased=False).item() == pytest.approx(2.2, rel=1e-4)
    a = max(abs(x.max().item()), abs(x.min().item()))
    v = (x / a).var(unbiased=False).item()
    assert m.item() == pytest.approx(np.sqrt(2.2 / v) / a, rel=1e-5)  # m = z / a
    torch.testing.assert_close(out, x * m)


def test_asm_is_scale_invariant_and_fixed_scale_replaces_it():
    torch.manual_seed(1)
    x = torch.randn(8, 20)
    asm = AdaptiveScaling(2.2)
    torch.testing.assert_close(asm(x)[0], asm(x * 1000)[0], rtol=1e-5, atol=1e-5)
    net = HagnifinderNet("resnet_slim", width=4).eval()
    inp = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        feats = net.features(inp)
        m = net.asm.multiplier(feats)
        with_asm = net(inp)
        net.fix_scale(float(m))
        fixed = net(inp)
    torch.testing.assert_close(with_asm, fixed, rtol=1e-5, atol=1e-5)
    net.scale_factor.fill_(0.0)
    with pytest.raises(RuntimeError, match="scale factor"):
        net(inp)


def test_head_shape_matches_the_paper():
    net = HagnifinderNet("resnet50")
    assert (net.fc1.in_features, net.fc1.out_features) == (2048, 200)
    assert (net.fc2.out_features, net.fc3.in_features, net.fc3.out_features) == (20, 20, 1)


def test_metrics_by_hand():
    pred, true = [10.2, 19.0, 33.0, 5.0], [10.0, 20.0, 40.0, 5.4]
    assert accuracy_within(pred, true, 0.5) == 0.5
    assert accuracy_within(pred, true, 1) == 0.75
    assert accuracy_within(pred, true, 5) == 0.75
    assert mean_absolute_error(pred, true) == pytest.approx((0.2 + 1 + 7 + 0.4) / 4)
    assert summarise(pred, true)["n"] == 4


def _tiny_sources():
    rng = np.random.default_rng(0)
    tex = rng.integers(30, 220, (100, 100, 3), dtype=np.uint8).repeat(3, 0).repeat(3, 1)
    train_src = [SourceImage("a", "a", None, mag_to_mpp(40), _rgb=tex),
                 SourceImage("b", "b", None, mag_to_mpp(20), _rgb=tex[:150, :150].copy())]
    val_src = [SourceImage("c", "c", None, mag_to_mpp(40), _rgb=tex[::-1].copy())]
    return train_src, val_src


def test_three_training_steps_and_resume(tmp_path):
    cfg = HagnifinderConfig(width=4, patch_size=48, batch_size=4, asm_iters=3, calib_iters=2,
                            fixed_iters=2, iters_per_epoch=2, val_every=3, val_crops=1,
                            checkpoint_every=2, out_dir=str(tmp_path / "run"))
    assert [phase_of(cfg, i) for i in range(8)] == ["asm"] * 3 + ["calibrate"] * 2 + ["fixed"] * 2 + ["done"]
    model = train(cfg, data_sources=_tiny_sources())
    assert model.use_asm is False and float(model.scale_factor) > 0
    log = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    calib = [r for r in log if r.get("event") == "calibrated"]
    assert len(calib) == 1 and calib[0]["scale_factor"] == pytest.approx(float(model.scale_factor))
    assert any(r.get("event") == "val" for r in log)
    saved = HagnifinderConfig.load(tmp_path / "run" / "config.json")
    assert saved.scale_factor == pytest.approx(float(model.scale_factor))
    reloaded = build_model(saved)
    reloaded.load_state_dict(torch.load(tmp_path / "run" / "model.pt", weights_only=True))
    x = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(reloaded.eval()(x), model.eval()(x))
    # resume with a longer step 3: continues from the checkpoint, keeps the calibrated factor
    cfg.fixed_iters = 4
    resumed = train(cfg, resume=True, data_sources=_tiny_sources())
    text = (tmp_path / "run" / "train.log").read_text()
    assert "resumed at iteration 7 (fixed)" in text
    assert float(resumed.scale_factor) == pytest.approx(float(model.scale_factor))
    assert not torch.equal(resumed.fc3.weight, reloaded.fc3.weight)  # step 3 kept training


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown"):
        HagnifinderConfig.from_dict({"no_such_key": 1})


def test_log2_fine_tuning_from_a_trained_model(tmp_path):
    from napari_histo.models.hagnifinder.images import to_tensor
    from src_models.hagnifinder.data import MultiMagSampler
    from src_models.hagnifinder.train import export_model, fit_head

    torch.manual_seed(0)
    base_cfg = HagnifinderConfig(width=4, patch_size=48, out_dir=str(tmp_path / "base"))
    base = build_model(base_cfg)
    base.fix_scale(0.05)
    export_model(base, base_cfg, tmp_path / "base")
    train_src, val_src = _tiny_sources()
    # the last-layer refit is a least-squares fit with intercept: mean log2 residual is zero
    sampler = MultiMagSampler(train_src, (5.0, 40.0), 48, blur_prob=0.5)
    log2_model = HagnifinderNet("resnet_slim", width=4, target_space="log2")
    log2_model.load_state_dict(base.state_dict())
    log2_model.fix_scale(0.05)
    fit_head(log2_model, sampler, rng_seed=3, n_batches=2, batch_size=8)
    x, y = zip(*(sampler.batch(np.random.default_rng([3, 10**6 + b]), 8) for b in range(2)))
    with torch.no_grad():
        out = log2_model.eval().head_output(to_tensor(np.concatenate(x)))
        torch.testing.assert_close(log2_model(to_tensor(np.concatenate(x))), torch.exp2(out))
    assert float((out - torch.log2(torch.from_numpy(np.concatenate(y)))).mean()) == pytest.approx(0, abs=1e-3)

    cfg = HagnifinderConfig(width=4, patch_size=48, batch_size=4, target_space="log2",
                            init_from=str(tmp_path / "base"), head_fit_batches=2, asm_iters=0,
                            calib_iters=0, fixed_iters=3, iters_per_epoch=3, val_every=3, val_crops=1,
                            tuning_holdout=["b"], blur_prob=0.5, out_dir=str(tmp_path / "ft"))
    model = train(cfg, data_sources=(train_src, val_src))
    text = (tmp_path / "ft" / "train.log").read_text()
    assert "last layer refitted for log2 output" in text
    assert "start: 1 training and 1 validation source images" in text  # "b" left out for tuning
    assert model.target_space == "log2" and not model.use_asm
    assert float(model.scale_factor) == pytest.approx(0.05)  # step 3 continues with the fixed scale
    saved = HagnifinderConfig.load(tmp_path / "ft" / "config.json")
    assert saved.target_space == "log2" and saved.scale_factor == pytest.approx(0.05)
    reloaded = build_model(saved)
    reloaded.load_state_dict(torch.load(tmp_path / "ft" / "model.pt", weights_only=True))
    inp = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(reloaded.eval()(inp), model.eval()(inp))
    assert bool((reloaded(inp) > 0).all())


def test_a_data_pack_keeps_pixels_and_pixel_sizes_and_trains_with_workers(tmp_path):
    """A pack reproduces the sources exactly; batches drawn by worker processes are the
    batches the serial loop draws, so both give the same weights."""
    from src_models.hagnifinder.data import read_pack
    from src_models.hagnifinder.pack import write_pack
    from src_models.hagnifinder.train import _batches, _BatchStream

    train_src, _ = _tiny_sources()
    write_pack(train_src, tmp_path / "pack")
    packed = read_pack(tmp_path / "pack")
    assert [(s.name, s.dataset) for s in packed] == [(s.name, s.dataset) for s in train_src]
    for src, copy in zip(train_src, packed):
        assert copy.mpp == pytest.approx(src.mpp)
        np.testing.assert_array_equal(copy.rgb, src.rgb)
    with pytest.raises(FileNotFoundError, match="not a Hagnifinder data pack"):
        read_pack(tmp_path)

    common = dict(width=4, patch_size=48, batch_size=4, asm_iters=2, calib_iters=1, fixed_iters=2,
                  iters_per_epoch=2, val_every=0, checkpoint_every=10, data_pack=str(tmp_path / "pack"))
    serial = HagnifinderConfig(**common, out_dir=str(tmp_path / "serial"))
    parallel = HagnifinderConfig(**common, num_workers=2, out_dir=str(tmp_path / "parallel"))
    from src_models.hagnifinder.data import MultiMagSampler

    sampler = MultiMagSampler(packed, (5.0, 40.0), 48, pad_prob=0.3)
    drawn = list(_batches(sampler, parallel, 1, 4))
    assert [it for it, *_ in drawn] == [1, 2, 3]
    for it, x, y, src in drawn:
        x0, y0, src0 = _BatchStream(sampler, parallel.seed, parallel.batch_size, 4)[it]
        torch.testing.assert_close(x, x0)
        torch.testing.assert_close(y, y0)
        torch.testing.assert_close(src, src0)
    torch.manual_seed(0)
    a = train(serial)
    torch.manual_seed(0)
    b = train(parallel)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)
    assert "on cpu" in (tmp_path / "parallel" / "train.log").read_text()


def _four_sources(swap_channels_of: str | None = None):
    rng = np.random.default_rng(5)
    out = []
    for i, (name, mag) in enumerate([("p", 40), ("q", 40), ("r", 20), ("s", 20)]):
        tex = rng.integers(30, 220, (60, 60, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
        if name == swap_channels_of:  # same tissue fraction, so the same random stream
            tex = tex[..., ::-1].copy()
        out.append(SourceImage(name, f"d{i % 2}", None, mag_to_mpp(mag), _rgb=tex))
    return out


def test_cross_fitted_members_never_learn_from_their_left_out_sources(tmp_path):
    """Each member trains only on its own sources: changing the pixels of a source leaves the
    member that left it out bit-identical and changes the others. The ensemble is saved in
    float16 and reloads; the out-of-fold predictions come from the member that left the
    source out."""
    from napari_histo.models.hagnifinder.model import HagnifinderEnsemble
    from src_models.hagnifinder.calibration import raw_predictions

    def run(name, swap):
        cfg = HagnifinderConfig(width=4, patch_size=48, batch_size=8, mag_max=20.0, asm_iters=2,
                                calib_iters=1, fixed_iters=2, iters_per_epoch=2, val_every=0,
                                checkpoint_every=10, cross_fit_folds=3, stain_jitter=0.1,
                                out_dir=str(tmp_path / name))
        torch.manual_seed(0)
        return train(cfg, data_sources=(_four_sources(swap), [])), cfg

    base, cfg = run("base", None)
    assert isinstance(base, HagnifinderEnsemble) and len(base.members) == 3 and not base.use_asm
    held = cfg.member_holdouts
    assert sorted(n for names in held for n in names) == ["p", "q", "r", "s"]
    assert all(float(m.scale_factor) > 0 for m in base.members)
    changed, _ = run("changed", "r")
    for names, a, b in zip(held, base.members, changed.members):
        same = all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
        assert same == ("r" in names), names

    saved = HagnifinderConfig.load(tmp_path / "base" / "config.json")
    assert saved.member_holdouts == held
    state = torch.load(tmp_path / "base" / "model.pt", weights_only=True)
    assert state["members.0.fc3.weight"].dtype == torch.float16
    assert state["members.0.scale_factor"].dtype == torch.float32
    reloaded = build_model(saved).eval()
    reloaded.load_state_dict(state)
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), base.eval()(x), rtol=2e-2, atol=0.0)
        per_member = base.member_outputs(x)
        torch.testing.assert_close(base(x), torch.exp2(torch.log2(per_member).mean(0)))
    patches = (np.random.default_rng(1).random((4, 48, 48, 3)) * 255).astype(np.uint8)
    sources = ["p", "q", "r", "s"]
    oof = raw_predictions(base, saved, patches, sources)
    from napari_histo.models.hagnifinder.images import to_tensor

    with torch.no_grad():
        outs = base.member_outputs(to_tensor(patches)).numpy()
    for i, src in enumerate(sources):
        k = next(k for k, names in enumerate(held) if src in names)
        assert oof[i] == pytest.approx(outs[k, i])


def test_stain_jitter_changes_colour_not_geometry():
    from src_models.hagnifinder.data import jitter_stains

    rng = np.random.default_rng(0)
    patch = np.full((32, 32, 3), 235, np.uint8)
    patch[8:20, 8:20] = (90, 60, 150)  # a haematoxylin-dark square on a pale background
    out = jitter_stains(patch, rng, 0.2)
    assert out.shape == patch.shape and out.dtype == np.uint8
    assert not np.array_equal(out, patch)
    dark = out.astype(int).sum(axis=2) < 500
    np.testing.assert_array_equal(dark, patch.astype(int).sum(axis=2) < 500)
    same = jitter_stains(patch, np.random.default_rng(0), 0.0)
    assert np.abs(same.astype(int) - patch).max() <= 1  # strength 0: the round trip only


def test_a_time_limited_run_stops_at_a_checkpoint_and_resumes(tmp_path):
    cfg = HagnifinderConfig(width=4, patch_size=48, batch_size=4, asm_iters=2, calib_iters=1,
                            fixed_iters=2, iters_per_epoch=2, val_every=0, checkpoint_every=10,
                            out_dir=str(tmp_path / "run"))
    train(cfg, data_sources=_tiny_sources(), stop_after_min=1e-9)
    text = (tmp_path / "run" / "train.log").read_text()
    assert "stopped at iteration 0" in text and not (tmp_path / "run" / "model.pt").exists()
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    model = train(cfg, resume=True, data_sources=_tiny_sources())
    assert (tmp_path / "run" / "model.pt").exists() and not model.use_asm


def test_a_signal_to_the_whole_process_group_stops_training_at_a_checkpoint(tmp_path):
    """A batch system's time limit (or Ctrl-C) signals the trainer and its loader workers
    together; the run must stop at a checkpoint that resumes, not crash."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from src_models.hagnifinder.pack import write_pack

    train_src, _ = _tiny_sources()
    write_pack(train_src, tmp_path / "pack")
    cfg = HagnifinderConfig(width=4, patch_size=48, batch_size=4, asm_iters=100000, calib_iters=1,
                            fixed_iters=1, iters_per_epoch=5, val_every=0, checkpoint_every=10**6,
                            num_workers=2, data_pack=str(tmp_path / "pack"), out_dir=str(tmp_path / "run"))
    cfg.save(tmp_path / "config.json")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "src_models.hagnifinder.train", str(tmp_path / "config.json")],
                            cwd=repo, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "run" / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and " [asm] " in log.read_text()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    text = log.read_text()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "stopped at iteration" in text
    stopped_at = int(text.rsplit("stopped at iteration ", 1)[1].split(";")[0])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]
    assert state["iteration"] == stopped_at >= 5


def test_a_fixed_scale_only_run_trains_without_asm_and_refuses_a_missing_factor(tmp_path):
    cfg = HagnifinderConfig(width=4, patch_size=48, batch_size=4, asm_iters=0, calib_iters=0, fixed_iters=2,
                            iters_per_epoch=2, val_every=0, checkpoint_every=2, scale_factor=0.05,
                            out_dir=str(tmp_path / "run"))
    model = train(cfg, data_sources=_tiny_sources())
    assert model.use_asm is False and float(model.scale_factor) == pytest.approx(0.05)
    saved = HagnifinderConfig.load(tmp_path / "run" / "config.json")
    assert saved.scale_factor == pytest.approx(0.05)
    cfg.scale_factor, cfg.out_dir = 0.0, str(tmp_path / "run2")
    with pytest.raises(ValueError, match="scale_factor is 0"):
        train(cfg, data_sources=_tiny_sources())


def test_sgd_the_published_optimiser_and_accuracy_within_n_in_the_validation_log(tmp_path):
    cfg = HagnifinderConfig(width=4, patch_size=48, batch_size=4, asm_iters=2, calib_iters=1, fixed_iters=2,
                            iters_per_epoch=2, val_every=2, val_crops=1, checkpoint_every=2, optimizer="sgd",
                            lr=0.01, N=2.5, data_arg=False, out_dir=str(tmp_path / "run"))
    train(cfg, data_sources=_tiny_sources())
    log = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    val = [r for r in log if r.get("event") == "val"]
    assert val and all("acc@2.5" in r for r in val)
    cfg.optimizer, cfg.out_dir = "rmsprop", str(tmp_path / "run2")
    with pytest.raises(ValueError, match="adamw' or 'sgd"):
        train(cfg, data_sources=_tiny_sources())


def test_breakhis_pixel_sizes_follow_the_published_optics_and_camera_degradations_keep_geometry():
    from src_models.hagnifinder.camera_eval import slope_fit, stated_magnification
    from src_models.hagnifinder.data import MultiMagSampler, breakhis_mpp, camera_degrade

    assert breakhis_mpp("40X") == pytest.approx(6.5 / (3.3 * 4))
    assert breakhis_mpp("400X") == pytest.approx(breakhis_mpp("40X") / 10)
    assert stated_magnification("breakhis:SOB_B_F-14-25197-200-032") == 200
    fit = slope_fit([20, 50, 100, 200], [40, 100, 200, 400])
    assert fit["slope"] == pytest.approx(1.0) and fit["residual_rms"] == pytest.approx(0.0, abs=1e-9)
    assert slope_fit([35, 36, 35, 36], [40, 100, 200, 400])["slope"] == pytest.approx(0.0, abs=0.05)
    rng = np.random.default_rng(1)
    patch = np.full((64, 64, 3), 220, np.uint8)
    patch[20:40, 20:40] = (80, 40, 140)
    outs = [camera_degrade(patch, rng) for _ in range(8)]
    assert all(o.shape == patch.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, patch) for o in outs)
    for out in outs:  # the dark nucleus stays where it was
        assert out[25:35, 25:35].astype(int).sum(axis=2).mean() < out[:8, :8].astype(int).sum(axis=2).mean()
    # log-uniform magnifications: as many patches below 14x as above (5-40x: geometric mean 14.1x)
    train_src, _ = _tiny_sources()
    sampler = MultiMagSampler(train_src, (5.0, 40.0), 48, augment=False, mag_sampling="log")
    mags = np.array([sampler.sample(np.random.default_rng(i))[1] for i in range(400)])
    assert 0.4 < float(np.mean(mags < 14.14)) < 0.6


def test_a_hagni40_folder_trains_on_its_labelled_patches_held_out_by_cancer_type(tmp_path):
    from PIL import Image

    from src_models.hagnifinder.data import LabelledPatchSampler, hagni40_entries

    rng = np.random.default_rng(0)
    root = tmp_path / "Hagni40"
    for mag in (10, 20, 40):
        for cancer in ("BRCA", "LUAD", "COAD"):
            folder = root / str(mag) / cancer
            folder.mkdir(parents=True)
            for k in range(2):
                side = 40 if k == 0 else 70  # one smaller than the patch: padded
                Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    entries = hagni40_entries(root)
    assert len(entries) == 18 and {e[2] for e in entries} == {10.0, 20.0, 40.0}
    sampler = LabelledPatchSampler(entries, patch_size=48)
    x, y, names = sampler.batch_with_sources(np.random.default_rng(1), 6)
    assert x.shape == (6, 48, 48, 3) and set(y.tolist()) <= {10.0, 20.0, 40.0}
    assert all(n.startswith("hagni40:") for n in names)
    cfg = HagnifinderConfig(width=4, patch_size=48, batch_size=4, asm_iters=2, calib_iters=1, fixed_iters=2,
                            iters_per_epoch=2, val_every=2, checkpoint_every=2, hagni40_root=str(root),
                            holdout=["hagni40:COAD"], out_dir=str(tmp_path / "run"))
    model = train(cfg)
    assert model.use_asm is False
    text = (tmp_path / "run" / "train.log").read_text()
    assert "start: 2 training and 1 validation source images" in text
    log = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["n"] for r in log if r.get("event") == "val"][0] == 6  # the 6 COAD images, never trained on
    (root / "index.txt").write_text("10/BRCA/0.png BRCA\n")
    with pytest.raises(ValueError, match="index.txt, line 1"):
        hagni40_entries(root)
    with pytest.raises(FileNotFoundError, match="no Hagni40-style images"):
        hagni40_entries(tmp_path / "empty")
