"""Training recipe of the compact HoVer-Net (the network config it trains is
:class:`napari_histo.models.hovernet.config.CompactConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from napari_histo.jsonconfig import JsonConfig
from napari_histo.models.hovernet.config import CompactConfig


@dataclass
class TrainConfig(JsonConfig):
    """Training recipe. ``model`` is the network config saved with the weights.

    Attributes
    ----------
    model : CompactConfig
        Network contract.
    data_root : str
        Folder holding the shared datasets (``monuseg/``, ``cpm15/``, ``monusac/``).
    cache_dir : str
        Where resampled tiles are cached as npz.
    out_dir : str
        Checkpoints, log and final weights.
    val_monuseg : list[str]
        MoNuSeg test tiles held out for validation (never trained on).
    val_monusac : list[str]
        MoNuSAC images held out for typing validation.
    patch_size : int
        Training patch side in working px.
    loss_margin : int
        Border px per side excluded from the loss (mirrors the inference centre crop).
    batch_size, lr, weight_decay, max_minutes, max_iters, ckpt_every_s, seed, threads :
        Optimiser / run budget settings; training stops at whichever limit comes first.
    loss_weights : dict[str, float]
        Weights of np_ce, np_dice, hv_mse, hv_msge, tp_ce, tp_dice.
    monusac_weight : float
        Sampling weight multiplier of typed (MoNuSAC) tiles relative to their area.
    augment : bool
        Random flips, rotations, colour and blur augmentation of training patches.
    init_weights : str or None
        Fine-tuning: a ``model.pt`` state_dict or a training ``checkpoint.pt`` whose network
        weights start the run (fresh optimiser and learning-rate schedule, iteration 0). Ignored
        when the run resumes from its own ``out_dir/checkpoint.pt``. None: Kaiming initialisation.
    init_type_channels : list[int] or None
        With ``init_weights`` whose type head has another vocabulary: new type channel ``i`` starts
        from channel ``init_type_channels[i]`` of the loaded head (e.g. the coarse "epithelial"
        channel from v1's "epithelial"). None: the head is loaded as it is.
    sources : list[str]
        Training datasets: ``monuseg``, ``cpm15``, ``monusac``, ``consep``.
    type_scheme : str
        ``"monusac"`` (v1 head) or ``"coarse"`` (the product's four coarse classes,
        :mod:`napari_histo.schema.vocabulary`).
    val_consep : list[str]
        CoNSeP original images (``train_<n>``) held out for validation (all their crops).
    source_weights : dict[str, float] or None
        Share of the sampled patches per source (tiles within a source by area); None: by area,
        MoNuSAC multiplied by ``monusac_weight``.
    complete_types : dict or None
        Types for the nuclei of untyped sources from a label-completion model
        (:func:`~src_models.hovernet.data.complete_unknown_types`): ``{"model": folder,
        "label_set": "consep", "min_probability": 0.6}``; a relative ``model`` folder is relative
        to the repository. None: those nuclei stay unknown and are masked out of the type loss.
    jpeg_p : float
        Probability of a JPEG round trip (quality 30-90) in the augmentation.
    """

    model: CompactConfig = field(default_factory=CompactConfig)
    data_root: str = "../shared/data"
    cache_dir: str = "/tmp/napari_histo_hovernet_cache"
    out_dir: str = "/tmp/napari_histo_hovernet_run"
    val_monuseg: list[str] = field(
        default_factory=lambda: [
            "TCGA-44-2665-01B-06-BS6",
            "TCGA-A6-6782-01A-01-BS1",
            "TCGA-AO-A0J2-01A-01-BSA",
            "TCGA-CU-A0YN-01A-02-BSB",
            "TCGA-GL-6846-01A-01-BS1",
        ]
    )
    val_monusac: list[str] = field(default_factory=list)
    patch_size: int = 128
    loss_margin: int = 8
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_minutes: float = 55.0
    max_iters: int = 100000
    ckpt_every_s: float = 180.0
    seed: int = 10
    threads: int = 2
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {
            "np_ce": 1.0,
            "np_dice": 1.0,
            "hv_mse": 2.0,
            "hv_msge": 1.0,
            "tp_ce": 1.0,
            "tp_dice": 1.0,
        }
    )
    monusac_weight: float = 3.0
    augment: bool = True
    init_weights: str | None = None
    init_type_channels: list[int] | None = None
    sources: list[str] = field(default_factory=lambda: ["monuseg", "cpm15", "monusac"])
    type_scheme: str = "monusac"
    val_consep: list[str] = field(default_factory=list)
    source_weights: dict[str, float] | None = None
    jpeg_p: float = 0.0
    complete_types: dict[str, Any] | None = None

    #: Recipes written for another version keep working: unknown keys are skipped.
    UNKNOWN_KEYS: ClassVar[str] = "ignore"
