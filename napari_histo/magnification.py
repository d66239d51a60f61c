"""Magnification prediction from pixels (Hagnifinder).

:func:`predict_magnification` regresses the objective magnification of an H&E image (level-0
pixels) with the shipped Hagnifinder model: several tissue-rich 224² crops are scored, each
raw output is passed through the model's monotone calibration (``calibration`` in its
``config.json``, fitted on training images only), and the crops are combined by a trimmed mean
in log2-magnification space (robust to one odd crop; relative error is what matters for a
scale). The spread of the calibrated crops is reported as the uncertainty. Slide metadata, when present, is always
authoritative: callers show the prediction next to it, never instead of it.

The model (``resources/weights/hagnifinder``) is loaded once per process; torch is imported
only when a prediction is made.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_histo.utils import HistoError, resource_path

#: Convention used throughout: magnification = 10 / mpp (40x = 0.25 µm/px).
MPP_AT_1X = 10.0
#: Fraction of crops dropped at each end before averaging (at least one each end from 5 crops).
AGGREGATE_TRIM = 0.125


@dataclass(frozen=True)
class MagnificationPrediction:
    """Predicted objective magnification of an image.

    Attributes
    ----------
    magnification
        Trimmed mean of the crops in log2 space (a robust geometric mean), in x (objective power).
    mpp
        The matching pixel size, ``10 / magnification`` µm/px.
    uncertainty
        Standard deviation of the per-crop predictions (0 for a single crop).
    per_crop
        One calibrated prediction per crop.
    """

    magnification: float
    mpp: float
    uncertainty: float
    per_crop: list[float] = field(default_factory=list)


def default_model_dir() -> Path:
    """Folder of the shipped model (``model.pt`` + ``config.json``)."""
    return resource_path("weights", "hagnifinder")


_CACHE: dict[str, tuple[object, object]] = {}
_LOCK = threading.Lock()


def load_model(model_dir: str | Path | None = None):
    """The Hagnifinder network and its config, loaded once per folder and cached (eval mode)."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    key = str(folder.resolve())
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load_uncached(folder)
        return _CACHE[key]


def _load_uncached(folder: Path):
    import torch

    from src_models.hagnifinder.config import HagnifinderConfig
    from src_models.hagnifinder.train import build_model

    weights, cfg_path = folder / "model.pt", folder / "config.json"
    for path in (weights, cfg_path):
        if not path.is_file():
            raise HistoError(f"{path}: Hagnifinder model file missing")
    config = HagnifinderConfig.from_json(cfg_path)
    if config.scale_factor <= 0:
        raise HistoError(f"{cfg_path}: model has no calibrated scale factor (training step 2 not run)")
    model = build_model(config)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return model, config


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 from RGB/RGBA uint8 or float in [0, 1]; raises HistoError otherwise."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise HistoError(f"expected an RGB image (h, w, 3), got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating) and np.nanmax(arr) <= 1.0:
        return (np.clip(np.nan_to_num(arr), 0, 1) * 255 + 0.5).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer) and arr.max() <= 255 and arr.min() >= 0:
        return arr.astype(np.uint8)
    raise HistoError(f"unsupported image dtype {arr.dtype} (expected uint8 RGB)")


def select_crops(rgb: np.ndarray, n_crops: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """``n_crops`` tissue-rich ``size``² crops at native resolution (never resampled).

    Candidates are drawn at random (seeded) and the ones with most tissue kept. An image smaller
    than ``size`` yields one reflection-padded crop.
    """
    from src_models.hagnifinder.data import reflect_pad, tissue_fraction

    h, w = rgb.shape[:2]
    if h < size or w < size:
        return [reflect_pad(rgb, size)]
    rng = np.random.default_rng(seed)
    n_candidates = max(4 * n_crops, 16)
    ys = rng.integers(0, h - size + 1, n_candidates)
    xs = rng.integers(0, w - size + 1, n_candidates)
    crops = [rgb[y:y + size, x:x + size] for y, x in zip(ys, xs)]
    tissue = np.array([tissue_fraction(c) for c in crops])
    order = np.argsort(-tissue, kind="stable")[:n_crops]
    return [np.ascontiguousarray(crops[i]) for i in order]


def predict_magnification(rgb: np.ndarray, n_crops: int = 8, seed: int = 0,
                          model_dir: str | Path | None = None) -> MagnificationPrediction:
    """Predict the objective magnification of ``rgb`` (level-0 pixels of an H&E image).

    Parameters
    ----------
    rgb
        (h, w, 3) uint8 image; at least 224 px per side for a reliable answer, with many nuclei.
    n_crops
        Number of 224² crops combined.
    seed
        Seed of the crop positions (results are deterministic for a given seed).
    model_dir
        Alternative model folder (default: the shipped model).
    """
    import torch

    from src_models.hagnifinder.calibration import aggregate_log, apply_calibration
    from src_models.hagnifinder.data import to_tensor

    if n_crops < 1:
        raise HistoError(f"n_crops must be >= 1, got {n_crops}")
    rgb = as_rgb_uint8(rgb)
    model, config = load_model(model_dir)
    crops = select_crops(rgb, n_crops, config.patch_size, seed)
    with torch.no_grad():
        raw = model(to_tensor(np.stack(crops))).numpy().astype(float)
    preds = apply_calibration(config.calibration, raw)
    mag = float(np.clip(aggregate_log(preds, AGGREGATE_TRIM), 0.5, None))
    spread = float(preds.std(ddof=1)) if preds.size > 1 else 0.0
    return MagnificationPrediction(magnification=mag, mpp=MPP_AT_1X / mag, uncertainty=spread,
                                   per_crop=[float(p) for p in preds])
