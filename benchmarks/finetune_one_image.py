"""Does fine-tuning the shipped nucleus model on ONE newly annotated image help on ANOTHER?

The user's path, end to end: the 16 CoNSeP crops of one original image the shipped model never
saw (``train_3``, one of the five images held out of its training) are written as a user would
have them (PNG + QuPath GeoJSON with the coarse class names), ``train hovernet --data`` fine-tunes
the shipped model on them (:func:`src_models.hovernet.own_data.train_own`, its default recipe), and
``evaluate`` scores the shipped and the fine-tuned model on the crops of OTHER held-out images of
the same tissue (``train_8`` first; ``train_13``, ``train_18``, ``train_23`` as well). The images
were chosen before any score was seen. Needs ``../shared/data/consep``.

``--stain ihc`` asks the same question for a stain the shipped model was never trained on: every
crop is re-rendered as an immunohistochemistry-like image by colour deconvolution (Ruifrok &
Johnston 2001, scikit-image's ``rgb2hed``/``hed2rgb``): eosin removed, hematoxylin kept as the
counterstain, and DAB added to half of the epithelial nuclei (chosen per crop with a fixed seed;
a Ki-67-like proliferation stain), whose hematoxylin is dimmed. Outlines and types are CoNSeP's.

Run: ``python benchmarks/finetune_one_image.py [--iterations 400] [--stain he|ihc] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from _report import emit_json

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGE = "train_3"
#: The five CoNSeP images held out of the shipped model's training.
HELD_OUT_IMAGES = ["train_3", "train_8", "train_13", "train_18", "train_23"]
COARSE = {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"}


def ihc_like(rgb, inst, types, seed: int):
    """``rgb`` re-rendered as hematoxylin + DAB: eosin removed, DAB in half of the epithelial
    nuclei (``types == 3``), their hematoxylin dimmed. Deterministic for a given ``seed``."""
    import numpy as np
    from scipy import ndimage as ndi
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(rgb)
    ids = np.unique(inst[inst > 0])
    share = ndi.mean((types == 3).astype(float), inst, ids) if len(ids) else np.zeros(0)
    epithelial = ids[np.asarray(share) > 0.5]
    rng = np.random.default_rng(seed)
    positive = rng.choice(epithelial, size=len(epithelial) // 2, replace=False) if len(epithelial) else []
    mask = np.isin(inst, positive)
    dab = ndi.gaussian_filter(mask.astype(float), 1.0) * 0.15
    haem = np.where(mask, hed[..., 0] * 0.4, hed[..., 0])
    out = hed2rgb(np.stack([haem, np.zeros_like(haem), dab], axis=-1))
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def write_user_folder(root: Path, image: str, folder: Path, stain: str = "he") -> Path:
    """The crops of ``image`` as PNG + GeoJSON (coarse class names), as a user's annotated folder;
    ``stain="ihc"`` re-renders them with :func:`ihc_like`."""
    import zlib

    import numpy as np
    from PIL import Image
    from scipy import ndimage as ndi

    from napari_histo.formats.geojson import write_geojson
    from napari_histo.nuclei.measure import measure_instances
    from napari_histo.schema.types import TypeInfo
    from src_models.hovernet.data import consep_crops, load_consep_native, read_consep_types

    folder.mkdir(parents=True, exist_ok=True)
    types_by_crop = read_consep_types(root)
    info = TypeInfo({0: "background", **COARSE})
    for crop in consep_crops(root, [image]):
        rgb, inst, types = load_consep_native(root, crop, types_by_crop)
        if stain == "ihc":
            rgb = ihc_like(rgb, inst, types, seed=zlib.crc32(crop.encode()))
        Image.fromarray(rgb).save(folder / f"{crop}.png")
        table = measure_instances(inst, mpp=0.25, type_info=info)
        table["type"] = np.asarray(ndi.maximum(np.maximum(types, 0), inst, table["id"].to_numpy()), int)
        table = table[table["type"] > 0]  # a nucleus without a type row is left unannotated
        write_geojson(table, folder / f"{crop}.geojson")
    return folder


def score(model: str, folder: Path, out: Path) -> dict:
    from napari_histo.cli import main as cli

    path = out / f"scores_{Path(model).name}_{folder.name}.json"
    rc = cli(["evaluate", str(folder), "--model", model, "--mpp", "0.25", "--json", str(path)])
    if rc != 0:
        raise SystemExit(f"evaluate failed for {model} on {folder}")
    return json.loads(path.read_text())["mean"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-image", choices=HELD_OUT_IMAGES, default=TRAIN_IMAGE,
                    help="the annotated image to fine-tune on; the other four held-out images are scored")
    ap.add_argument("--stain", choices=["he", "ihc"], default="he",
                    help="he: the crops as they are; ihc: re-rendered as hematoxylin + DAB (see above)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    from src_models.hovernet.own_data import train_own

    root = Path(args.data_root)
    if not (root / "consep" / "images").is_dir():
        raise SystemExit(f"{root / 'consep'} not found")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="finetune_one_image_"))
    test_images = [image for image in HELD_OUT_IMAGES if image != args.train_image]
    train_folder = write_user_folder(root, args.train_image, work / args.train_image, args.stain)
    test_folders = {image: write_user_folder(root, image, work / image, args.stain) for image in test_images}
    t0 = time.perf_counter()
    model = work / "fine_tuned"
    summary = train_own(train_folder, model, iterations=args.iterations, minutes=120.0, init="default", mpp=0.25,
                        threads=args.threads)
    train_s = time.perf_counter() - t0
    rows = {}
    for image, folder in test_folders.items():
        before = score("default", folder, work)
        after = score(str(model), folder, work)
        rows[image] = {"shipped": before, "fine_tuned": after}
        print(f"{image}: PQ {before['pq']:.3f} -> {after['pq']:.3f}; AJI {before['aji']:.3f} -> {after['aji']:.3f}; "
              f"F1 det {before['f1_d']:.3f} -> {after['f1_d']:.3f}", flush=True)
    result = {
        "benchmark": "finetune_one_image", "date": time.strftime("%Y-%m-%d"), "machine": platform.processor()
        or platform.machine(), "threads": args.threads, "train_image": args.train_image, "stain": args.stain, "iterations": summary["iterations"],
        "train_seconds": round(train_s, 1), "types": summary["types"], "scores": rows,
        "command": f"python benchmarks/finetune_one_image.py --iterations {args.iterations} --stain {args.stain} "
                   f"--train-image {args.train_image}",
    }
    emit_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
