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


class SlideDock(ScrollDock):
    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari_histo._napari._slide_panel import SlidePanel

        super().__init__(SlidePanel(napari_viewer))


class NucleiDock(ScrollDock):
    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari_histo._napari._nuclei_panel import NucleiPanel

        super().__init__(NucleiPanel(napari_viewer))


class AnalysisDock(ScrollDock):
    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari_histo._napari._analysis_panel import AnalysisPanel

        super().__init__(AnalysisPanel(napari_viewer))


class ExportDock(ScrollDock):
    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari_histo._napari._export_panel import ExportPanel

        super().__init__(ExportPanel(napari_viewer))


class MagnificationDock(ScrollDock):
    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari_histo._napari._magnification_panel import MagnificationPanel

        super().__init__(MagnificationPanel(napari_viewer))
