"""Hostile and broken inputs: a clear error naming the file, never a hang, a traceback or unbounded
memory. Every case here was a hang or a crash before it got its check."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from slide_synth import synthetic_he, write_aperio_svs

from napari_histo.cli import main
from napari_histo.formats._common import AnnotationFormatError
from napari_histo.formats.geojson import read_geojson
from napari_histo.formats.sedeen import read_sedeen
from napari_histo.slide import open_slide
from napari_histo.utils import InputFileError, check_input_file


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The CLI in its own process, so that a hang fails the test instead of stalling the suite."""
    return subprocess.run([sys.executable, "-m", "napari_histo.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name", ["slide.svs", "cells.geojson"])
def test_a_named_pipe_is_refused_up_front(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    for args in (["info", str(fifo)], ["import", str(fifo), "-o", str(tmp_path / "m.npz")],
                 ["segment", str(fifo), "-o", str(tmp_path / "out"), "--model", "classical"]):
        proc = _cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "named pipe (FIFO)" in proc.stderr and str(fifo) in proc.stderr, proc.stderr


def test_directories_links_and_empty_files_get_their_own_reason(tmp_path):
    loop = tmp_path / "loop.svs"
    loop.symlink_to(loop)
    broken = tmp_path / "broken.geojson"
    broken.symlink_to(tmp_path / "gone.geojson")
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.svs"
    folder.mkdir()
    for path, reason in ((loop, "symbolic link loop"), (broken, "broken symbolic link"),
                         (empty, "file is empty"), (folder, "is a directory"), (tmp_path / "no.svs", "file not found")):
        with pytest.raises(InputFileError, match=reason):
            check_input_file(path)
        assert main(["info", str(path)]) == 1


def test_gzip_and_sparse_bombs_stop_early(tmp_path):
    # 256 MiB of spaces in a ~250 KB gzip: more than 100x its size, refused while inflating
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * 2**20
    data = comp.compress(b'{"type":"FeatureCollection","features":[') + b"".join(comp.compress(block) for _ in range(256))
    bomb = tmp_path / "bomb.geojson.gz"
    bomb.write_bytes(data + comp.compress(b"]}") + comp.flush())
    assert bomb.stat().st_size < 2**20
    with pytest.raises(AnnotationFormatError, match="decompression bomb"):
        read_geojson(bomb)
    # zeros: the first block is refused (no text format holds a NUL byte)
    zeros = tmp_path / "zeros.geojson.gz"
    zeros.write_bytes(gzip.compress(b"\x00" * 2**24, 9))
    with pytest.raises(AnnotationFormatError, match="NUL byte"):
        read_geojson(zeros)
    # a 2 GiB sparse session: a header, then holes; nothing near its size is read
    sparse = tmp_path / "sparse.session.xml"
    with open(sparse, "wb") as fh:
        fh.write(b'<?xml version="1.0"?><session><image identifier="a"><overlays>')
        fh.truncate(2 * 2**30)
    with pytest.raises(AnnotationFormatError, match="NUL byte"):
        read_sedeen(sparse)


def _bigtiff_header_only(path, width: int, height: int, tile: int = 512) -> None:
    """A BigTIFF that declares ``width`` x ``height`` RGB px in tiles that hold no bytes."""
    n = ((width + tile - 1) // tile) * ((height + tile - 1) // tile)
    entries = [(256, 16, 1, width), (257, 16, 1, height), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2),
               (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile), (324, 16, n, "offsets"),
               (325, 16, n, "counts")]
    ifd_at = 16
    arrays_at = ifd_at + 8 + 20 * len(entries) + 8
    body = bytearray(struct.pack("<2sHHHQ", b"II", 43, 8, 0, ifd_at))
    body += struct.pack("<Q", len(entries))
    for tag, kind, count, value in entries:
        if value is None:
            raw = struct.pack("<HHH", 8, 8, 8) + b"\0\0"
        elif value == "offsets":
            raw = struct.pack("<Q", arrays_at)
        elif value == "counts":
            raw = struct.pack("<Q", arrays_at + 8 * n)
        else:
            raw = struct.pack("<Q", value) if kind == 16 else struct.pack("<H", value) + b"\0" * 6
        body += struct.pack("<HHQ", tag, kind, count) + raw
    body += struct.pack("<Q", 0)
    body += b"\0" * (16 * n)
    path.write_bytes(bytes(body))


def test_a_tiny_file_declaring_a_huge_slide_is_refused(tmp_path):
    fake = tmp_path / "huge.tif"
    _bigtiff_header_only(fake, 200_000, 200_000)
    assert fake.stat().st_size < 4 * 2**20
    with pytest.raises(InputFileError, match="declares 200000 x 200000 px"):
        open_slide(fake)
    proc = _cli("segment", str(fake), "-o", str(tmp_path / "out"), "--model", "classical", "--mpp", "0.25")
    assert proc.returncode == 1 and "declares 200000 x 200000 px" in proc.stderr, proc.stderr


def test_an_image_over_pillows_limit_is_an_input_error(tmp_path):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(small)
    raw = bytearray(small.read_bytes())
    raw[16:24] = struct.pack(">II", 50_000, 50_000)  # IHDR width, height
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    big = tmp_path / "big.png"
    big.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match="too large"):
        open_slide(big)
    proc = _cli("magnification", str(big))
    assert proc.returncode == 1 and str(big) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_truncated_and_corrupt_slides_name_the_file(tmp_path):
    rgb, _ = synthetic_he(1024, 1024, seed=3)
    whole = write_aperio_svs(tmp_path / "whole.svs", [rgb], mpp=0.25, app_mag=40)
    cut = tmp_path / "cut.svs"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 10])
    with pytest.raises(InputFileError, match="truncated|not a readable TIFF|cannot"):
        open_slide(cut, backend="tifffile")
    assert main(["info", str(cut)]) == 1
    # a corrupt tile: opening works (the probe decodes the coarsest level), reading it fails clearly
    import tifffile

    with tifffile.TiffFile(whole) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    broken = bytearray(whole.read_bytes())
    broken[offset + 2:offset + count - 2] = os.urandom(count - 4)
    bad = tmp_path / "bad.svs"
    bad.write_bytes(bytes(broken))
    with open_slide(bad, backend="tifffile") as slide:
        with pytest.raises(InputFileError, match=r"cannot decode level 0 at x=0, y=0"):
            slide.read_region((0, 0), (256, 256), 0, "level")


