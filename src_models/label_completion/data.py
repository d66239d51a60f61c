"""Dataset adapters and per-nucleus crops for label completion.

Each adapter returns :class:`AnnotatedImage` records: an RGB image, its µm/px and, per nucleus,
a centre, a bounding box (image px) and a local label index in the dataset's own vocabulary
(-1 = nucleus without a class, used as unlabelled data in the completion stage).

Adapters
--------
- MoNuSAC (``monusac/sample_original``): typed polygons in ImageScope XML, one Annotation per
  class (class = its Attribute Name); images are single-level SVS.
- CRCHistoPhenotypes (``crchisto/.../cls_and_det/test``): points in ``.mat`` files (variable
  ``detection``), one file per class plus ``_detection.mat`` with every nucleus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_histo.datasets.readers import CRCHISTO_MPP, crchisto_folders, read_crchisto_points
from napari_histo.models.label_completion.inference import instance_boxes
from napari_histo.utils import InputFileError
from src_models.deepcmorph.data import read_rgb

# Lazy imports: openslide, pandas are imported inside the functions that use them (directly or
# through the modules named there): only the code paths that use them pay for loading.

#: Local vocabularies (Dataset_Merger order for MoNuSAC).
MONUSAC_LABELS = ["Epithelial", "Lymphocyte", "Neutrophil", "Macrophage"]
CRCHISTO_LABELS = ["epithelial", "fibroblast", "inflammatory", "others"]
#: Nucleus diameter assumed for point annotations (µm), to give points a box.
POINT_NUCLEUS_UM = 8.0


@dataclass
class AnnotatedImage:
    """One image and its nuclei (image px; bbox half-open x0, y0, x1, y1)."""

    name: str
    rgb: np.ndarray
    mpp: float
    centres: np.ndarray  # (N, 2) float x, y
    bboxes: np.ndarray  # (N, 4) float
    labels: np.ndarray  # (N,) int, -1 unlabelled
    instance_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    polygons: list[np.ndarray] | None = None


# ---------------------------------------------------------------------------- MoNuSAC
def read_imagescope_typed(path: str | Path) -> tuple[list[tuple[str, np.ndarray]], float | None]:
    """(class name, (N, 2) x, y vertices in pixel-centre coordinates) per positive region, and
    the root MicronsPerPixel, as read by :func:`napari_histo.formats.imagescope.read_imagescope`
    (rings with < 3 vertices skipped)."""
    from napari_histo.formats.imagescope import read_imagescope

    parsed = read_imagescope(path, min_vertices=3)
    return [(r.class_name or "", np.asarray(r.vertices, np.float64)) for r in parsed.regions
            if not r.negative], parsed.mpp


def read_slide_rgb(path: str | Path) -> np.ndarray:
    """Whole level 0 of a small slide or image as (H, W, 3) uint8."""
    path = Path(path)
    if path.suffix.lower() in {".svs", ".ndpi", ".mrxs", ".scn"}:
        import openslide

        try:
            with openslide.OpenSlide(str(path)) as s:
                return np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
        except openslide.OpenSlideError as exc:
            raise InputFileError(path, f"cannot open slide ({exc})") from exc

    return read_rgb(path)


def load_monusac(root: str | Path, labels: list[str] = MONUSAC_LABELS) -> list[AnnotatedImage]:
    """MoNuSAC images under ``root`` (``*.svs`` + same-stem ``*.xml``) with polygon nuclei."""
    root = Path(root)
    xmls = sorted(root.glob("*.xml"))
    if not xmls:
        raise InputFileError(root, "no MoNuSAC *.xml annotations found")
    lower = [x.lower() for x in labels]
    out = []
    for xml in xmls:
        img_path = next((p for p in (xml.with_suffix(s) for s in (".svs", ".tif", ".png")) if p.exists()), None)
        if img_path is None:
            raise InputFileError(xml, "no image (.svs/.tif/.png) with the same name")
        rgb = read_slide_rgb(img_path)
        regions, mpp = read_imagescope_typed(xml)
        h, w = rgb.shape[:2]
        centres, boxes, labs, polys = [], [], [], []
        for name, verts in regions:
            v = verts.copy()
            v[:, 0] = v[:, 0].clip(0, w - 1)
            v[:, 1] = v[:, 1].clip(0, h - 1)
            x0, y0 = v.min(0)
            x1, y1 = v.max(0) + 1
            centres.append([(x0 + x1) / 2, (y0 + y1) / 2])
            boxes.append([x0, y0, x1, y1])
            labs.append(lower.index(name.lower()) if name.lower() in lower else -1)
            polys.append(v)
        out.append(AnnotatedImage(xml.stem, rgb, mpp or 0.25, np.asarray(centres, float).reshape(-1, 2),
                                  np.asarray(boxes, float).reshape(-1, 4), np.asarray(labs, np.int64),
                                  np.arange(1, len(labs) + 1), polys))
    return out


def polygons_to_instance_mask(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons with ids 1..N (later ones overwrite earlier ones)."""
    from napari_histo.formats.rasterize import paint_polygons

    return paint_polygons(polygons, shape, edges="closed", overlap="later")[0]


