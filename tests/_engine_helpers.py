"""Test fixtures for the whole-slide engine: a small, deterministic, *local* segmenter and
synthetic slides with nuclei planted across tile seams.

``DarkBlobSegmenter`` labels connected dark pixels; its result at a pixel depends only on that
pixel's connected component, so tiled-and-stitched output must equal a single-shot run exactly
(the engine's golden test).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from napari_histo.schema.table import REQUIRED_COLUMNS
from napari_histo.schema.types import NUCLEUS_ONLY


class DarkBlobSegmenter:
    """Connected components of pixels darker than ``threshold`` (grey), 8-connected."""

    name = "dark-blobs"
    type_info = NUCLEUS_ONLY

    def __init__(self, mpp: float = 0.5, halo_px: int = 24, threshold: int = 128,
                 delay_s: float = 0.0):
        self.mpp = mpp
        self.halo_px = halo_px
        self.threshold = threshold
        self.delay_s = delay_s

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s * (rgb.shape[0] if rgb.ndim == 4 else 1))
        return rgb.mean(axis=-1) < self.threshold

    def postprocess(self, raw: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        from scipy import ndimage as ndi

        labels, n = ndi.label(raw, structure=np.ones((3, 3)))
        labels = labels.astype(np.int32)
        rows = []
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None:
                continue
            m = labels[sl] == i
            ys, xs = np.nonzero(m)
            y0, x0 = sl[0].start, sl[1].start
            area = float(m.sum())
            contour = np.array([[x0, y0], [sl[1].stop, y0], [sl[1].stop, sl[0].stop], [x0, sl[0].stop]],
                               np.float32)
            rows.append({
                "id": i, "x": float(xs.mean() + x0), "y": float(ys.mean() + y0),
                "bbox_x0": x0, "bbox_y0": y0, "bbox_x1": sl[1].stop, "bbox_y1": sl[0].stop,
                "area_px": area, "area_um2": area * self.mpp**2,
                "perimeter_px": float(2 * (sl[0].stop - y0 + sl[1].stop - x0)),
                "type": 1, "type_prob": 1.0, "contour": contour,
            })
        table = pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS))
        table = table.astype({k: v for k, v in REQUIRED_COLUMNS.items() if k != "contour"})
        table.attrs = {"mpp": self.mpp, "type_info": self.type_info.to_json_dict()}
        return labels, table

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        return self.postprocess(self.predict(rgb), rgb)


def planted_image(height: int, width: int, seams: int = 128, seed: int = 0,
                  n_random: int = 150) -> np.ndarray:
    """White image with dark discs (r 3-9 px), many centred on multiples of ``seams``."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 235, np.uint8)
    img += rng.integers(0, 15, img.shape, dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    centres = [(rng.uniform(0, height), rng.uniform(0, width)) for _ in range(n_random)]
    # nuclei straddling vertical and horizontal seams and grid corners
    for sy in range(seams, height, seams):
        for sx in range(seams, width, seams):
            centres += [(sy + rng.uniform(-3, 3), sx + rng.uniform(-3, 3)),
                        (sy + rng.uniform(-3, 3), sx - seams / 2),
                        (sy - seams / 2, sx + rng.uniform(-3, 3))]
    for cy, cx in centres:
        r = rng.uniform(3, 9)
        y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, height))
        x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, width))
        disc = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        img[y0:y1, x0:x1][disc] = rng.integers(40, 90, 3, dtype=np.uint8)
    return img


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images have the same foreground and the same objects (any ids)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    fa, fb = a[a > 0].astype(np.int64), b[b > 0].astype(np.int64)
    pairs = np.unique(np.stack([fa, fb]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def drain(gen):
    """Run a progress generator to the end: (list of events, its return value)."""
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return events, stop.value
