"""Frame time while panning a synthetic 40k x 40k slide with 200k nuclei shown.

The slide is a lazily generated dask pyramid (1024-px chunks, H&E-like texture computed per
chunk, levels down to < 2048 px), shown as napari-histo shows real slides (RGB multiscale,
``contrast_limits=(0, 255)``, µm scale). The nuclei are a Points layer of 200,000 centroids
with a features table and per-type colours, built with the same helper as the Nuclei panel.

Chunks are produced by copying a per-level texture (about 1 ms each, like a warm tile cache), so the
figures measure napari's slicing and drawing rather than a decoder. A "frame" is one pan step: move the camera, let napari slice (fetching the chunks that come into
view) and draw, i.e. ``camera.center = ...`` + ``QApplication.processEvents()`` + a synchronous
draw (exactly one paint per frame is checked). Run under a display (``xvfb-run -a``)::

    xvfb-run -a .venv/bin/python benchmarks/bench_viewer.py [--steps 60] [--points 200000]

Prints one line per scenario: median / p95 / max frame time in ms; then the cost of showing
results while a run goes on (paint a tile into the preview, redraw it).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def synthetic_pyramid(size: int = 40_000, chunk: int = 1024, min_side: int = 2048):
    """A lazily generated RGB pyramid (level 0 first), texture computed on demand per chunk."""
    import dask.array as da

    def texture(downsample: int) -> np.ndarray:
        yy, xx = np.mgrid[0:chunk, 0:chunk].astype(np.float32) * downsample
        # eosin background with haematoxylin "nuclei" blobs on a 40-px lattice
        blob = (np.sin(yy / 6.4) * np.sin(xx / 6.4) > 0.6) & (np.sin(yy / 97.0 + xx / 131.0) > -0.2)
        rgb = np.empty((chunk, chunk, 3), np.uint8)
        rgb[..., 0] = np.where(blob, 80, 235)
        rgb[..., 1] = np.where(blob, 60, 170)
        rgb[..., 2] = np.where(blob, 150, 215)
        return rgb

    def make_level(side: int, downsample: int):
        tex = texture(downsample)

        def block(block_info=None, **_):
            # a cheap "decode": copy the level's texture, tinted per chunk so tiles differ
            (y0, y1), (x0, x1), _c = block_info[None]["array-location"]
            out = tex[: y1 - y0, : x1 - x0].copy()
            out[..., 1] = out[..., 1] - np.uint8(((y0 // chunk) * 7 + (x0 // chunk) * 13) % 24)
            return out

        chunks = da.core.normalize_chunks((chunk, chunk, 3), shape=(side, side, 3))
        return da.map_blocks(block, dtype=np.uint8, chunks=chunks, meta=np.empty((0, 0, 0), np.uint8))

    levels, side, ds = [], size, 1
    while True:
        levels.append(make_level(side, ds))
        if side <= min_side:
            break
        side, ds = (side + 1) // 2, ds * 2
    return levels


def synthetic_nuclei(n: int, size: int, seed: int = 0):
    """A nucleus table (centroids, types, measurements) of ``n`` nuclei clustered in tissue."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1 * size, 0.9 * size, (200, 2))
    which = rng.integers(0, len(centres), n)
    xy = centres[which] + rng.normal(0, 0.04 * size, (n, 2))
    xy = np.clip(xy, 0, size - 1)
    table = pd.DataFrame({
        "id": np.arange(1, n + 1, dtype=np.int64),
        "x": xy[:, 0], "y": xy[:, 1],
        "bbox_x0": xy[:, 0].astype(np.int64) - 5, "bbox_y0": xy[:, 1].astype(np.int64) - 5,
        "bbox_x1": xy[:, 0].astype(np.int64) + 5, "bbox_y1": xy[:, 1].astype(np.int64) + 5,
        "area_px": rng.uniform(40, 200, n), "area_um2": rng.uniform(10, 50, n), "perimeter_px": rng.uniform(20, 60, n),
        "type": rng.integers(1, 6, n).astype(np.int64), "type_prob": rng.uniform(0.5, 1.0, n),
        "contour": [None] * n,
    })
    table.attrs["mpp"] = 0.25
    table.attrs["type_info"] = {
        "0": ["nolabe", [0, 0, 0]], "1": ["neopla", [255, 0, 0]], "2": ["inflam", [0, 255, 0]],
        "3": ["connec", [0, 0, 255]], "4": ["necros", [255, 255, 0]], "5": ["no-neo", [255, 165, 0]],
    }
    return table