def test_impossible_outlines_are_skipped_and_counted(tmp_path):
    import json

    from napari_histo.formats.auto import read_nuclei

    def nucleus(contour):
        return {"bbox": [[0, 0], [10, 10]], "centroid": [5, 5], "contour": contour, "type_prob": 0.9, "type": 1}

    square = [[0, 0], [9, 0], [9, 9], [0, 9]]
    t = np.linspace(0, 2 * np.pi, 200_001)[:-1]
    endless = np.column_stack([50 + 5 * np.cos(t), 50 + 5 * np.sin(t)]).round(3).tolist()
    nuc = {"1": nucleus(square), "2": nucleus([[20, 20], [29, 20], [29, 29]]), "3": nucleus([[1e308, 0], [9, 0], [9, 9]]),
           "4": nucleus([[0, 0], [2**40, 0], [9, 9]]), "5": nucleus(endless)}
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"mag": None, "nuc": nuc}))
    with pytest.warns(UserWarning, match="skipped 2 nuclei with non-finite or out-of-range coordinates"):
        table = read_nuclei(path)
    assert table["id"].tolist() == [1, 2]
    assert table.attrs["skipped"] == {"non-finite or out-of-range coordinates": 2, "more than 100,000 vertices": 1}


def test_import_skips_a_malformed_feature_unless_strict(tmp_path):
    import json

    good = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
            "properties": {"objectType": "detection"}}
    path = tmp_path / "cells.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [good, {"type": "Feature", "geometry": 5}]}))
    with pytest.warns(UserWarning, match="skipped 1 malformed feature"):
        assert main(["import", str(path), "-o", str(tmp_path / "m.npz")]) == 0
    assert main(["import", str(path), "-o", str(tmp_path / "strict.npz"), "--strict"]) == 1
    assert not (tmp_path / "strict.npz").exists()


def test_a_file_name_that_is_not_utf8_is_processed(tmp_path):
    from PIL import Image

    rgb, _ = synthetic_he(256, 256, seed=1)
    try:
        path = tmp_path / os.fsdecode(b"slide\xff.png")
        Image.fromarray(rgb).save(path, format="PNG")
    except (OSError, UnicodeError):
        pytest.skip("this file system only takes UTF-8 names")
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--model", "classical", "--mpp", "0.5", "--geojson"]) == 0
    (folder,) = out.iterdir()
    assert (folder / "nuclei.parquet").is_file() and (folder / "run.json").is_file()
    assert main(["summary", str(folder)]) == 0


def test_a_feature_larger_than_the_limit_is_refused_without_decoding_it_whole(tmp_path, monkeypatch):
    import json

    from napari_histo.formats.geojson import stream

    monkeypatch.setattr(stream, "STREAM_MIN_BYTES", 0)  # the streamed path of big files
    monkeypatch.setattr(stream, "_STREAM_BLOCK", 2**16)
    monkeypatch.setenv("NAPARI_HISTO_MAX_FEATURE_MB", "1")
    ring = [[float(i % 1000), float(i // 1000)] for i in range(150_000)] + [[0.0, 0.0]]
    small = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
             "properties": {"objectType": "detection"}}
    huge = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"objectType": "detection"}}
    path = tmp_path / "huge_feature.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [small, huge]}))
    assert path.stat().st_size > 2 * 2**20
    with pytest.raises(AnnotationFormatError, match="a feature longer than 1 MB"):
        read_geojson(path)


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path):
    import errno

    from napari_histo.utils import atomic_write

    target = tmp_path / "nuclei.geojson"
    with pytest.raises(OSError) as err, atomic_write(target) as fh:
        fh.write("{")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary


@pytest.mark.parametrize("type_info", [[], {"1": []}, {"1": {"a": 1}}, {"x": ["a", [1, 2, 3]]}, "str",
                                       {"1": ["x", "notacolour"]}, {"1": [5, [1, 2, 3]]}])
def test_hovernet_json_with_a_malformed_type_table_is_read(tmp_path, type_info):
    import json

    nucleus = {"bbox": [[0, 0], [10, 10]], "centroid": [5, 5], "contour": [[0, 0], [9, 0], [9, 9], [0, 9]],
               "type_prob": 0.9, "type": 1}
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"mag": None, "nuc": {"1": nucleus}, "type_info": type_info}))
    for command in (["info", str(path)], ["summary", str(path)], ["export", str(path), "--geojson", "--sedeen"]):
        assert main(command) == 0, command
