"""Evaluate a compact HoVer-Net weights folder on held-out images.

Segmentation: held-out MoNuSeg test tiles. Each tile is resampled from its native mpp to the
model's working mpp, segmented with the library segmenter (``napari_histo.nuclei.hovernet_segmenter``
+ ``napari_histo.nuclei.postproc`` with the model's ``config.postproc`` constants), and the
labels are resized back (nearest) to compare with the native-resolution ground truth using
``napari_histo.nuclei.metrics`` (Dice, AJI, AJI+, DQ, SQ, PQ per image). The classical
detector (``napari_histo.nuclei.classical``) is scored on the same tiles for comparison.

Typing: CRCHistoPhenotypes point labels (never used in training) at the coarse level
(epithelial vs inflammatory; fibroblast and "others" are outside the model's vocabulary) and the
MoNuSAC images (which ARE training images, so that number is a fit, not a validation).

Run: ``python -m src_models.hovernet.evaluate WEIGHTS_DIR [--data ../shared/data] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from napari_histo.datasets import MONUSEG_MASKS
from napari_histo.datasets.readers import CRCHISTO_MPP
from napari_histo.models.hovernet.config import scaled_postproc
from napari_histo.nuclei.metrics import instance_scores, type_scores
from napari_histo.utils import atomic_write
from src_models.hovernet.config import TrainConfig
from src_models.hovernet.data import (
    CONSEP_MPP,
    CONSEP_VAL_IMAGES,
    consep_crops,
    load_consep_native,
    load_monusac_native,
    load_monuseg_native,
    resize_labels,
    resize_rgb,
)

# Lazy imports: PIL, pandas, scipy, skimage, torch are imported inside the functions that use them
# (directly or through the modules named there): only the code paths that use them pay for loading.

CRC_CLASSES = {"epithelial": 1, "inflammatory": 2, "fibroblast": 3, "others": 4}
#: Vocabulary coarse id (1 other, 2 inflammatory, 3 epithelial, 4 spindle) -> CRCHisto class id.
COARSE_TO_CRC = {0: 0, 1: 4, 2: 2, 3: 1, 4: 3}


def coarse_lookup(type_info) -> dict[int, int]:
    """Type id of a model -> coarse vocabulary id (0 when its name is not in the vocabulary)."""
    from napari_histo.schema.vocabulary import coarse_id

    return {int(t): (coarse_id(name) or 0) if t != 0 else 0 for t, name in type_info.names.items()}


def build_segmenter(weights_dir: str | Path, post: dict | None = None, batch_size: int = 4, **kwargs):
    """A ``HoverNetSegmenter`` over the weights folder set up as its ``config.json`` says
    (:func:`~napari_histo.models.hovernet.compact.compact_segmenter`); ``post`` overrides post-processing
    constants, ``kwargs`` the segmenter's options (e.g. ``fill_px``)."""
    from napari_histo.models.hovernet.compact import compact_segmenter
    from napari_histo.nuclei.postproc import HoverPostParams

    seg = compact_segmenter(weights_dir, device="cpu", batch_size=batch_size, **kwargs)
    if post:
        seg.post_params = HoverPostParams(**{**asdict(seg.post_params), **post})
    return seg


