"""Multi-magnification sampler: magnification arithmetic, never upsampling, balance, sources."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from napari_histo.models.hagnifinder.images import mag_to_mpp, mpp_to_mag
from src_models.hagnifinder.data import (
    MultiMagSampler,
    SourceImage,
    discover_sources,
    downsample_factor,
    extract_patch,
    field_size,
    split_sources,
)


def _stripes(h: int, w: int, period: int) -> np.ndarray:
    cols = np.where((np.arange(w) // (period // 2)) % 2 == 0, 230, 40).astype(np.uint8)
    img = np.repeat(np.repeat(cols[None, :, None], h, axis=0), 3, axis=2)
    img[..., 1] //= 2  # some colour so it counts as tissue
    return img


def _source(name: str, mag: float, rgb: np.ndarray, dataset: str | None = None) -> SourceImage:
    return SourceImage(name, dataset or name, None, mag_to_mpp(mag), _rgb=rgb)


def test_mag_mpp_convention():
    assert mag_to_mpp(40) == pytest.approx(0.25)
    assert mpp_to_mag(0.5) == pytest.approx(20)
    assert mpp_to_mag(mag_to_mpp(13.7)) == pytest.approx(13.7)


def test_refuses_upsampling():
    rgb = _stripes(300, 300, 16)
    with pytest.raises(ValueError, match="upsampling"):
        downsample_factor(20, 40)
    with pytest.raises(ValueError, match="upsampling"):
        extract_patch(rgb, 20.0, 25.0, 64)
    assert downsample_factor(40, 10) == pytest.approx(4.0)
    assert field_size(224, 4.0) == 896


def test_same_magnification_is_an_exact_crop():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)
    patch, real = extract_patch(rgb, 40.0, 40.0, 64, center=(100, 120))
    assert real == 1.0
    np.testing.assert_array_equal(patch, rgb[88:152, 68:132])


def test_downsampling_scales_structures_by_the_magnification_ratio():
    rgb = _stripes(1200, 1200, 16)  # stripe period 16 px at 40x
    patch, real = extract_patch(rgb, 40.0, 10.0, 224, center=(600, 600))  # factor 4 -> period 4
    assert patch.shape == (224, 224, 3) and real == 1.0
    row = patch[100, :, 0].astype(int)
    np.testing.assert_array_equal(row[:-4], row[4:])  # period 4 px
    assert row.max() - row.min() > 150  # not blurred away (box filter on aligned stripes)
    patch20, _ = extract_patch(rgb, 40.0, 20.0, 224, center=(600, 600))  # period 8
    row20 = patch20[100, :, 0].astype(int)
    np.testing.assert_array_equal(row20[:-8], row20[8:])
    assert not np.array_equal(row20[:-4], row20[4:])


def test_small_source_is_padded_not_upsampled():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)
    patch, real = extract_patch(rgb, 40.0, 5.0, 224, rng=rng)  # field 1792 px > 250 px
    assert patch.shape == (224, 224, 3)
    side = round(250 / 8)  # the whole image shrunk 8x
    assert real == pytest.approx(side * side / 224**2)


def test_sampler_is_balanced_and_respects_source_magnification():
    tex = np.random.default_rng(2).integers(30, 200, (900, 900, 3), dtype=np.uint8)
    sampler = MultiMagSampler([_source("a40", 40, tex), _source("b20", 20, tex[:500, :500])],
                              mag_range=(5, 40), patch_size=32, augment=False)
    rng = np.random.default_rng(3)
    draws = [sampler.sample(rng) for _ in range(400)]
    mags = np.array([d[1] for d in draws])
    names = np.array([d[2] for d in draws])
    assert mags.min() >= 5 and mags.max() <= 40
    quarters = np.histogram(mags, bins=4, range=(5, 40))[0] / len(mags)
    assert np.all(quarters > 0.15) and np.all(quarters < 0.35)
    assert np.all(names[mags > 20] == "a40")  # a 20x source never serves > 20x
    assert (names[mags <= 20] == "b20").mean() > 0.3  # datasets balanced where both qualify
    x, y = sampler.batch(rng, 5)
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (5,)


def test_sampler_rejects_range_above_sources():
    with pytest.raises(ValueError, match="reaches"):
        MultiMagSampler([_source("b20", 20, np.zeros((50, 50, 3), np.uint8))], mag_range=(5, 40))


def test_shared_sources_and_holdout():
    root = shared_path()
    sources = {s.name: s for s in discover_sources(root)}
    assert sources["monuseg:TCGA-21-5784-01Z-00-DX1"].mpp == pytest.approx(0.2527)
    assert sources["monuseg:TCGA-NH-A8F7-01A-01-TS1"].mpp == pytest.approx(0.25)  # no attribute
    assert sources["cpm15:image01"].magnification == pytest.approx(20)
    assert sources["cpm15:image08"].magnification == pytest.approx(40)
    assert sources["monusac:A9K0_1"].mpp == pytest.approx(0.19448, rel=1e-3)
    train, val = split_sources(list(sources.values()))
    names_train = {s.name for s in train}
    assert names_train.isdisjoint({s.name for s in val})
    assert "wsi:cmu-1-small-region" not in names_train
    assert {"cpm15:image06", "cpm15:image14"} <= {s.name for s in val}
