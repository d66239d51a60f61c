"""Few-shot tissue maps: classes learnt from a few annotated regions, applied to every tile.

What QuPath users do with a pixel classifier, with DeepCMorph features instead of hand-made
filters. The user outlines a few regions per class (tumour, stroma, necrosis ...) in napari or in
QuPath/Sedeen/ImageScope; :func:`iter_tissue_map` extracts the model's features of every tissue
tile and of every tile inside a region, fits a :class:`TissueHead` on the tiles whose centre lies
in a region, and classifies every tile.

The head is a multinomial logistic regression on standardised features (L2-penalised, fitted
to convergence with L-BFGS). With tens of labelled tiles per class and a few hundred feature
dimensions a linear model is what the data support: it cannot memorise the way a deeper head
would, it is convex (the same regions always give the same head), and its probabilities are
calibrated enough to show as confidence. This is the linear-probe protocol used to evaluate
self-supervised pathology features (e.g. Kang et al., "Benchmarking self-supervised learning on
diverse pathology datasets", CVPR 2023).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.formats._common import Annotation
from napari_histo.utils import HistoError, atomic_path

# Lazy imports: torch, shapely and the classification module are imported inside the functions
# that use them: importing this module stays light for the CLI and the napari manifest.

#: The tile column names of a features table (see ``napari_histo.models.classification``).
BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def _box_centres(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the centres of (N, 4) ``x0, y0, x1, y1`` boxes."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2


@dataclass
class TissueHead:
    """A fitted few-shot classifier: standardisation + multinomial logistic regression.

    Attributes
    ----------
    class_names : list[str]
        Class of each output, in the order of ``weight``'s rows.
    mean, scale : list[float]
        Feature standardisation fitted on the training tiles.
    weight : list[list[float]]
        (C, F) coefficients; ``bias`` (C,) intercepts.
    l2 : float
        Penalty the head was fitted with (chosen by cross-validation unless given).
    train_tiles : dict[str, int]
        Training tiles per class.
    """

    class_names: list[str]
    mean: list[float]
    scale: list[float]
    weight: list[list[float]]
    bias: list[float]
    l2: float = 1e-2
    train_tiles: dict[str, int] = field(default_factory=dict)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, C) class probabilities of (N, F) features."""
        x = (np.asarray(features, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = x @ np.asarray(self.weight).T + np.asarray(self.bias)
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(1, keepdims=True)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "napari-histo tissue head", "class_names": self.class_names, "mean": self.mean,
                "scale": self.scale, "weight": self.weight, "bias": self.bias, "l2": self.l2,
                "train_tiles": self.train_tiles}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the head as JSON (atomically), to reuse it on other slides."""
        path = Path(path)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TissueHead:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**{k: raw[k] for k in ("class_names", "mean", "scale", "weight", "bias")},
                       l2=float(raw.get("l2", 1e-2)), train_tiles=dict(raw.get("train_tiles", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HistoError(f"{path}: not a tissue head written by napari-histo ({exc})") from exc


#: Penalties tried when ``l2="auto"`` (weakest to strongest).
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Most cross-validation folds :func:`choose_l2` makes (more groups are dealt to this many folds).
MAX_FOLDS = 10


def choose_l2(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_classes: int,
              grid: Sequence[float] = L2_GRID) -> float:
    """The penalty of ``grid`` with the lowest held-out log-loss, leaving out one group at a time.

    Groups are what is correlated inside (tiles of one outlined region, images of one patient):
    leaving out single tiles would reward memorising a region. Folds whose training part lacks a
    class are skipped; without any usable fold the middle of the grid is returned. Ties go to the
    stronger penalty.
    """
    groups = np.asarray(groups)
    distinct = np.unique(groups)
    if len(distinct) > MAX_FOLDS:  # whole groups dealt to MAX_FOLDS folds (a region never split)
        order = np.random.default_rng(0).permutation(len(distinct))
        fold_of = dict(zip(distinct.tolist(), (order % MAX_FOLDS).tolist()))
        groups = np.array([fold_of[g] for g in groups.tolist()])
    folds = [g for g in np.unique(groups)
             if len(np.unique(labels[groups != g])) == n_classes]
    if not folds:
        return float(grid[len(grid) // 2])
    losses = []
    names = [str(k) for k in range(n_classes)]
    for l2 in grid:
        total, count = 0.0, 0
        for g in folds:
            test = groups == g
            p = _fit(features[~test], labels[~test], names, l2).predict_proba(features[test])
            total -= float(np.log(np.clip(p[np.arange(int(test.sum())), labels[test]], 1e-9, 1)).sum())
            count += int(test.sum())
        losses.append(total / count)
    best = min(losses)
    return float([l2 for l2, loss in zip(grid, losses) if loss <= best + 1e-9][-1])


def _fit(x: np.ndarray, y: np.ndarray, class_names: Sequence[str], l2: float, max_iter: int = 500) -> TissueHead:
    """Standardisation + multinomial logistic regression fitted on (x, y), as a :class:`TissueHead`."""
    import torch

    n_classes = len(class_names)
    x = np.asarray(x, np.float64)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-8] = 1.0
    xs = torch.from_numpy((x - mean) / scale)
    yt = torch.from_numpy(np.asarray(y, np.int64))
    # Classes weighted by inverse frequency: a class outlined more generously does not win by area.
    cw = torch.from_numpy(np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0))
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w.T + b, yt, weight=cw) + l2 * (w * w).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return TissueHead(list(class_names), mean.tolist(), scale.tolist(), w.detach().numpy().tolist(),
                      b.detach().numpy().tolist(), float(l2),
                      {n: int(c) for n, c in zip(class_names, counts)})


def fit_tissue_head(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                    l2: float | str = "auto", groups: np.ndarray | None = None, max_iter: int = 500) -> TissueHead:
    """Fit a :class:`TissueHead` on labelled tiles.

    Parameters
    ----------
    features : (N, F) array
    labels : (N,) int
        Index into ``class_names`` per tile.
    class_names : sequence of str
        At least two classes, each with at least one tile.
    l2 : float or "auto"
        Penalty on the mean squared coefficient (standardised features), added to the mean
        cross-entropy. "auto" picks it from :data:`L2_GRID` by :func:`choose_l2` over ``groups``
        (the regions the tiles came from; each tile its own group when None): few tiles need a
        strong penalty, many tiles a weak one.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    names = list(class_names)
    counts = np.bincount(y, minlength=len(names)) if len(y) else np.zeros(len(names), int)
    empty = [n for n, c in zip(names, counts) if c == 0]
    if len(names) < 2 or empty:
        raise HistoError("a tissue map needs tiles of at least two classes"
                         + (f"; no tile lies inside a region of {', '.join(map(repr, empty))}" if empty else ""))
    if l2 == "auto":
        if groups is None:  # no regions known: five folds of single tiles
            groups = np.random.default_rng(0).permutation(len(y)) % 5
        l2 = choose_l2(x, y, np.asarray(groups), len(names))
    return _fit(x, y, names, float(l2), max_iter)


@dataclass
class TrainingRegions:
    """Regions per class (level-0 px) that label the tiles a head is fitted on."""

    classes: list[str]
    geometries: list[Any]  # one shapely geometry per class (union of its regions)

    @classmethod
    def from_annotations(cls, annotations: Sequence[Annotation], classes: Sequence[str] | None = None
                         ) -> TrainingRegions:
        """Group polygon annotations by class name; ``classes`` keeps only (and orders) those."""
        import shapely

        by_class: dict[str, list[Any]] = {}
        for ann in annotations:
            geom = ann.geometry
            if geom is None or geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
                continue
            name = (ann.class_name or ann.name or "").strip()
            if not name:
                continue
            spelled = next((k for k in by_class if k.lower() == name.lower()), name)  # one class, any case
            by_class.setdefault(spelled, []).append(shapely.make_valid(geom))
        lower = {k.lower(): k for k in by_class}
        if classes:
            missing = [c for c in classes if c.lower() not in lower]
            if missing:
                raise HistoError(f"no region of class {', '.join(map(repr, missing))}; the regions' classes: "
                                 f"{', '.join(sorted(by_class)) or '(none)'}")
            chosen = [lower[c.lower()] for c in classes]
        else:
            chosen = sorted(by_class)
        return cls(chosen, [shapely.union_all(by_class[c]) for c in chosen])

    @classmethod
    def from_file(cls, path: str | os.PathLike, classes: Sequence[str] | None = None) -> TrainingRegions:
        """Regions of an annotation file (QuPath GeoJSON, Sedeen, ImageScope, ASAP)."""
        from napari_histo.formats.auto import read_regions

        regions = cls.from_annotations(read_regions(path), classes)
        if len(regions.classes) < 2:
            raise HistoError(f"{path}: a tissue map needs regions of at least two classes; found "
                             f"{', '.join(map(repr, regions.classes)) or 'none with a class name'}")
        return regions

    def label_tiles(self, boxes: np.ndarray) -> np.ndarray:
        """Class index of each (x0, y0, x1, y1) tile whose centre lies in a region; -1 elsewhere.

        A centre inside regions of two classes is left unlabelled (ambiguous).
        """
        import shapely

        cx, cy = _box_centres(boxes)
        labels = np.full(len(cx), -1, np.int64)
        hits = np.zeros(len(cx), np.int64)
        for k, geom in enumerate(self.geometries):
            inside = shapely.contains_xy(geom, cx, cy)
            labels[inside] = k
            hits += inside
        labels[hits > 1] = -1
        return labels

    def region_ids(self, boxes: np.ndarray) -> np.ndarray:
        """Which outlined region (one connected part of a class's regions) holds each tile's centre;
        -1 outside. Tiles of one region are alike, so cross-validation leaves out whole regions."""
        import shapely

        cx, cy = _box_centres(boxes)
        ids = np.full(len(cx), -1, np.int64)
        k = 0
        for geom in self.geometries:
            for part in shapely.get_parts(geom):
                ids[shapely.contains_xy(part, cx, cy) & (ids < 0)] = k
                k += 1
        return ids

    def contains_box_centre(self, box: tuple[float, float, float, float]) -> bool:
        return bool((self.label_tiles(np.asarray([box])) >= 0).any())


def iter_tissue_map(source, model, regions: TrainingRegions, *, l2: float | str = "auto", **kwargs
                    ) -> Iterator[Any]:
    """Classify every tissue tile with a head fitted on the tiles inside ``regions``.

    Yields :class:`~napari_histo.models.classification.ClassifyProgress` events while the tiles'
    features are extracted (one pass over the image); the final event's ``result`` is a
    :class:`~napari_histo.models.classification.TileClassification` whose classes are the
    regions' classes, whose ``features`` table has a ``region_class`` column (the class of the
    region a training tile lies in, "" elsewhere) and whose ``head`` is the fitted
    :class:`TissueHead`. ``kwargs`` go to
    :func:`~napari_histo.models.classification.iter_classify_tiles` (tile size, roi, mpp,
    batch size, nucleus-map store ...).
    """
    from napari_histo.models.classification import iter_classify_tiles

    last = None
    for event in iter_classify_tiles(source, model, keep_tile=regions.contains_box_centre, **kwargs):
        if event.result is None:
            yield event
        last = event
    assert last is not None and last.result is not None
    yield type(last)(last.done, last.total, fit_tissue_map(last.result, regions, l2=l2))


def fit_tissue_map(features_result, regions: TrainingRegions, *, l2: float | str = "auto"):
    """The tiles of a finished feature pass classified by a head fitted on those inside ``regions``.

    ``features_result`` is the :class:`~napari_histo.models.classification.TileClassification` of
    :func:`~napari_histo.models.classification.iter_classify_tiles`; refitting with other regions
    needs no new pass as long as every tile they cover was processed (:func:`missing_region_tiles`).
    """
    from napari_histo.models.classification import apply_head, feature_columns

    df = features_result.features
    if not len(df):
        raise HistoError("no tile to classify (no tissue found, and no tile inside the regions)")
    feature_cols = feature_columns(df)
    boxes = df[list(BOX_COLUMNS)].to_numpy()
    labels = regions.label_tiles(boxes)
    chosen = labels >= 0
    head = fit_tissue_head(df.loc[chosen, feature_cols].to_numpy(), labels[chosen], regions.classes, l2=l2,
                           groups=regions.region_ids(boxes)[chosen])
    result = apply_head(features_result, head)
    result.features["region_class"] = [regions.classes[k] if k >= 0 else "" for k in labels]
    return result


def missing_region_tiles(features_result, regions: TrainingRegions) -> int:
    """How many grid tiles with their centre in ``regions`` the feature pass did not process."""
    rows, cols = features_result.class_map.shape
    ox, oy = features_result.origin
    step = float(features_result.step_level0)
    r, c = np.mgrid[0:rows, 0:cols]
    boxes = np.stack([ox + c * step, oy + r * step, ox + (c + 1) * step, oy + (r + 1) * step], -1).reshape(-1, 4)
    inside = regions.label_tiles(boxes) >= 0
    done = np.zeros(rows * cols, bool)
    df = features_result.features
    if len(df):
        done[df["row"].to_numpy() * cols + df["col"].to_numpy()] = True
    return int((inside & ~done).sum())


def tile_annotations(result) -> list[Annotation]:
    """One QuPath ``tile`` annotation per classified tile (class name, colour, probability)."""
    import shapely

    from napari_histo.models.classification import class_palette

    palette = class_palette(len(result.class_names))
    df = result.features
    if "class" not in df.columns or not len(df):
        return []
    classes = df["class"].to_numpy().astype(int)
    probs = df[[f"prob_{n}" for n in result.class_names]].to_numpy()[np.arange(len(df)), classes]
    boxes = shapely.box(*df[list(BOX_COLUMNS)].to_numpy().T)
    return [Annotation(box, class_name=result.class_names[k], colour=tuple(int(v) for v in palette[k]),
                       object_type="tile", measurements={"probability": float(p)})
            for box, k, p in zip(boxes, classes, probs)]


def class_run_annotations(result) -> list[Annotation]:
    """The tile map as hole-free rectangles: each row's runs of neighbouring tiles of one class.

    For formats without polygon holes (Sedeen sessions): the union of a class's tiles can enclose
    another class, which an outline alone would paint over. Exact, and far fewer objects than tiles.
    """
    import shapely

    from napari_histo.models.classification import class_palette

    palette = class_palette(len(result.class_names))
    ox, oy = result.origin
    step = float(result.step_level0)
    out = []
    for r, row in enumerate(np.asarray(result.class_map)):
        c = 0
        while c < len(row):
            k = int(row[c])
            end = c + 1
            while end < len(row) and int(row[end]) == k:
                end += 1
            if k >= 0:
                name = result.class_names[k]
                box = shapely.box(round(ox + c * step), round(oy + r * step), round(ox + end * step),
                                  round(oy + (r + 1) * step))
                out.append(Annotation(box, name=name, class_name=name, colour=tuple(int(v) for v in palette[k]),
                                      object_type="annotation", shape="rectangle"))
            c = end
    return out
