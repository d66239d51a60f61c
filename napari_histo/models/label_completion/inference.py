"""Label-completion inference: per-instance types in every taxonomy.

- :func:`classify_instances` (the reference I/O): image + instance mask -> for each label set an
  (N, 2) int64 array ``[instance id, type]``; ``type`` is the 0-based index into the label set's
  labels, as the dataset-merging method writes it (``one_based=True`` adds 1, the convention of
  :class:`napari_histo.schema.types.TypeInfo`, where 0 is "no type").
- :func:`type_table`: the same for a nucleus table from our segmentation engine; adds
  ``type_<set>`` (1-based) and ``type_<set>_prob`` columns (and ``df.attrs["label_sets"]``).
"""

from __future__ import annotations

import numpy as np

from napari_histo.schema.types import TypeInfo
from napari_histo.utils import HistoError

# Lazy imports: scipy, torch are imported inside the functions that use them (directly or through
# the modules named there): importing this module stays light for the CLI and the napari manifest.


def _predict(model, rgb: np.ndarray, centres: np.ndarray, bboxes: np.ndarray, mpp: float):
    import torch


    cfg = model.config
    crops = nucleus_crops(np.asarray(rgb)[..., :3], centres, bboxes, mpp, cfg.crop_um, cfg.input_size)
    return [p.numpy() for p in model.predict_proba(torch.from_numpy(crops))]


