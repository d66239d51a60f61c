"""Tissue classification of image tiles (DeepCMorph) and nucleus typing by label completion.

Tile classification
-------------------
:func:`iter_classify_tiles` walks a grid of tiles over a slide (or an RGB array), classifies each
tissue tile with a DeepCMorph model and yields :class:`ClassifyProgress` events (``done``,
``total``); the last event carries the :class:`TileClassification` result. It is meant for
progress bars and GUI workers::

    for event in iter_classify_tiles(slide, model, tile_size=224):
        bar.update(event.done, event.total)
    result = event.result            # class map + per-tile table

:func:`classify_tiles` drains it and returns ``(class_map, features)``:

- ``class_map``: (rows, cols) int16, the class index of each tile; -1 for tiles skipped
  (outside the ROI's tissue, see ``tissue_only``). Tile ``(r, c)`` covers level-0 box
  ``x0 = origin_x + c * step``, ``y0 = origin_y + r * step`` (``step`` level-0 px).
- ``features``: a :class:`pandas.DataFrame`, one row per classified tile: ``row, col, x0, y0,
  x1, y1`` (level-0 px, half-open), ``class`` (int), ``class_name``, ``prob_<name>`` per class
  (absent for a nucleus module alone), ``tissue_fraction``, the tile's nucleus composition
  (``nucleus_fraction``: share of nucleus pixels; ``nuclei_<class>``: each nucleus class's share
  of them) and ``f0 .. f{F-1}`` (the classifier's pooled features, F = 2560 for B7; for the
  shipped nucleus module, the features of
  :meth:`~napari_histo.models.deepcmorph.model.DeepCMorph.nucleus_module_features`).
  ``df.attrs`` holds ``class_names``, ``tile_size`` (working px), ``tile_step_level0``,
  ``origin``, ``mpp`` (working µm/px or None) and the ``source`` path.

Nucleus maps
------------
``maps_store=PATH`` writes the nucleus maps of every processed tile into a zarr group
(:class:`NucleusMapStore`; read back with :func:`open_nucleus_maps`).

Nucleus typing
--------------
:func:`type_nuclei` adds label-completion types (one column pair per taxonomy) to a nucleus
table; see :func:`napari_histo.models.label_completion.inference.type_table`.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.models.label_completion.inference import type_table
from napari_histo.slide import open_slide, tissue_fraction
from napari_histo.utils import HistoError, choose_device, resource_path

# Lazy imports: pandas, torch are imported inside the functions that use them (directly or through
# the modules named there): importing this module stays light for the CLI and the napari manifest.


#: Folder (under resources/weights) of the shipped DeepCMorph nucleus module.
SHIPPED_NUCLEUS_MODULE = "deepcmorph_nuclei"


@dataclass
class TileClassification:
    """Result of a tile classification run (see module docstring)."""

    class_map: np.ndarray
    probabilities: np.ndarray  # (rows, cols, C) float32, NaN where skipped
    features: Any  # pandas.DataFrame
    class_names: list[str]
    origin: tuple[int, int]
    step_level0: float
    tile_size: int
    mpp: float | None
    source: str | None = None
    head: Any = None  # the few-shot TissueHead that gave the classes, if any


@dataclass
class ClassifyProgress:
    """Progress event: ``done`` of ``total`` tiles; ``result`` is set on the final event."""

    done: int
    total: int
    result: TileClassification | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _open_source(source) -> tuple[Any, str | None]:
    """(reader, path): a Slide for paths, a :class:`_ArraySource` for arrays."""
    if isinstance(source, np.ndarray):
        return _ArraySource(source), None
    if isinstance(source, str | os.PathLike):
        return open_slide(source), str(source)
    if hasattr(source, "read_region") and hasattr(source, "dimensions"):
        return source, str(getattr(source, "path", "") or "") or None
    raise HistoError(f"cannot classify {type(source).__name__}: expected a path, a Slide or an RGB array")


class _ArraySource:
    """Minimal slide interface over an in-memory RGB array (level 0 only, white padding)."""

    def __init__(self, rgb: np.ndarray):
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] < 3:
            raise HistoError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        self.rgb = rgb[..., :3].astype(np.uint8, copy=False)
        self.dimensions = (self.rgb.shape[1], self.rgb.shape[0])
        self.mpp = None

    def read_region(self, location, size, resolution=0, units="level") -> np.ndarray:
        """Level 0 (``units="level"``, 0) or resampled by ``resolution`` output px per level-0 px
        (``units="baseline"``); white outside the array."""
        if units == "baseline" and float(resolution) != 1.0:
            from PIL import Image

            scale = float(resolution)
            w0, h0 = int(np.ceil(size[0] / scale)), int(np.ceil(size[1] / scale))
            patch = self.read_region(location, (w0, h0))
            box = (0, 0, size[0] / scale, size[1] / scale)
            method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
            return np.asarray(Image.fromarray(patch).resize((int(size[0]), int(size[1])), method, box=box))
        if not (units == "level" and resolution == 0) and not (units == "baseline" and resolution == 1.0):
            raise HistoError("an RGB array is read at level 0 or by a baseline scale")
        x, y = int(location[0]), int(location[1])
        w, h = int(size[0]), int(size[1])
        out = np.full((h, w, 3), 255, np.uint8)
        H, W = self.rgb.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self.rgb[y0:y1, x0:x1]
        return out


def _model_fns(model):
    """(batch RGB uint8 (B,H,W,3) -> (probs (B,C) or None, features (B,F), nucleus map (B,H,W),
    class maps (B,K,H,W)), class names ([] for a nucleus module alone))."""
    import torch

    names = list(getattr(getattr(model, "config", None), "class_names", []) or [])
    has_classifier = getattr(model, "has_classifier", True)

    def predict(batch: np.ndarray):
        model.eval()
        with torch.no_grad():
            x = model.to_tensor(batch).to(next(model.parameters()).device)
            logits, feats, seg, cls = model.forward_maps(x)
            probs = None if logits is None else torch.softmax(logits, 1).cpu().numpy()
            return probs, feats.cpu().numpy(), seg[:, 0].cpu().numpy(), cls.cpu().numpy()

    if not has_classifier:
        names = []
    elif not names:
        names = [f"class {i}" for i in range(model.config.num_classes)]
    return predict, names


class NucleusMapStore:
    """The nucleus maps of the classified tiles, written tile by tile into a zarr group.

    ``nuclei`` holds the nucleus probability (uint8, 255 = 1) and ``classes`` the nucleus class
    of each nucleus pixel (uint8: 0 none, k = class map k-1 wins where the nucleus probability is
    at least 0.5), both at the working resolution over the tile grid, one chunk per tile. The
    group's attributes give the grid's level-0 origin, the level-0 px per working px and the
    class names (``class_ids`` maps them to the ids of ``classes``). The group is written under a
    temporary name and renamed when complete, so an interrupted run leaves no half store.
    """

    def __init__(self, path: str | os.PathLike, rows: int, cols: int, tile: int, *, origin: tuple[int, int],
                 level0_per_px: float, class_names: list[str], mpp: float | None):
        import zarr

        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        if self.tmp.exists():
            import shutil

            shutil.rmtree(self.tmp)
        self.tile = tile
        group = zarr.open_group(str(self.tmp), mode="w")
        shape = (rows * tile, cols * tile)
        self.nuclei = group.create_array("nuclei", shape=shape, chunks=(tile, tile), dtype="uint8", fill_value=0)
        self.classes = group.create_array("classes", shape=shape, chunks=(tile, tile), dtype="uint8", fill_value=0)
        group.attrs.update({"origin_level0": [int(origin[0]), int(origin[1])], "level0_per_px": float(level0_per_px),
                            "mpp": mpp, "class_names": list(class_names),
                            "class_ids": {n: i + 1 for i, n in enumerate(class_names)}})

    def write(self, row: int, col: int, nucleus: np.ndarray, class_maps: np.ndarray) -> None:
        t = self.tile
        sl = (slice(row * t, row * t + t), slice(col * t, col * t + t))
        self.nuclei[sl] = np.clip(np.rint(nucleus[:t, :t] * 255), 0, 255).astype(np.uint8)
        labels = (class_maps[:, :t, :t].argmax(0) + 1).astype(np.uint8)
        labels[nucleus[:t, :t] < 0.5] = 0
        self.classes[sl] = labels

    def close(self) -> Path:
        """Move the finished store into place (replacing an older one)."""
        import shutil

        if self.path.exists():
            shutil.rmtree(self.path)
        self.tmp.rename(self.path)
        return self.path


def open_nucleus_maps(path: str | os.PathLike):
    """(nuclei, classes, attrs) of a store written by :class:`NucleusMapStore` (lazy zarr arrays)."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        return group["nuclei"], group["classes"], dict(group.attrs)
    except Exception as exc:  # noqa: BLE001 - any unreadable store is a user error
        raise HistoError(f"{path}: not a nucleus map store written by napari-histo classify ({exc})") from exc


