"""Training patches in HoVer-Net's layout, and a picture of them before training.

``napari-histo patches DIR -o OUT`` cuts the annotated images of ``DIR`` (any format
:mod:`napari_histo.datasets.annotated` reads) into square windows, as the official
``extract_patches.py`` of https://github.com/vqdang/hover_net does: the image is mirror-padded by
half the difference of window and step, windows of ``size`` px are taken every ``step`` px (the
last one flush with the border), and each is saved as ``<image>_<NNN>.npy``, an int32 array
(size, size, 5) = RGB, instance id, type id (4 channels for untyped data; type -1 marks a nucleus
whose type the annotation does not state). ``patches.json`` records
the resolution, window, step and type names, ``type_info.json`` the colours. Such a folder is
also accepted by ``train hovernet --data``.

:func:`preview_grid` draws patches as a grid with nucleus outlines in their type colours: the
"look before you train" view (upstream's ``--view train``) as a PNG or napari layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.utils import HistoError, InputFileError, atomic_path
from src_models.hovernet.data import Tile, resize_labels, resize_rgb

#: Upstream's window and step for 40× data (540 / 164 suits both network modes).
DEFAULT_SIZE = 540
DEFAULT_STEP = 164
PATCHES_INFO = "patches.json"


def vocabulary_names(vocabulary: dict[str, int]) -> list[str]:
    """Type names by id, ``background`` first, from a vocabulary (name -> type id)."""
    return ["background", *sorted(vocabulary, key=vocabulary.get)]


def type_colours(names: list[str]) -> list[list[int]]:
    """RGB per type id: black background, then each name's own colour or its coarse class's
    (:meth:`napari_histo.schema.types.TypeInfo.colour`)."""
    from napari_histo.schema.types import TypeInfo

    info = TypeInfo(dict(enumerate(names)))
    return [[0, 0, 0]] + [list(info.colour(i)) for i in range(1, len(names))]


def window_starts(length: int, size: int, step: int) -> list[int]:
    """Window origins along one padded axis: every ``step`` px, the last flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def cut_windows(array: np.ndarray, size: int, step: int) -> list[np.ndarray]:
    """Mirror-pad ``array`` (H, W, C) by ``(size - step) // 2`` and cut ``size``² windows every ``step``."""
    pad = (size - step) // 2
    padded = np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    # an image smaller than the window is padded up to it
    short_h, short_w = max(0, size - padded.shape[0]), max(0, size - padded.shape[1])
    if short_h or short_w:
        padded = np.pad(padded, ((0, short_h), (0, short_w), (0, 0)), mode="constant")
    return [padded[y:y + size, x:x + size] for y in window_starts(padded.shape[0], size, step)
            for x in window_starts(padded.shape[1], size, step)]


def extract_patches(data: str | Path, out: str | Path, *, size: int = DEFAULT_SIZE, step: int = DEFAULT_STEP,
                    mpp: float | None = None, work_mpp: float = 0.25, colours: Any = None) -> dict:
    """Write the patches of every annotated image of ``data`` into ``out``; returns the summary.

    Images are resampled from their µm/px (stated in the file, or ``mpp``) to ``work_mpp``.
    Existing patch files of the same names are replaced; other files in ``out`` are left alone.
    """
    if size < 16 or step < 1 or step > size:
        raise HistoError(f"patch size {size} and step {step}: need size >= 16 and 1 <= step <= size")
    tiles, vocabulary = own_tiles(data, mpp, work_mpp, colours)
    if not tiles:
        raise InputFileError(Path(data), "holds no annotated image")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    typed = bool(vocabulary)
    names = vocabulary_names(vocabulary) if typed else ["background", "nucleus"]
    files = []
    for patch in patch_tiles(tiles, size, step):
        channels = [patch.img.astype(np.int32), patch.inst[..., None].astype(np.int32)]
        if typed:
            channels.append(patch.types[..., None].astype(np.int32))  # -1: a nucleus of no stated type
        path = out / f"{patch.name}.npy"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(np.concatenate(channels, axis=-1)))
        files.append(path.name)
    write_patch_info(out, names, work_mpp, size, step, [t.name for t in tiles])
    return {"patches": len(files), "images": [t.name for t in tiles], "types": names, "mpp": work_mpp,
            "size": size, "step": step, "folder": str(out)}


