"""Shared fixtures. Tests that read ../shared/data skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NAPARI_HISTO_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("NAPARI_HISTO_NOTHREADS", "0")
# what the viewer writes without a chosen place goes to a throw-away folder, not the user's
if "NAPARI_HISTO_DATA_DIR" not in os.environ:
    import tempfile

    os.environ["NAPARI_HISTO_DATA_DIR"] = tempfile.mkdtemp(prefix="napari-histo-test-data-")


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test when it does not exist."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not available: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_slide_path() -> Path:
    from napari_histo.utils import sample_slide_path

    return sample_slide_path()


@pytest.fixture
def viewer(make_napari_viewer, monkeypatch):
    """A napari viewer whose panels run their work in thread workers, as in the app."""
    monkeypatch.setenv("NAPARI_HISTO_NOTHREADS", "0")
    return make_napari_viewer()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one torch thread avoids spin-waiting on a shared CI machine (a module asks
    for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
