"""Configuration dataclasses for the compact HoVer-Net: saved as JSON next to the weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


def _from_dict(cls, data: dict[str, Any]):
    """Build dataclass ``cls`` from a dict, ignoring unknown keys (forward compatibility)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def scaled_postproc(mpp: float) -> dict[str, float]:
    """Official 40× post-processing constants rescaled to ``mpp`` (lengths ∝ 1/mpp, areas ∝ 1/mpp²)."""
    s = 0.25 / float(mpp)
    ksize = max(3, int(round(21 * s)) | 1)
    return {
        "np_threshold": 0.5,
        "min_blob_px": max(2, int(round(10 * s * s))),
        "sobel_ksize": ksize,
        "marker_threshold": 0.4,
        "min_marker_px": max(2, int(round(10 * s * s))),
    }


@dataclass
class CompactConfig:
    """Network and inference contract of :class:`~src_models.hovernet.compact.CompactHoVerNet`.

    Attributes
    ----------
    input_size : int
        Inference patch side (working px). The network is fully convolutional.
    output_size : int
        Centre crop of the prediction kept by a tiler; ``(input_size - output_size) / 2`` border
        px per side are discarded to avoid zero-padding artefacts.
    mpp : float
        Working resolution in µm/px the model was trained at.
    num_types : int
        Type-head channels including background (0). 0 means untyped.
    widths : list[int]
        Encoder channel widths per level (level ``i`` has stride ``2**i``).
    decoder_widths : list[int] or None
        Decoder widths per level; defaults to ``widths`` (last level excluded).
    blocks : list[int]
        Residual blocks per encoder level.
    type_names : list[str]
        Display names per type channel.
    type_colours : list[list[int]]
        RGB colour per type channel.
    unified_ids : list[list[int]]
        For each type channel, the ids of the unified vocabulary (MODELS.md §5.1) it covers.
    postproc : dict
        ``napari_histo.nuclei.postproc.HoverPostParams`` fields for this model's mpp (the
        official constants are for 0.25 µm/px; see :func:`scaled_postproc`).
    internal_downsample : int
        The network runs at ``mpp * internal_downsample``: ``forward`` average-pools its input by
        this factor and upsamples the maps back (bilinear), so callers see an ``mpp`` model while
        the convolutions cost ``internal_downsample**2`` times less. The weights are those of the
        same network trained at the coarser resolution (:meth:`CompactConfig.network_mpp`).
    postproc_at_network_mpp : bool
        Inference shortcut for ``internal_downsample > 1``: the segmenter block-averages the
        input itself, runs the network and the HV watershed at :attr:`network_mpp` (``d²`` times
        fewer pixels) and maps the instances back to ``mpp`` (nearest-upscaled labels masked by
        the bilinear-upsampled foreground probability). False: maps upsampled inside ``forward``
        and the watershed on the ``mpp`` grid.
    network_postproc : dict or None
        ``HoverPostParams`` fields for the watershed at :attr:`network_mpp` (used with
        ``postproc_at_network_mpp``); None: the official constants rescaled to that mpp
        (``HoverPostParams.for_mpp``) with the thresholds of :attr:`postproc`.
    max_tile_px : int
        Largest inference patch side (network px) when the segmenter may enlarge patches to
        cover an image with fewer, larger ones (the network is fully convolutional); 0 keeps
        ``input_size`` patches.
    test_time_flip : bool
        Inference: average the maps of the image and of its left-right mirror (about twice the
        network time; see ``HoverNetSegmenter``).
    type_rule : str
        Inference typing rule: "official" (HoVer-Net's pixel vote) or "nucleus" (background never
        wins inside a detected nucleus; ``napari_histo.nuclei.postproc.type_instances``).
    """

    input_size: int = 256
    output_size: int = 224
    mpp: float = 0.5
    num_types: int = 5
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    decoder_widths: list[int] | None = None
    blocks: list[int] = field(default_factory=lambda: [1, 1, 2, 2])
    type_names: list[str] = field(
        default_factory=lambda: ["unclassified", "epithelial", "lymphocyte", "neutrophil", "macrophage"]
    )
    type_colours: list[list[int]] = field(
        default_factory=lambda: [[160, 160, 160], [255, 0, 0], [0, 0, 255], [255, 165, 0], [0, 200, 0]]
    )
    unified_ids: list[list[int]] = field(default_factory=lambda: [[0], [1, 2], [3], [5], [7]])
    postproc: dict[str, float] = field(default_factory=lambda: scaled_postproc(0.5))
    internal_downsample: int = 1
    postproc_at_network_mpp: bool = False
    network_postproc: dict[str, float] | None = None
    max_tile_px: int = 0
    test_time_flip: bool = False
    type_rule: str = "official"

    @property
    def network_mpp(self) -> float:
        """Resolution the convolutions see (µm/px)."""
        return float(self.mpp) * int(self.internal_downsample)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompactConfig:
        return _from_dict(cls, data)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON (atomic)."""
        _save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> CompactConfig:
        """Read a config JSON; accepts a bare CompactConfig or a TrainConfig file (``model`` key)."""
        data = _load_json(path)
        return cls.from_dict(data.get("model", data))


@dataclass
class TrainConfig:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        cfg = _from_dict(cls, data)
        if isinstance(cfg.model, dict):
            cfg.model = CompactConfig.from_dict(cfg.model)
        return cfg

    def save(self, path: str | Path) -> None:
        _save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(_load_json(path))


def _save_json(data: dict[str, Any], path: str | Path) -> None:
    from napari_histo.utils import atomic_write

    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2)


def _load_json(path: str | Path) -> dict[str, Any]:
    from napari_histo.utils import InputFileError

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as exc:
        raise InputFileError(path, "config file not found") from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputFileError(path, "config must be a JSON object")
    return data
