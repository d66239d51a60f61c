"""Packaging and architecture checks."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib

from conftest import REPO


def test_manifest_inside_package_is_the_root_manifest():
    packaged = REPO / "napari_histo" / "napari.yaml"
    assert packaged.read_bytes() == (REPO / "napari.yaml").read_bytes()


def test_every_core_package_is_under_the_no_qt_contract():
    """A new core subpackage must be added to the import-linter contract (or be the adapter)."""
    import napari_histo

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contract = config["tool"]["importlinter"]["contracts"][0]
    covered = set(contract["source_modules"])
    for info in pkgutil.iter_modules(napari_histo.__path__):
        name = f"napari_histo.{info.name}"
        if info.name in ("_napari", "resources"):
            continue
        assert name in covered, f"{name} is not covered by the import-linter contract"


def test_import_linter_contract_holds():
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shipped_sample_slide_is_packaged(sample_slide_path):
    assert sample_slide_path.is_file() and sample_slide_path.stat().st_size > 1_000_000


def test_cli_help_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "napari_histo.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "napari-histo" in proc.stdout
