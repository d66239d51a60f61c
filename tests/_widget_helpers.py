"""Shared helpers for the widget tests (napari viewer under Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def open_with_slide_panel(viewer, path: str | Path):
    """Open ``path`` through the Slide panel (the napari-histo reader); returns (panel, layer)."""
    from napari_histo._napari._slide_panel import SlidePanel

    panel = SlidePanel(viewer)
    layers = panel.open_path(str(path))
    assert layers, f"the reader did not open {path}"
    return panel, layers[0]


def look_at(viewer, layer, box: tuple[int, int, int, int]) -> None:
    """Point the camera at the level-0 box ``(x0, y0, x1, y1)`` of ``layer`` (box fills the canvas)."""
    from napari_histo._napari import _layers

    x0, y0, x1, y1 = box
    centre = _layers.level0_to_world(layer, np.array([(y0 + y1) / 2, (x0 + x1) / 2]))
    scale = np.asarray(layer.scale[-2:], float)
    size = np.asarray(viewer.canvas.size, float)
    zoom = float(min(size[0] / ((y1 - y0) * scale[0]), size[1] / ((x1 - x0) * scale[1])))
    viewer.scene.camera.center = tuple(centre)
    viewer.scene.camera.zoom = zoom