def iter_classify_tiles(source, model, tile_size: int | None = None, roi: tuple[int, int, int, int] | None = None,
                        *, mpp: float | None = None, batch_size: int = 8, tissue_only: bool = True,
                        min_tissue: float = 0.1, keep_tile: Callable[[tuple[float, float, float, float]], bool] | None = None,
                        maps_store: str | os.PathLike | None = None, image_mpp: float | None = None
                        ) -> Iterator[ClassifyProgress]:
    """Classify a tile grid, yielding progress; the final event's ``result`` holds the output.

    Parameters
    ----------
    source : str, Path, Slide or ndarray
        Slide/image path (read with :func:`napari_histo.slide.open_slide`), an open Slide, or an
        (H, W, 3) uint8 RGB array (level 0 only).
    model : DeepCMorph
        A model from :mod:`src_models.deepcmorph` (``forward_all``, ``to_tensor``, ``config``).
    tile_size : int, optional
        Tile side in working px (default: ``model.config.tile_size``).
    roi : (x, y, w, h), optional
        Region in level-0 px (default: the whole image).
    mpp : float, optional
        Working resolution (µm/px); default ``model.config.mpp``, else the slide's level 0.
        Needs a slide that states its mpp.
    batch_size : int
        Tiles per forward pass.
    tissue_only, min_tissue
        Skip tiles whose stained-pixel fraction is below ``min_tissue`` (class -1).
    keep_tile : callable, optional
        ``keep_tile((x0, y0, x1, y1))`` True keeps a tile whatever its tissue (training tiles of a
        few-shot tissue map may lie on glass or background).
    maps_store : path, optional
        Write the nucleus maps of the processed tiles there (see :class:`NucleusMapStore`).
    image_mpp : float, optional
        Pixel size (µm/px) of an image that states none (a PNG, an array); a stated pixel size is
        never replaced (a different value is refused).

    A model without a classification module (the shipped nucleus module) gives features and
    nucleus maps only: ``class_names`` is empty and ``class_map`` marks processed tiles 0.
    """
    reader, path = _open_source(source)
    owned = isinstance(source, str | os.PathLike)
    try:
        yield from _iter_tiles(reader, path, model, tile_size, roi, mpp, batch_size, tissue_only, min_tissue,
                               keep_tile, maps_store, image_mpp)
    finally:
        if owned and hasattr(reader, "close"):
            reader.close()


