"""The panels as napari dock widgets that fit a laptop screen.

napari sizes a dock to its widget's minimum size, so five docked panels stacked on the right can
push the window past a 1366 × 768 screen. Each panel is wrapped in a scroll area (its content
scrolls instead of growing the window) with a small minimum height; napari's own docks can be
tabified by the user. The panel stays reachable as ``dock.panel`` (tests, scripts).
"""

from __future__ import annotations

from typing import Any

import napari
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea

#: Smallest height of a docked panel (px); the content scrolls below it.
MIN_DOCK_HEIGHT = 80


class ScrollDock(QScrollArea):
    """A panel inside a vertical scroll area."""

    def __init__(self, panel: Any) -> None:
        super().__init__()
        self.panel = panel
        self.setWidget(panel)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumHeight(MIN_DOCK_HEIGHT)
        self.setMinimumWidth(min(panel.minimumSizeHint().width() + 20, 420))


def panel_dock(module: str, panel: str) -> type[ScrollDock]:
    """A dock class napari can build (it passes the viewer as ``napari_viewer``) around the panel
    class ``module:panel``, imported only when the dock is opened."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        import importlib

        ScrollDock.__init__(self, getattr(importlib.import_module(module), panel)(napari_viewer))

    return type(f"{panel}Dock", (ScrollDock,), {"__init__": __init__, "__module__": __name__})


SlideDock = panel_dock("napari_histo._napari._slide_panel", "SlidePanel")
NucleiDock = panel_dock("napari_histo._napari._nuclei_panel", "NucleiPanel")
AnalysisDock = panel_dock("napari_histo._napari._analysis_panel", "AnalysisPanel")
ExportDock = panel_dock("napari_histo._napari._export_panel", "ExportPanel")
MagnificationDock = panel_dock("napari_histo._napari._magnification_panel", "MagnificationPanel")
TissueMapDock = panel_dock("napari_histo._napari._tissue_panel", "TissueMapPanel")
