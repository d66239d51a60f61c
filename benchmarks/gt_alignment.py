"""How far an annotation's masks sit from the nuclei in the image, measured without a detector.

For each image, the integer shift (±3 px) of the ground-truth foreground that correlates best
with the haematoxylin optical density, refined to sub-pixel by a parabola through the peak and
its neighbours. A positive dx means the mask must move right to sit on the nuclei.

Usage (from the repository root)::

    python benchmarks/gt_alignment.py ../shared/data/monuseg ../shared/data/cpm15 [--monuseg-masks official]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def best_shift(mask: np.ndarray, haematoxylin: np.ndarray, reach: int = 3) -> tuple[float, float]:
    """(dy, dx) moving ``mask`` onto ``haematoxylin`` (correlation peak, sub-pixel)."""
    m = mask.astype(float) - mask.mean()
    h = haematoxylin - haematoxylin.mean()
    span = range(-reach, reach + 1)
    score = np.array([[(np.roll(m, (dy, dx), (0, 1)) * h).mean() for dx in span] for dy in span])
    i, j = np.unravel_index(score.argmax(), score.shape)

    def vertex(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if d == 0 else 0.5 * (a - c) / d

    dy = i - reach + (vertex(score[i - 1, j], score[i, j], score[i + 1, j]) if 0 < i < 2 * reach else 0.0)
    dx = j - reach + (vertex(score[i, j - 1], score[i, j], score[i, j + 1]) if 0 < j < 2 * reach else 0.0)
    return float(dy), float(dx)


def main(argv: list[str] | None = None) -> int:
    from napari_histo.datasets import MONUSEG_MASKS, iter_dataset
    from napari_histo.nuclei.classical import stain_od

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", help="dataset folders (MoNuSeg, CPM-15, MoNuSAC)")
    parser.add_argument("--monuseg-masks", default="project", choices=MONUSEG_MASKS)
    args = parser.parse_args(argv)
    for root in args.datasets:
        shifts = []
        for sample in iter_dataset(root, monuseg_masks=args.monuseg_masks):
            if sample.inst is None or not sample.aligned:
                continue
            dy, dx = best_shift(sample.inst > 0, stain_od(sample.image)[..., 0])
            shifts.append((dy, dx))
            print(f"{root}: {sample.name:<28} dy {dy:+.2f} px, dx {dx:+.2f} px")
        dy, dx = np.mean(shifts, axis=0)
        print(f"{root}: mean over {len(shifts)} images: dy {dy:+.2f} px, dx {dx:+.2f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