def upsample_maps(raw: dict[str, np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Bilinear resize of the predicted np / hv / tp maps to ``shape`` (H, W)."""
    from skimage.transform import resize

    out = {}
    for key, val in raw.items():
        tgt = tuple(shape) + tuple(val.shape[2:])
        out[key] = resize(val, tgt, order=1, anti_aliasing=False, preserve_range=True).astype(np.float32)
    return out


def segment_native(seg, rgb: np.ndarray, native_mpp: float, mode: str = "labels"):
    """Segment ``rgb`` (native mpp) with ``seg`` at its working mpp; labels and centroids in native px.

    ``mode="labels"``: post-process at the working mpp and resize the labels (nearest) back;
    ``mode="maps"``: resize the network maps (bilinear) to the native grid and post-process there
    with the constants rescaled to ``native_mpp`` (smoother outlines, ~4× the post-processing cost
    from 0.5 to 0.25 µm/px).
    """
    scale = native_mpp / seg.mpp
    shape = (max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale)))
    work = resize_rgb(rgb, shape)
    if mode == "maps" and hasattr(seg, "post_params"):
        from napari_histo.nuclei.postproc import postprocess_maps

        raw = upsample_maps(seg.predict(work), rgb.shape[:2])
        params = replace(seg.post_params, **{k: v for k, v in scaled_postproc(native_mpp).items()
                                             if k in ("min_blob_px", "sobel_ksize", "min_marker_px")})
        tp = raw.get("tp") if getattr(seg, "typed", False) else None
        labels, table = postprocess_maps(raw["np"], raw["hv"], tp, mpp=native_mpp, type_info=seg.type_info,
                                         params=params)
        return labels, table
    labels, table = seg.segment(work)
    labels = resize_labels(labels, rgb.shape[:2])
    table = table.copy()
    table["x"] = (table["x"] + 0.5) / scale - 0.5
    table["y"] = (table["y"] + 0.5) / scale - 0.5
    return labels, table


def evaluate_monuseg(seg, data_root: str | Path, stems: list[str], classical: bool = True,
                     mode: str = "labels", masks: str = "project") -> list[dict]:
    """Per-image instance scores of ``seg`` (and the classical detector) on MoNuSeg tiles;
    ``masks`` "official" scores against masks drawn as the challenge's script draws them
    (:data:`napari_histo.datasets.MONUSEG_MASKS`)."""
    rows = []
    for stem in stems:
        rgb, gt, mpp = load_monuseg_native(Path(data_root), stem, masks=masks)
        t0 = time.perf_counter()
        pred, _ = segment_native(seg, rgb, mpp, mode)
        dt = time.perf_counter() - t0
        row = {"image": stem, "mpp": mpp, "seconds": round(dt, 2), "n_true": int(len(np.unique(gt)) - 1),
               "n_pred": int(len(np.unique(pred)) - 1)}
        row.update({k: round(v, 4) for k, v in instance_scores(gt, pred).items()})
        if classical:
            try:
                from napari_histo.nuclei.classical import ClassicalSegmenter
            except ImportError:  # pragma: no cover - classical detector not installed
                pass
            else:
                cl = ClassicalSegmenter()
                cpred, _ = segment_native(cl, rgb, mpp)
                row.update({f"classical_{k}": round(v, 4) for k, v in instance_scores(gt, cpred).items()})
        rows.append(row)
    return rows


def tune_postproc(seg, data_root: str | Path, stems: list[str], grid: dict[str, list]) -> list[dict]:
    """Mean PQ/AJI of post-processing settings on (training) MoNuSeg tiles; network run once per tile.

    Used to pick ``config.postproc`` on training tiles only, never on the held-out ones. The
    instances come from ``seg.instances`` (the segmenter's own grid: coarse or fine).
    """
    from napari_histo.nuclei.postproc import HoverPostParams

    cache = []
    for stem in stems:
        rgb, gt, mpp = load_monuseg_native(Path(data_root), stem)
        scale = mpp / seg.mpp
        work = resize_rgb(rgb, (round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)))
        cache.append((seg.predict(work), work.shape[:2], gt))
    base = dict(seg.post_params.__dict__)
    keys = sorted(grid)
    results = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = HoverPostParams(**{**base, **dict(zip(keys, values, strict=True))})
        scores = []
        for raw, shape, gt in cache:
            lab = resize_labels(seg.instances(raw, shape, params)[0], gt.shape)
            scores.append(instance_scores(gt, lab))
        results.append({**dict(zip(keys, values, strict=True)),
                        "pq": round(float(np.mean([s["pq"] for s in scores])), 4),
                        "aji": round(float(np.mean([s["aji"] for s in scores])), 4)})
    return sorted(results, key=lambda r: -(r["pq"] + r["aji"]))


#: MoNuSeg TRAINING tiles on which post-processing constants are picked (never the held-out ones).
TUNING_TILES = ["TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5698-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"]
#: Default grid: thresholds as before, plus the marker opening / size on the coarse grid.
TUNING_GRID = {"np_threshold": [0.5, 0.6], "marker_threshold": [0.3, 0.4, 0.5],
               "opening_size": [1, 3], "min_marker_px": [2, 4]}


#: More MoNuSeg TRAINING tiles (other organs / the test-set tiles used in training) for a wider tuning.
TUNING_TILES_EXTRA = ["TCGA-69-7764-01A-01-TS1", "TCGA-EJ-A46H-01A-03-TSC", "TCGA-HC-7209-01A-01-TS1",
                      "TCGA-50-5931-01Z-00-DX1", "TCGA-AR-A1AK-01Z-00-DX1"]


def tuning_tiles(spec: str | None, held_out: list[str]) -> list[str]:
    """Tiles for ``--tune``: None = :data:`TUNING_TILES`, "wide" = those plus
    :data:`TUNING_TILES_EXTRA`, otherwise a comma-separated list of MoNuSeg stems.

    Raises ``ValueError`` when a held-out tile is named: constants are picked on training tiles only.
    """
    if not spec:
        stems = list(TUNING_TILES)
    elif spec == "wide":
        stems = TUNING_TILES + TUNING_TILES_EXTRA
    else:
        stems = [s.strip() for s in spec.split(",") if s.strip()]
    leaked = sorted(set(stems) & set(held_out))
    if leaked:
        raise ValueError(f"tuning tiles include held-out images: {', '.join(leaked)}")
    return stems


def _crc_points(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """CRCHisto detection points (x, y, 0-based) and their class (-1 = unclassified)."""
    from scipy.io import loadmat

    def load(name: str) -> np.ndarray:
        mat = loadmat(folder / f"{folder.name}_{name}.mat")
        key = next(k for k in mat if not k.startswith("__"))
        return np.asarray(mat[key], np.float64).reshape(-1, 2) - 1.0

    det = load("detection")
    cls = np.full(len(det), -1, np.int64)
    for name, cid in CRC_CLASSES.items():
        pts = load(name)
        if len(pts) == 0 or len(det) == 0:
            continue
        d = np.linalg.norm(det[:, None, :] - pts[None, :, :], axis=2)
        idx = d.argmin(axis=0)
        ok = d[idx, np.arange(len(pts))] < 1.0
        cls[idx[ok]] = cid
        extra = pts[~ok]
        if len(extra):
            det = np.concatenate([det, extra])
            cls = np.concatenate([cls, np.full(len(extra), cid)])
    return det, cls


def evaluate_crchisto(seg, data_root: str | Path, radius_px: float = 6.0) -> dict:
    """Coarse typing scores on CRCHistoPhenotypes (points; matching radius in native 20× px)."""
    from PIL import Image

    base = Path(data_root) / "crchisto" / "CRCHistoPhenotypes_2016_04_28" / "cls_and_det" / "test"
    images = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        rgb = np.asarray(Image.open(folder / f"{folder.name}.bmp").convert("RGB"))
        _, table = segment_native(seg, rgb, CRCHISTO_MPP)
        pts, cls = _crc_points(folder)
        lut = coarse_lookup(seg.type_info)
        pred_t = np.array([COARSE_TO_CRC[lut.get(int(t), 0)] for t in table["type"]], np.int64)
        images.append((pts, cls, table[["x", "y"]].to_numpy(), pred_t))
    out = type_scores(images, radius=radius_px, type_ids=[1, 2, 3, 4], exhaustive=False)
    return {k: round(float(v), 4) for k, v in out.items()}


def instance_centroids(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids > 0 of a label map and their centroids (N, 2) as x, y."""
    from scipy import ndimage as ndi

    ids = np.unique(inst)
    ids = ids[ids > 0]
    if not len(ids):
        return ids, np.zeros((0, 2))
    return ids, np.array(ndi.center_of_mass(np.ones_like(inst), inst, ids)).reshape(-1, 2)[:, ::-1]


def evaluate_consep(seg, data_root: str | Path, images: tuple[str, ...] | list[str] = CONSEP_VAL_IMAGES,
                    radius_px: float = 12.0) -> dict:
    """Instance and coarse-type scores on CoNSeP crops of the validation ``images``.

    Instance metrics (Dice, AJI, PQ) are computed per crop and averaged; detection and per-class
    F1 pool every crop as HoVer-Net's ``compute_stats`` does (centroids paired within
    ``radius_px`` = 12 px at 40×; types compared as coarse vocabulary ids: 1 other,
    2 inflammatory, 3 epithelial, 4 spindle).
    """
    from napari_histo.nuclei.metrics import instance_scores
    from src_models.hovernet.data import read_consep_types

    root = Path(data_root)
    types_by_crop = read_consep_types(root)
    lut = coarse_lookup(seg.type_info)
    rows, pooled = [], []
    for crop in consep_crops(root, images):
        rgb, inst, _ = load_consep_native(root, crop, types_by_crop)
        labels, table = segment_native(seg, rgb, CONSEP_MPP)
        scores = instance_scores(inst, labels)
        rows.append({"crop": crop, "n_true": int(len(np.unique(inst)) - 1), "n_pred": int(len(table)),
                     **{k: round(float(scores[k]), 4) for k in ("dice", "aji", "pq")}})
        truth = types_by_crop.get(crop, {})
        ids, com = instance_centroids(inst)
        t_types = np.array([truth.get(int(i), -1) for i in ids], np.int64)
        p_types = np.array([lut.get(int(t), 0) for t in table["type"]], np.int64) if len(table) else np.zeros(0, np.int64)
        pooled.append((com, t_types, table[["x", "y"]].to_numpy() if len(table) else np.zeros((0, 2)), p_types))
    out = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("dice", "aji", "pq")}
    typed = type_scores(pooled, radius=radius_px, type_ids=[1, 2, 3, 4], exhaustive=False)
    names = {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"}
    out["f1_d"] = round(float(typed["f1_d"]), 4)
    out["acc"] = round(float(typed["acc"]), 4)
    for k, name in names.items():
        out[f"f1_{name}"] = round(float(typed.get(f"f1_type{k}", float("nan"))), 4)
    out["crops"] = len(rows)
    out["images"] = list(images)
    out["per_crop"] = rows
    return out


def evaluate_monusac(seg, data_root: str | Path, radius_um: float = 3.0) -> dict:
    """Coarse-class detection/typing scores on the MoNuSAC images (training images: a fit, not
    validation). Ground truth and predictions are compared as coarse vocabulary ids (MoNuSAC has
    epithelial = 3 and inflammatory = 2: lymphocytes, neutrophils, macrophages)."""

    from src_models.hovernet.data import MONUSAC_COARSE, MONUSAC_TYPES

    to_coarse = {MONUSAC_TYPES[name]: cid for name, cid in MONUSAC_COARSE.items()}
    lut = coarse_lookup(seg.type_info)
    images = []
    root = Path(data_root)
    for svs in sorted((root / "monusac" / "sample_original").glob("*.svs")):
        rgb, inst, types, mpp = load_monusac_native(root, svs.stem)
        _, table = segment_native(seg, rgb, mpp)
        ids, com = instance_centroids(inst)
        t_types = np.array([to_coarse.get(int(np.bincount(types[inst == i].clip(0)).argmax()), -1) for i in ids],
                           np.int64)
        p_types = np.array([lut.get(int(t), 0) for t in table["type"]], np.int64)
        images.append((com, t_types, table[["x", "y"]].to_numpy(), p_types))
    out = type_scores(images, radius=radius_um / 0.19448, type_ids=[2, 3], exhaustive=False)
    return {"f1_d": round(float(out["f1_d"]), 4), "acc": round(float(out["acc"]), 4),
            "f1_inflammatory": round(float(out["f1_type2"]), 4), "f1_epithelial": round(float(out["f1_type3"]), 4)}


def evaluate(weights_dir: str | Path, data_root: str | Path, stems: list[str] | None = None,
             post: dict | None = None, classical: bool = True, typing: bool = True,
             type_rule: str | None = None, segmentation: bool = True, masks: str = "project",
             consep: bool = False) -> dict:
    """All validation numbers for a weights folder as a JSON-able dict (``type_rule`` overrides
    the config's typing rule; ``segmentation=False`` gives the typing scores only)."""
    import torch

    torch.set_num_threads(2)
    seg = build_segmenter(weights_dir, post, **({"type_rule": type_rule} if type_rule else {}))
    if stems is None:
        cfg_path = Path(weights_dir) / "train_config.json"
        stems = TrainConfig.load(cfg_path).val_monuseg if cfg_path.exists() else TrainConfig().val_monuseg
    rows = evaluate_monuseg(seg, data_root, list(stems), classical=classical, masks=masks) if segmentation else []
    keys = ["dice", "aji", "aji_plus", "dq", "sq", "pq"]
    result: dict = {"weights": str(weights_dir), "post": dict(seg.post_params.__dict__), "type_rule": seg.type_rule,
                    "monuseg_masks": masks, "per_image": rows}
    if rows:
        result["mean"] = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    if classical and rows and "classical_pq" in rows[0]:
        result["classical_mean"] = {k: round(float(np.mean([r[f"classical_{k}"] for r in rows])), 4) for k in keys}
    if typing:
        result["crchisto_coarse"] = evaluate_crchisto(seg, data_root)
        result["monusac_train_fit"] = evaluate_monusac(seg, data_root)
    if consep:
        result["consep_validation"] = evaluate_consep(seg, data_root)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-classical", action="store_true")
    ap.add_argument("--no-typing", action="store_true")
    ap.add_argument("--post", default=None, help="JSON dict overriding post-processing constants")
    ap.add_argument("--type-rule", choices=["official", "nucleus"], default=None,
                    help="typing rule instead of the config's (see napari_histo.nuclei.postproc.type_instances)")
    ap.add_argument("--typing-only", action="store_true", help="typing scores only (CRCHisto, MoNuSAC)")
    ap.add_argument("--consep", action="store_true",
                    help="also score the CoNSeP validation images " + ", ".join(CONSEP_VAL_IMAGES))
    ap.add_argument("--monuseg-masks", choices=MONUSEG_MASKS, default="project",
                    help="MoNuSeg ground truth: this package's masks or the challenge script's")
    ap.add_argument("--tune", nargs="?", const=json.dumps(TUNING_GRID), default=None,
                    help="pick post-processing constants on the MoNuSeg training tiles "
                         f"{', '.join(TUNING_TILES)} over a JSON grid (default {json.dumps(TUNING_GRID)}) "
                         "and print the ranking (mean PQ + AJI) instead of evaluating")
    ap.add_argument("--tune-tiles", default=None,
                    help="tiles for --tune: 'wide' (the default 3 plus "
                         f"{', '.join(t[:12] for t in TUNING_TILES_EXTRA)}) or comma-separated MoNuSeg "
                         "training stems; held-out tiles are refused")
    args = ap.parse_args(argv)
    if args.tune:
        import torch

        torch.set_num_threads(2)
        seg = build_segmenter(args.weights, json.loads(args.post) if args.post else None)
        grid = json.loads(args.tune)
        cfg_path = Path(args.weights) / "train_config.json"
        held_out = TrainConfig.load(cfg_path).val_monuseg if cfg_path.exists() else TrainConfig().val_monuseg
        try:
            stems = tuning_tiles(args.tune_tiles, list(held_out))
        except ValueError as exc:
            ap.error(str(exc))
        ranking = tune_postproc(seg, args.data, stems, grid)
        res = {"tiles": "MoNuSeg training tiles " + ", ".join(t[:12] for t in stems),
               "grid": grid, "top": ranking[:10]}
    else:
        res = evaluate(args.weights, args.data, post=json.loads(args.post) if args.post else None,
                       classical=not args.no_classical, typing=not args.no_typing, type_rule=args.type_rule,
                       segmentation=not args.typing_only, masks=args.monuseg_masks, consep=args.consep)
    text = json.dumps(res, indent=2)
    if args.out:
        with atomic_write(args.out) as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
