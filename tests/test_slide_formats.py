"""open_slide on synthetic pyramids: backends, metadata, pixel exactness, units, padding."""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from slide_synth import (
    mean_downsample,
    pyramid_levels,
    synthetic_he,
    write_aperio_svs,
    write_generic_tiff,
    write_ome_subifd,
)

from napari_histo.slide import Slide, SlideSpec, choose_backend, open_slide
from napari_histo.utils import HistoError, InputFileError


@pytest.fixture(scope="session")
def synth_levels() -> list[np.ndarray]:
    rgb, _ = synthetic_he(1536, 2048, seed=1)
    return pyramid_levels(rgb, 3)


@pytest.fixture(scope="session")
def slides(tmp_path_factory, synth_levels) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slides")
    return {
        "svs_jpeg": write_aperio_svs(root / "jpeg.svs", synth_levels),
        "svs_lossless": write_aperio_svs(root / "lossless.svs", synth_levels, compression="zlib"),
        "ome": write_ome_subifd(root / "pyramid.ome.tif", synth_levels, mpp=0.5),
        "nompp": write_generic_tiff(root / "nompp.tif", synth_levels),
    }


# -- backend choice and metadata -------------------------------------------------------------
def test_aperio_style_svs_is_recognised_by_openslide_as_aperio(slides):
    import openslide

    assert openslide.OpenSlide.detect_format(str(slides["svs_jpeg"])) == "aperio"
    # tiled 8-bit RGB Aperio files are read through tifffile + zarr by default (same pixels)
    assert choose_backend(slides["svs_jpeg"]) == "tifffile"
    with open_slide(slides["svs_jpeg"], backend="openslide") as slide:
        assert slide.backend == "openslide"
        assert slide.vendor == "aperio"
        assert slide.mpp == pytest.approx((0.25, 0.25))
        assert slide.objective_power == 40
        assert slide.level_count == 3
        assert slide.level_dimensions == [(2048, 1536), (1024, 768), (512, 384)]
        assert slide.level_downsamples == pytest.approx([1, 2, 4])
        assert slide.dimensions == (2048, 1536)
        assert slide.tile_sizes == [(256, 256)] * 3


def test_tifffile_backend_reads_the_same_aperio_metadata(slides):
    with open_slide(slides["svs_jpeg"], backend="tifffile") as slide:
        assert slide.backend == "tifffile"
        assert slide.vendor == "aperio"
        assert slide.mpp == pytest.approx((0.25, 0.25))
        assert slide.objective_power == 40
        assert slide.level_dimensions == [(2048, 1536), (1024, 768), (512, 384)]


def test_ome_subifd_pyramid_goes_to_tifffile_with_all_levels(slides):
    import openslide

    # OpenSlide would see only the first page of a SubIFD pyramid
    assert choose_backend(slides["ome"]) == "tifffile"
    with open_slide(slides["ome"]) as slide:
        assert slide.vendor == "ome"
        assert slide.level_count == 3
        assert slide.mpp == pytest.approx((0.5, 0.5))
        assert slide.objective_power is None
    if openslide.OpenSlide.detect_format(str(slides["ome"])):
        with openslide.OpenSlide(str(slides["ome"])) as raw:
            assert raw.level_count < 3


def test_slide_without_mpp_reports_none_and_refuses_physical_units(slides):
    with open_slide(slides["nompp"]) as slide:
        assert slide.mpp is None
        assert slide.objective_power is None
        assert slide.level_mpp(1) is None
        with pytest.raises(HistoError, match="mpp"):
            slide.read_region((0, 0), (10, 10), 0.5, "mpp")
        with pytest.raises(HistoError, match="objective power"):
            slide.read_region((0, 0), (10, 10), 20, "power")
    with open_slide(slides["nompp"], backend="tifffile") as slide:
        assert slide.mpp is None and slide.objective_power is None


def test_backend_override_and_unknown_backend(slides):
    with open_slide(slides["svs_lossless"], backend="tifffile") as slide:
        assert slide.backend == "tifffile"
    with pytest.raises(HistoError, match="unknown slide backend"):
        open_slide(slides["svs_lossless"], backend="bioformats")