def patch_tiles(tiles: list, size: int, step: int) -> list:
    """The ``size``² windows of every tile (:func:`cut_windows`) as tiles named ``<tile>_<NNN>``."""
    patches = []
    for tile in tiles:
        stack = np.concatenate([tile.img.astype(np.int32), tile.inst[..., None].astype(np.int32),
                                np.asarray(tile.types)[..., None].astype(np.int32)], axis=-1)
        for index, window in enumerate(cut_windows(stack, size, step)):
            patches.append(Tile(f"{tile.name}_{index:03d}", tile.source, window[..., :3].astype(np.uint8),
                                window[..., 3].copy(), window[..., 4].astype(np.int16), tile.mpp_native))
    return patches


def own_tiles(folder: str | Path, mpp: float | None, work_mpp: float, colours: Any = None
              ) -> tuple[list[Tile], dict[str, int]]:
    """The annotated images of ``folder`` at ``work_mpp`` and the vocabulary (name -> type id).

    ``folder`` holds images with same-stem annotation files, or HoVer-Net patch arrays
    (``napari-histo patches``; :mod:`src_models.hovernet.patches`).
    """
    from napari_histo.datasets.annotated import iter_annotated

    if is_patch_folder(folder):
        patches, names, patch_mpp = load_patch_folder(folder, mpp)
        vocabulary = {name: i for i, name in enumerate(names) if i > 0}
        return [at_mpp(t, patch_mpp, work_mpp) for t in patches], vocabulary
    vocabulary: dict[str, int] = {}
    tiles = []
    for sample in iter_annotated(folder, mpp=mpp, colours=colours, vocabulary=vocabulary):
        tile = Tile(sample.name, "own", sample.image, sample.inst, sample.types.astype(np.int16), sample.mpp)
        tiles.append(at_mpp(tile, sample.mpp, work_mpp))
    return tiles, vocabulary


def at_mpp(tile: Tile, mpp: float, work_mpp: float) -> Tile:
    """``tile`` (at ``mpp`` µm/px) resampled to ``work_mpp``."""
    if abs(mpp - work_mpp) <= 1e-9 * work_mpp:
        return tile
    scale = mpp / work_mpp
    shape = (max(1, round(tile.img.shape[0] * scale)), max(1, round(tile.img.shape[1] * scale)))
    return Tile(tile.name, tile.source, resize_rgb(tile.img, shape), resize_labels(tile.inst, shape),
                resize_labels(tile.types, shape).astype(np.int16), tile.mpp_native)


def write_patch_info(out: Path, names: list[str], mpp: float, size: int, step: int, images: list[str]) -> None:
    from napari_histo.schema.types import TypeInfo

    info = {"mpp": mpp, "size": size, "step": step, "type_names": names, "images": images,
            "layout": "RGB, instance id, type id (int32 .npy, HoVer-Net extract_patches layout)"}
    with atomic_path(out / PATCHES_INFO) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=2), encoding="utf-8")
    TypeInfo(dict(enumerate(names))).save(out / "type_info.json")


def is_patch_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds HoVer-Net patch arrays (``*.npy``) rather than annotated images."""
    folder = Path(folder)
    return folder.is_dir() and any(folder.glob("*.npy"))


def read_patch(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(RGB uint8, instance int32, type int32 or None) of one patch array; errors name the file."""
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputFileError(path, f"not a readable .npy patch ({exc.__class__.__name__}: {exc})") from exc
    if array.ndim != 3 or array.shape[-1] not in (4, 5):
        raise InputFileError(path, f"patch array has shape {array.shape}; expected (H, W, 4) RGB + instance "
                                   "or (H, W, 5) RGB + instance + type")
    rgb = np.clip(array[..., :3], 0, 255).astype(np.uint8)
    inst = array[..., 3].astype(np.int32)
    types = array[..., 4].astype(np.int32) if array.shape[-1] == 5 else None
    return rgb, inst, types


