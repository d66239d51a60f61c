"""Training data for the compact HoVer-Net: tiles resampled to a fixed mpp, cached as npz.

Sources (``../shared/data``): MoNuSeg train + test tiles (untyped polygons, 40×), CPM-15
(untyped label maps; 20× images taken as 0.5 µm/px and 40× as 0.25 µm/px, image04 excluded:
its mask does not match the image), MoNuSAC (typed polygons, 0.19448 µm/px) and the CoNSeP
training split (typed instance maps, 256² JPEG crops at ≈0.25 µm/px). Nuclei of untyped sources
get type -1 ("unknown", masked out of the type loss).

Two type schemes (``TrainConfig.type_scheme``): ``"monusac"`` (the v1 head: epithelial,
lymphocyte, neutrophil, macrophage) and ``"coarse"`` (the product's coarse classes of
:mod:`napari_histo.schema.vocabulary`, CoNSeP ids: 1 other, 2 inflammatory, 3 epithelial,
4 spindle), into which every typed source is mapped by name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_histo.datasets import read_monuseg
from napari_histo.schema.vocabulary import coarse_id
from src_models.hovernet.augment import augment_patch
from src_models.hovernet.targets import make_targets

# Lazy imports: PIL, openslide, pandas, skimage, tifffile are imported inside the functions that
# use them (directly or through the modules named there): only the code paths that use them pay for loading.

#: MoNuSAC class name -> type channel of the shipped head (see CompactConfig.type_names).
MONUSAC_TYPES = {"epithelial": 1, "lymphocyte": 2, "neutrophil": 3, "macrophage": 4}
#: MoNuSAC class name -> coarse class id (vocabulary ids: 2 inflammatory, 3 epithelial).
MONUSAC_COARSE = {name: coarse_id(name) for name in MONUSAC_TYPES}
MONUSEG_DEFAULT_MPP = 0.25
CPM_MPP = {20: 0.5, 40: 0.25}
#: CoNSeP crops: ≈0.25 µm/px (40×; README of the dataset folder).
CONSEP_MPP = 0.25
#: CoNSeP training images held out as this project's validation split (by original image, fixed
#: before any model was scored on them): every fifth image from train_3.
CONSEP_VAL_IMAGES = ("train_3", "train_8", "train_13", "train_18", "train_23")
#: Sources whose unannotated pixels are not known to be background: MoNuSAC outlines only its
#: four typed classes, so other nuclei (fibroblasts, endothelium ...) are left unmarked there.
PARTIAL_SOURCES = ("monusac", "crchisto")


@dataclass
class Tile:
    """One source image at the working resolution.

    ``types`` is per pixel: 0 background, -1 nucleus of unknown type, k > 0 typed nucleus.
    """

    name: str
    source: str
    img: np.ndarray
    inst: np.ndarray
    types: np.ndarray
    mpp_native: float


def read_imagescope_polygons(path: Path) -> tuple[list[tuple[str, np.ndarray]], float | None]:
    """Regions of an ImageScope XML as (class name, (N, 2) x/y vertices) and root MicronsPerPixel
    (parsed by :func:`napari_histo.formats.imagescope.read_imagescope`)."""
    from napari_histo.formats.imagescope import read_imagescope

    annotations = read_imagescope(path)
    return [(r.class_name or "", r.vertices) for r in annotations.regions], annotations.mpp


def rasterise(regions: list[tuple[str, np.ndarray]], shape: tuple[int, int], scale: float,
              class_map: dict[str, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Instance and type maps from polygons scaled by ``scale`` (later regions overwrite).

    Vertices are pixel-centre coordinates; they are scaled about the image's corner, as the
    image itself is resized (output pixel centre i samples input (i + 0.5) / scale - 0.5).
    """
    from napari_histo.formats.rasterize import paint_polygons

    polygons = [(verts + 0.5) * scale - 0.5 for _, verts in regions]
    values = [class_map.get(cls.strip().lower(), -1) if class_map else -1 for cls, _ in regions]
    return paint_polygons(polygons, shape, edges="closed", overlap="later", values=values,
                          value_dtype=np.int16)