# -- pixel exactness -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "backend"),
    [  # OpenSlide does not read SubIFD pyramids, so the OME file has no OpenSlide case
        ("svs_lossless", "openslide"),
        ("svs_lossless", "tifffile"),
        ("nompp", "openslide"),
        ("nompp", "tifffile"),
        ("ome", "tifffile"),
    ],
)
def test_read_region_pyramid_and_source_agree_exactly(slides, synth_levels, key, backend):
    with open_slide(slides[key], backend=backend) as slide:
        pyramid = slide.pyramid()
        for level, truth in enumerate(synth_levels):
            ds = int(slide.level_downsamples[level])
            x, y, w, h = (v // ds for v in (517, 293, 1222, 778))  # straddles tiles/chunks
            region = slide.read_region((x * ds, y * ds), (w, h), level, "level")
            np.testing.assert_array_equal(region, truth[y : y + h, x : x + w])
            np.testing.assert_array_equal(np.asarray(pyramid[level][y : y + h, x : x + w]), region)
        np.testing.assert_array_equal(pyramid[0].compute(), synth_levels[0])


def test_jpeg_slide_agrees_with_the_same_decoder(slides):
    import openslide
    import tifffile

    x, y, w, h = 700, 300, 900, 600
    path = slides["svs_jpeg"]
    with open_slide(path, backend="openslide") as slide, openslide.OpenSlide(str(path)) as raw:
        direct = np.asarray(raw.read_region((x, y), 0, (w, h)))[..., :3]
        np.testing.assert_array_equal(slide.read_region((x, y), (w, h)), direct)
        np.testing.assert_array_equal(np.asarray(slide.pyramid()[0][y : y + h, x : x + w]), direct)
        level1 = np.asarray(raw.read_region((2 * 100, 2 * 50), 1, (400, 300)))[..., :3]
        np.testing.assert_array_equal(slide.read_region((200, 100), (400, 300), 1, "level"), level1)
    with open_slide(slides["svs_jpeg"], backend="tifffile") as slide:
        with tifffile.TiffFile(slides["svs_jpeg"]) as tif:
            decoded = tif.series[0].levels[1].asarray()
        np.testing.assert_array_equal(np.asarray(slide.pyramid()[1]), decoded)
        np.testing.assert_array_equal(slide.read_region((0, 0), (1024, 768), 1, "level"), decoded)


def test_regions_outside_the_slide_are_padded_white(slides, synth_levels):
    with open_slide(slides["svs_lossless"]) as slide:
        region = slide.read_region((-100, -50), (300, 200))
        assert (region[:50] == 255).all() and (region[:, :100] == 255).all()
        np.testing.assert_array_equal(region[50:, 100:], synth_levels[0][:150, :200])
        corner = slide.read_region((2000, 1500), (100, 100))
        np.testing.assert_array_equal(corner[:36, :48], synth_levels[0][1500:, 2000:])
        assert (corner[36:] == 255).all() and (corner[:, 48:] == 255).all()
        assert (slide.read_region((5000, 5000), (64, 32)) == 255).all()
        scaled = slide.read_region((-400, -400), (100, 100), 0.25, "baseline")
        assert scaled.shape == (100, 100, 3) and (scaled[:90, :90] == 255).all()


# -- units -----------------------------------------------------------------------------------
def test_unit_conversions_pick_the_matching_level(slides):
    with open_slide(slides["svs_lossless"]) as slide:  # 0.25 µm/px, 40x, downsamples 1, 2, 4
        assert slide.baseline_scale(0, "level") == (1.0, 1.0)
        assert slide.baseline_scale(2, "level") == (0.25, 0.25)
        assert slide.baseline_scale(0.5, "mpp") == pytest.approx((0.5, 0.5))
        assert slide.baseline_scale(10, "power") == pytest.approx((0.25, 0.25))
        assert slide.baseline_scale(0.5, "baseline") == (0.5, 0.5)
        assert slide.baseline_scale((0.25, 0.5), "mpp") == pytest.approx((1.0, 0.5))
        assert slide.best_level(1.0) == 0
        assert slide.best_level(0.5) == 1
        assert slide.best_level(0.3) == 1
        assert slide.best_level(0.01) == 2
        assert slide.level_mpp(2) == pytest.approx((1.0, 1.0))
        location, size = (400, 200), (256, 128)
        by_level = slide.read_region(location, size, 1, "level")
        np.testing.assert_array_equal(slide.read_region(location, size, 0.5, "mpp"), by_level)
        np.testing.assert_array_equal(slide.read_region(location, size, 20, "power"), by_level)
        np.testing.assert_array_equal(slide.read_region(location, size, 0.5, "baseline"), by_level)
        by_level2 = slide.read_region(location, size, 2, "level")
        np.testing.assert_array_equal(slide.read_region(location, size, 1.0, "mpp"), by_level2)
        np.testing.assert_array_equal(slide.read_region(location, size, 10, "power"), by_level2)
        with pytest.raises(HistoError, match="units"):
            slide.read_region(location, size, 1, "microns")
        with pytest.raises(HistoError, match="level"):
            slide.read_region(location, size, 3, "level")


def test_resampled_reads_match_a_reference_downsample(slides, synth_levels):
    with open_slide(slides["svs_lossless"]) as slide:
        # 2.0 µm/px = 8x: read from level 2 (4x) and halved; compare with an 8x block mean
        region = slide.read_region((0, 0), (256, 192), 2.0, "mpp")
        assert region.shape == (192, 256, 3)
        reference = mean_downsample(synth_levels[0], 8)
        assert np.abs(region.astype(int) - reference.astype(int)).mean() < 2.0
        # 0.375 µm/px (between levels 0 and 1): read from level 0, output size honoured
        odd = slide.read_region((512, 512), (300, 200), 0.375, "mpp")
        assert odd.shape == (200, 300, 3)
        # enlarging (0.125 µm/px) is a bilinear upsample of level 0
        up = slide.read_region((800, 600), (200, 100), 0.125, "mpp")
        assert up.shape == (100, 200, 3)
        source = synth_levels[0][600:650, 800:900].astype(int)
        assert np.abs(up[::2, ::2].astype(int) - source).mean() < 6.0


# -- pyramid -----------------------------------------------------------------------------------
def test_pyramid_chunks_align_with_native_tiles(slides):
    with open_slide(slides["svs_lossless"]) as slide:
        pyramid = slide.pyramid()
        assert [a.shape for a in pyramid[:3]] == [(1536, 2048, 3), (768, 1024, 3), (384, 512, 3)]
        assert pyramid[0].chunksize[:2] == (1024, 1024)
        assert all(a.dtype == np.uint8 for a in pyramid)
        assert len(pyramid) == 3  # coarsest native level already below ~1k px
        assert slide.pyramid_downsamples() == pytest.approx([1, 2, 4])


def test_single_level_slide_gets_computed_levels(tmp_path, synth_levels):
    from PIL import Image

    path = tmp_path / "big.png"
    Image.fromarray(synth_levels[0]).save(path, compress_level=1)
    with open_slide(path) as slide:
        assert slide.backend == "image" and slide.level_count == 1
        pyramid = slide.pyramid()
        assert [a.shape[:2] for a in pyramid] == [(1536, 2048), (768, 1024)]
        # computed level = rounded 2x2 mean of level 0
        level0 = synth_levels[0].astype(np.uint16)
        expected = (level0[0::2, 0::2] + level0[1::2, 0::2] + level0[0::2, 1::2] + level0[1::2, 1::2] + 2) // 4
        np.testing.assert_array_equal(pyramid[1].compute(), expected.astype(np.uint8))


def test_tile_240_chunks_are_multiples_of_the_tile(tmp_path, synth_levels):
    path = write_generic_tiff(tmp_path / "t240.tif", synth_levels[:1], tile=240)
    with open_slide(path) as slide:
        assert slide.chunk_size(0) == (960, 960)
        assert slide.pyramid()[0].chunksize[:2] == (960, 960)


def test_thumbnail_fits_the_requested_size(slides):
    with open_slide(slides["svs_lossless"]) as slide:
        thumb = slide.thumbnail(256)
        assert thumb.shape == (192, 256, 3)
        thumb = slide.thumbnail((100, 100))
        assert thumb.shape == (75, 100, 3)


def test_associated_images_from_tifffile_and_openslide(tmp_path):
    from conftest import REPO

    sample = REPO / "resources" / "sample" / "cmu-1-small-region.svs"
    for backend in ("openslide", "tifffile"):
        with open_slide(sample, backend=backend) as slide:
            assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
            label = slide.associated_images["label"]
            assert label.dtype == np.uint8 and label.shape == (463, 387, 3)


# -- plain images ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_plain_images_open_as_one_level(tmp_path, synth_levels, suffix):
    from PIL import Image

    image = synth_levels[2]
    path = tmp_path / f"small{suffix}"
    Image.fromarray(image).save(path)
    with open_slide(path) as slide:
        assert slide.level_dimensions == [(512, 384)]
        assert slide.mpp is None
        region = slide.read_region((0, 0), (512, 384))
        if suffix == ".jpg":
            assert np.abs(region.astype(int) - image).mean() < 3
        else:
            np.testing.assert_array_equal(region, image)


# -- threads, processes, handles ---------------------------------------------------------------
@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_concurrent_reads_match_sequential_reads(slides, backend):
    rng = np.random.default_rng(0)
    boxes = [(int(rng.integers(-100, 1900)), int(rng.integers(-100, 1400))) for _ in range(48)]
    with open_slide(slides["svs_jpeg"], backend=backend) as slide:
        sequential = [slide.read_region(xy, (200, 150)) for xy in boxes]
        with ThreadPoolExecutor(8) as pool:
            parallel = list(pool.map(lambda xy: slide.read_region(xy, (200, 150)), boxes))
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a, b)