def load_patch_folder(folder: str | Path, mpp: float | None = None) -> tuple[list, list[str], float]:
    """Training tiles of a patch folder, the type names and the patches' µm/px.

    The µm/px comes from ``patches.json`` (written by :func:`extract_patches`) or ``mpp``; a
    folder of upstream patches without either is refused rather than trained at a guessed scale.
    """
    folder = Path(folder)
    info_path = folder / PATCHES_INFO
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    patch_mpp = mpp if mpp is not None else info.get("mpp")
    if patch_mpp is None:
        raise InputFileError(folder, "patch folder states no pixel size (no patches.json): give --mpp")
    tiles = []
    max_type = 0
    typed = None
    for path in sorted(folder.glob("*.npy")):
        rgb, inst, types = read_patch(path)
        if typed is None:
            typed = types is not None
        elif typed != (types is not None):
            raise InputFileError(path, "mixes typed (5-channel) and untyped (4-channel) patches in one folder")
        if types is None:  # untyped: nuclei of no stated type (no type loss)
            types = np.where(inst > 0, -1, 0).astype(np.int32)
        max_type = max(max_type, int(types.max(initial=0)))
        tiles.append(Tile(path.stem, "own", rgb, inst, types.astype(np.int16), float(patch_mpp)))
    names = list(info.get("type_names") or [])
    if not names or len(names) <= max_type:
        names = ["background"] + [f"type {i}" for i in range(1, max(max_type, 1) + 1)]
        if not typed:
            names = ["background", "nucleus"]
    return tiles, names, float(patch_mpp)


def preview_grid(tiles: list, type_names: list[str] | None = None, columns: int = 4,
                 limit: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` patches side by side: (RGB grid with outlines in the colours of
    ``type_names``' types, instance grid).

    Patches are picked at random (deterministic for a seed); a 4 px white gutter separates them.
    The instance grid keeps ids unique across patches (a napari Labels layer).
    """
    from skimage.segmentation import find_boundaries

    if not tiles:
        raise HistoError("no patches to preview")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(tiles), size=min(limit, len(tiles)), replace=False))
    size = max(max(tiles[i].img.shape[:2]) for i in chosen)
    columns = max(1, min(columns, len(chosen)))
    rows = -(-len(chosen) // columns)
    gutter = 4
    grid = np.full((rows * (size + gutter) - gutter, columns * (size + gutter) - gutter, 3), 255, np.uint8)
    labels = np.zeros(grid.shape[:2], np.int32)
    colours = {i: tuple(c) for i, c in enumerate(type_colours(type_names)) if i > 0} if type_names else {}
    offset = 0
    for k, index in enumerate(chosen):
        tile = tiles[index]
        r, c = divmod(k, columns)
        y, x = r * (size + gutter), c * (size + gutter)
        h, w = tile.img.shape[:2]
        view = tile.img[..., :3].copy()
        inst = tile.inst.astype(np.int32)
        edges = find_boundaries(inst, mode="inner")
        types = np.asarray(tile.types)
        for type_id in np.unique(types[edges]):
            colour = colours.get(int(type_id), (0, 255, 0) if type_id <= 0 else (255, 255, 0))
            view[edges & (types == type_id)] = colour
        grid[y:y + h, x:x + w] = view
        labels[y:y + h, x:x + w] = np.where(inst > 0, inst + offset, 0)
        offset += int(inst.max(initial=0))
    return grid, labels


def write_preview(tiles: list, path: str | Path, type_names: list[str] | None = None, **kwargs: Any) -> Path:
    """:func:`preview_grid` saved as a PNG (atomic write)."""
    from PIL import Image

    grid, _ = preview_grid(tiles, type_names, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path
