"""The viewer with every napari-histo panel docked fits a 1366 × 768 laptop screen."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui

PANELS = ["Slide", "Nuclei", "Density & hotspots", "Export & import", "Magnification", "Train nucleus model"]


def test_all_panels_docked_fit_a_laptop_screen(make_napari_viewer, qtbot, sample_slide_path):
    from napari_histo._napari._docks import MIN_DOCK_HEIGHT, ScrollDock

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    docks = []
    for name in PANELS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-histo", name)
        assert isinstance(widget, ScrollDock)
        docks.append(dock)
    viewer.open(str(sample_slide_path), plugin="napari-histo")
    qtbot.wait(100)
    assert window.width() <= 1366 and window.height() <= 768, (window.width(), window.height())
    for dock in docks:  # content scrolls instead of growing the window
        assert dock.minimumSizeHint().height() <= MIN_DOCK_HEIGHT + 60, dock.windowTitle()


def test_the_type_legend_shows_every_row(viewer):
    import numpy as np
    import pandas as pd

    from napari_histo._napari._nuclei_panel import NucleiPanel
    from napari_histo.schema.types import TypeInfo

    panel = NucleiPanel(viewer)
    info = TypeInfo({0: "background", 1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"})
    table = pd.DataFrame({"type": np.array([1, 2, 2, 3, 3, 3, 4])})
    table.attrs["type_info"] = info.to_json_dict()
    panel.update_legend(table)
    assert panel.legend.rowCount() == 4
    needed = panel.legend.horizontalHeader().sizeHint().height() + 4 * panel.legend.verticalHeader().defaultSectionSize()
    assert panel.legend.height() >= needed
    assert sum(panel.legend_counts().values()) == 7
