"""Evaluate a fine-tuned DeepCMorph folder on a folder-per-class dataset or a manifest.

``python -m src_models.deepcmorph.evaluate MODEL_DIR DATA [--label-column C] [--downscale F]``
prints accuracy, balanced accuracy and the confusion matrix as JSON. Class names of the data
must be those of the model (``config.class_names``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_histo.utils import HistoError
from src_models.deepcmorph.data import classification_metrics, load_dataset
from src_models.deepcmorph.finetune import predict_images

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.


def evaluate(model_dir: str | Path, data: str | Path, label_column: str = "label", path_column: str = "path",
             group_column: str | None = None, downscale: float = 1.0) -> dict[str, Any]:
    """Whole-image predictions of a model against the labels of ``data``.

    ``model_dir`` is a model folder, a checkpoint file or a released name (COMBINED, TCGA,
    TCGA_REGULARIZED, CRC; see :func:`napari_histo.models.deepcmorph.model.resolve_weights`).
    """
    from napari_histo.models.deepcmorph.model import load_deepcmorph

    model = load_deepcmorph(model_dir)
    if not model.has_classifier:
        raise HistoError(f"{model_dir}: a nucleus module has no tissue classes to evaluate; fit a few-shot head "
                         "(classify --train-regions, or benchmarks/few_shot_tissue.py)")
    dataset = load_dataset(data, label_column, path_column, group_column, downscale)
    names = model.config.class_names
    unknown = [c for c in dataset.class_names if c not in names]
    if unknown:
        raise HistoError(f"{data}: classes {unknown} are not among the model's classes {names}")
    y_true = [names.index(dataset.class_names[i]) for i in dataset.labels]
    y_pred = predict_images(model, dataset.images).argmax(1)
    result = classification_metrics(y_true, y_pred, len(names))
    result["class_names"] = names
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model_dir", help="model folder, checkpoint file or released name (COMBINED, TCGA, CRC ...)")
    p.add_argument("data")
    p.add_argument("--label-column", default="label")
    p.add_argument("--path-column", default="path")
    p.add_argument("--downscale", type=float, default=1.0)
    args = p.parse_args(argv)
    print(json.dumps(evaluate(args.model_dir, args.data, args.label_column, args.path_column,
                              downscale=args.downscale), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
