"""Magnification prediction from pixels (Hagnifinder).

:func:`predict_magnification` regresses the objective magnification of an H&E image (level-0
pixels) with the shipped Hagnifinder model: several 224² crops in tissue, at random positions
(spread over the image), are scored, each
raw output is passed through the model's monotone calibration (``calibration`` in its
``config.json``, fitted on training images only). With test-time scales (``test_time_scales``
in the config, chosen by source-grouped cross-validation on training images,
:mod:`src_models.hagnifinder.multiscale`) each crop is also scored downsampled by known factors
``k``: the image then shows ``m / k``, so ``k * prediction`` is another estimate of ``m``, and a
crop's estimates are averaged in log2 space. The crops are combined by a trimmed mean in
log2-magnification space (robust to one odd crop; relative error is what matters for a
scale). The spread of the crop estimates is reported as ``uncertainty``; the error that matters,
a new source's bias, is given by a prediction interval (``interval`` in the config, fitted on
out-of-fold errors for training sources, :mod:`src_models.hagnifinder.interval`), and the one
standard objective inside it, if any, as ``scan_objective``. Slide metadata, when
present, is always authoritative: callers show the prediction next to it, never instead of it.

A model that has learned sharpness as a cue sees a soft image (an out-of-focus field, a JPEG,
a screenshot shown enlarged) as a high magnification. When the model's config names a
``softness_check``, a second, blur-invariant model scores the same crops, and where the first
estimate exceeds ``max_ratio`` times the second, the prediction carries a note and the second
estimate (``action`` "warn", the shipped setting) or is replaced by it (``action`` "replace")
(:func:`softness_check`).

The model (``resources/weights/hagnifinder``) is loaded once per process; torch is imported
only when a prediction is made.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_histo.models.hagnifinder.calibration import aggregate_log, apply_calibration
from napari_histo.models.hagnifinder.config import HagnifinderConfig
from napari_histo.models.hagnifinder.images import reflect_pad, to_tensor
from napari_histo.slide import tissue_fraction, tissue_region_origin
from napari_histo.utils import HistoError, resource_path

# Lazy imports: PIL, torch are imported inside the functions that use them (directly or through
# the modules named there): importing this module stays light for the CLI and the napari manifest.

#: Convention used throughout: magnification = 10 / mpp (40x = 0.25 µm/px).
MPP_AT_1X = 10.0
#: Fraction of crops dropped at each end before averaging (at least one each end from 5 crops).
AGGREGATE_TRIM = 0.125
#: Crop selection rules (:func:`select_crop_boxes`); the first is the default.
CROP_RULES = ("spread", "most_tissue")
#: Tissue fraction (:func:`napari_histo.slide.tissue_fraction`) a crop needs to be
#: taken in the order drawn by the ``"spread"`` rule.
MIN_CROP_TISSUE = 0.5
#: Tissue fraction the most tissue-rich crop needs for a prediction: below it the image is
#: background (a blank field, a label, a uniform fill) and no magnification can be read from it.
MIN_IMAGE_TISSUE = 0.1
#: Lowest magnification a crop is downsampled to for the multi-scale estimate (model range 5-40x).
MIN_SCALED_MAG = 5.0
#: Objective powers of scanners and microscopes in the model's range (x): an image that kept its
#: scan resolution was taken at one of these.
STANDARD_OBJECTIVES = (5.0, 10.0, 20.0, 40.0)


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
        One calibrated prediction per crop (with test-time scales: the crop's combined estimate).
    note
        Empty, or why the estimate is less certain than ``uncertainty`` says (e.g. the image is
        softer than the scans the model was trained on).
    blur_invariant
        The blur-invariant companion's estimate when the model has a softness check, else None.
    interval
        (low, high) in x: where the true magnification lies with probability ``interval_level``,
        from the model's errors on source images it never saw (scanner, stain and tissue bias,
        which the crop spread does not show); None when the model has no fitted interval. When
        the softness check fires, it spans the intervals of both models' estimates.
    interval_level
        Nominal coverage of ``interval`` (e.g. 0.9).
    """

    magnification: float
    mpp: float
    uncertainty: float
    per_crop: list[float] = field(default_factory=list)
    note: str = ""
    blur_invariant: float | None = None
    interval: tuple[float, float] | None = None
    interval_level: float | None = None

    @property
    def consistent_objectives(self) -> tuple[float, ...]:
        """Standard objective powers inside the interval: for an image at its scan resolution,
        the objective it was most likely scanned with when exactly one is left."""
        if self.interval is None:
            return ()
        low, high = self.interval
        return tuple(m for m in STANDARD_OBJECTIVES if low <= m <= high)

    @property
    def scan_objective(self) -> float | None:
        """The one standard objective inside the interval, else None: what an image kept at its
        scan resolution (a converted or exported scan) was most likely scanned with."""
        objectives = self.consistent_objectives
        return objectives[0] if len(objectives) == 1 else None