def _iter_tiles(reader, path, model, tile_size, roi, mpp, batch_size, tissue_only,
                min_tissue, keep_tile=None, maps_store=None, image_mpp=None) -> Iterator[ClassifyProgress]:
    import pandas as pd

    tile = int(tile_size or getattr(model.config, "tile_size", 224))
    if tile < 16:
        raise HistoError(f"tile size must be at least 16 px, got {tile}")
    mpp = mpp if mpp is not None else getattr(model.config, "mpp", None)
    level0_mpp = None
    if mpp is not None:
        stated = getattr(reader, "mpp", None)
        if stated is None and image_mpp is None:
            raise HistoError(f"{path or 'image'}: no pixel size stated, and the model works at {mpp} µm/px: give "
                             "the image's pixel size (--image-mpp, µm/px)")
        if stated is not None and image_mpp is not None and abs(float(stated[0]) - image_mpp) > 0.01 * float(stated[0]):
            raise HistoError(f"{path or 'image'}: the file states {float(stated[0]):.4g} µm/px; --image-mpp "
                             f"{image_mpp:g} would replace it")
        level0_mpp = float(stated[0]) if stated is not None else float(image_mpp)
        step = tile * mpp / level0_mpp
    else:
        step = float(tile)
    W, H = reader.dimensions
    x, y, w, h = roi if roi is not None else (0, 0, W, H)
    if w <= 0 or h <= 0:
        raise HistoError(f"empty region of interest {roi!r}")
    cols, rows = max(1, int(np.ceil(w / step))), max(1, int(np.ceil(h / step)))
    predict, names = _model_fns(model)
    total = rows * cols
    class_map = np.full((rows, cols), -1, np.int16)
    probs = np.full((rows, cols, len(names)), np.nan, np.float32)
    records: list[dict[str, Any]] = []
    feats: list[np.ndarray] = []
    pending: list[tuple[int, int, np.ndarray, float]] = []
    seg_names = list(getattr(model.config, "seg_class_names", []) or []) or [
        f"nucleus class {i + 1}" for i in range(int(getattr(model.config, "num_seg_classes", 7)))]
    store = None
    if maps_store is not None:
        store = NucleusMapStore(maps_store, rows, cols, tile, origin=(int(x), int(y)), level0_per_px=step / tile,
                                class_names=seg_names, mpp=mpp)

    def flush() -> None:
        p, f, seg, cls = predict(np.stack([t[2] for t in pending]))
        for i, ((r, c, _, frac), fi) in enumerate(zip(pending, f)):
            x0, y0 = x + c * step, y + r * step
            rec = {"row": r, "col": c, "x0": int(round(x0)), "y0": int(round(y0)),
                   "x1": int(round(x0 + step)), "y1": int(round(y0 + step)), "tissue_fraction": frac}
            # nucleus composition of the tile: fraction of nucleus pixels, and each class's share of them
            nucleus = seg[i] >= 0.5
            rec["nucleus_fraction"] = float(nucleus.mean())
            shares = np.bincount(cls[i].argmax(0)[nucleus], minlength=len(seg_names)) / max(int(nucleus.sum()), 1)
            rec.update({f"nuclei_{name}": float(v) for name, v in zip(seg_names, shares)})
            if p is not None:
                k = int(p[i].argmax())
                class_map[r, c] = k
                probs[r, c] = p[i]
                rec.update({"class": k, "class_name": names[k]})
                rec.update({f"prob_{n}": float(v) for n, v in zip(names, p[i])})
            else:
                class_map[r, c] = 0
            if store is not None:
                store.write(r, c, seg[i], cls[i])
            records.append(rec)
            feats.append(fi)
        pending.clear()

    done = 0
    for r in range(rows):
        for c in range(cols):
            loc = (int(round(x + c * step)), int(round(y + r * step)))
            if mpp is not None:
                rgb = reader.read_region(loc, (tile, tile), level0_mpp / mpp, units="baseline")
            else:
                rgb = reader.read_region(loc, (tile, tile), 0, units="level")
            frac = tissue_fraction(rgb, step=1)
            box = (x + c * step, y + r * step, x + (c + 1) * step, y + (r + 1) * step)
            if not tissue_only or frac >= min_tissue or (keep_tile is not None and keep_tile(box)):
                pending.append((r, c, rgb, frac))
                if len(pending) >= batch_size:
                    flush()
            done += 1
            yield ClassifyProgress(done, total)
    if pending:
        flush()
    if store is not None:
        store.close()
    df = pd.DataFrame.from_records(records)
    if feats:
        fmat = np.stack(feats).astype(np.float32)
        df = pd.concat([df, pd.DataFrame(fmat, columns=[f"f{i}" for i in range(fmat.shape[1])])], axis=1)
    df.attrs.update(class_names=names, tile_size=tile, tile_step_level0=step, origin=[int(x), int(y)],
                    mpp=mpp, source=path)
    result = TileClassification(class_map, probs, df, names, (int(x), int(y)), step, tile, mpp, path)
    yield ClassifyProgress(total, total, result)