def pan_frames(viewer, steps: int, zoom_fov_px: float | None, size: int, mpp: float) -> np.ndarray:
    """Frame times (s) for ``steps`` pan steps across the slide at a given field of view."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    camera = viewer.scene.camera
    canvas_h, canvas_w = viewer.canvas.size
    if zoom_fov_px is None:
        viewer.reset_view()
        fov = size * mpp
    else:
        fov = zoom_fov_px * mpp
        camera.zoom = canvas_w / fov
    start = np.array([0.3, 0.3]) * size * mpp
    step = np.array([0.0, fov / 8.0])  # 1/8 of the view per frame, left to right
    camera.center = tuple(start)
    for _ in range(5):  # settle: first fetches, shader compilation
        app.processEvents()
    scene_canvas = viewer.window._qt_viewer.canvas._scene_canvas
    draws = [0]
    scene_canvas.events.draw.connect(lambda _event: draws.__setitem__(0, draws[0] + 1))
    times = []
    for k in range(steps):
        t0 = time.perf_counter()
        before = draws[0]
        camera.center = tuple(start + (k + 1) * step)
        app.processEvents()  # slicing + the update() paint napari requested
        if draws[0] == before:  # no paint happened yet: force exactly one
            scene_canvas.native.repaint()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def redraw_frames(viewer, steps: int) -> np.ndarray:
    """Frame times (s) of repainting an unchanged view (draw cost only)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        viewer.window._qt_viewer.canvas.native.repaint()  # one synchronous draw
        times.append(time.perf_counter() - t0)
        app.processEvents()
    return np.asarray(times)


