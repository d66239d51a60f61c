"""``napari-histo type-nuclei IMAGE (--mask MASK | --nuclei FILE) -o OUTDIR``: label completion.

Types every nucleus of an instance mask (or of a segmentation result) in every taxonomy of the
label-completion model (the shipped one merges CoNSeP, MoNuSAC and CRCHistoPhenotypes). Per input,
``OUTDIR`` receives, for each label set, ``<stem>_<set>.npy`` (N x 2 ``[instance id, type]``,
0-based types as the dataset-merging method writes them; ``--one-based`` for 1..K) and
``<stem>_overlay_<set>.png`` (nucleus boundaries coloured by type), plus ``<stem>_types.csv``
(one row per nucleus: id, centre, type name and probability per set) and ``run.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: Overlay colours by type index mod 7, as the dataset-merging method draws them.
OVERLAY_PALETTE = [(0, 0, 0), (0, 255, 255), (0, 0, 255), (255, 0, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)]


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "type-nuclei",
        help="type every nucleus of an instance mask in every taxonomy (label completion)",
        description="Label completion: every nucleus of an instance mask (or of a segmentation result) gets a type in "
                    "every label set of the model. Writes <stem>_<set>.npy (N x 2 [instance id, type], 0-based), "
                    "<stem>_overlay_<set>.png, <stem>_types.csv and run.json.",
    )
    p.add_argument("image", help="the image (PNG, JPEG, TIFF)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--mask", metavar="FILE", help="instance map: .npy, .png/.tif label image or HoVer-Net .mat (inst_map)")
    src.add_argument("--nuclei", metavar="FILE",
                     help="nucleus outlines: QuPath GeoJSON, HoVer-Net JSON, Sedeen or ImageScope/ASAP XML")
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    p.add_argument("--mpp", type=float, default=None, help="µm/px of the image (default: the image file's own)")
    p.add_argument("--model", default=None, metavar="DIR", help="label-completion model folder (default: the shipped one)")
    p.add_argument("--label-set", action="append", default=None, metavar="NAME",
                   help="write only this label set (repeat; default all)")
    p.add_argument("--one-based", action="store_true", help="types 1..K instead of 0..K-1 in the .npy files")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=handler)
    return p


def read_instance_mask(path: str | Path):
    """An instance map from .npy, a label image (.png/.tif) or a HoVer-Net .mat (``inst_map``)."""
    import numpy as np

    from napari_histo.utils import InputFileError

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            mask = np.load(path, allow_pickle=False)
        elif suffix == ".mat":
            from scipy.io import loadmat

            content = loadmat(path)
            if "inst_map" not in content:
                raise InputFileError(path, "HoVer-Net .mat without inst_map")
            mask = content["inst_map"]
        elif suffix in (".tif", ".tiff"):
            import tifffile

            mask = tifffile.imread(path)
        else:
            from PIL import Image

            mask = np.asarray(Image.open(path))
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        raise InputFileError(path, f"cannot read instance mask ({exc})") from exc
    mask = np.squeeze(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise InputFileError(path, f"an instance mask is one integer channel (0 = background), got {mask.dtype} "
                                   f"shape {mask.shape}")
    return mask.astype(np.int64)


def overlay_png(rgb, mask, ids, types):
    """The image with each nucleus boundary (dilated 5 x 5) in its type's colour."""
    import numpy as np
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    lut = np.zeros(int(mask.max()) + 1, np.int64)
    lut[np.asarray(ids, np.int64)] = np.asarray(types, np.int64) + 1
    edges = find_boundaries(mask, mode="inner")
    coded = np.where(edges, lut[mask], 0)
    coded = ndimage.grey_dilation(coded, size=(5, 5))
    out = np.array(rgb[..., :3], np.uint8, copy=True)
    palette = np.asarray(OVERLAY_PALETTE, np.uint8)
    drawn = coded > 0
    out[drawn] = palette[(coded[drawn] - 1) % len(palette)]
    return out


def handler(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    from PIL import Image

    from napari_histo.datasets.readers import _read_rgb
    from napari_histo.models.label_completion.inference import classify_instances
    from napari_histo.models.label_completion.model import load_model, shipped_model_dir
    from napari_histo.provenance import write_run_json
    from napari_histo.utils import HistoError, InputFileError, atomic_path

    image = Path(args.image)
    if not image.is_file():
        raise InputFileError(image, "no such file")
    rgb = _read_rgb(image)
    mpp = args.mpp
    if mpp is None:
        from napari_histo.slide import open_slide

        with open_slide(image) as slide:
            mpp = slide.mpp[0] if slide.mpp else None
    if not mpp:
        raise InputFileError(image, "no pixel size stated: give --mpp (µm/px); nuclei are typed from crops of a "
                                    "fixed size in µm")
    if args.mask:
        mask = read_instance_mask(args.mask)
    else:
        from napari_histo.formats.auto import read_nuclei
        from napari_histo.formats.rasterize import paint_polygons

        table = read_nuclei(args.nuclei, mpp=mpp)
        contours = [np.asarray(c, np.float64) for c in table["contour"] if len(c) >= 3]
        if not contours:
            raise InputFileError(args.nuclei, "holds no nucleus outlines")
        mask = paint_polygons(contours, rgb.shape[:2], edges="top-left", overlap="later")[0].astype(np.int64)
    if mask.shape != rgb.shape[:2]:
        raise InputFileError(args.mask or args.nuclei, f"mask {mask.shape} does not match image {rgb.shape[:2]}")
    model = load_model(args.model or shipped_model_dir())
    names = [s.name for s in model.config.label_sets]
    wanted = args.label_set or names
    outdir = Path(args.outdir)
    stem = image.name.split(".")[0]
    csv_path = outdir / f"{stem}_types.csv"
    if csv_path.exists() and not args.overwrite:
        raise HistoError(f"{csv_path}: exists; pass --overwrite to replace it")
    outdir.mkdir(parents=True, exist_ok=True)
    typed = classify_instances(rgb, mask, model, float(mpp), label_sets=wanted, with_probability=True)
    from scipy import ndimage

    ids = typed[wanted[0]][:, 0].astype(np.int64)
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(mask), mask, ids)).reshape(-1, 2) if len(ids) else np.zeros((0, 2))
    rows = pd.DataFrame({"id": ids, "x": centres[:, 1], "y": centres[:, 0]})
    for name in wanted:
        arr = typed[name]
        labels = model.config.label_sets[names.index(name)].labels
        types = arr[:, 1].astype(np.int64)
        out = np.stack([arr[:, 0].astype(np.int64), types + int(args.one_based)], 1)
        with atomic_path(outdir / f"{stem}_{name}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, out)
        with atomic_path(outdir / f"{stem}_overlay_{name}.png") as tmp:
            Image.fromarray(overlay_png(rgb, mask, arr[:, 0], types)).save(tmp, format="PNG")
        rows[f"type_{name}"] = [labels[t] for t in types]
        rows[f"type_{name}_prob"] = arr[:, 2]
    with atomic_path(csv_path) as tmp:
        rows.to_csv(tmp, index=False)
    write_run_json(outdir, "type-nuclei",
                   {"image": str(image), "mask": args.mask, "nuclei": args.nuclei, "mpp": float(mpp),
                    "model": str(args.model or "shipped"), "label_sets": wanted, "one_based": args.one_based},
                   nuclei=int(len(ids)),
                   label_sets={n: model.config.label_sets[names.index(n)].labels for n in wanted})
    print(f"{image}: {len(ids)} nuclei typed in {', '.join(wanted)} -> {outdir}")
    return 0