def classify_tiles(slide_or_rgb, model, tile_size: int | None = None,
                   roi: tuple[int, int, int, int] | None = None, **kwargs):
    """Classify a tile grid and return ``(class_map, features DataFrame)``.

    Same parameters as :func:`iter_classify_tiles` (which yields progress); see the module
    docstring for the outputs.
    """
    result = None
    for event in iter_classify_tiles(slide_or_rgb, model, tile_size, roi, **kwargs):
        result = event.result
    assert result is not None
    return result.class_map, result.features


def feature_columns(df) -> list[str]:
    """The model-feature columns ``f0 .. f{F-1}`` of a features table, in order."""
    return [c for c in df.columns if isinstance(c, str) and c.startswith("f") and c[1:].isdigit()]


def apply_head(result: TileClassification, head) -> TileClassification:
    """The result classified by a few-shot head (:class:`~napari_histo.models.tissue_maps.TissueHead`)
    on its features: new class map, probabilities and ``class``/``prob_*`` columns."""
    import pandas as pd

    df = result.features.copy()
    df.attrs = dict(result.features.attrs)
    names = list(head.class_names)
    feature_cols = feature_columns(df)
    old = [c for c in df.columns if c in ("class", "class_name") or (isinstance(c, str) and c.startswith("prob_"))]
    df = df.drop(columns=old)
    rows, cols = result.class_map.shape
    class_map = np.full((rows, cols), -1, np.int16)
    probs = np.full((rows, cols, len(names)), np.nan, np.float32)
    if len(df):
        if len(feature_cols) != len(head.mean):
            raise HistoError(f"the tissue head expects {len(head.mean)} features, the model gives {len(feature_cols)}: "
                             "fit it with the same model")
        p = head.predict_proba(df[feature_cols].to_numpy())
        k = p.argmax(1)
        class_map[df["row"].to_numpy(), df["col"].to_numpy()] = k
        probs[df["row"].to_numpy(), df["col"].to_numpy()] = p
        extra = pd.DataFrame({"class": k, "class_name": [names[i] for i in k],
                              **{f"prob_{n}": p[:, j] for j, n in enumerate(names)}}, index=df.index)
        df = pd.concat([df.iloc[:, :6], extra, df.iloc[:, 6:]], axis=1)
    df.attrs["class_names"] = names
    return TileClassification(class_map, probs, df, names, result.origin, result.step_level0, result.tile_size,
                              result.mpp, result.source, head)


