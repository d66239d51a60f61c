"""Every command's help reads as text for users: no markup, no stale claims, every option explained."""

from __future__ import annotations

import argparse

import pytest

from napari_histo.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


COMMANDS = _subparsers(build_parser())


def test_every_command_is_listed():
    assert {"segment", "export", "density", "hotspots", "info", "magnification", "train"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_is_plain_text_and_every_option_says_what_it_does(name):
    parser = COMMANDS[name]
    text = parser.format_help()
    for bad in ("%%", "``", ":func:", ":class:", "until weights ship", "%(default)"):
        assert bad not in text, (name, bad)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        assert action.help and action.help.strip(), (name, action.option_strings or action.dest)


def test_help_and_info_load_no_heavy_library():
    """``--help`` loads no numpy; ``info`` of a slide loads neither pandas nor torch."""
    import subprocess
    import sys

    from napari_histo.cli._evaluate import MONUSEG_MASKS
    from napari_histo.datasets import MONUSEG_MASKS as DATASET_MASKS
    from napari_histo.utils import sample_slide_path

    assert MONUSEG_MASKS == DATASET_MASKS
    code = "\n".join([
        "import sys, io, contextlib",
        "from napari_histo.cli import main",
        "with contextlib.redirect_stdout(io.StringIO()):",
        "    try:",
        "        main(sys.argv[1:])",
        "    except SystemExit:",
        "        pass",
        "print(sorted(m for m in ('numpy', 'pandas', 'torch', 'zarr', 'dask') if m in sys.modules))",
    ])
    loaded = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    loaded = subprocess.run([sys.executable, "-c", code, "info", str(sample_slide_path())], capture_output=True,
                            text=True, check=True)
    # a slide OpenSlide reads is described with openslide-python alone: not even numpy
    assert loaded.stdout.strip() == "[]"