def test_spec_and_pickle_carry_a_path_not_a_handle(slides):
    with open_slide(slides["svs_jpeg"]) as slide:
        spec = slide.spec()
        assert spec == SlideSpec(str(slides["svs_jpeg"]), slide.backend)
        restored = pickle.loads(pickle.dumps(slide))
        try:
            assert isinstance(restored, Slide) and restored is not slide
            np.testing.assert_array_equal(restored.read_region((10, 10), (32, 32)), slide.read_region((10, 10), (32, 32)))
        finally:
            restored.close()
        with pickle.loads(pickle.dumps(spec)).open() as reopened:
            assert reopened.dimensions == slide.dimensions
        # pyramid graphs pickle too (their level readers reopen the slide by path)
        for level in (slide.pyramid()[1], slide.pyramid()[-1]):
            shipped = pickle.loads(pickle.dumps(level))
            np.testing.assert_array_equal(shipped[:100, :200].compute(), level[:100, :200].compute())


def test_closed_slide_refuses_reads(slides):
    slide = open_slide(slides["svs_lossless"])
    slide.close()
    slide.close()  # idempotent
    assert slide.closed
    with pytest.raises(HistoError, match="closed"):
        slide.read_region((0, 0), (4, 4))


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_no_file_handle_leak_over_1000_open_close(tmp_path, synth_levels):
    # small files keep OpenSlide's open-time quickhash cheap; the handles are the same
    small = synth_levels[2]
    svs = write_aperio_svs(tmp_path / "small.svs", [small], tile=128)
    ome = write_ome_subifd(tmp_path / "small.ome.tif", [small, mean_downsample(small, 2)], tile=128)
    for path, backend, repeats in ((svs, "openslide", 1000), (ome, None, 200)):
        with open_slide(path, backend=backend) as slide:
            slide.read_region((0, 0), (8, 8))
            slide.pyramid()[0][:8, :8].compute()
        before = _fd_count()
        for _ in range(repeats):
            with open_slide(path, backend=backend) as slide:
                assert slide.dimensions == (512, 384)
        assert _fd_count() <= before, f"{path.name}: file descriptors grew"