def resize_rgb(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Anti-aliased RGB resize to (H, W) uint8."""
    from skimage.transform import resize

    if img.shape[:2] == tuple(shape):
        return img
    out = resize(img, shape, order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def resize_labels(lab: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour label resize."""
    if lab.shape[:2] == tuple(shape):
        return lab
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * lab.shape[0] / shape[0]).astype(int), lab.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * lab.shape[1] / shape[1]).astype(int), lab.shape[1] - 1)
    return lab[rows][:, cols]


def _scaled_shape(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def _monuseg_tif(root: Path, stem: str) -> Path:
    """The tile ``<stem>.tif`` in MoNuSeg's train or test folder."""
    for sub in ("MoNuSegTrainData", "MoNuSegTestData"):
        tif = root / "monuseg" / sub / f"{stem}.tif"
        if tif.exists():
            return tif
    raise FileNotFoundError(f"MoNuSeg tile {stem} not found under {root / 'monuseg'}")


def load_monuseg(root: Path, stem: str, mpp: float) -> Tile:
    """A MoNuSeg tile (train or test folder) at working ``mpp``."""
    import tifffile

    tif = _monuseg_tif(root, stem)
    img = tifffile.imread(tif)[..., :3]
    regions, native = read_imagescope_polygons(tif.with_suffix(".xml"))
    native = native or MONUSEG_DEFAULT_MPP
    scale = native / mpp
    shape = _scaled_shape(img.shape, scale)
    inst, types = rasterise(regions, shape, scale, None)
    return Tile(stem, "monuseg", resize_rgb(img, shape), inst, types, native)


def load_monuseg_native(root: Path, stem: str, masks: str = "project") -> tuple[np.ndarray, np.ndarray, float]:
    """MoNuSeg tile at native resolution: (rgb, instance map, mpp) for evaluation; ``masks``
    "official" draws the instances as the challenge's script does
    (:func:`napari_histo.datasets.rasterize_monuseg_official`)."""
    import tifffile

    tif = _monuseg_tif(root, stem)
    if masks == "official":
        sample = read_monuseg(tif, masks="official")  # reads the tile once
        return sample.image, sample.inst, sample.mpp
    img = tifffile.imread(tif)[..., :3]
    regions, native = read_imagescope_polygons(tif.with_suffix(".xml"))
    inst, _ = rasterise(regions, img.shape[:2], 1.0, None)
    return img, inst, native or MONUSEG_DEFAULT_MPP


def cpm15_entries(root: Path) -> list[tuple[str, Path, Path, int]]:
    """(name, image, mask, objective power) for the usable CPM-15 images (image04 excluded)."""
    folder = root / "cpm15" / "MICCAI_competition_dataset"
    out = []
    for png in sorted(folder.glob("image*.png")):
        num = int(re.findall(r"\d+", png.stem)[0])
        if num == 4:
            continue
        out.append((png.stem, png, folder / f"{png.stem}_mask.txt", 20 if num <= 7 else 40))
    return out


def load_cpm15(png: Path, mask: Path, power: int, mpp: float) -> Tile:
    """A CPM-15 image + text label map at working ``mpp``."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"))
    with open(mask, encoding="ascii") as fh:
        w, h = (int(v) for v in fh.readline().split())
        lab = np.loadtxt(fh, dtype=np.int32).reshape(h, w)
    native = CPM_MPP[power]
    shape = _scaled_shape(img.shape, native / mpp)
    inst = resize_labels(lab, shape)
    types = np.where(inst > 0, -1, 0).astype(np.int16)
    return Tile(png.stem, "cpm15", resize_rgb(img, shape), inst, types, native)


def read_svs_rgb(path: Path) -> np.ndarray:
    """Full level-0 RGB of a small SVS."""
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        w, h = slide.dimensions
        return np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"))


def load_monusac(root: Path, stem: str, mpp: float, class_map: dict[str, int] | None = None) -> Tile:
    """A MoNuSAC sub-image with typed polygons at working ``mpp`` (types by ``class_map``, default the
    v1 head's :data:`MONUSAC_TYPES`)."""
    svs = root / "monusac" / "sample_original" / f"{stem}.svs"
    img = read_svs_rgb(svs)
    regions, native = read_imagescope_polygons(svs.with_suffix(".xml"))
    native = native or 0.19448
    scale = native / mpp
    shape = _scaled_shape(img.shape, scale)
    inst, types = rasterise(regions, shape, scale, class_map or MONUSAC_TYPES)
    return Tile(stem, "monusac", resize_rgb(img, shape), inst, types, native)


def load_monusac_native(root: Path, stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """MoNuSAC image at native resolution: (rgb, inst, types, mpp) for evaluation."""
    svs = root / "monusac" / "sample_original" / f"{stem}.svs"
    img = read_svs_rgb(svs)
    regions, native = read_imagescope_polygons(svs.with_suffix(".xml"))
    inst, types = rasterise(regions, img.shape[:2], 1.0, MONUSAC_TYPES)
    return img, inst, types, native or 0.19448


def consep_crops(root: Path, images: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """CoNSeP crop stems (``train_<image>_<k>``), optionally only those of the original ``images``."""
    folder = root / "consep" / "images"
    stems = sorted(p.stem for p in folder.glob("train_*.jpg"))
    if images is not None:
        wanted = set(images)
        stems = [s for s in stems if consep_image(s) in wanted]
    return stems


def consep_image(crop: str) -> str:
    """Original image of a CoNSeP crop: ``train_12_003`` -> ``train_12``."""
    return crop.rsplit("_", 1)[0]


def read_consep_types(root: Path) -> dict[str, dict[int, int]]:
    """``nuclei.csv`` as {crop: {instance id: CoNSeP type (1 other, 2 inflammatory, 3 epithelial,
    4 spindle)}}."""
    import csv

    out: dict[str, dict[int, int]] = {}
    with open(root / "consep" / "nuclei.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["crop"], {})[int(row["instance_id"])] = int(row["type"])
    return out


def load_consep_native(root: Path, crop: str, types_by_crop: dict[str, dict[int, int]] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CoNSeP crop at its native ≈0.25 µm/px: (rgb uint8, instance map int32, per-pixel type int16)."""
    from PIL import Image

    img = np.asarray(Image.open(root / "consep" / "images" / f"{crop}.jpg").convert("RGB"))
    inst = np.asarray(Image.open(root / "consep" / "labels" / f"{crop}.png")).astype(np.int32)
    table = (types_by_crop if types_by_crop is not None else read_consep_types(root)).get(crop, {})
    lut = np.zeros(int(inst.max()) + 1, np.int16)
    for iid, t in table.items():
        if iid < len(lut):
            lut[iid] = t
    types = lut[inst]
    types[(inst > 0) & (types == 0)] = -1  # an instance without a csv row: unknown type
    return img, inst, types


def load_consep(root: Path, crop: str, mpp: float, types_by_crop: dict[str, dict[int, int]] | None = None) -> Tile:
    """A CoNSeP crop at working ``mpp`` (types in CoNSeP ids, which are the coarse ids)."""
    img, inst, types = load_consep_native(root, crop, types_by_crop)
    shape = _scaled_shape(img.shape, CONSEP_MPP / mpp)
    return Tile(crop, "consep", resize_rgb(img, shape), resize_labels(inst, shape), resize_labels(types, shape),
                CONSEP_MPP)


#: CRCHistoPhenotypes class -> coarse vocabulary id.
CRCHISTO_COARSE = {name: coarse_id(name) for name in ("epithelial", "inflammatory", "fibroblast", "others")}
#: Largest distance (µm) from a typed point to the centroid of the nucleus it labels, when the
#: point falls outside every nucleus (points mark centres; outlines come from another source).
POINT_MATCH_UM = 4.0


def types_from_points(inst: np.ndarray, points: np.ndarray, point_types: np.ndarray, radius_px: float) -> np.ndarray:
    """Per-pixel types of an instance map labelled by typed points (x, y in the map's px).

    A point labels the nucleus it lies in, else the nucleus whose centroid is nearest within
    ``radius_px``; points matching no nucleus are dropped. A nucleus labelled by points of two
    types, or by none, is of unknown type (-1); background stays 0. This turns point annotations
    (CRCHistoPhenotypes) into typed instances when outlines come from ground truth or from a
    segmentation model.
    """
    from scipy import ndimage

    inst = np.asarray(inst)
    n = int(inst.max())
    label_of = np.zeros(n + 1, np.int64)  # 0 none yet, k > 0 a type, -1 conflict
    if n and len(points):
        ids = np.arange(1, n + 1)
        centres = np.asarray(ndimage.center_of_mass(np.ones_like(inst), inst, ids), np.float64)[:, ::-1]
        present = np.isfinite(centres).all(1)
        h, w = inst.shape
        for (x, y), t in zip(np.asarray(points, np.float64), np.asarray(point_types, np.int64)):
            xi, yi = int(round(x)), int(round(y))
            target = int(inst[yi, xi]) if 0 <= xi < w and 0 <= yi < h else 0
            if target == 0 and present.any():
                d = np.hypot(centres[:, 0] - x, centres[:, 1] - y)
                d[~present] = np.inf
                k = int(np.argmin(d))
                target = k + 1 if d[k] <= radius_px else 0
            if target:
                label_of[target] = t if label_of[target] in (0, t) else -1
    label_of[label_of == 0] = -1
    label_of[0] = 0
    return label_of[inst].astype(np.int16)


def load_crchisto_typed(folder: Path, mpp: float, segment) -> Tile:
    """A CRCHistoPhenotypes image as a typed :class:`Tile`: nuclei outlined by ``segment`` (a
    function RGB -> instance map at the image's 0.55 µm/px, e.g. a segmentation model's), typed
    by the image's classified points (coarse ids). Unlabelled nuclei are of unknown type, and since
    the outlines are predicted the source counts as partially annotated (``PARTIAL_SOURCES``)."""
    from napari_histo.datasets.readers import CRCHISTO_MPP, read_crchisto_points

    rgb, classified, _ = read_crchisto_points(folder)
    inst = np.asarray(segment(rgb), np.int32)
    if inst.shape != rgb.shape[:2]:
        raise ValueError(f"{folder}: segmentation {inst.shape} does not match the image {rgb.shape[:2]}")
    pts = [p for name, p in classified.items() if name in CRCHISTO_COARSE]
    types = [np.full(len(p), CRCHISTO_COARSE[name], np.int64) for name, p in classified.items() if name in CRCHISTO_COARSE]
    per_pixel = types_from_points(inst, np.concatenate(pts) if pts else np.zeros((0, 2)),
                                  np.concatenate(types) if types else np.zeros(0, np.int64),
                                  POINT_MATCH_UM / CRCHISTO_MPP)
    shape = _scaled_shape(rgb.shape, CRCHISTO_MPP / mpp)
    return Tile(folder.name, "crchisto", resize_rgb(rgb, shape), resize_labels(inst, shape),
                resize_labels(per_pixel, shape), CRCHISTO_MPP)


def monuseg_stems(root: Path) -> list[str]:
    stems = []
    for sub in ("MoNuSegTrainData", "MoNuSegTestData"):
        stems += sorted(p.stem for p in (root / "monuseg" / sub).glob("*.tif"))
    return stems


def complete_unknown_types(tiles: list[Tile], model, mpp: float, label_set: str = "consep",
                           min_probability: float = 0.6, sources: tuple[str, ...] | list[str] | None = None
                           ) -> tuple[list[Tile], dict[str, int]]:
    """Types for the nuclei of unknown type (``-1``) from a label-completion model.

    The dataset-merging method (``src_models/label_completion``) learns one classifier over
    datasets with different label sets; its head for ``label_set`` types every nucleus of an
    untyped dataset (MoNuSeg, CPM-15), and a nucleus takes that type when the model gives it at
    least ``min_probability``; the others stay unknown (masked out of the type loss). The label
    set's names are mapped to the coarse vocabulary (:func:`~napari_histo.schema.vocabulary.coarse_id`).
    ``mpp`` is the tiles' working resolution. Only tiles of ``sources`` (default: every tile with unknown nuclei) change. Returns the tiles
    and counts (``typed``, ``left_unknown``, and per coarse id ``type_<k>``).
    """
    from napari_histo.models.label_completion.inference import classify_instances

    names = {s.name: list(s.labels) for s in model.config.label_sets}
    if label_set not in names:
        raise ValueError(f"label set {label_set!r} not in the model; it has {', '.join(names)}")
    to_coarse = np.array([coarse_id(n) for n in names[label_set]], np.int64)
    counts: dict[str, int] = {"typed": 0, "left_unknown": 0}
    out = []
    for tile in tiles:
        unknown = tile.types < 0
        if not unknown.any() or (sources is not None and tile.source not in sources):
            out.append(tile)
            continue
        ids = np.unique(tile.inst[unknown & (tile.inst > 0)])
        mask = np.where(np.isin(tile.inst, ids), tile.inst, 0)
        typed = classify_instances(tile.img, mask, model, mpp, label_sets=[label_set],
                                   with_probability=True)[label_set]
        keep = typed[:, 2] >= min_probability
        lut = np.full(int(tile.inst.max()) + 1, -1, np.int64)
        lut[typed[keep, 0].astype(np.int64)] = to_coarse[typed[keep, 1].astype(np.int64)]
        types = tile.types.copy()
        types[unknown] = lut[tile.inst[unknown]]
        counts["typed"] += int(keep.sum())
        counts["left_unknown"] += int((~keep).sum())
        for k in to_coarse[typed[keep, 1].astype(np.int64)]:
            counts[f"type_{k}"] = counts.get(f"type_{k}", 0) + 1
        out.append(Tile(tile.name, tile.source, tile.img, tile.inst, types.astype(tile.types.dtype), tile.mpp_native))
    return out, counts


def build_training_tiles(data_root: str | Path, mpp: float, exclude: list[str], cache_dir: str | Path,
                         sources: tuple[str, ...] | list[str] = ("monuseg", "cpm15", "monusac"),
                         type_scheme: str = "monusac", point_segmenter=None) -> list[Tile]:
    """All training tiles (validation stems excluded) at ``mpp``, cached as npz in ``cache_dir``.

    ``sources`` picks the datasets (``monuseg``, ``cpm15``, ``monusac``, ``consep``, and
    ``crchisto``: its typed points label the nuclei that ``point_segmenter``, RGB -> instance map
    at 0.55 µm/px, outlines; see :func:`load_crchisto_typed`);
    ``exclude`` holds MoNuSeg / CPM-15 / MoNuSAC stems and CoNSeP original images
    (``train_<n>``, all their crops). ``type_scheme`` "coarse" maps typed sources to the coarse ids.
    """
    if type_scheme not in ("monusac", "coarse"):
        raise ValueError(f"type_scheme must be 'monusac' or 'coarse', not {type_scheme!r}")
    if "consep" in sources and type_scheme != "coarse":
        raise ValueError("CoNSeP's types exist only in the coarse scheme: set type_scheme to 'coarse'")
    root = Path(data_root)
    cache = Path(cache_dir) / (f"mpp{mpp:g}" if type_scheme == "monusac" else f"mpp{mpp:g}_{type_scheme}")
    cache.mkdir(parents=True, exist_ok=True)
    excluded = set(exclude)
    jobs: list[tuple[str, object]] = []
    if "monuseg" in sources:
        for stem in monuseg_stems(root):
            if stem not in excluded:
                jobs.append((f"monuseg_{stem}", lambda s=stem: load_monuseg(root, s, mpp)))
    if "cpm15" in sources:
        for name, png, mask, power in cpm15_entries(root):
            if name not in excluded:
                jobs.append((f"cpm15_{name}", lambda p=png, m=mask, pw=power: load_cpm15(p, m, pw, mpp)))
    if "monusac" in sources:
        class_map = MONUSAC_COARSE if type_scheme == "coarse" else MONUSAC_TYPES
        for svs in sorted((root / "monusac" / "sample_original").glob("*.svs")):
            if svs.stem not in excluded:
                jobs.append((f"monusac_{svs.stem}", lambda s=svs.stem, c=class_map: load_monusac(root, s, mpp, c)))
    if "consep" in sources:
        consep_types = read_consep_types(root)
        for crop in consep_crops(root):
            if consep_image(crop) not in excluded and crop not in excluded:
                jobs.append((f"consep_{crop}", lambda c=crop: load_consep(root, c, mpp, consep_types)))
    if "crchisto" in sources:
        if type_scheme != "coarse" or point_segmenter is None:
            raise ValueError("CRCHistoPhenotypes has points, not outlines: give point_segmenter and type_scheme 'coarse'")
        from napari_histo.datasets.readers import crchisto_folders

        base = root / "crchisto" / "CRCHistoPhenotypes_2016_04_28" / "cls_and_det" / "test"
        for folder in crchisto_folders(base):
            if folder.name not in excluded:
                # not cached: the outlines depend on the segmenter given to this call
                jobs.append(("", lambda f=folder: load_crchisto_typed(f, mpp, point_segmenter)))
    tiles = []
    for key, loader in jobs:
        if not key:
            tiles.append(loader())  # type: ignore[operator]
            continue
        f = cache / f"{key}.npz"
        if f.exists():
            z = np.load(f, allow_pickle=False)
            tiles.append(Tile(str(z["name"]), str(z["source"]), z["img"], z["inst"], z["types"], float(z["mpp"])))
            continue
        t = loader()  # type: ignore[operator]
        tmp = f.with_suffix(".tmp.npz")
        np.savez(tmp, name=t.name, source=t.source, img=t.img, inst=t.inst, types=t.types, mpp=t.mpp_native)
        tmp.replace(f)
        tiles.append(t)
    return tiles


class PatchSampler:
    """Random augmented training patches with HoVer-Net targets, deterministic given the seed.

    Tiles are reflect-padded once so that any centre can be sampled; duplicated ids created by
    mirroring are split by :func:`~src_models.hovernet.targets.fix_duplicate_ids`.
    """

    def __init__(self, tiles: list[Tile], patch: int, mpp: float, seed: int, typed_weight: float = 1.0,
                 augment: bool = True, source_weights: dict[str, float] | None = None, jpeg_p: float = 0.0):
        self.patch = patch
        self.jpeg_p = jpeg_p
        self.src = int(math.ceil(patch * 1.5 / 2) * 2)
        self.augment = augment
        self.min_area = max(4, round(30 * (0.25 / mpp) ** 2))
        pad = self.src // 2 + 1
        self.tiles = []
        weights = []
        for t in tiles:
            mode = "symmetric"
            img = np.pad(t.img, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
            inst = np.pad(t.inst, pad, mode=mode)
            types = np.pad(t.types, pad, mode=mode)
            self.tiles.append((img, inst, types, t.inst.shape, pad, t.source in PARTIAL_SOURCES))
            weights.append(t.inst.size * (typed_weight if t.source == "monusac" else 1.0))
        weights_arr = np.asarray(weights, np.float64)
        if source_weights:
            # Each source gets the given share of the samples (tiles within it by area).
            sources = np.array([t.source for t in tiles])
            for src in set(sources):
                sel = sources == src
                weights_arr[sel] = weights_arr[sel] / weights_arr[sel].sum() * float(source_weights.get(src, 0.0))
        self.p = weights_arr / float(np.sum(weights_arr))
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One augmented (img uint8 (P, P, 3), inst int32, types int16) patch."""
        return self.sample_with_source()[:3]

    def sample_with_source(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """One augmented patch and whether its source leaves some nuclei unannotated."""
        img, inst, types, (h, w), pad, partial = self.tiles[int(self.rng.choice(len(self.tiles), p=self.p))]
        cy = int(self.rng.integers(0, h)) + pad
        cx = int(self.rng.integers(0, w)) + pad
        half = self.src // 2
        sl = (slice(cy - half, cy + half), slice(cx - half, cx + half))
        im, ins, ty = img[sl], inst[sl], types[sl]
        if self.augment:
            return (*augment_patch(im, ins, ty, self.patch, self.rng, jpeg_p=self.jpeg_p), partial)
        o = (self.src - self.patch) // 2
        c = (slice(o, o + self.patch), slice(o, o + self.patch))
        return im[c], ins[c], ty[c], partial

    def batch(self, n: int, margin: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(B, 3, P, P) float32 images and targets cropped by ``margin`` px per side.

        On a partially annotated source the background pixels of the np and tp targets are -1 (ignored):
        an unmarked pixel there may be an unannotated nucleus.
        """
        imgs, nps, hvs, tps = [], [], [], []
        for _ in range(n):
            im, ins, ty, partial = self.sample_with_source()
            t = make_targets(ins, ty, min_area=self.min_area)
            c = slice(margin, self.patch - margin) if margin else slice(None)
            imgs.append(im.transpose(2, 0, 1).astype(np.float32))
            if partial:
                t["tp"] = np.where(t["np"] > 0, t["tp"], -1).astype(t["tp"].dtype)
                t["np"] = np.where(t["np"] > 0, t["np"], -1).astype(t["np"].dtype)
            nps.append(t["np"][c, c])
            hvs.append(t["hv"][:, c, c])
            tps.append(t["tp"][c, c])
        return np.stack(imgs), {"np": np.stack(nps), "hv": np.stack(hvs), "tp": np.stack(tps)}
