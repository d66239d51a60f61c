"""Compact HoVer-Net: forward contract, size/cost, config round trip, targets and losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_histo.models.hovernet.compact import CompactHoVerNet, count_macs, load_compact
from napari_histo.models.hovernet.config import CompactConfig, scaled_postproc
from src_models.hovernet.config import TrainConfig
from src_models.hovernet.losses import dice_loss, hovernet_loss, msge_loss
from src_models.hovernet.targets import fix_duplicate_ids, hv_map, make_targets


@pytest.fixture(scope="module")
def shipped_cfg() -> CompactConfig:
    return CompactConfig.load("configs/hovernet_compact.json")


def test_forward_shapes_follow_the_crop_contract(shipped_cfg):
    model = CompactHoVerNet.from_config(shipped_cfg).eval()
    m = (shipped_cfg.input_size - shipped_cfg.output_size) // 2
    with torch.no_grad():
        out = model(torch.rand(2, 3, shipped_cfg.input_size, shipped_cfg.input_size) * 255)
        odd = model(torch.rand(1, 3, 100, 123) * 255)
    o = shipped_cfg.output_size
    assert out["np"].shape == (2, 2, o, o)
    assert out["hv"].shape == (2, 2, o, o)
    assert out["tp"].shape == (2, shipped_cfg.num_types, o, o)
    # sizes that are not a multiple of the encoder stride are padded internally, then cropped
    assert odd["np"].shape == (1, 2, 100 - 2 * m, 123 - 2 * m)


def test_untyped_config_has_no_type_branch():
    model = CompactHoVerNet(CompactConfig(num_types=0, widths=[16, 32], blocks=[1, 1]))
    out = model(torch.zeros(1, 3, 64, 64))
    assert set(out) == {"np", "hv"}


def test_size_and_cost_are_compact(shipped_cfg):
    model = CompactHoVerNet(shipped_cfg)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, 256)
    assert 100_000 < params < 2_000_000
    # a few GMAC per 256² patch (official fast HoVer-Net: 148.9 GMAC)
    assert 0.5e9 < macs < 5e9


def test_config_json_round_trip(tmp_path, shipped_cfg):
    tcfg = TrainConfig(model=shipped_cfg)
    tcfg.save(tmp_path / "train.json")
    back = TrainConfig.load(tmp_path / "train.json")
    assert back.model == shipped_cfg and back.val_monuseg == tcfg.val_monuseg
    shipped_cfg.save(tmp_path / "config.json")
    assert CompactConfig.load(tmp_path / "config.json") == shipped_cfg
    # a TrainConfig file also yields the network config
    assert CompactConfig.load(tmp_path / "train.json") == shipped_cfg


def test_postproc_constants_scale_with_mpp():
    assert scaled_postproc(0.25)["sobel_ksize"] == 21 and scaled_postproc(0.25)["min_blob_px"] == 10
    half = scaled_postproc(0.5)
    assert half["sobel_ksize"] == 11 and half["min_marker_px"] < 10


def test_load_compact_rejects_mismatched_weights(tmp_path):
    from napari_histo.utils import InputFileError

    cfg = CompactConfig(widths=[16, 32], blocks=[1, 1])
    cfg.save(tmp_path / "config.json")
    other = CompactHoVerNet(CompactConfig(widths=[16, 48], blocks=[1, 1]))
    torch.save(other.state_dict(), tmp_path / "model.pt")
    with pytest.raises(InputFileError, match="do not match"):
        load_compact(tmp_path)
    torch.save({k: v.half() for k, v in CompactHoVerNet(cfg).state_dict().items()}, tmp_path / "model.pt")
    model, back = load_compact(tmp_path)  # float16 state dicts load as float32
    assert back == cfg and next(model.parameters()).dtype == torch.float32


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_hv_targets_point_away_from_the_centre():
    inst = np.zeros((40, 60), np.int32)
    inst[_disk(inst.shape, 20, 15, 8)] = 1
    inst[_disk(inst.shape, 20, 42, 9)] = 2
    hv = hv_map(inst)
    assert hv.min() >= -1 and hv.max() <= 1
    assert np.all(hv[:, inst == 0] == 0)
    # x map increases left to right, y map top to bottom, both spanning [-1, 1] per nucleus
    assert hv[0, 20, 8] < 0 < hv[0, 20, 22]
    assert hv[1, 13, 15] < 0 < hv[1, 27, 15]
    assert hv[0][inst == 2].min() == -1 and hv[0][inst == 2].max() == 1
    # tiny instances are ignored (spec: < 30 px at 40x)
    small = np.zeros((20, 20), np.int32)
    small[5:9, 5:9] = 1
    assert not hv_map(small).any()


def test_duplicate_ids_are_split_and_unknown_types_masked():
    inst = np.zeros((20, 40), np.int32)
    inst[2:8, 2:8] = 1
    inst[12:18, 30:36] = 1  # same id, second component (e.g. a mirrored copy)
    fixed = fix_duplicate_ids(inst)
    assert len(np.unique(fixed)) == 3
    t = make_targets(inst, None, min_area=4)
    assert set(np.unique(t["tp"])) == {-1, 0} and t["np"].sum() == 72


def test_losses_reward_correct_predictions():
    torch.manual_seed(0)
    inst = np.zeros((1, 48, 48), np.int32)
    inst[0][_disk((48, 48), 24, 24, 10)] = 1
    tgt = make_targets(inst[0], np.where(inst[0] > 0, 2, 0), min_area=4)
    t = {"np": torch.from_numpy(tgt["np"])[None], "hv": torch.from_numpy(tgt["hv"])[None],
         "tp": torch.from_numpy(tgt["tp"])[None]}
    good = {"np": (torch.nn.functional.one_hot(t["np"], 2).permute(0, 3, 1, 2).float() * 20 - 10),
            "hv": t["hv"].clone(),
            "tp": (torch.nn.functional.one_hot(t["tp"], 3).permute(0, 3, 1, 2).float() * 20 - 10)}
    bad = {k: torch.randn_like(v) for k, v in good.items()}
    weights = {k: 1.0 for k in ("np_ce", "np_dice", "hv_mse", "hv_msge", "tp_ce", "tp_dice")}
    lg, terms = hovernet_loss(good, t, weights)
    lb, _ = hovernet_loss(bad, t, weights)
    assert float(lg) < 0.01 < float(lb)
    assert terms["hv_msge"] == pytest.approx(0.0, abs=1e-6)
    assert float(msge_loss(bad["hv"], t["hv"], t["np"] > 0)) > 0
    # ignored pixels (-1) do not count in the type Dice
    ignore = t["tp"].clone()
    ignore[t["np"] > 0] = -1
    assert float(dice_loss(good["tp"], ignore)) < float(dice_loss(bad["tp"], ignore))


def test_internal_downsample_keeps_the_io_contract_at_the_finer_resolution():
    coarse = CompactConfig(widths=[16, 32, 64], blocks=[1, 1, 1], input_size=128, output_size=128, mpp=0.5)
    fine = CompactConfig.from_dict({**coarse.to_dict(), "mpp": 0.25, "internal_downsample": 2,
                                    "input_size": 256, "output_size": 208})
    assert fine.network_mpp == coarse.mpp
    net_c, net_f = CompactHoVerNet(coarse).eval(), CompactHoVerNet(fine).eval()
    net_f.load_state_dict(net_c.state_dict())  # same weights, no extra parameters
    img = torch.rand(1, 3, 64, 64) * 255
    img_fine = img.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # same scene at 2x
    with torch.no_grad():
        out_c, out_f = net_c(img), net_f(img_fine)
    assert out_f["np"].shape == (1, 2, 128 - 48, 128 - 48)
    # the fine model's maps are the coarse maps upsampled (bilinear), minus the 24 px margin
    expected = torch.nn.functional.interpolate(out_c["hv"], scale_factor=2.0, mode="bilinear", align_corners=False)
    assert torch.allclose(out_f["hv"], expected[..., 24:-24, 24:-24], atol=1e-4)


def test_block_mean_is_the_networks_average_pooling():
    from napari_histo.nuclei.hovernet_segmenter import block_mean

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
    got = block_mean(img, 2)
    assert got.shape == (19, 25, 3) and got.dtype == np.float32
    t = torch.from_numpy(img[:36].astype(np.float32)).permute(2, 0, 1)[None]
    pooled = torch.nn.functional.avg_pool2d(t, 2)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got[:18], pooled, atol=1e-4)
    # the odd last row is padded by replication: its blocks average the row with itself
    np.testing.assert_allclose(got[18, 0], img[36, :2].mean(axis=0), atol=1e-4)
    assert block_mean(img, 1) is img


def test_network_config_runs_the_same_weights_without_internal_pooling():
    from napari_histo.models.hovernet.compact import network_config
    from napari_histo.nuclei.hovernet_segmenter import block_mean

    coarse = CompactConfig(widths=[16, 32, 64], blocks=[1, 1, 1], input_size=128, output_size=104, mpp=0.5)
    fine = CompactConfig.from_dict({**coarse.to_dict(), "mpp": 0.25, "internal_downsample": 2,
                                    "input_size": 256, "output_size": 208})
    net_cfg = network_config(fine)
    assert (net_cfg.mpp, net_cfg.input_size, net_cfg.output_size, net_cfg.internal_downsample) == (0.5, 128, 104, 1)
    torch.manual_seed(1)
    net_f = CompactHoVerNet(fine).eval()
    net_c = CompactHoVerNet(net_cfg).eval()
    net_c.load_state_dict(net_f.state_dict())
    img = (torch.rand(1, 3, 128, 128) * 255).round()
    small = torch.from_numpy(block_mean(img[0].permute(1, 2, 0).numpy(), 2)).permute(2, 0, 1)[None]
    with torch.no_grad():
        out_f, out_c = net_f(img), net_c(small)
    # the fine model's maps are the coarse model's, upsampled bilinearly (24 fine px = 12 coarse px cut)
    up = torch.nn.functional.interpolate(out_c["np"], scale_factor=2.0, mode="bilinear", align_corners=False)
    assert out_c["np"].shape[-1] == 64 - 24
    torch.testing.assert_close(out_f["np"][..., 2:-2, 2:-2], up[..., 2:-2, 2:-2], atol=1e-4, rtol=1e-4)


def test_coarse_instances_map_back_to_the_fine_grid():
    from napari_histo.nuclei.hovernet_segmenter import upscale_instances
    from napari_histo.nuclei.metrics import instance_scores

    shape = (96, 120)
    fine = np.zeros(shape, np.int32)
    centres = [(30, 30, 13), (30, 57, 14), (70, 90, 17)]  # the first two touch
    for i, (cy, cx, r) in enumerate(centres, start=1):
        fine[_disk(shape, cy, cx, r) & (fine == 0)] = i
    # what a coarse grid sees: block-mode labels and the block-mean foreground probability
    coarse = fine[::2, ::2]
    prob_c = (fine > 0).reshape(48, 2, 60, 2).mean(axis=(1, 3)).astype(np.float32)
    up = upscale_instances(coarse, prob_c, 2, shape, np_threshold=0.5)
    assert up.shape == shape and up.dtype == np.int32
    assert set(np.unique(up)) == {0, 1, 2, 3}
    assert instance_scores(fine, up)["pq"] > 0.9
    # without gap filling, pixels whose coarse block was background stay empty
    nofill = upscale_instances(coarse, prob_c, 2, shape, np_threshold=0.5, fill_px=0)
    assert np.count_nonzero(nofill) <= np.count_nonzero(up)
    assert np.all(up[nofill > 0] == nofill[nofill > 0])
    # odd fine sizes are cropped, never padded
    assert upscale_instances(coarse, prob_c, 2, (95, 119)).shape == (95, 119)


class _PointwiseNet(torch.nn.Module):
    """Fully convolutional stand-in: np/hv/tp are per-pixel functions of the input, margin cut."""

    def __init__(self, margin: int):
        super().__init__()
        self.margin = margin
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        m = self.margin
        c = x[..., m : x.shape[-2] - m, m : x.shape[-1] - m] / 255.0
        return {"np": torch.stack([c[:, 0] * 0, c[:, 0] * 8 - 4], 1), "hv": c[:, :2] * 2 - 1,
                "tp": torch.stack([c[:, 2], c[:, 1], c[:, 0]], 1)}


def test_larger_patches_cover_the_image_with_fewer_calls_and_the_same_maps():
    from napari_histo.nuclei.hovernet_segmenter import fitted_output_size, predict_maps

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (230, 301, 3), dtype=np.uint8)
    net_a, net_b = _PointwiseNet(12), _PointwiseNet(12)
    ref = predict_maps(net_a, img, 64, 40, batch_size=4)
    big = predict_maps(net_b, img, 64, 40, batch_size=4, max_input_size=160)
    for key in ("np", "hv", "tp"):
        np.testing.assert_allclose(big[key], ref[key], atol=1e-6)
    assert len(net_b.calls) < len(net_a.calls)
    assert all(max(s[-2:]) <= 160 and s[-1] % 8 == 0 and s[-2] % 8 == 0 for s in net_b.calls)
    # an image that fits one enlarged patch needs a single patch; small images keep output_size
    assert fitted_output_size(100, 40, 12, 160) == 104
    assert fitted_output_size(30, 40, 12, 160) == 40
    assert fitted_output_size(500, 40, 12, None) == 40


def test_test_time_flip_is_mirror_equivariant():
    """With the mirrored second pass, segmenting the mirrored image gives the mirrored maps
    (horizontal-distance sign flipped) exactly, which a single pass does not; the instances mirror too."""
    from napari_histo.nuclei.hovernet_segmenter import HoverNetSegmenter, average_with_mirrored

    torch.manual_seed(0)
    cfg = CompactConfig(widths=[8, 16, 32], blocks=[1, 1, 1], input_size=96, output_size=80, num_types=3)
    net = CompactHoVerNet(cfg).eval()
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (150, 170, 3), dtype=np.uint8)
    flip = HoverNetSegmenter(net, 96, 80, 0.5, device="cpu", test_time_flip=True)
    plain = HoverNetSegmenter(net, 96, 80, 0.5, device="cpu")
    a, b = flip.predict(img), flip.predict(np.ascontiguousarray(img[:, ::-1]))
    np.testing.assert_allclose(b["np"], a["np"][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(b["hv"][..., 0], -a["hv"][..., 0][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(b["hv"][..., 1], a["hv"][..., 1][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(b["tp"], a["tp"][:, ::-1], atol=1e-5)
    p, q = plain.predict(img), plain.predict(np.ascontiguousarray(img[:, ::-1]))
    assert np.abs(q["hv"][..., 0] + p["hv"][..., 0][:, ::-1]).max() > 1e-3  # a random net is not symmetric
    # the average is the mean of the two passes, mirrored back
    avg = average_with_mirrored(p, q)
    np.testing.assert_allclose(avg["np"], a["np"], atol=1e-6)
    np.testing.assert_allclose(avg["hv"], a["hv"], atol=1e-6)
