"""segment_image: any size, smaller than a patch, resampling to the model's mpp and back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _nuclei_helpers import disks, synthetic_stained

from napari_histo.models.segment import resize_labels, segment_image
from napari_histo.nuclei.classical import ClassicalSegmenter
from napari_histo.nuclei.hovernet_segmenter import HoverNetSegmenter, patch_grid, predict_maps
from napari_histo.nuclei.metrics import instance_scores
from napari_histo.schema.table import validate_table


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(5)
    centres = [(int(y), int(x)) for y in range(24, 220, 44) for x in range(24, 300, 44)]
    centres = [(y + int(rng.integers(-5, 6)), x + int(rng.integers(-5, 6))) for y, x in centres]
    radii = rng.integers(8, 12, len(centres))
    inst = disks((230, 300), centres, radii)
    return inst, synthetic_stained(inst, set(), seed=2)


def test_same_resolution(scene):
    inst, rgb = scene
    labels, table = segment_image(rgb, 0.25, model=ClassicalSegmenter(pixel_size_um=0.25))
    assert labels.shape == inst.shape and labels.dtype == np.int32
    validate_table(table)
    assert table.attrs["mpp"] == 0.25
    assert instance_scores(inst, labels)["pq"] > 0.85


def test_resampling_maps_back_to_input_pixels(scene):
    inst, rgb = scene
    # the model works at 0.5 µm/px: the 0.25 µm/px image is halved, results come back at 0.25
    seg = ClassicalSegmenter(pixel_size_um=0.5)
    labels, table = segment_image(rgb, 0.25, model=seg)
    validate_table(table)
    assert labels.shape == inst.shape
    assert table.attrs["mpp"] == 0.25
    scores = instance_scores(inst, labels)
    assert scores["dq"] > 0.9 and scores["pq"] > 0.75
    # table is in input px: centroids and areas agree with the label map
    row = table.iloc[0]
    ys, xs = np.nonzero(labels == row["id"])
    assert row["x"] == pytest.approx(xs.mean()) and row["y"] == pytest.approx(ys.mean())
    assert row["area_px"] == len(xs)
    assert row["area_um2"] == pytest.approx(len(xs) * 0.0625)
    # the segmenter really saw the image at its own resolution
    seen = []

    class Recording(ClassicalSegmenter):
        def segment(self, rgb):
            seen.append(rgb.shape)
            return super().segment(rgb)

    segment_image(rgb, 0.25, model=Recording(pixel_size_um=0.5))
    segment_image(rgb, 0.26, model=Recording(pixel_size_um=0.25))  # within 5 %: as is
    assert seen == [(115, 150, 3), (230, 300, 3)]


def test_small_image_and_default_fallback(scene):
    _, rgb = scene
    tiny = rgb[:40, :50]
    with pytest.warns(UserWarning):
        labels, table = segment_image(tiny, None, model="classical")
    assert labels.shape == (40, 50)
    with pytest.raises(Exception, match="RGB"):
        segment_image(np.zeros((5, 5, 7), np.uint8), 0.25, model="classical")


def test_resize_labels_nearest():
    lab = np.arange(1, 7, dtype=np.int32).reshape(2, 3)
    up = resize_labels(lab, (4, 6))
    assert np.array_equal(up[::2, ::2], lab) and np.array_equal(up[1::2, 1::2], lab)
    assert np.array_equal(resize_labels(up, (2, 3)), lab)


class _IdealNet(torch.nn.Module):
    """A stand-in HoVer-Net: np/hv/tp computed from a known instance map (valid-crop margin)."""

    def __init__(self, inst, input_size=64, output_size=40):
        super().__init__()
        from _nuclei_helpers import ideal_maps

        np_map, hv = ideal_maps(inst)
        self.maps = torch.from_numpy(np.concatenate([np.stack([1 - np_map, np_map], -1) * 20 - 10,
                                                     hv], -1)).permute(2, 0, 1)
        self.input_size, self.output_size = input_size, output_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, x):
        # recover the patch position from the image itself: pixel (0,0) encodes nothing, so the
        # test feeds an RGB whose R,G channels are the (y, x) coordinates
        m = (self.input_size - self.output_size) // 2
        ys = x[:, 0, m : m + self.output_size, m].long()
        xs = x[:, 1, m, m : m + self.output_size].long()
        out = torch.stack([self.maps[:, yy][:, :, xx] for yy, xx in zip(ys, xs)])
        self.calls.append(x.shape)
        return {"np": out[:, :2], "hv": out[:, 2:4],
                "tp": torch.stack([out[:, 1] * 0 + 5, out[:, 1] * 0, out[:, 1] * 0], 1)}


def test_hovernet_segmenter_tiling_is_seamless():
    inst = disks((150, 170), [(30, 30), (40, 75), (100, 60), (110, 140), (60, 150)], [12, 10, 14, 11, 9])
    net = _IdealNet(inst)
    yy, xx = np.mgrid[:150, :170]
    coords = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)  # ≤ 255 in both axes
    seg = HoverNetSegmenter(net, 64, 40, mpp=0.25, device="cpu", batch_size=3)
    maps = seg.predict(coords)
    assert maps["np"].shape == (150, 170) and maps["hv"].shape == (150, 170, 2)
    assert maps["tp"].shape == (150, 170, 3)
    assert len(net.calls) == int(np.ceil(len(patch_grid(150, 40)) * len(patch_grid(170, 40)) / 3))
    from _nuclei_helpers import ideal_maps

    _, hv_true = ideal_maps(inst)
    np.testing.assert_allclose(maps["hv"], hv_true, atol=1e-6)
    labels, table = seg.postprocess(maps)
    assert instance_scores(inst, labels)["pq"] > 0.95
    assert len(table) == 5


def test_hovernet_predict_smaller_than_patch():
    inst = disks((30, 25), [(15, 12)], [8])
    net = _IdealNet(inst)
    yy, xx = np.mgrid[:30, :25]
    coords = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
    maps = predict_maps(net, coords, 64, 40)
    assert maps["np"].shape == (30, 25)
    assert patch_grid(30, 40) == [0] and patch_grid(100, 40) == [0, 40, 60]


def test_registry_names_and_cache():
    from napari_histo.models import default_type_info, get_segmenter
    from napari_histo.utils import HistoError, resource_path

    a = get_segmenter("classical")
    assert a is get_segmenter("classical")
    assert isinstance(a, ClassicalSegmenter)
    weights = resource_path("weights", "hovernet_compact")
    if not (weights / "model.pt").exists():
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from napari_histo.models import clear_cache

            clear_cache()
            d = get_segmenter("default")
        assert isinstance(d, ClassicalSegmenter)
        assert any("weights not installed" in str(w.message) for w in caught)
    else:
        assert isinstance(get_segmenter("default"), HoverNetSegmenter)
    with pytest.raises(HistoError, match="unknown model"):
        get_segmenter("no-such-model")
    assert default_type_info("pannuke").name(5) == "no-neo"
    assert default_type_info("monusac").id_of("lymphocyte") == 2
    assert len(default_type_info("consep").ids) == 5
