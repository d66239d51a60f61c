"""The Train panel fine-tunes the nucleus model on the nuclei of a layer; the Nuclei panel then offers it."""

from __future__ import annotations

import pytest
from _widget_helpers import look_at, open_with_slide_panel

pytestmark = pytest.mark.gui


def test_train_on_corrected_nuclei_then_segment_with_the_new_model(viewer, qtbot, sample_slide_path, tmp_path):
    from napari_histo._napari import _layers
    from napari_histo._napari._nuclei_panel import NucleiPanel
    from src_models._napari_train import TrainPanel

    _, slide = open_with_slide_panel(viewer, sample_slide_path)
    look_at(viewer, slide, (1100, 1100, 1400, 1400))
    nuclei = NucleiPanel(viewer)
    nuclei.model_combo.setCurrentText("classical (no training)")
    job = nuclei.run(outdir=tmp_path / "run")
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert job.error is None and len(nuclei.table) > 20
    # the user corrects: deletes a few nuclei (the layer's table is what the panels read)
    points = viewer.layers[_layers.NUCLEI_POINTS]
    points.metadata["nuclei_table"] = nuclei.table.iloc[5:].copy()
    train = TrainPanel(viewer)
    assert train.nuclei_combo.currentText() == _layers.NUCLEI_POINTS
    # look before training: the patches the run will learn from, as layers
    pjob = train.preview()
    assert pjob is not None
    qtbot.waitUntil(lambda: not pjob.running, timeout=60_000)
    assert pjob.error is None
    grid = viewer.layers["training patches"]
    labels = viewer.layers["training patch nuclei"]
    assert grid.rgb and grid.data.shape[:2] == labels.data.shape and labels.data.max() > 20
    assert train.nuclei_combo.currentText() == _layers.NUCLEI_POINTS
    train.iterations.setValue(2)
    train.name_edit.setText("corrected-field")
    tjob = train.train()
    assert tjob is not None
    qtbot.waitUntil(lambda: not tjob.running, timeout=120_000)
    assert tjob.error is None and train.summary is not None
    assert train.summary["iterations"] == 2 and train.progress.value() == train.progress.maximum()
    folder = train.output_folder()
    assert (folder / "model.pt").is_file() and (folder / "config.json").is_file()
    # the Nuclei panel offers the new model and runs it
    nuclei.refresh_models()
    assert nuclei.model_combo.findText("my model: corrected-field") >= 0
    nuclei.model_combo.setCurrentText("my model: corrected-field")
    assert nuclei.model_spec() == str(folder)
    job = nuclei.run(outdir=tmp_path / "run2")
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    assert job.error is None and nuclei.table is not None
    assert train.train() is None  # the name is taken: never over an existing model