#: Notes of a prediction the blur-invariant companion contradicts (:func:`softness_check`).
SOFT_IMAGE_WARNING = ("image softer than the training scans (blur, compression or enlargement): "
                      "this estimate may be too high; the blur-invariant estimate is {:.1f}x")
SOFT_IMAGE_NOTE = ("image softer than the training scans (blur, compression or enlargement): "
                   "estimate from structure size by the blur-invariant model, less precise")
#: Shorter side (px) below which an image is refused, and below which its estimate carries a note.
#: Measured on held-out scans cut to squares (``benchmarks/bench_small_images.py``): within ±5x
#: for 83 % at 32 px, 91 % at 48 px, 95-98 % from 64 px; the median error doubles below 128 px.
MIN_IMAGE_SIDE = 48
SMALL_IMAGE_SIDE = 128
SMALL_IMAGE_NOTE = ("small image ({} x {} px): estimated from one padded crop, less certain than from an "
                    "image of at least 128 px a side")
#: What a softness check does when it fires: keep the estimate with a note, or replace it.
SOFTNESS_ACTIONS = ("warn", "replace")


@dataclass(frozen=True)
class SoftnessCheck:
    """The blur-invariant companion of a model (``softness_check`` in its config)."""

    model: object
    config: object
    max_ratio: float
    action: str = "warn"


