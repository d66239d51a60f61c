"""The segmenter contract used by ``segment_image``, the whole-slide engine and the widgets."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from napari_histo.schema.types import TypeInfo


@runtime_checkable
class Segmenter(Protocol):
    """Anything that turns an RGB array at its working resolution into nuclei.

    Attributes
    ----------
    name : str
        Short identifier recorded in provenance (``"classical"``, ``"hovernet-fast-pannuke"``...).
    mpp : float
        Working resolution in µm/px; callers resample input to it.
    type_info : TypeInfo
        Vocabulary of the ``type`` column.
    halo_px : int
        Overlap (working px) a tiler must add around a tile so that every nucleus owned by the
        tile core is seen whole (≥ the largest nucleus diameter + the model's receptive margin).

    Methods
    -------
    predict(rgb) -> raw
        The heavy, batchable part (network forward; identity for classical detectors).
        ``rgb`` is (H, W, 3) uint8 or (B, H, W, 3) for a batch of same-sized tiles.
    postprocess(raw, rgb) -> (labels, table)
        CPU post-processing of one tile: int32 instance labels (H, W) and a nucleus table in
        tile pixel coordinates (``mpp`` = working mpp).
    segment(rgb) -> (labels, table)
        ``postprocess(predict(rgb), rgb)`` for an image of any size.
    for_slide(samples) -> Segmenter, optional
        The segmenter to use on every tile of one slide, given a few (H, W, 3) sample regions of
        its tissue: per-image decisions (the classical detector's H&E vs H-DAB choice) are then
        made once per slide, so every tile is treated alike. Tilers call it when present.
    """

    name: str
    mpp: float
    type_info: TypeInfo
    halo_px: int

    def predict(self, rgb: np.ndarray) -> Any: ...

    def postprocess(self, raw: Any, rgb: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]: ...

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]: ...
