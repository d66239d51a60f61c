"""HoVer-Net's per-tile ``.mat`` output (the official ``infer/tile.py`` layout), written from a
nucleus table and its label image.

Keys: ``inst_map`` (H × W int32, nucleus ids 1..N in table order), ``inst_uid`` (N × 1, those
ids), ``inst_type`` (N × 1, type ids; left out for an untyped model, as the official code does),
``inst_centroid`` (N × 2, x, y in the map's pixels). A singleton second axis keeps MATLAB happy,
as upstream notes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from napari_histo.utils import atomic_path

# Lazy imports: scipy is imported inside the functions that use it: importing this module stays light.


def write_hovernet_mat(table: pd.DataFrame, labels: np.ndarray, path: str | os.PathLike,
                       origin: tuple[int, int] = (0, 0), typed: bool = True) -> Path:
    """Write ``table``'s nuclei and the label image ``labels`` (its pixel (0, 0) at level-0 ``origin``)
    as a HoVer-Net tile ``.mat``; the label ids are renumbered 1..N in the table's order."""
    from scipy.io import savemat

    labels = np.asarray(labels)
    ids = table["id"].to_numpy(np.int64)
    top = int(max(labels.max(initial=0), ids.max(initial=0)))
    lut = np.zeros(top + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    inst_map = lut[labels]
    ox, oy = origin
    mat = {
        "inst_map": inst_map,
        "inst_uid": np.arange(1, len(ids) + 1, dtype=np.int32)[:, None],
        "inst_centroid": np.column_stack([table["x"].to_numpy(float) - ox, table["y"].to_numpy(float) - oy])
        if len(table) else np.zeros((0, 2)),
    }
    if typed:
        mat["inst_type"] = table["type"].to_numpy(np.int32)[:, None]
    path = Path(path)
    with atomic_path(path) as tmp:
        savemat(tmp, mat, do_compression=True)
    return path
