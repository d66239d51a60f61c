"""``napari-histo convert TF.npz OUT.tar``: an original TensorFlow HoVer-Net checkpoint as PyTorch weights."""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert an original TensorFlow HoVer-Net checkpoint (.npz) to PyTorch weights",
        description="Rename and transpose the variables of a TensorFlow HoVer-Net checkpoint (.npz, the first "
                    "release's format) as the official PyTorch conversion does; the output loads with "
                    "segment --model OUT.tar and in the Nuclei panel.",
    )
    parser.add_argument("checkpoint", help="TensorFlow checkpoint (.npz)")
    parser.add_argument("output", help="PyTorch checkpoint to write (.tar)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from napari_histo.models.hovernet.checkpoint import load_hovernet
    from napari_histo.models.hovernet.tf_checkpoint import convert_tf_checkpoint
    from napari_histo.utils import HistoError, check_input_file

    src, out = Path(args.checkpoint), Path(args.output)
    check_input_file(src, "TensorFlow checkpoint")
    if out.exists() and not args.overwrite:
        raise HistoError(f"{out}: exists; choose another file or add --overwrite")
    convert_tf_checkpoint(src, out)
    _, info = load_hovernet(out)  # proves the result loads strictly
    print(f"{src.name} -> {out} (HoVer-Net {info.mode}, {info.nr_types or 'no'} type channels, "
          f"{info.n_tensors} tensors)")
    return 0
