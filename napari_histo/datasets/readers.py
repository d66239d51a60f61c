"""Dataset readers (see the package docstring). Heavy imports stay inside functions."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_histo.schema.types import TypeInfo
from napari_histo.utils import InputFileError

# Lazy imports: openslide, pandas, scipy, skimage, tifffile are imported inside the functions that
# use them (directly or through the modules named there): importing this module stays light for
# the CLI and the napari manifest.

#: MoNuSAC classes (HoVer-Net notebook / TIAToolbox order).
MONUSAC_TYPES = TypeInfo(
    {0: "background", 1: "Epithelial", 2: "Lymphocyte", 3: "Macrophage", 4: "Neutrophil"},
    {0: (0, 0, 0), 1: (255, 0, 0), 2: (255, 255, 0), 3: (0, 255, 0), 4: (0, 0, 255)},
)
#: CRCHistoPhenotypes classes (file suffixes); nuclei only in ``_detection.mat`` get type 0.
CRCHISTO_TYPES = TypeInfo(
    {0: "unlabelled", 1: "epithelial", 2: "fibroblast", 3: "inflammatory", 4: "others"},
    {0: (128, 128, 128), 1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 4: (255, 255, 0)},
)
#: µm/px assumed from the objective power when a dataset stores none.
MPP_BY_MAGNIFICATION = {40.0: 0.25, 20.0: 0.5, 10.0: 1.0}
MONUSEG_DEFAULT_MPP = 0.25
CRCHISTO_MPP = 0.55


@dataclass
class NucleusSample:
    """One annotated image.

    Attributes
    ----------
    name : str -- image stem
    image : (H, W, 3) uint8 RGB
    mpp : float or None -- µm/px (from the file, or assumed: see ``mpp_source``)
    inst : (H, W) int32 instance map, or None for point datasets
    types : (H, W) int32 type map (typed datasets) or None
    points : (N, 2) float x, y centroids (point datasets) or None
    point_types : (N,) int types of ``points`` or None
    type_info : TypeInfo or None
    magnification : float or None -- objective power
    mpp_source : str -- "file", "assumed" or "magnification"
    aligned : bool -- False when the annotation does not match the image (e.g. CPM-15 image04)
    path : str -- image file
    """

    name: str
    image: np.ndarray
    mpp: float | None
    inst: np.ndarray | None = None
    types: np.ndarray | None = None
    points: np.ndarray | None = None
    point_types: np.ndarray | None = None
    type_info: TypeInfo | None = None
    magnification: float | None = None
    mpp_source: str = "file"
    aligned: bool = True
    path: str = ""
    notes: list[str] = field(default_factory=list)


def _read_rgb(path: Path) -> np.ndarray:
    """Read a tif/png/bmp as (H, W, 3) uint8 (alpha dropped, grey expanded)."""
    if not path.exists():
        raise InputFileError(path, "file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            img = tifffile.imread(str(path))
        else:
            from skimage.io import imread

            img = imread(str(path))
    except Exception as exc:
        raise InputFileError(path, f"cannot read image: {exc}") from exc
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise InputFileError(path, f"expected an RGB(A) image, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img // 257).astype(np.uint8)
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


# ----------------------------------------------------------------------------- MoNuSeg


#: How MoNuSeg polygons become masks: "project" (as every ImageScope import of this package:
#: the file's coordinates are ImageScope's, with the origin at the top-left pixel's corner, so a
#: vertex at X lies at 0-based pixel-centre coordinate X - 0.5; pixel centres inside are filled
#: and the later region wins an overlap) or "official" (as the challenge's
#: ``he_to_binary_mask_final.m``: MATLAB ``poly2mask`` with 1-based pixel centres, so a vertex
#: at X falls at X - 1, and the earlier region wins an overlap).
MONUSEG_MASKS = ("project", "official")


def rasterize_monuseg_official(regions, shape: tuple[int, int]) -> np.ndarray:
    """Instance map of ImageScope regions as the official MoNuSeg script draws it (see
    :data:`MONUSEG_MASKS`): the ``"closed"`` edge rule, the earlier region keeps an overlap."""
    from napari_histo.formats._common import VIEWER_PIXEL_OFFSET
    from napari_histo.formats.rasterize import paint_polygons

    # the file's value minus 1: MATLAB's pixel centres are 1-based (reg.vertices is already
    # the file's value minus VIEWER_PIXEL_OFFSET)
    polygons = [np.asarray(reg.vertices, float) - (1.0 - VIEWER_PIXEL_OFFSET)
                for reg in regions if not reg.negative]
    inst, _ = paint_polygons(polygons, shape, edges="closed", overlap="earlier", ids="painted")
    return inst


def read_monuseg(image_path: str | Path, xml_path: str | Path | None = None,
                 masks: str = "project") -> NucleusSample:
    """A MoNuSeg tile: ``<stem>.tif`` + ``<stem>.xml`` (ImageScope) -> instance map and mpp.

    ``masks`` is "project" or "official" (:data:`MONUSEG_MASKS`); the two differ by half a
    pixel up and left and in which of two overlapping nuclei owns the overlap. Missing
    ``MicronsPerPixel`` (TCGA-NH-A8F7-01A-01-TS1) falls back to 0.25 µm/px (40×).
    """
    from napari_histo.formats.imagescope import rasterize_regions, read_imagescope

    if masks not in MONUSEG_MASKS:
        raise ValueError(f"masks must be one of {MONUSEG_MASKS}, got {masks!r}")
    image_path = Path(image_path)
    xml_path = Path(xml_path) if xml_path else image_path.with_suffix(".xml")
    image = _read_rgb(image_path)
    ann = read_imagescope(xml_path)
    if masks == "official":
        inst = rasterize_monuseg_official(ann.regions, image.shape[:2])
    else:
        inst, _ = rasterize_regions(ann, image.shape[:2])
    mpp, source = (ann.mpp, "file") if ann.mpp else (MONUSEG_DEFAULT_MPP, "assumed")
    return NucleusSample(image_path.stem, image, mpp, inst=inst, magnification=40.0,
                         mpp_source=source, path=str(image_path))


def iter_monuseg(root: str | Path, masks: str = "project") -> Iterator[NucleusSample]:
    """Every ``*.tif`` with a sibling ``.xml`` under ``root`` (recursively, sorted by path)."""
    root = Path(root)
    tifs = sorted(p for p in root.rglob("*.tif") if p.with_suffix(".xml").exists())
    if not tifs:
        raise InputFileError(root, "no MoNuSeg tile (.tif with a matching .xml) found")
    for tif in tifs:
        yield read_monuseg(tif, masks=masks)


# ----------------------------------------------------------------------------- MoNuSAC


def _read_svs(path: Path) -> tuple[np.ndarray, float | None]:
    """Level 0 of a (small) slide as RGB plus its mpp."""
    if not path.exists():
        raise InputFileError(path, "file not found")
    try:
        import openslide

        with openslide.OpenSlide(str(path)) as slide:
            w, h = slide.dimensions
            rgba = np.asarray(slide.read_region((0, 0), 0, (w, h)))
            mpp = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
        return np.ascontiguousarray(rgba[..., :3]), float(mpp) if mpp else None
    except ImportError:
        pass
    except Exception as exc:
        raise InputFileError(path, f"cannot read slide: {exc}") from exc
    return _read_rgb(path), None


def read_monusac(image_path: str | Path, xml_path: str | Path | None = None) -> NucleusSample:
    """A MoNuSAC sub-image: ``.svs`` + ImageScope ``.xml`` with one Annotation per class.

    Types follow :data:`MONUSAC_TYPES` (class = the Annotation's ``Attribute@Name``).
    """
    from napari_histo.formats.imagescope import rasterize_regions, read_imagescope

    image_path = Path(image_path)
    xml_path = Path(xml_path) if xml_path else image_path.with_suffix(".xml")
    image, slide_mpp = _read_svs(image_path) if image_path.suffix.lower() == ".svs" else (_read_rgb(image_path), None)
    ann = read_imagescope(xml_path)
    class_ids = {MONUSAC_TYPES.names[k]: k for k in MONUSAC_TYPES.ids if k > 0}
    unknown = sorted({r.class_name or "" for r in ann} - set(class_ids))
    inst, types = rasterize_regions(ann, image.shape[:2], class_ids=class_ids)
    mpp = ann.mpp or slide_mpp
    sample = NucleusSample(image_path.stem, image, mpp, inst=inst, types=types, type_info=MONUSAC_TYPES,
                           magnification=40.0, mpp_source="file" if mpp else "assumed", path=str(image_path))
    if mpp is None:
        sample.mpp = 0.25
    if unknown:
        sample.notes.append(f"classes not in the MoNuSAC vocabulary (typed 0): {unknown}")
    return sample


def iter_monusac(root: str | Path) -> Iterator[NucleusSample]:
    """Every ``*.svs`` (or ``.tif``) with a sibling ``.xml`` under ``root``."""
    root = Path(root)
    imgs = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".svs", ".tif") and p.with_suffix(".xml").exists())
    if not imgs:
        raise InputFileError(root, "no MoNuSAC image (.svs with a matching .xml) found")
    for p in imgs:
        yield read_monusac(p)


# ----------------------------------------------------------------------------- CPM-15


def _read_ascii_mask(path: Path) -> np.ndarray:
    """CPM ASCII mask: line 1 ``width height``, then width*height ints, row-major."""
    if not path.exists():
        raise InputFileError(path, "file not found")
    try:
        values = np.fromstring(path.read_text(encoding="ascii"), dtype=np.int64, sep=" ")
        w, h = int(values[0]), int(values[1])
        data = values[2:].astype(np.int32)
    except Exception as exc:
        raise InputFileError(path, f"not a CPM ASCII mask: {exc}") from exc
    if data.size != w * h:
        raise InputFileError(path, f"header says {w}x{h} = {w * h} values, found {data.size}")
    return data.reshape(h, w)


def _parse_magnification(text: str) -> float | None:
    try:
        return float(str(text).strip().lower().rstrip("x"))
    except ValueError:
        return None


def read_cpm15(image_path: str | Path, mask_path: str | Path | None = None,
               magnification: float | None = None) -> NucleusSample:
    """A CPM-15 image (RGBA png, alpha dropped) and its ASCII mask.

    The µm/px is derived from ``magnification`` (20× -> 0.5, 40× -> 0.25; the dataset stores
    none). A mask whose size differs from the image (image04) gives ``aligned=False`` and is
    returned as read, un-resampled.
    """
    image_path = Path(image_path)
    mask_path = Path(mask_path) if mask_path else image_path.with_name(image_path.stem + "_mask.txt")
    image = _read_rgb(image_path)
    inst = _read_ascii_mask(mask_path)
    mpp = MPP_BY_MAGNIFICATION.get(float(magnification)) if magnification else None
    sample = NucleusSample(image_path.stem, image, mpp, inst=inst, magnification=magnification,
                           mpp_source="magnification" if mpp else "assumed", path=str(image_path))
    if inst.shape != image.shape[:2]:
        sample.aligned = False
        sample.notes.append(
            f"mask {inst.shape[1]}x{inst.shape[0]} does not match image {image.shape[1]}x{image.shape[0]}"
        )
    return sample


def iter_cpm15(root: str | Path, include_unaligned: bool = False) -> Iterator[NucleusSample]:
    """Images listed in ``manifest.csv`` (columns image, mask, magnification) under ``root``.

    Without a manifest, every ``imageXX.png`` with a mask is read with unknown magnification.
    Unaligned image/mask pairs are skipped unless ``include_unaligned``.
    """
    root = Path(root)
    manifest = root / "manifest.csv"
    rows: list[tuple[Path, Path, float | None]] = []
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    rows.append((root / row["image"], root / row["mask"], _parse_magnification(row.get("magnification", ""))))
                except KeyError as exc:
                    raise InputFileError(manifest, f"missing column {exc}") from exc
    else:
        for png in sorted(root.rglob("image*.png")):
            mask = png.with_name(png.stem + "_mask.txt")
            if mask.exists():
                rows.append((png, mask, None))
    if not rows:
        raise InputFileError(root, "no CPM-15 image (png + _mask.txt) found")
    for img, mask, mag in rows:
        sample = read_cpm15(img, mask, mag)
        if sample.aligned or include_unaligned:
            yield sample


# ----------------------------------------------------------------------------- CRCHistoPhenotypes


def _read_points(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except Exception as exc:
        raise InputFileError(path, f"not a MATLAB file: {exc}") from exc
    keys = [k for k in data if not k.startswith("__")]
    if not keys:
        raise InputFileError(path, "no variable in .mat file")
    pts = np.asarray(data[keys[0]], np.float64)
    if pts.size == 0:
        return np.zeros((0, 2))
    return pts.reshape(-1, 2)


def crchisto_folders(root: str | Path) -> list[Path]:
    """Every CRCHistoPhenotypes ``imgN/`` folder holding ``imgN.bmp`` under ``root``, in image
    number order."""
    root = Path(root)
    folders = sorted((p.parent for p in root.rglob("img*.bmp") if p.stem == p.parent.name),
                     key=lambda p: (len(p.name), p.name)) if root.is_dir() else []
    if not folders:
        raise InputFileError(root, "no CRCHistoPhenotypes imgN/imgN.bmp found")
    return folders


def read_crchisto_points(folder: str | Path, one_based: bool = True
                         ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The files of one ``imgN/`` folder as stored: ``(rgb, classified, detection)``.

    ``classified`` maps each class name of :data:`CRCHISTO_TYPES` whose ``imgN_<class>.mat``
    exists to its (N, 2) x, y points; ``detection`` holds ``imgN_detection.mat`` (empty when
    absent). With ``one_based`` (MATLAB convention) 1 is subtracted from every point.
    """
    folder = Path(folder)
    stem = folder.name
    off = 1.0 if one_based else 0.0
    rgb = _read_rgb(folder / f"{stem}.bmp")
    classified = {}
    for tid in CRCHISTO_TYPES.ids:
        f = folder / f"{stem}_{CRCHISTO_TYPES.names[tid]}.mat"
        if tid and f.exists():
            classified[CRCHISTO_TYPES.names[tid]] = _read_points(f) - off
    det_file = folder / f"{stem}_detection.mat"
    detection = _read_points(det_file) - off if det_file.exists() else np.zeros((0, 2))
    return rgb, classified, detection


def read_crchisto(folder: str | Path, one_based: bool = True) -> NucleusSample:
    """A CRCHistoPhenotypes ``imgN/`` folder: ``imgN.bmp`` + ``imgN_<class>.mat`` centroids.

    Points are (x, y); with ``one_based`` (MATLAB convention) 1 is subtracted. Types follow
    :data:`CRCHISTO_TYPES`: a detection point takes the type of a classified point within 1 px,
    else type 0; classified points farther than 1 px from every detection point are added. The
    µm/px is not stored: 0.55 (20×, from the paper) is assumed.
    """
    from scipy.spatial import cKDTree

    folder = Path(folder)
    stem = folder.name
    image, classified, det = read_crchisto_points(folder, one_based)
    name_to_id = {CRCHISTO_TYPES.names[t]: t for t in CRCHISTO_TYPES.ids}
    cls_pts = np.concatenate(list(classified.values())) if classified else np.zeros((0, 2))
    cls_types = (np.concatenate([np.full(len(p), name_to_id[n], np.int64) for n, p in classified.items()])
                 if classified else np.zeros(0, np.int64))
    det_types = np.zeros(len(det), np.int64)
    if len(det) and len(cls_pts):
        dist, idx = cKDTree(cls_pts).query(det)
        near = dist < 1.0
        det_types[near] = cls_types[idx[near]]
        # classified points absent from the detection file are added
        d2, _ = cKDTree(det).query(cls_pts)
        extra = d2 >= 1.0
        det = np.concatenate([det, cls_pts[extra]])
        det_types = np.concatenate([det_types, cls_types[extra]])
    elif len(cls_pts):
        det, det_types = cls_pts, cls_types
    return NucleusSample(stem, image, CRCHISTO_MPP, points=det, point_types=det_types,
                         type_info=CRCHISTO_TYPES, magnification=20.0, mpp_source="assumed",
                         path=str(folder / f"{stem}.bmp"))


def iter_crchisto(root: str | Path) -> Iterator[NucleusSample]:
    """Every ``imgN/`` folder holding ``imgN.bmp`` under ``root``."""
    for f in crchisto_folders(root):
        yield read_crchisto(f)


# ----------------------------------------------------------------------------- dispatch

_ITERATORS = {"monuseg": iter_monuseg, "monusac": iter_monusac, "cpm15": iter_cpm15, "crchisto": iter_crchisto}
