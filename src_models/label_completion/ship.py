"""Copy a trained label-completion run into a shipped model folder.

``python -m src_models.label_completion.ship RUN_DIR DEST`` writes ``DEST/model.pt`` (the run's
weights, loaded strictly first) and ``DEST/config.json`` without the machine-specific fields
(data roots, output folder): the network and inference contract only. The model card is written
by hand from the run's ``metrics.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_histo.models.label_completion.model import load_model, save_model


def ship(run_dir: str | Path, dest: str | Path) -> Path:
    model = load_model(run_dir)
    model.config.data = {}
    model.config.out_dir = ""
    return save_model(model, dest)


if __name__ == "__main__":  # pragma: no cover
    print(ship(sys.argv[1], sys.argv[2]))
