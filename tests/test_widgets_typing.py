"""The Nuclei panel's label-completion typing on the sample slide (shipped model, Xvfb)."""

from __future__ import annotations

import pytest
from _widget_helpers import look_at, open_with_slide_panel

pytestmark = pytest.mark.gui

VIEW_BOX = (1100, 1000, 1500, 1400)


def test_nuclei_typed_by_label_completion(viewer, qtbot, sample_slide_path, tmp_path):
    from napari_histo._napari import _layers
    from napari_histo._napari._nuclei_panel import LABEL_COMPLETION_PREFIX, NucleiPanel

    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    viewer.layers.selection.active = slide
    look_at(viewer, slide, VIEW_BOX)
    panel = NucleiPanel(viewer)
    choices = [panel.typing_combo.itemText(i) for i in range(panel.typing_combo.count())]
    assert choices[1:] == [LABEL_COMPLETION_PREFIX + s for s in ("consep", "monusac", "crchisto")]
    panel.model_combo.setCurrentText("classical (no training)")
    panel.scope_combo.setCurrentText("current view")
    panel.typing_combo.setCurrentText(LABEL_COMPLETION_PREFIX + "consep")
    job = panel.run(outdir=tmp_path / "run")
    qtbot.waitUntil(lambda: not job.running, timeout=90_000)
    assert job.error is None
    qtbot.waitUntil(lambda: panel.typing_job is not None and not panel.typing_job.running, timeout=90_000)
    assert panel.typing_job.error is None
    table = panel.table
    assert len(table) > 30
    assert {"type_consep", "type_monusac", "type_crchisto", "type_consep_prob"} <= set(table.columns)
    assert (table["type"] == table["type_consep"]).all()
    shown = set(panel.legend_counts())
    assert shown and shown <= {"other", "inflammatory", "epithelial", "spindle"}
    assert sum(panel.legend_counts().values()) == len(table)
    points = viewer.layers[_layers.NUCLEI_POINTS]
    assert set(points.features["type_name"]) == shown
    assert "typed by label completion (consep classes)" in panel.status.text()
