"""Hagnifinder configuration, serialised as ``config.json`` next to the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from napari_histo.jsonconfig import JsonConfig

#: Whole source images kept out of training (validation only).
DEFAULT_HOLDOUT = (
    # MoNuSeg: the whole official test set
    "monuseg:TCGA-44-2665-01B-06-BS6", "monuseg:TCGA-69-7764-01A-01-TS1",
    "monuseg:TCGA-A6-6782-01A-01-BS1", "monuseg:TCGA-AO-A0J2-01A-01-BSA",
    "monuseg:TCGA-CU-A0YN-01A-02-BSB", "monuseg:TCGA-EJ-A46H-01A-03-TSC",
    "monuseg:TCGA-FG-A4MU-01B-01-TS1", "monuseg:TCGA-GL-6846-01A-01-BS1",
    "monuseg:TCGA-HC-7209-01A-01-TS1", "monuseg:TCGA-IZ-8196-01A-01-BS1",
    # CPM-15: two 20x and two 40x tiles
    "cpm15:image06", "cpm15:image07", "cpm15:image14", "cpm15:image15",
    "monusac:A9K0_2",
    "crchisto:img36", "crchisto:img41",
    # the CMU Aperio slide (20x): never trained on
    "wsi:cmu-1-small-region",
)


@dataclass
class HagnifinderConfig(JsonConfig):
    """Everything needed to rebuild, train and run the model.

    The three training steps: ``asm_iters`` with ASM on, ``calib_iters`` batches averaging the
    ASM multiplier into ``scale_factor`` (no weight update), ``fixed_iters`` with the fixed factor.
    """

    backbone: str = "resnet_slim"
    width: int = 16
    hidden: tuple[int, int] = (200, 20)
    ev: float = 2.2
    patch_size: int = 224
    mag_min: float = 5.0
    mag_max: float = 40.0
    pad_prob: float = 0.3
    huber_delta: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    iters_per_epoch: int = 100
    asm_iters: int = 3000
    calib_iters: int = 50
    fixed_iters: int = 1000
    #: Learning rate for step 3 (None: keep the step-1 rate); set once when step 3 starts.
    fixed_lr: float | None = None
    #: Learning rate of the final Linear(20, 1) (None: same as the rest). Its output range is
    #: bias ± sum|w| on tanh features, so it must grow to ~(mag_max - mag_min) / 2; with Adam
    #: at a small rate that takes thousands of steps (the paper used lr 0.05 for everything).
    head_lr: float | None = None
    plateau_patience: int = 6
    min_lr: float = 5e-6
    seed: int = 40
    data_root: str = "../shared/data"
    holdout: list[str] = field(default_factory=lambda: list(DEFAULT_HOLDOUT))
    out_dir: str = "runs/hagnifinder"
    checkpoint_every: int = 50
    val_every: int = 500
    val_crops: int = 2
    num_threads: int = 1
    #: Calibrated fixed scale (step 2); 0 until calibrated.
    scale_factor: float = 0.0
    #: ``"linear"`` (paper: the last layer outputs x) or ``"log2"`` (it outputs log2 x).
    target_space: str = "linear"
    #: Fine-tuning: model folder (model.pt + config.json) to start from. Its calibrated scale
    #: factor is kept (training continues as step 3, fixed scale, ASM off; set asm_iters and
    #: calib_iters to 0). When its target space differs, the last layer is refitted first by
    #: least squares on ``head_fit_batches`` training batches.
    init_from: str | None = None
    head_fit_batches: int = 16
    #: Training source images left out of (fine-)training to choose between models without
    #: touching ``holdout`` (training-time validation uses them instead of the held-out list).
    tuning_holdout: list[str] = field(default_factory=list)
    #: Probability of a Gaussian blur (sigma ~ U(blur_sigma)) of a training patch: scanner
    #: sharpness differs between sources and must not be read as magnification.
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    #: Monotone output calibration fitted on training sources only
    #: (:mod:`src_models.hagnifinder.calibration`); None: raw output.
    calibration: dict | None = None
    #: Test-time downsampling factors (:mod:`src_models.hagnifinder.multiscale`): each crop is
    #: also predicted downsampled by every factor ``k`` (it then estimates ``m / k``) and the
    #: estimates ``k * prediction`` are averaged in log2 space; ``(1.0,)``: single scale.
    test_time_scales: tuple[float, ...] = (1.0,)
    #: A factor ``k > 1`` is used only while (first estimate) / k stays at or above this (x).
    min_scaled_mag: float = 5.0
    #: Training images from a data pack (:mod:`src_models.hagnifinder.pack`) instead of
    #: ``data_root``: for training on a machine without the datasets (validation then needs
    #: ``val_every = 0``; held-out images are never packed).
    data_pack: str | None = None
    #: Torch device for training ("cpu", "cuda", or "auto": CUDA when present).
    device: str = "cpu"
    #: Worker processes drawing batches (0: in the training process). Batch ``i`` is drawn from
    #: a generator seeded by (seed, i) wherever it is drawn, so the stream is the same.
    num_workers: int = 0
    #: Cross-fitting: train this many members at once, member ``k`` without fold ``k`` of the
    #: training sources (folds grouped by source, ``calibration.grouped_folds`` with ``seed``).
    #: They share one batch stream; each member sees only the samples of its own sources. The
    #: model is their geometric mean, calibrated on out-of-fold predictions. 0 or 1: one model.
    cross_fit_folds: int = 0
    #: Written by training: the source names each member never saw (one list per member).
    member_holdouts: list[list[str]] = field(default_factory=list)
    #: Stain augmentation: haematoxylin / eosin / DAB optical densities of a training
    #: patch scaled by U(1 - s, 1 + s) and shifted by U(-s / 5, s / 5) each (0: off), so that a
    #: source's stain is not read as its magnification.
    stain_jitter: float = 0.0
    #: Train the backbone under bfloat16 autocast on CUDA (the head stays float32).
    amp: bool = False
    #: Also train on microscope-camera images (BreakHis in ``data_root``; pixel size from the
    #: published optics, ``src_models.hagnifinder.data.breakhis_mpp``).
    camera_sources: bool = False
    #: Probability of camera-like degradations of a training patch (colour cast, vignetting,
    #: slight blur, JPEG).
    camera_prob: float = 0.0
    #: Training magnifications: "uniform" over [mag_min, mag_max] or "log" (uniform in log2).
    mag_sampling: str = "uniform"
    #: Flips, rotations and colour jitter of training patches (upstream's ``data_arg``).
    data_arg: bool = True
    #: Accuracy threshold in × of the validation log (upstream's ``N``: a prediction within N of
    #: the label counts as correct), reported beside the fixed 0.5 / 1 / 5.
    N: float = 1.0
    #: Optimiser: "adamw" (default) or "sgd" (momentum 0.9).
    optimizer: str = "adamw"
    #: Train on a Hagni40-style folder of patches labelled by magnification
    #: (``<magnification>/<cancer_type>/*.png`` or ``index.txt``) instead of resampled scans;
    #: ``holdout`` names whole cancer types as ``hagni40:<type>``.
    hagni40_root: str | None = None
    #: A second, blur-invariant model that checks for soft images (``{"model": SUBFOLDER,
    #: "max_ratio": R, "action": "warn" | "replace"}``; None: off). A model that reads sharpness
    #: as magnification sees a soft image as a high magnification; when its estimate exceeds R
    #: times the blur-invariant model's, the prediction carries a note ("warn") or the latter is
    #: reported ("replace") (:func:`napari_histo.models.magnification.softness_check`).
    softness_check: dict | None = None
    #: Prediction interval fitted on out-of-fold errors for training sources
    #: (:mod:`src_models.hagnifinder.interval`); None: no interval reported.
    interval: dict | None = None

    CONFIG_NAME: ClassVar[str] = "Hagnifinder"
