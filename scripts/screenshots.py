"""Screenshots of the napari-histo panels on the shipped sample slide, for the docs.

Opens napari (needs a display; use ``xvfb-run -a``), docks the plugin's panels, drives them as a
user would (open the sample slide, segment nuclei in the current view with the shipped default
model, density and hotspots, export) and saves window screenshots to ``docs/images/``. One
command regenerates them all (e.g. after new weights land in ``resources/weights/``)::

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py

The window is a 1366 × 768 laptop screen with the panels docked as napari docks them.

``--model`` takes what ``napari-histo segment --model`` takes: ``default`` (the shipped compact
HoVer-Net, the default here), ``classical``, or a HoVer-Net checkpoint file or weights folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: Level-0 box of the sample slide shown for the nuclei screenshots (x0, y0, x1, y1).
VIEW_BOX = (900, 900, 1700, 1500)


def _look_at(viewer, layer, box) -> None:
    from napari_histo._napari import _layers

    x0, y0, x1, y1 = box
    viewer.scene.camera.center = tuple(_layers.level0_to_world(layer, np.array([(y0 + y1) / 2, (x0 + x1) / 2])))
    h, w = viewer.canvas.size
    s = float(layer.scale[-1])
    viewer.scene.camera.zoom = float(min(h / ((y1 - y0) * s), w / ((x1 - x0) * s)))


def _choose_model(panel, model: str) -> None:
    """Select ``model`` (a registry name or a checkpoint path) in the Nuclei panel."""
    from napari_histo._napari._nuclei_panel import MODELS

    by_spec = {spec: entry for entry, spec in MODELS.items()}
    if model in MODELS:  # a combo entry as shown
        panel.model_combo.setCurrentText(model)
    elif model in by_spec and model != "checkpoint":
        panel.model_combo.setCurrentText(by_spec[model])
    else:
        if not Path(model).exists():
            raise SystemExit(f"{model}: not a model name ({', '.join(s for s in by_spec if s != 'checkpoint')}) "
                             "nor an existing checkpoint")
        panel.model_combo.setCurrentText(by_spec["checkpoint"])
        panel.checkpoint_edit.setText(str(model))


def _whole_slide_in_progress(viewer, panel, outdir: Path, n_tiles: int, shot) -> None:
    """Start a whole-slide run, screenshot the labels shown after ``n_tiles`` tiles, cancel it."""
    handle = panel._on_event
    painted = []

    def on_event(update) -> None:
        handle(update)
        if update.box is not None and len(painted) < n_tiles:
            painted.append(update.box)
            if len(painted) == n_tiles:
                # the last finished tile and its surroundings: labelled tiles beside unprocessed ones
                x0, y0, x1, y1 = update.box
                w, h = x1 - x0, y1 - y0
                _look_at(viewer, panel.slide_layer, (x0 - w // 2, y0 - h // 2, x1 + w // 2, y1 + h // 2))
                panel._flush()
                shot("02_nuclei_progress.png")
                panel.cancel()

    panel._on_event = on_event
    viewer.reset_view()
    panel.scope_combo.setCurrentText("whole slide")
    try:
        panel.run(outdir=outdir)
    finally:
        panel._on_event = handle
    print(f"whole-slide run: screenshot after {len(painted)} tile(s), then cancelled: {panel.status.text()}")


def _shrink_png(path: Path) -> None:
    """Re-save with a 256-colour palette (screenshots are mostly flat UI; keeps the repo small)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    parser.add_argument("--model", default="default",
                        help="default (shipped compact HoVer-Net), classical, or a checkpoint file/folder")
    parser.add_argument("--progress-tiles", type=int, default=3,
                        help="whole-slide run screenshot after this many tiles with nuclei, then cancel (0: skip)")
    args = parser.parse_args(argv)
    os.environ["NAPARI_HISTO_NOTHREADS"] = "1"  # deterministic, one step after another

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_histo._napari import _layers
    from napari_histo.utils import sample_slide_path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)

    def settle() -> None:
        for _ in range(10):
            app.processEvents()

    def shot(name: str) -> None:
        settle()
        path = out / name
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        _shrink_png(path)
        print("wrote", path)

    def dock(name: str):
        """Dock a panel as napari does (a scroll area around it); returns (dock widget, panel)."""
        _, scroll = viewer.window.add_plugin_dock_widget("napari-histo", name)
        return scroll, scroll.panel

    slide_dock, slide_panel = dock("Slide")
    slide_panel.open_path(str(sample_slide_path()))
    slide = _layers.find_slide_layer(viewer)
    slide_panel.tissue_box.setChecked(True)
    shot("01_slide_panel.png")
    slide_panel.tissue_box.setChecked(False)

    nuclei_dock, nuclei_panel = dock("Nuclei")
    viewer.layers.selection.active = slide
    _choose_model(nuclei_panel, args.model)
    run_dir = Path(tempfile.mkdtemp(prefix="napari-histo-screens-"))
    if args.progress_tiles > 0:
        _whole_slide_in_progress(viewer, nuclei_panel, run_dir / "whole", args.progress_tiles, shot)
    viewer.layers.selection.active = slide
    _look_at(viewer, slide, VIEW_BOX)
    nuclei_panel.scope_combo.setCurrentText("current view")
    job = nuclei_panel.run(outdir=run_dir / "run")
    if job is None or job.error is not None or nuclei_panel.table is None:
        raise SystemExit(f"the nuclei run failed: {getattr(job, 'error', None)}")
    print(f"nuclei: {len(nuclei_panel.table)} with model {nuclei_panel.model_spec()!r}; "
          f"types {nuclei_panel.legend_counts()}")
    points = viewer.layers[_layers.NUCLEI_POINTS]
    points.selected_data = {int(len(points.data) // 2)}
    shot("02_nuclei_panel.png")
    points.selected_data = set()

    analysis_dock, analysis_panel = dock("Density & hotspots")
    analysis_panel.radius.setValue(30.0)
    analysis_panel.k.setValue(3)
    analysis_panel.run()
    viewer.layers[_layers.NUCLEI_LABELS].visible = False
    _look_at(viewer, slide, VIEW_BOX)
    shot("03_density_panel.png")
    analysis_panel.go_to(0)
    shot("04_hotspot_go.png")

    export_dock, export_panel = dock("Export & import")
    for kind, edit in export_panel.paths.items():
        edit.setText(str(run_dir / Path(edit.text()).name))
        export_panel.checks[kind].setChecked(True)
    export_panel.export()
    shot("05_export_panel.png")

    _, magnification_panel = dock("Magnification")
    window = viewer.window._qt_window
    print(f"window with all five panels docked: {window.width()} x {window.height()} px")
    shot("07_all_panels_1366x768.png")
    viewer.window.remove_dock_widget(export_dock)
    viewer.window.remove_dock_widget(analysis_dock)
    magnification_panel.scope.setCurrentText("whole layer")
    magnification_panel.predict()
    print("magnification:", magnification_panel.result_label.text().replace("\n", " | "))
    viewer.reset_view()
    shot("06_magnification_panel.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