# -- bad input -------------------------------------------------------------------------------
def test_bad_files_raise_one_clear_input_file_error(tmp_path, sample_slide_path):
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    text = tmp_path / "notes.svs"
    text.write_text("this is not a slide\n" * 50)
    data = sample_slide_path.read_bytes()
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(data[: len(data) // 2])
    unsupported = tmp_path / "slide.xyz"
    unsupported.write_bytes(b"\x00\x01binary junk" * 100)
    fake_png = tmp_path / "fake.png"
    fake_png.write_text("not a png")
    cases = {
        empty: "empty",
        text: "unsupported",
        truncated: "",
        unsupported: "unsupported",
        fake_png: "",
        tmp_path / "missing.svs": "not found",
    }
    for path, reason in cases.items():
        with pytest.raises(InputFileError) as info:
            open_slide(path)
        assert str(path) in str(info.value)
        assert reason in str(info.value)


@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_pyramid_field_of_view_decodes_only_the_pixels_it_needs(slides, monkeypatch, backend):
    # dask must fuse FoV slicing into the level reader; otherwise every touched 1024-px chunk is
    # decoded whole (4x the work for a 1024-px view)
    requested = []
    original = Slide.read_level

    def counting(self, level, x, y, width, height):
        requested.append(width * height)
        return original(self, level, x, y, width, height)

    monkeypatch.setattr(Slide, "read_level", counting)
    with open_slide(slides["svs_jpeg"], backend=backend) as slide:
        view = np.asarray(slide.pyramid()[0][300:1324, 500:1524])
    assert view.shape == (1024, 1024, 3)
    assert len(requested) == 4  # the view straddles four chunks
    assert sum(requested) == 1024 * 1024
