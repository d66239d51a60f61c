"""Tissue detection on a synthetic slide with known tissue, user masks, magnification hook."""

from __future__ import annotations

import numpy as np
import pytest
from slide_synth import mean_downsample, synthetic_he, write_aperio_svs

from napari_histo.slide import TissueMask, detect_tissue, open_slide, tissue_mask
from napari_histo.utils import InputFileError


@pytest.fixture(scope="module")
def known_tissue(tmp_path_factory):
    rgb, truth = synthetic_he(1280, 1536, seed=3)
    path = write_aperio_svs(
        tmp_path_factory.mktemp("tissue") / "tissue.svs", [rgb, mean_downsample(rgb, 4)], mpp=0.5
    )
    return path, truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def test_tissue_mask_finds_the_known_section_and_aligns_with_level0(known_tissue):
    path, truth = known_tissue
    with open_slide(path) as slide:
        result = tissue_mask(slide, max_size=512)
    assert isinstance(result, TissueMask) and result.mask.dtype == bool
    assert result.mask.shape == (427, 512)
    assert result.downsample == pytest.approx(1536 / 512)
    # resample the truth onto the mask grid through the downsample (alignment check)
    rows = ((np.arange(result.mask.shape[0]) + 0.5) * result.downsample).astype(int)
    cols = ((np.arange(result.mask.shape[1]) + 0.5) * result.downsample).astype(int)
    truth_small = truth[np.clip(rows, 0, 1279)][:, cols]
    assert _iou(result.mask, truth_small) > 0.95
    assert result.fraction == pytest.approx(truth.mean(), abs=0.03)
    centre = (1536 * 0.45, 1280 * 0.5)
    assert result.contains(*centre) and not result.contains(20, 20)
    assert result.region_fraction((centre[0] - 100, centre[1] - 100), (200, 200)) > 0.95
    assert result.region_fraction((0, 0), (150, 150)) == 0.0


def test_blank_glass_gives_an_empty_mask():
    rng = np.random.default_rng(0)
    glass = np.clip(245 + rng.normal(0, 2, (300, 400, 3)), 0, 255).astype(np.uint8)
    result = tissue_mask(glass, downsample=8.0)
    assert result.downsample == 8.0
    assert result.mask.sum() == 0


def test_holes_are_filled_and_specks_removed():
    rgb, truth = synthetic_he(400, 500, seed=5)
    rgb[195:205, 170:180] = 245  # a small hole inside the section
    rgb[20:23, 20:23] = (200, 100, 160)  # a speck of debris on the glass
    mask = detect_tissue(rgb, pixel_um=4.0)
    assert mask[200, 175]
    assert not mask[21, 21]


def test_user_mask_is_accepted_and_scaled_to_level0(known_tissue, tmp_path):
    from PIL import Image

    path, truth = known_tissue
    user = np.zeros((320, 384), np.uint8)
    user[100:200, 50:300] = 255
    mask_file = tmp_path / "mask.png"
    Image.fromarray(user).save(mask_file)
    with open_slide(path) as slide:
        for given in (user, mask_file):
            result = tissue_mask(slide, mask=given)
            assert result.source == "user"
            assert result.downsample == pytest.approx(4.0)
            np.testing.assert_array_equal(result.mask, user > 0)
        with pytest.raises(InputFileError, match="aspect"):
            tissue_mask(slide, mask=np.ones((100, 400), bool))


def test_predictor_is_not_called_when_metadata_has_mpp(known_tissue, monkeypatch):
    import napari_histo.models.magnification as magnification

    calls = []

    def recording_predictor(rgb, n_crops=8, seed=0):
        calls.append(rgb.shape)
        return magnification.MagnificationPrediction(10.0, 1.0, 0.5, [10.0])

    monkeypatch.setattr(magnification, "predict_magnification", recording_predictor)
    path, _ = known_tissue
    with open_slide(path) as slide:
        assert magnification.effective_mpp(slide, allow_prediction=True) == ((0.5, 0.5), "metadata")
        assert calls == []
        # an explicit request predicts from a level-0 region in tissue but changes no metadata
        prediction = magnification.predict_slide_magnification(slide, region_size=512)
        assert calls == [(512, 512, 3)]
        assert prediction.magnification == 10.0
        assert slide.mpp == (0.5, 0.5) and slide.objective_power == 40


def test_missing_mpp_uses_the_prediction_only_when_allowed(tmp_path, monkeypatch):
    import napari_histo.models.magnification as magnification

    rgb, _ = synthetic_he(1100, 1400, seed=2)
    path = write_aperio_svs(tmp_path / "nompp.svs", [rgb], mpp=None, app_mag=None)
    regions = []

    def recording_predictor(region, n_crops=8, seed=0):
        regions.append(region)
        return magnification.MagnificationPrediction(20.0, 0.5, 1.0, [20.0])

    monkeypatch.setattr(magnification, "predict_magnification", recording_predictor)
    with open_slide(path) as slide:
        assert slide.mpp is None
        assert magnification.effective_mpp(slide) == (None, "unknown")
        assert regions == []
        assert magnification.effective_mpp(slide, allow_prediction=True) == ((0.5, 0.5), "predicted")
        assert slide.mpp is None  # metadata is never overwritten
        assert regions[0].shape == (1100, 1400, 3)  # the whole slide: smaller than the 2048 px window
        # a smaller window is centred on tissue: mostly stained, not glass
        window, box = magnification.slide_prediction_region(slide, 512)
        assert window.shape == (512, 512, 3) and box[2:] == (512, 512)
        assert (window.mean(axis=2) < 235).mean() > 0.3