def class_map_rgb(class_map: np.ndarray, n_classes: int, scale: int = 1) -> np.ndarray:
    """Colour image of a class map (one colour per class, white for skipped tiles)."""
    palette = class_palette(n_classes)
    out = np.full(class_map.shape + (3,), 255, np.uint8)
    valid = class_map >= 0
    out[valid] = palette[class_map[valid]]
    if scale > 1:
        out = out.repeat(scale, 0).repeat(scale, 1)
    return out


def class_palette(n: int) -> np.ndarray:
    """n distinct RGB colours (tab10-like first, then evenly spaced hues)."""
    base = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    cols = list(base[:n])

    for i in range(len(cols), n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.9)
        cols.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.asarray(cols, np.uint8).reshape(-1, 3)


def load_tile_classifier(weights: str | os.PathLike | None = None, device: str | None = None):
    """A DeepCMorph model from a folder, a released name (COMBINED, TCGA, ...) or a checkpoint.

    Without ``weights``, the nucleus module shipped in ``resources/weights/deepcmorph_nuclei``
    (trained by this project; nucleus maps and features, no tissue classes of its own).
    """
    from napari_histo.models.deepcmorph.model import load_deepcmorph

    if weights is None:
        shipped = resource_path("weights", SHIPPED_NUCLEUS_MODULE)
        if not (Path(shipped) / "config.json").is_file():
            raise HistoError(f"the shipped DeepCMorph nucleus module is missing ({shipped}); reinstall "
                             "napari-histo or pass --weights FOLDER or a released name")
        weights = shipped
    return load_deepcmorph(weights, choose_device(device))


def type_nuclei(table, rgb: np.ndarray, model, **kwargs):
    """Add label-completion type columns to a nucleus table (see ``type_table``)."""
    return type_table(table, rgb, model, **kwargs)
