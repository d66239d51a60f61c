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
