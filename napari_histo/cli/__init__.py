"""``napari-histo <command>``: one CLI over the core.

Each subcommand lives in ``napari_histo/cli/_<name>.py`` and exposes
``register(subparsers) -> argparse.ArgumentParser`` whose parser sets ``func=handler`` where
``handler(args) -> int``. Modules are imported lazily so ``napari-histo --help`` stays fast.

Other installed packages add commands with the same ``register`` function through the
``napari_histo.commands`` entry-point group: that is how the training package (``src_models``)
adds ``napari-histo train`` without the plugin importing it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Subcommand module names, in help order. A module that is absent is skipped.
COMMAND_MODULES = [
    "info",
    "segment",
    "evaluate",
    "magnification",
    "density",
    "hotspots",
    "summary",
    "export",
    "import_",
    "classify",
    "type_nuclei",
    "convert",
]

#: Entry-point group of commands contributed by other installed packages.
COMMAND_ENTRY_POINTS = "napari_histo.commands"


def _command_module(argv: list[str]) -> str | None:
    """The built-in module of the command ``argv`` names (``import`` -> ``import_``,
    ``type-nuclei`` -> ``type_nuclei``), or None (help, options first, contributed commands)."""
    if not argv or argv[0].startswith("-"):
        return None
    for name in COMMAND_MODULES:
        if name.rstrip("_").replace("_", "-") == argv[0]:
            return name
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; ``only`` registers that one built-in command module (a command's own
    run needs no other module, nor the installed packages' entry points)."""
    from napari_histo import __version__

    parser = argparse.ArgumentParser(
        prog="napari-histo",
        description="Computational pathology from the command line (same core as the napari plugin).",
    )
    parser.add_argument("--version", action="version", version=f"napari-histo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES if only is None else [only]:
        try:
            module = importlib.import_module(f"napari_histo.cli._{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"napari_histo.cli._{name}":
                continue
            raise
        module.register(sub)
    if only is not None:
        return parser
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from napari_histo.utils import HistoError

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command_module(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HistoError as exc:
        print(f"napari-histo {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder that cannot be written, a full disk, a read-only file system
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"napari-histo {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"napari-histo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
