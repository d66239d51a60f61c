"""Few-shot tissue classification with the nucleus module's features: BreakHis benign vs malignant.

Each BreakHis image of ``../shared/data/breakhis`` (36 images, 25 patients, microscope camera,
40-400X) is read at the nucleus module's 0.5 µm/px (pixel size from the stated magnification,
:func:`src_models.hagnifinder.data.breakhis_mpp`) and described by the features the tissue-map
head is fitted on. Leave-one-patient-out: every image is classified by a head
(:func:`napari_histo.models.tissue_maps.fit_tissue_head`) fitted on the images of the other
patients only. Compared with the majority class of the training images and with the same head on
the features of the same network with random weights (does the training of the nucleus module
matter, or would any features do?). The majority baseline predicts the most frequent class of all
36 images for every image (predicting the majority of the *other* patients instead, as a
leave-one-out would, is worse than chance: removing a patient tips the majority against it).

Run: ``python benchmarks/few_shot_tissue.py [--model DIR] [--data ../shared/data] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

from _report import emit_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def image_features(model, rows, root: Path):
    import numpy as np
    import torch
    from PIL import Image

    from src_models.hagnifinder.data import breakhis_mpp
    from src_models.hovernet.data import resize_rgb

    feats = []
    for row in rows:
        rgb = np.asarray(Image.open(root / row["path"]).convert("RGB"))
        scale = breakhis_mpp(row["magnification"]) / float(model.config.mpp)
        shape = (max(32, round(rgb.shape[0] * scale)), max(32, round(rgb.shape[1] * scale)))
        with torch.no_grad():
            f = model(model.to_tensor(resize_rgb(rgb, shape)), return_features=True)
        feats.append(f[0].numpy())
    return np.stack(feats)


def leave_one_patient_out(features, labels, groups, names):
    import numpy as np

    from napari_histo.models.tissue_maps import fit_tissue_head

    pred = np.full(len(labels), -1)
    for g in sorted(set(groups)):
        test = np.array([x == g for x in groups])
        train = ~test
        # the penalty is chosen inside the training patients (nested leave-one-patient-out)
        head = fit_tissue_head(features[train], labels[train], names,
                               groups=np.array([x for x, t in zip(groups, train) if t]))
        pred[test] = head.predict_proba(features[test]).argmax(1)
    return pred


def scores(labels, pred):
    import numpy as np

    recalls = [float((pred[labels == k] == k).mean()) for k in np.unique(labels)]
    return {"accuracy": round(float((pred == labels).mean()), 4), "balanced_accuracy": round(float(np.mean(recalls)), 4)}


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from napari_histo.models.classification import load_tile_classifier
    from napari_histo.models.deepcmorph.model import DeepCMorph

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="nucleus-module folder (default: the shipped one)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    root = Path(args.data) / "breakhis"
    with open(root / "manifest.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = sorted({r["tumor_class"] for r in rows})
    labels = np.array([names.index(r["tumor_class"]) for r in rows])
    groups = [r["slide_id"] for r in rows]
    t0 = time.time()
    model = load_tile_classifier(args.model, "cpu")
    trained = image_features(model, rows, root)
    torch.manual_seed(0)
    random_model = DeepCMorph(model.config).eval()
    random = image_features(random_model, rows, root)
    pred = leave_one_patient_out(trained, labels, groups, names)
    pred_random = leave_one_patient_out(random, labels, groups, names)
    majority = np.full(len(labels), np.bincount(labels).argmax())
    result = {
        "benchmark": "few-shot tissue classification, BreakHis benign vs malignant, leave one patient out",
        "machine": f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} torch threads",
        "date": time.strftime("%Y-%m-%d"),
        "images": len(rows), "patients": len(set(groups)),
        "classes": {n: int((labels == k).sum()) for k, n in enumerate(names)},
        "nucleus_module_features": scores(labels, pred),
        "random_weights_features": scores(labels, pred_random),
        "majority_class": scores(labels, majority),
        "feature_dims": int(trained.shape[1]),
        "seconds": round(time.time() - t0, 1),
    }
    emit_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