def instance_boxes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (N,), centres (N, 2) x, y, boxes (N, 4) half-open x0, y0, x1, y1) of every instance
    id > 0 of an instance map; a nucleus crop is centred on its box."""
    from scipy import ndimage

    mask = np.asarray(mask)
    ids = np.unique(mask)
    ids = ids[ids > 0].astype(np.int64)
    if not len(ids):
        return ids, np.zeros((0, 2)), np.zeros((0, 4))
    slices = ndimage.find_objects(mask.astype(np.int64))
    boxes = np.array([[slices[i - 1][1].start, slices[i - 1][0].start, slices[i - 1][1].stop,
                       slices[i - 1][0].stop] for i in ids], dtype=float)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    return ids, centres, boxes


def classify_instances(rgb: np.ndarray, instance_mask: np.ndarray, model, mpp: float,
                       label_sets: list[str] | None = None, one_based: bool = False,
                       with_probability: bool = False) -> dict[str, np.ndarray]:
    """``{label set: (N, 2) [instance id, type]}`` for every instance id > 0 of the mask.

    Parameters
    ----------
    rgb : (H, W, 3) uint8
    instance_mask : (H, W) int, 0 = background
    model : LabelCompletionModel
    mpp : float
        µm/px of the image (crops cover ``model.config.crop_um`` µm).
    label_sets : list[str], optional
        Subset of the model's label sets (default all).
    one_based : bool
        Types 1..K instead of the dataset-merging method's 0..K-1.
    with_probability : bool
        Return (N, 3) float64 ``[instance id, type, probability]`` instead.
    """
    mask = np.asarray(instance_mask)
    if mask.shape[:2] != np.asarray(rgb).shape[:2]:
        raise ValueError(f"instance mask {mask.shape} does not match image {np.asarray(rgb).shape[:2]}")
    ids, centres, boxes = instance_boxes(mask)
    names = [s.name for s in model.config.label_sets]
    wanted = label_sets or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise HistoError(f"label set {', '.join(map(repr, unknown))} not in the model; it has {', '.join(names)}")
    cols = 3 if with_probability else 2
    if len(ids) == 0:
        return {n: np.zeros((0, cols), np.float64 if with_probability else np.int64) for n in wanted}
    probs = _predict(model, rgb, centres, boxes, mpp)
    out = {}
    for n in wanted:
        p = probs[names.index(n)]
        types = p.argmax(1) + int(one_based)
        if with_probability:
            out[n] = np.stack([ids, types, p.max(1)], 1).astype(np.float64)
        else:
            out[n] = np.stack([ids, types], 1).astype(np.int64)
    return out


def type_table(table, rgb: np.ndarray, model, *, mpp: float | None = None, offset: tuple[float, float] = (0, 0),
               label_sets: list[str] | None = None, set_type: str | None = None):
    """Copy of a nucleus table with ``type_<set>`` (1-based) and ``type_<set>_prob`` columns.

    ``rgb`` shows the table's region: table level-0 coordinates minus ``offset`` are ``rgb`` px.
    ``mpp`` defaults to ``table.attrs["mpp"]``. With ``set_type="<set>"`` the table's ``type``/
    ``type_prob``/``type_info`` are replaced by that taxonomy.
    """
    mpp = mpp if mpp is not None else table.attrs.get("mpp")
    if not mpp:
        raise HistoError("nucleus typing needs the image's µm/px (table.attrs['mpp'] or mpp=...)")
    out = table.copy()
    out.attrs = dict(table.attrs)
    names = [s.name for s in model.config.label_sets]
    wanted = label_sets or names
    if len(table):
        ox, oy = offset
        boxes = np.stack([table["bbox_x0"] - ox, table["bbox_y0"] - oy,
                          table["bbox_x1"] - ox, table["bbox_y1"] - oy], 1).astype(float)
        centres = np.stack([table["x"] - ox, table["y"] - oy], 1).astype(float)
        probs = _predict(model, rgb, centres, boxes, float(mpp))
    for n in wanted:
        d = names.index(n)
        if len(table):
            p = probs[d]
            out[f"type_{n}"] = (p.argmax(1) + 1).astype(np.int64)
            out[f"type_{n}_prob"] = p.max(1).astype(np.float64)
        else:
            out[f"type_{n}"] = np.zeros(0, np.int64)
            out[f"type_{n}_prob"] = np.zeros(0, np.float64)
    out.attrs["label_sets"] = {n: model.config.label_sets[names.index(n)].labels for n in wanted}
    if set_type is not None:
        labels = model.config.label_sets[names.index(set_type)].labels
        out["type"] = out[f"type_{set_type}"]
        out["type_prob"] = out[f"type_{set_type}_prob"]
        out.attrs["type_info"] = TypeInfo({0: "no label", **{i + 1: lab for i, lab in enumerate(labels)}}).to_json_dict()
    return out


# ---------------------------------------------------------------------------- crops
def nucleus_crops(rgb: np.ndarray, centres: np.ndarray, bboxes: np.ndarray, mpp: float,
                  crop_um: float = 16.0, input_size: int = 32) -> np.ndarray:
    """Per-nucleus context crops, (N, 3, S, S) float32 normalised as (x - 0.5) / 0.5.

    A crop is ``crop_um`` wide centred on the box centre, or the square of the box's longer side
    when that is larger; image borders are mirror-padded; the crop is resized to ``input_size``.
    """
    import torch
    import torch.nn.functional as F

    n = len(centres)
    if n == 0:
        return np.zeros((0, 3, input_size, input_size), np.float32)
    base = crop_um / mpp
    sides = np.maximum(base, np.maximum(bboxes[:, 2] - bboxes[:, 0], bboxes[:, 3] - bboxes[:, 1]))
    sides = np.ceil(sides).astype(int)
    pad = int(sides.max()) + 2
    padded = np.pad(rgb[..., :3], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.empty((n, 3, input_size, input_size), np.float32)
    for i, ((cx, cy), s) in enumerate(zip(centres, sides)):
        x0 = int(round(cx - s / 2)) + pad
        y0 = int(round(cy - s / 2)) + pad
        crop = torch.from_numpy(np.ascontiguousarray(padded[y0:y0 + s, x0:x0 + s])).permute(2, 0, 1)[None].float()
        crop = F.interpolate(crop / 255.0, size=(input_size, input_size), mode="bilinear",
                             antialias=True, align_corners=False)
        out[i] = ((crop[0] - 0.5) / 0.5).numpy()
    return out


def type_table_from_slide(table, slide, model, *, mpp: float | None = None, label_sets: list[str] | None = None,
                          set_type: str | None = None, block: int = 2048):
    """:func:`type_table` for nuclei anywhere on a slide: the pixels are read block by block.

    Nuclei are grouped by the ``block`` x ``block`` level-0 square their centre falls in; each
    group's region (its boxes plus the crop context) is read at level 0 and typed. ``slide`` is an
    open :class:`~napari_histo.slide.Slide` or a path. Rows keep their order.
    """
    import pandas as pd

    from napari_histo.slide import open_slide

    mpp = mpp if mpp is not None else table.attrs.get("mpp")
    if not mpp:
        raise HistoError("nucleus typing needs the image's µm/px (table.attrs['mpp'] or mpp=...)")
    owned = not hasattr(slide, "read_region")
    reader = open_slide(slide) if owned else slide
    try:
        if not len(table):
            return type_table(table, np.zeros((1, 1, 3), np.uint8), model, mpp=mpp, label_sets=label_sets,
                              set_type=set_type)
        margin = int(np.ceil(model.config.crop_um / float(mpp))) + 2
        cells = np.stack([table["x"].to_numpy() // block, table["y"].to_numpy() // block], 1).astype(np.int64)
        _, group = np.unique(cells, axis=0, return_inverse=True)
        parts = []
        width, height = reader.dimensions
        for g in range(int(group.max()) + 1):
            sub = table[group.ravel() == g]
            x0 = max(0, int(sub["bbox_x0"].min()) - margin)
            y0 = max(0, int(sub["bbox_y0"].min()) - margin)
            x1 = min(width, int(sub["bbox_x1"].max()) + margin)
            y1 = min(height, int(sub["bbox_y1"].max()) + margin)
            rgb = np.asarray(reader.read_region((x0, y0), (x1 - x0, y1 - y0), 0, units="level"))[..., :3]
            parts.append(type_table(sub, rgb, model, mpp=mpp, offset=(x0, y0), label_sets=label_sets,
                                    set_type=set_type))
        out = pd.concat(parts).loc[table.index]
        out.attrs = dict(parts[0].attrs)
        return out
    finally:
        if owned:
            reader.close()
