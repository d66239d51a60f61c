"""A self-contained copy of the training source images, for training where ``../shared`` is not.

A pack is a folder of lossless PNGs (level 0 of each source, slides' regions read out) and
``sources.json`` (name, dataset, mpp and file of each). Training reads it when the config's
``data_pack`` names it, so a run on another machine (a GPU node) sees exactly the pixels and
pixel sizes of :func:`~src_models.hagnifinder.data.discover_sources`. Only training sources go
in: the config's ``holdout`` images never leave the machine they are validated on.

Run: ``python -m src_models.hagnifinder.pack CONFIG OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_histo.utils import atomic_path, atomic_write
from src_models.hagnifinder.data import PACK_INDEX, SourceImage, discover_sources, split_sources

# Lazy imports: PIL, torch are imported inside the functions that use them (directly or through
# the modules named there): only the code paths that use them pay for loading.


def write_pack(sources: list[SourceImage], out_dir: str | Path) -> Path:
    """Write ``sources`` as PNGs plus ``sources.json`` into ``out_dir``; returns the index path."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for src in sources:
        file = src.name.replace(":", "__") + ".png"
        with atomic_path(out_dir / file) as tmp:
            Image.fromarray(src.rgb).save(tmp, format="PNG")
        entries.append({"name": src.name, "dataset": src.dataset, "mpp": src.mpp, "file": file,
                        "shape": list(src.rgb.shape)})
    index = out_dir / PACK_INDEX
    with atomic_write(index) as fh:
        json.dump({"sources": entries}, fh, indent=1)
    return index


def main(argv: list[str] | None = None) -> int:
    from src_models.hagnifinder.train import load_config_file

    parser = argparse.ArgumentParser(description="Pack a config's training source images.")
    parser.add_argument("config", help="training config (its data_root, holdout and tuning_holdout)")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    config = load_config_file(args.config)
    train_src, _ = split_sources(discover_sources(config.data_root), config.holdout)
    if config.tuning_holdout:
        train_src, _ = split_sources(train_src, config.tuning_holdout)
    index = write_pack(train_src, args.out_dir)
    size = sum(p.stat().st_size for p in Path(args.out_dir).iterdir())
    print(f"{len(train_src)} training sources, {size / 2**20:.1f} MiB -> {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
