"""Configuration of the compact HoVer-Net, saved as ``config.json`` next to its weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from napari_histo.jsonconfig import JsonConfig, read_json_object


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
class CompactConfig(JsonConfig):
    """Network and inference contract of :class:`~napari_histo.models.hovernet.compact.CompactHoVerNet`.

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
        For each type channel, the ids of a cross-dataset vocabulary it covers (recorded in the
        model card for reference; inference does not use them).
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

    #: Weights written by a newer version still load: keys this version does not know are skipped.
    UNKNOWN_KEYS: ClassVar[str] = "ignore"

    @property
    def network_mpp(self) -> float:
        """Resolution the convolutions see (µm/px)."""
        return float(self.mpp) * int(self.internal_downsample)

    @classmethod
    def load(cls, path: str | Path) -> CompactConfig:
        """Read a config JSON; accepts a bare CompactConfig or a training config (``model`` key)."""
        data = read_json_object(path)
        return cls.from_dict(data.get("model", data))
