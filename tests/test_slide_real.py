"""open_slide on the real slides in ../shared/data/wsi and the shipped sample."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from napari_histo.slide import open_slide, tissue_mask

pytestmark = pytest.mark.shared_data


def test_cmu_small_region_metadata_matches_openslide():
    import openslide

    path = shared_path("wsi", "cmu-1-small-region.svs")
    with open_slide(path) as slide, openslide.OpenSlide(str(path)) as raw:
        # read through tifffile + zarr by default; pixels identical to OpenSlide's
        assert slide.backend == "tifffile" and slide.vendor == "aperio"
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.objective_power == 20
        assert slide.dimensions == (2220, 2967)
        assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
        assert slide.associated_images["macro"].shape == (431, 1280, 3)
        direct = np.asarray(raw.read_region((1000, 1200), 0, (700, 500)))[..., :3]
        np.testing.assert_array_equal(slide.read_region((1000, 1200), (700, 500)), direct)
        pyramid = slide.pyramid()
        np.testing.assert_array_equal(np.asarray(pyramid[0][1200:1700, 1000:1700]), direct)
        # one native level: computed levels down to about 1k px for napari
        assert [a.shape[:2] for a in pyramid] == [(2967, 2220), (1483, 1110), (741, 555)]
        assert pyramid[0].chunksize[:2] == (960, 960)  # 4 x 240-px Aperio tiles


def test_cmu_via_openslide_backend_matches_tifffile_backend():
    path = shared_path("wsi", "cmu-1-small-region.svs")
    with open_slide(path, backend="openslide") as a, open_slide(path, backend="tifffile") as b:
        assert a.vendor == b.vendor == "aperio"
        assert a.mpp == b.mpp and a.objective_power == b.objective_power == 20
        assert a.level_dimensions == b.level_dimensions
        assert set(a.associated_images) == set(b.associated_images)
        np.testing.assert_array_equal(a.read_region((300, 400), (512, 512)), b.read_region((300, 400), (512, 512)))
        np.testing.assert_array_equal(a.associated_images["label"], b.associated_images["label"])


def test_tcga_slide_without_mpp_and_jpeg2000():
    path = shared_path("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    with open_slide(path, backend="openslide") as slide:
        assert slide.mpp is None and slide.objective_power is None
        assert slide.level_count == 2
        assert slide.level_dimensions == [(4443, 3567), (2221, 1783)]
        region = slide.read_region((2000, 1500), (256, 256), 1, "level")
        assert region.std() > 5  # real decoded J2K pixels, not blank
        assert [a.shape[:2] for a in slide.pyramid()][-1] == (445, 555)
        mask = tissue_mask(slide)
        assert 0.2 < mask.fraction < 0.95
        level0 = slide.read_region((3000, 2000), (300, 200))
    with open_slide(path) as slide:
        assert slide.backend == "tifffile"
        assert slide.mpp is None and slide.objective_power is None
        # same OpenJPEG decoding at level 0: identical pixels
        np.testing.assert_array_equal(slide.read_region((3000, 2000), (300, 200)), level0)
        # level 1 has downsample 2.0005: OpenSlide resamples by a sub-pixel offset there
        other = slide.read_region((2000, 1500), (256, 256), 1, "level")
        assert np.abs(other.astype(int) - region.astype(int)).mean() < 8


def test_shipped_sample_opens(sample_slide_path):
    with open_slide(sample_slide_path) as slide:
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.objective_power == 20
        mask = tissue_mask(slide)
        assert mask.fraction > 0.2
        thumb = slide.thumbnail(512)
        assert thumb.shape == (512, 383, 3)