def synthetic_tile_labels(side: int = 1024, spacing: int = 16, seed: int = 0):
    """A tile's label crop (local ids 1..n, 5-px-radius discs on a jittered grid) and its types."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((side, side), np.int32)
    yy, xx = np.mgrid[-5:6, -5:6]
    disc = yy**2 + xx**2 <= 25
    n = 0
    for cy in range(8, side - 8, spacing):
        for cx in range(8, side - 8, spacing):
            y, x = cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)
            n += 1
            labels[y - 5:y + 6, x - 5:x + 6][disc] = n
    return labels, rng.integers(1, 6, n)


def _whole_slide_preview_cost(viewer, slide, size, mpp, labels, types, info, n_tiles, contour) -> None:
    """Paint and refresh cost of the multiscale preview with the given contour width (0: filled)."""
    import tempfile

    from qtpy.QtWidgets import QApplication

    from napari_histo._napari import _layers
    from napari_histo._napari._preview import LabelPreview, refresh_region

    app = QApplication.instance()
    with tempfile.TemporaryDirectory() as tmp:
        preview = LabelPreview((size, size), multiscale=True, root=f"{tmp}/preview.zarr")
        preview.type_info = info
        layer = viewer.add_labels(preview.data, multiscale=True, colormap=preview.colormap(), opacity=0.9,
                                  **_layers.overlay_kwargs(slide))
        layer.contour = contour
        viewer.scene.camera.zoom = viewer.canvas.size[1] / (1600 * mpp)
        origin0 = np.array([0.3, 0.3]) * size
        viewer.scene.camera.center = tuple((origin0 + 512) * mpp)
        for _ in range(3):
            app.processEvents()
        paint, refresh = [], []
        for k in range(n_tiles):
            # tiles around the view, each meeting it (tiles outside it cost no redraw at all)
            origin = (int(origin0[1]) - 512 + 512 * (k % 3), int(origin0[0]) - 512 + 512 * (k // 3 % 3))
            t0 = time.perf_counter()
            box = preview.paint(labels, origin, types, info)
            paint.append(time.perf_counter() - t0)
            view = _layers.field_of_view(viewer, slide)
            t0 = time.perf_counter()
            refresh_region(layer, box, view)
            app.processEvents()
            refresh.append(time.perf_counter() - t0)
        paint, refresh = np.asarray(paint) * 1000, np.asarray(refresh) * 1000
        print(f"whole-slide preview ({size // 1000}k zarr pyramid, contour {contour}), 1024-px tiles of {types.size} nuclei: "
              f"paint (worker) median {np.median(paint):.0f} ms, max {paint.max():.0f} ms; "
              f"refresh + draw (Qt) median {np.median(refresh):.0f} ms, max {refresh.max():.0f} ms")
        viewer.layers.remove(layer)
        preview.close()


def preview_costs(viewer, slide, size: int, mpp: float, n_tiles: int = 8) -> None:
    """Cost of showing results during a run (Nuclei panel preview, ``_napari/_preview.py``).

    Whole slide: paint 1024-px tiles into the zarr preview pyramid of the 40k slide (worker
    thread in the panel) and refresh the multiscale Labels layer (Qt thread). View/shape run:
    paint into a 4096 x 4096 in-memory preview and redraw only the tile region, against a
    whole-layer refresh.
    """

    from qtpy.QtWidgets import QApplication

    from napari_histo._napari import _layers
    from napari_histo._napari._preview import LabelPreview, refresh_region

    app = QApplication.instance()
    labels, types = synthetic_tile_labels()
    info = synthetic_nuclei(1, size).attrs["type_info"]
    for contour in (1, 0):  # outlines vs filled labels (the whole-slide preview is filled)
        _whole_slide_preview_cost(viewer, slide, size, mpp, labels, types, info, n_tiles, contour)
    preview = LabelPreview((4096, 4096), multiscale=False)
    preview.paint(labels, (0, 0), types, info)
    layer = viewer.add_labels(preview.data, colormap=preview.colormap(), opacity=0.9, **_layers.overlay_kwargs(slide))
    layer.contour = 1
    viewer.reset_view()
    for _ in range(3):
        app.processEvents()
    region, full = [], []
    for k in range(1, n_tiles + 1):
        origin = (1024 * (k % 4), 1024 * (k // 4 % 4))
        box = preview.paint(labels, origin, types, info)
        t0 = time.perf_counter()
        refresh_region(layer, box)
        app.processEvents()
        region.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        layer.refresh()
        app.processEvents()
        full.append(time.perf_counter() - t0)
    region, full = np.asarray(region) * 1000, np.asarray(full) * 1000
    print(f"view/shape preview (4096 x 4096 in memory, contour 1): tile-region redraw median {np.median(region):.0f} ms, "
          f"max {region.max():.0f} ms; whole-layer refresh median {np.median(full):.0f} ms")
    viewer.layers.remove(layer)
    preview.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=40_000)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--no-preview", dest="preview", action="store_false",
                        help="skip the cost of showing tiles during a run")
    parser.add_argument("--only-preview", action="store_true", help="only the cost of showing tiles during a run")
    args = parser.parse_args(argv)

    import napari

    from napari_histo._napari import _layers

    mpp = 0.25
    print(f"python {platform.python_version()}, napari {napari.__version__}, cpus {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.1f}")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 900)
    pyramid = synthetic_pyramid(args.size)
    slide = viewer.add_image(pyramid, rgb=True, multiscale=True, contrast_limits=(0, 255), scale=(mpp, mpp),
                             units=("um", "um"), name="synthetic 40k", metadata={"mpp": (mpp, mpp)})
    print(f"pyramid levels: {[p.shape[:2] for p in pyramid]}")

    scenarios = [("slide only, zoomed in (FOV ~1.6k px, level 0)", 1600.0), ("slide only, whole slide", None)]
    if args.only_preview:
        preview_costs(viewer, slide, args.size, mpp)
        viewer.close()
        return 0
    for name, fov in scenarios:
        t = pan_frames(viewer, args.steps, fov, args.size, mpp) * 1000
        print(f"{name}: median {np.median(t):.1f} ms, p95 {np.percentile(t, 95):.1f} ms, max {t.max():.1f} ms")

    t0 = time.perf_counter()
    table = synthetic_nuclei(args.points, args.size)
    data, meta, _ = _layers.points_layer_data(table, slide)
    viewer.add_points(data, **meta)
    print(f"points layer with {args.points:,} nuclei built in {time.perf_counter() - t0:.2f} s")
    scenarios = [
        (f"slide + {args.points // 1000}k points, zoomed in (FOV ~1.6k px)", 1600.0),
        (f"slide + {args.points // 1000}k points, FOV ~8k px", 8000.0),
        (f"slide + {args.points // 1000}k points, whole slide", None),
    ]
    for name, fov in scenarios:
        t = pan_frames(viewer, args.steps, fov, args.size, mpp) * 1000
        print(f"{name}: median {np.median(t):.1f} ms, p95 {np.percentile(t, 95):.1f} ms, max {t.max():.1f} ms")
    t = redraw_frames(viewer, args.steps) * 1000
    print(f"slide + {args.points // 1000}k points, whole slide, redraw without moving: median {np.median(t):.1f} ms, "
          f"p95 {np.percentile(t, 95):.1f} ms")
    # the Nuclei panel's viewport culling: only points near the view are handed to the renderer
    points = viewer.layers[meta["name"]]
    culling = _layers.ViewportCulling(viewer, points)
    for name, fov in scenarios[:2]:
        t = pan_frames(viewer, args.steps, fov, args.size, mpp) * 1000
        print(f"{name}, viewport culling ({int(points.shown.sum()):,} shown): median {np.median(t):.1f} ms, "
              f"p95 {np.percentile(t, 95):.1f} ms, max {t.max():.1f} ms")
    # a features filter (one type hidden) stays applied while culling follows the camera
    keep = table["type"].to_numpy() != 2
    points.shown = keep
    for name, fov in scenarios[:1]:
        t = pan_frames(viewer, args.steps, fov, args.size, mpp) * 1000
        assert not points.shown[~keep].any(), "culling showed a point the filter hid"
        print(f"{name}, viewport culling + type filter ({int(points.shown.sum()):,} shown): median {np.median(t):.1f} ms, "
              f"p95 {np.percentile(t, 95):.1f} ms, max {t.max():.1f} ms")
    culling.disconnect()
    viewer.layers.remove(points)
    if args.preview:
        preview_costs(viewer, slide, args.size, mpp)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