def softness_check(estimate, blur_invariant, max_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Replace estimates that exceed ``max_ratio`` times the blur-invariant model's.

    Blur never enlarges structures, so a blur-invariant estimate far below the main model's
    means the image is softer than the main model's training scans, which it reads as a higher
    magnification. Returns (estimates, replaced mask); works on scalars or arrays.
    """
    est = np.asarray(estimate, float)
    inv = np.asarray(blur_invariant, float)
    replaced = est > max_ratio * inv
    return np.where(replaced, inv, est), replaced


def prediction_interval(estimate: float, interval: dict) -> tuple[float, float]:
    """(low, high) magnification (x) around ``estimate`` from a fitted interval spec.

    The spec (``interval`` in the model's config, :mod:`src_models.hagnifinder.interval`) holds
    quantile lines of the log2 residual ``log2(true / estimate)`` in ``x = log2(estimate)``,
    ``x`` clipped to the range they were fitted on (no extrapolation of the slope).
    """
    log_est = float(np.log2(max(float(estimate), 1e-6)))
    x = float(np.clip(log_est, *interval["log2_estimate_range"]))
    low = log_est + interval["low"]["intercept"] + interval["low"]["slope"] * x
    high = log_est + interval["high"]["intercept"] + interval["high"]["slope"] * x
    return float(2.0 ** min(low, log_est)), float(2.0 ** max(high, log_est))


def spanning_interval(estimates, interval: dict) -> tuple[float, float]:
    """The smallest (low, high) holding every estimate's :func:`prediction_interval`: where two
    models disagree (a firing softness check), the true value may lie near either estimate."""
    bounds = np.array([prediction_interval(max(float(e), 0.5), interval) for e in estimates])
    return float(bounds[:, 0].min()), float(bounds[:, 1].max())


def interval_text(prediction: MagnificationPrediction) -> str:
    """One line for users: the interval and, when only one fits, the standard objective
    (e.g. "90 % interval 14.2–26.2x; of the standard objectives only 20x fits"); "" without one."""
    if prediction.interval is None:
        return ""
    low, high = prediction.interval
    text = f"{100 * (prediction.interval_level or 0):.0f} % interval {low:.1f}–{high:.1f}x"
    if prediction.scan_objective is not None:
        text += f"; of the standard objectives only {prediction.scan_objective:g}x fits"
    return text


#: How a level-0 pixel size is found for a file that may not state one (:func:`pixel_size_for`).
MPP_CHOICES = ("predict", "objective")


def pixel_size_for(slide, how: str) -> tuple[float | None, dict]:
    """Level-0 µm/px for ``slide`` when its file states none; ``(None, record)`` when it does.

    ``how``: ``"predict"`` uses the predicted magnification; ``"objective"`` the one standard
    objective inside the prediction interval (for a converted scan at its scan resolution) and
    raises :class:`HistoError` when none or several fit. The file's own pixel size always wins:
    then the mpp is None (the caller keeps the metadata) and nothing is predicted. ``record`` says
    where the value came from, for a run's provenance.
    """
    if how not in MPP_CHOICES:
        raise HistoError(f"unknown pixel-size source {how!r} (one of {MPP_CHOICES})")
    if getattr(slide, "mpp", None) is not None:
        return None, {"mpp_source": "metadata"}
    prediction = predict_slide_magnification(slide)
    record = {"mpp_source": "predicted" if how == "predict" else "predicted (standard objective)",
              "predicted_magnification": round(prediction.magnification, 3),
              "interval": [round(v, 3) for v in prediction.interval] if prediction.interval else None,
              "interval_level": prediction.interval_level,
              "scan_objective": prediction.scan_objective, "note": prediction.note}
    if how == "predict":
        return prediction.mpp, record
    if prediction.scan_objective is None:
        raise HistoError(f"no single standard objective fits the predicted "
                         f"{prediction.magnification:.1f}x ({interval_text(prediction) or 'no interval'}); "
                         "give --mpp VALUE, or --mpp predict to use the estimate")
    return MPP_AT_1X / prediction.scan_objective, record


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
            _CACHE[key] = read_model_folder(folder)
        return _CACHE[key]


def read_model_folder(folder: str | Path):
    """(network in eval mode, config) read from ``model.pt`` + ``config.json``, not cached
    (:func:`load_model` caches); a clear error names a missing or unusable file."""
    import torch

    from napari_histo.models.hagnifinder.model import build_model

    folder = Path(folder)
    weights, cfg_path = folder / "model.pt", folder / "config.json"
    for path in (weights, cfg_path):
        if not path.is_file():
            raise HistoError(f"{path}: Hagnifinder model file missing")
    config = HagnifinderConfig.load(cfg_path)
    if config.scale_factor <= 0:
        raise HistoError(f"{cfg_path}: model has no calibrated scale factor (training step 2 not run)")
    model = build_model(config)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    check = config.softness_check
    if check:
        try:
            companion, companion_config = read_model_folder(folder / str(check["model"]))
            ratio = float(check["max_ratio"])
            action = str(check.get("action", "warn"))
            if action not in SOFTNESS_ACTIONS:
                raise ValueError(f"action {action!r} is not one of {SOFTNESS_ACTIONS}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HistoError(f"{cfg_path}: softness_check must be {{'model': SUBFOLDER, 'max_ratio': R, "
                             f"'action': 'warn' | 'replace'}} ({exc})") from exc
        # plain attribute, not a submodule: the main state dict stays as trained
        object.__setattr__(model, "softness", SoftnessCheck(companion, companion_config, ratio, action))
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


def select_crop_boxes(rgb: np.ndarray, n_crops: int, size: int = 224, seed: int = 0,
                      rule: str = "spread") -> list[tuple[int, int]]:
    """Top-left (y, x) of ``n_crops`` ``size``² crops in tissue (see :func:`select_crops`).

    ``max(4 * n_crops, 16)`` candidate positions are drawn at random (seeded). ``rule``:

    - ``"spread"`` (default): the candidates with at least :data:`MIN_CROP_TISSUE` tissue in
      the order drawn (random positions, so spread over the image), completed by the most
      tissue-rich of the others;
    - ``"most_tissue"``: the candidates with most tissue (the rule before; less accurate in
      source-grouped cross-validation on training images, ``src_models.hagnifinder.multiscale``).
    """
    if rule not in CROP_RULES:
        raise ValueError(f"unknown crop rule {rule!r} (one of {CROP_RULES})")
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    n_candidates = max(4 * n_crops, 16)
    ys = rng.integers(0, h - size + 1, n_candidates)
    xs = rng.integers(0, w - size + 1, n_candidates)
    tissue = np.array([tissue_fraction(rgb[y:y + size, x:x + size]) for y, x in zip(ys, xs)])
    by_tissue = np.argsort(-tissue, kind="stable")
    if rule == "most_tissue":
        order = by_tissue
    else:
        enough = tissue >= MIN_CROP_TISSUE
        order = np.concatenate([np.flatnonzero(enough), by_tissue[~enough[by_tissue]]])
    return [(int(ys[i]), int(xs[i])) for i in order[:n_crops]]


def select_crops(rgb: np.ndarray, n_crops: int, size: int = 224, seed: int = 0,
                 rule: str = "spread") -> list[np.ndarray]:
    """``n_crops`` ``size``² crops in tissue at native resolution (never resampled).

    Candidates are drawn at random (seeded) and chosen by ``rule`` (:func:`select_crop_boxes`).
    An image smaller than ``size`` yields one reflection-padded crop.
    """
    h, w = rgb.shape[:2]
    if h < size or w < size:
        return [reflect_pad(rgb, size)]
    return _crops_at(rgb, select_crop_boxes(rgb, n_crops, size, seed, rule), size)


def _crops_at(rgb: np.ndarray, boxes: list[tuple[int, int]], size: int) -> list[np.ndarray]:
    """The ``size``² crops of ``rgb`` whose top-left corners (y, x) are ``boxes``."""
    return [np.ascontiguousarray(rgb[y:y + size, x:x + size]) for y, x in boxes]


def scaled_crop(rgb: np.ndarray, center: tuple[float, float], size: int, factor: float) -> np.ndarray:
    """The ``size``² crop of ``rgb`` downsampled by ``factor`` (>= 1) around ``center`` (y, x).

    The field of ``round(size * factor)`` source px is kept inside the image (shifted, never
    padded: callers only ask for fields that fit) and area-averaged (box filter) to ``size``,
    the way the training fields were made. The crop shows the image at magnification
    ``m / factor`` when ``rgb`` is at ``m``.
    """
    from PIL import Image

    h, w = rgb.shape[:2]
    field_px = int(round(size * factor))
    if field_px > min(h, w):
        raise ValueError(f"a {field_px} px field does not fit in a {w}x{h} image")
    y0 = int(np.clip(round(center[0] - field_px / 2), 0, h - field_px))
    x0 = int(np.clip(round(center[1] - field_px / 2), 0, w - field_px))
    field_rgb = np.ascontiguousarray(rgb[y0:y0 + field_px, x0:x0 + field_px])
    if field_px == size:
        return field_rgb
    return np.asarray(Image.fromarray(field_rgb).resize((size, size), Image.Resampling.BOX))


def usable_scales(first_estimate: float, shape: tuple[int, ...], scales, size: int = 224,
                  min_mag: float = MIN_SCALED_MAG) -> list[float]:
    """Downsampling factors usable for an image of ``shape`` first estimated at ``first_estimate``.

    Factor 1 always; a factor ``k > 1`` when the downsampled image stays at or above
    ``min_mag`` (``first_estimate / k >= min_mag``, the bottom of the model's range) and its
    ``round(size * k)`` px field fits in the image (no padding).
    """
    out = [1.0]
    for k in sorted({float(k) for k in scales if k > 1.0}):
        if first_estimate / k >= min_mag - 1e-9 and int(round(size * k)) <= min(shape[:2]):
            out.append(k)
    return out


def combine_scales(per_scale: dict[float, np.ndarray]) -> np.ndarray:
    """Per-crop estimates of the image's magnification from predictions at known downsamplings.

    ``per_scale[k]`` holds the calibrated predictions (x) of the crops downsampled by ``k``:
    each estimates ``m / k``, so ``k * prediction`` estimates ``m``. The estimates of one crop
    are averaged in log2 space (a geometric mean): ``exp2(mean_k(log2 p_k + log2 k))``.
    """
    logs = [np.log2(np.clip(np.asarray(p, float), 1e-6, None)) + np.log2(k)
            for k, p in per_scale.items()]
    if not logs:
        raise ValueError("no predictions to combine")
    return np.exp2(np.mean(np.stack(logs), axis=0))


def predict_magnification(rgb: np.ndarray, n_crops: int = 8, seed: int = 0,
                          model_dir: str | Path | None = None) -> MagnificationPrediction:
    """Predict the objective magnification of ``rgb`` (level-0 pixels of an H&E image).

    Each crop is scored, calibrated, and, when the model's config lists test-time scales,
    scored again downsampled by those known factors ``k`` (each then estimates ``m / k``); a
    crop's estimate is the log2 mean of ``k * prediction`` (:func:`combine_scales`), and the
    image's the trimmed log2 mean of its crops.

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
    model, config = load_model(model_dir)
    return predict_with_model(model, config, rgb, n_crops, seed)


#: Side of the level-0 window on a slide's densest tissue that its magnification is predicted
#: from (every front end: the CLI, the panels, ``segment --mpp predict``).
SLIDE_REGION_PX = 2048


def slide_prediction_region(slide, region_size: int = SLIDE_REGION_PX
                            ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(RGB, (x, y, w, h)) of the level-0 window of at most ``region_size``² centred on the
    slide's densest tissue (:func:`napari_histo.slide.tissue_region_origin`)."""

    w0, h0 = slide.dimensions
    x, y = tissue_region_origin(slide, region_size)
    region = (x, y, min(region_size, w0), min(region_size, h0))
    rgb = slide.read_region(region[:2], region[2:], 0, "level")
    return np.asarray(rgb)[..., :3], region


def predict_slide_magnification(slide, n_crops: int = 8, seed: int = 0,
                                region_size: int = SLIDE_REGION_PX) -> MagnificationPrediction:
    """Predict the magnification of a :class:`~napari_histo.slide.Slide` from the window of
    :func:`slide_prediction_region`.

    Only a prediction: the slide's ``mpp`` and ``objective_power`` keep the file's metadata.
    """
    rgb, _ = slide_prediction_region(slide, region_size)
    return predict_magnification(rgb, n_crops=n_crops, seed=seed)


def effective_mpp(slide, allow_prediction: bool = False) -> tuple[tuple[float, float] | None, str]:
    """(mpp, source) of a slide: its metadata when stated ("metadata"), else a prediction
    ("predicted") if allowed, else (None, "unknown"). Nothing is predicted when mpp is known."""
    if slide.mpp is not None:
        return slide.mpp, "metadata"
    if not allow_prediction:
        return None, "unknown"
    prediction = predict_slide_magnification(slide)
    return (float(prediction.mpp), float(prediction.mpp)), "predicted"


def predict_with_model(model, config, rgb: np.ndarray, n_crops: int = 8, seed: int = 0,
                       scales=None, crop_rule: str = "spread") -> MagnificationPrediction:
    """:func:`predict_magnification` with a loaded ``(model, config)``.

    ``scales`` overrides the config's ``test_time_scales`` (e.g. ``(1.0, 1.2)``, to compare
    with the shipped estimate); ``crop_rule`` is the crop selection (:func:`select_crop_boxes`).
    """
    import torch

    if n_crops < 1:
        raise HistoError(f"n_crops must be >= 1, got {n_crops}")
    rgb = as_rgb_uint8(rgb)
    size = config.patch_size
    if scales is None:
        scales = tuple(config.test_time_scales) or (1.0,)

    def calibrated(crops: list[np.ndarray], net=model, cfg=config) -> np.ndarray:
        with torch.no_grad():
            raw = net(to_tensor(np.stack(crops))).numpy().astype(float)
        return apply_calibration(cfg.calibration, raw)

    h, w = rgb.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise HistoError(f"the image is {w} x {h} px; predicting a magnification needs at least "
                         f"{MIN_IMAGE_SIDE} px a side (a few nuclei)")
    small = h < size or w < size  # one reflection-padded crop
    boxes = [] if small else select_crop_boxes(rgb, n_crops, size, seed, crop_rule)
    crops = select_crops(rgb, n_crops, size, seed, crop_rule) if small else _crops_at(rgb, boxes, size)
    tissue = max(tissue_fraction(c) for c in crops)
    if tissue < MIN_IMAGE_TISSUE:
        raise HistoError(f"too little tissue to predict the magnification (the best {size}² crop is "
                         f"{100 * tissue:.0f} % tissue; at least {100 * MIN_IMAGE_TISSUE:.0f} % is needed)")
    preds = calibrated(crops)
    if not small:
        extra = usable_scales(aggregate_log(preds, AGGREGATE_TRIM), rgb.shape, scales, size,
                              config.min_scaled_mag)[1:]
        if extra:
            centres = [(y + size / 2, x + size / 2) for y, x in boxes]
            scaled = calibrated([scaled_crop(rgb, c, size, k) for k in extra for c in centres])
            per_scale = {1.0: preds, **{k: scaled[i * len(boxes):(i + 1) * len(boxes)]
                                        for i, k in enumerate(extra)}}
            preds = combine_scales(per_scale)
    estimate = aggregate_log(preds, AGGREGATE_TRIM)
    estimates = [estimate]  # with a firing softness check: both models' estimates
    note, invariant_mag = "", None
    check = getattr(model, "softness", None)
    if check is not None:
        invariant = calibrated(crops, check.model, check.config)
        invariant_mag = float(aggregate_log(invariant, AGGREGATE_TRIM))
        _, fired = softness_check(estimate, invariant_mag, check.max_ratio)
        if fired:
            estimates.append(invariant_mag)
        if fired and check.action == "replace":
            preds, note = invariant, SOFT_IMAGE_NOTE
            estimate = invariant_mag
        elif fired:
            note = SOFT_IMAGE_WARNING.format(invariant_mag)
    if min(h, w) < SMALL_IMAGE_SIDE:
        note = "; ".join(filter(None, [SMALL_IMAGE_NOTE.format(w, h), note]))
    mag = float(np.clip(estimate, 0.5, None))
    spread = float(preds.std(ddof=1)) if preds.size > 1 else 0.0
    interval = spanning_interval(estimates, config.interval) if config.interval else None
    return MagnificationPrediction(magnification=mag, mpp=MPP_AT_1X / mag, uncertainty=spread,
                                   per_crop=[float(p) for p in preds], note=note,
                                   blur_invariant=invariant_mag, interval=interval,
                                   interval_level=config.interval["level"] if interval else None)