# ---------------------------------------------------------------------------- CRCHistoPhenotypes
def load_crchisto(root: str | Path, labels: list[str] = CRCHISTO_LABELS,
                  mpp: float = CRCHISTO_MPP) -> list[AnnotatedImage]:
    """CRCHistoPhenotypes ``imgN/`` folders under ``root``: classified points + unclassified ones.

    Files are read by :func:`napari_histo.datasets.readers.read_crchisto_points`; a detection
    point within 3 px of a classified point is that nucleus (dropped), the others are
    unlabelled nuclei (label -1).
    """
    half = POINT_NUCLEUS_UM / mpp / 2
    out = []
    for f in crchisto_folders(root):
        rgb, by_class, det = read_crchisto_points(f)
        pts = [by_class[name] for name in labels if name in by_class]
        labs = [np.full(len(by_class[name]), li, np.int64) for li, name in enumerate(labels) if name in by_class]
        classified = np.concatenate(pts) if pts else np.zeros((0, 2))
        lab = np.concatenate(labs) if labs else np.zeros(0, np.int64)
        if len(det):
            if len(classified):
                d = np.sqrt(((det[:, None, :] - classified[None, :, :]) ** 2).sum(-1)).min(1)
                det = det[d > 3.0]
            classified = np.concatenate([classified, det])
            lab = np.concatenate([lab, np.full(len(det), -1, np.int64)])
        h, w = rgb.shape[:2]
        c = classified.clip([0, 0], [w - 1, h - 1])
        boxes = np.concatenate([c - half, c + half], 1)
        out.append(AnnotatedImage(f.name, rgb, mpp, c, boxes, lab, np.arange(1, len(lab) + 1)))
    return out




# ---------------------------------------------------------------------------- generic layout
def is_generic_layout(root: str | Path) -> bool:
    """True when ``root`` holds the dataset-merging method's ``img/``, ``mask/`` and ``type/`` folders."""
    root = Path(root)
    return (root / "img").is_dir() and (root / "mask").is_dir()


def load_generic(root: str | Path, labels: list[str], mpp: float | None = None) -> list[AnnotatedImage]:
    """A dataset in the dataset-merging method's layout: ``img/<name>.png`` (or .jpg/.tif),
    ``mask/<name>.npy`` (H x W instance map, 0 = background) and ``type/<name>.npy``
    (N x 2 ``[instance id, local type]``, types 0-based into ``labels``; -1 or a missing row =
    nucleus without a label, used as unlabelled data). ``type/`` may be absent (an unlabelled
    source). µm/px: ``mpp``, else ``root/dataset.json`` ``{"mpp": ...}``; none is assumed.
    """
    import json

    root = Path(root)
    if not is_generic_layout(root):
        raise InputFileError(root, "not a label-completion dataset: expected img/ and mask/ folders (and type/)")
    if mpp is None:
        meta = root / "dataset.json"
        if meta.is_file():
            try:
                mpp = float(json.loads(meta.read_text(encoding="utf-8"))["mpp"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InputFileError(meta, f"expected {{\"mpp\": µm per px}} ({exc})") from exc
    if mpp is None:
        raise InputFileError(root, "pixel size unknown: write dataset.json with {\"mpp\": ...} or pass mpp")
    images = sorted(p for p in (root / "img").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    if not images:
        raise InputFileError(root / "img", "no images (.png/.jpg/.tif)")
    out = []
    for img_path in images:
        mask_path = root / "mask" / f"{img_path.stem}.npy"
        if not mask_path.is_file():
            raise InputFileError(mask_path, f"instance mask of {img_path.name} missing")
        rgb = read_rgb(img_path)
        mask = np.load(mask_path, allow_pickle=False)
        if mask.shape[:2] != rgb.shape[:2]:
            raise InputFileError(mask_path, f"mask {mask.shape[:2]} does not match image {rgb.shape[:2]}")
        ids, centres, boxes = instance_boxes(mask)
        labs = np.full(len(ids), -1, np.int64)
        type_path = root / "type" / f"{img_path.stem}.npy"
        if type_path.is_file():
            table = np.load(type_path, allow_pickle=False)
            if table.ndim != 2 or table.shape[1] < 2:
                raise InputFileError(type_path, f"expected an N x 2 [instance id, type] array, got shape {table.shape}")
            lut = {int(i): int(t) for i, t in table[:, :2]}
            labs = np.array([lut.get(int(i), -1) for i in ids], np.int64)
            bad = labs >= len(labels)
            if bad.any():
                raise InputFileError(type_path, f"type {int(labs[bad].max())} outside the {len(labels)} labels {labels}")
        out.append(AnnotatedImage(img_path.stem, rgb, float(mpp), centres, boxes, labs, ids))
    return out


# ---------------------------------------------------------------------------- CoNSeP
#: CoNSeP's merged classes in local order (``nuclei.csv`` type k is label k - 1).
CONSEP_LABELS = ["other", "inflammatory", "epithelial", "spindle"]


def load_consep(root: str | Path, labels: list[str] = CONSEP_LABELS) -> list[AnnotatedImage]:
    """The CoNSeP crops under ``root`` (``images/*.jpg``, ``labels/*.png``, ``nuclei.csv``), one
    :class:`AnnotatedImage` per crop named ``train_<image>_<k>``, at 0.25 µm/px."""
    from src_models.hovernet.data import consep_crops, load_consep_native, read_consep_types

    root = Path(root)
    if not (root / "nuclei.csv").is_file():
        raise InputFileError(root, "not a CoNSeP folder (nuclei.csv missing)")
    if [x.lower() for x in labels] != CONSEP_LABELS:
        raise InputFileError(root, f"CoNSeP's label set is {CONSEP_LABELS}, not {labels}")
    types = read_consep_types(root.parent)  # the loaders take the data root holding consep/
    out = []
    for crop in consep_crops(root.parent):
        rgb, mask, _ = load_consep_native(root.parent, crop, types)
        ids, centres, boxes = instance_boxes(mask)
        lut = types.get(crop, {})
        labs = np.array([lut.get(int(i), 0) - 1 for i in ids], np.int64)
        out.append(AnnotatedImage(crop, rgb, 0.25, centres, boxes, labs, ids))
    return out
