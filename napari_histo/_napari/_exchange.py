"""Export and import between napari layers and files (QuPath GeoJSON, Sedeen session, HoVer-Net
JSON, CSV, heatmap PNG): the layers' data turned into core tables and annotations, and the
default output paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_histo._napari import _layers

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import pandas as pd

#: kind -> (label, default file name pattern)
EXPORTS: dict[str, tuple[str, str]] = {
    "geojson": ("QuPath GeoJSON", "{stem}.geojson"),
    "sedeen": ("Sedeen session XML", "{stem}.session.xml"),
    "hovernet": ("HoVer-Net JSON", "{stem}.hovernet.json"),
    "csv": ("CSV table", "{stem}.nuclei.csv"),
    "heatmap": ("Heatmap PNG", "{stem}.density.png"),
}


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------
def unique_path(path: str | Path) -> Path:
    """``path`` if free, else ``name (2).ext``, ``name (3).ext``... (never clobber a file)."""
    path = Path(path)
    if not path.exists():
        return path
    name = path.name
    stem, dot, suffix = name.partition(".")
    for k in range(2, 10_000):
        candidate = path.with_name(f"{stem} ({k}){dot}{suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(path)


def default_paths(slide_path: str | Path | None, fallback_dir: str | Path | None = None) -> dict[str, Path]:
    """Default export paths: beside the slide when its folder is writable (and not inside the
    installed package, as the shipped sample is), else in ``fallback_dir`` or the per-user
    ``exports`` folder (:func:`napari_histo.utils.user_data_dir`); stem "nuclei" without a slide.
    Existing files are never proposed (a numbered name is), except the Sedeen session, which is
    merged into."""
    from napari_histo.utils import user_data_dir, writable_folder_for

    fallback = Path(fallback_dir) if fallback_dir else None
    stem = Path(slide_path).name.split(".")[0] if slide_path else "nuclei"
    folder = writable_folder_for(slide_path) or fallback or user_data_dir("exports")
    out = {}
    for kind, (_, pattern) in EXPORTS.items():
        path = folder / pattern.format(stem=stem)
        out[kind] = path if kind == "sedeen" else unique_path(path)
    return out


def nuclei_layer_names(viewer: napari.Viewer) -> list[str]:
    """Names of the layers holding a nucleus table (segmented or imported), topmost first."""
    return [layer.name for layer in reversed(list(viewer.layers)) if layer.metadata.get("nuclei_table") is not None]


def nuclei_table(viewer: napari.Viewer, layer_name: str | None = None) -> pd.DataFrame | None:
    """The nucleus table of the layer ``layer_name``; without a name, of the only nuclei layer.

    Never a silent pick: with several nuclei layers and no name, a ValueError asks for one.
    Returns None when there is no nuclei layer (or the named one is gone).
    """
    if layer_name:
        if layer_name not in viewer.layers:
            return None
        return viewer.layers[layer_name].metadata.get("nuclei_table")
    names = nuclei_layer_names(viewer)
    if not names:
        return None
    if len(names) > 1:
        raise ValueError(f"several nuclei layers ({', '.join(names)}): choose one in the panel's Nuclei layer box")
    return viewer.layers[names[0]].metadata.get("nuclei_table")


def refresh_layer_combo(combo: Any, names: list[str]) -> None:
    """Fill a layer selector with ``names``, keeping the current choice when it still exists."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def refresh_slide_combo(combo: Any, viewer: napari.Viewer) -> None:
    """Fill an image-layer selector with the slide-like layers; keep the choice when it still
    exists, else choose the slide the panels act on (:func:`_layers.find_slide_layer`)."""
    previous = combo.currentText()
    names = [layer.name for layer in viewer.layers if _layers.is_slide_like(layer)]
    refresh_layer_combo(combo, names)
    if previous not in names and (slide := _layers.find_slide_layer(viewer)) is not None:
        combo.setCurrentText(slide.name)


def combo_layer(combo: Any, viewer: napari.Viewer) -> Any | None:
    """The layer a layer selector names, or None."""
    name = combo.currentText()
    return viewer.layers[name] if name in viewer.layers else None


def shapes_to_annotations(shapes_layer: Any, slide_layer: Any | None, *, class_name: str | None = None,
                          class_names: Sequence[str] | None = None) -> list:
    """Polygons of a Shapes layer as level-0 :class:`~napari_histo.formats._common.Annotation`.

    ``class_name`` classes every shape; ``class_names`` gives one class per shape instead."""
    from shapely.geometry import Polygon

    from napari_histo.formats._common import Annotation

    names = None
    if "name" in getattr(shapes_layer, "features", {}):
        names = list(shapes_layer.features["name"])
    out = []
    for i, verts in enumerate(shapes_layer.data):
        world = _layers.vertices_to_world(shapes_layer, verts)
        yx = _layers.world_to_level0(slide_layer, world) if slide_layer is not None else world
        if len(yx) < 3:
            continue
        geom = Polygon(yx[:, ::-1])
        if not geom.is_valid:
            geom = geom.buffer(0)
        shape_type = shapes_layer.shape_type[i]
        name = names[i] if names else f"{shapes_layer.name} {i + 1}"
        cls = class_names[i] if class_names is not None else class_name
        out.append(Annotation(geometry=geom, name=str(name), class_name=cls, shape=shape_type, is_ellipse=shape_type == "ellipse"))
    return out


def roi_annotations(viewer: napari.Viewer, slide_layer: Any | None) -> list:
    """Annotations from user Shapes layers (ROIs drawn by hand)."""
    from napari.layers import Shapes

    rois = []
    for layer in viewer.layers:
        if isinstance(layer, Shapes) and not layer.metadata.get("napari_histo_overlay"):
            rois.extend(shapes_to_annotations(layer, slide_layer, class_name="ROI"))
    return rois


def hotspot_annotations(viewer: napari.Viewer) -> list:
    """The Density & hotspots panel's hotspots as level-0 annotations ("Hotspot 1", ...)."""
    if _layers.HOTSPOTS not in viewer.layers:
        return []
    layer = viewer.layers[_layers.HOTSPOTS]
    anns = shapes_to_annotations(layer, _layers.find_slide_layer(viewer), class_name="Hotspot")
    circles = layer.metadata.get("circles", False)
    for ann in anns:
        ann.is_ellipse = bool(circles)
    return anns


def hotspot_table(viewer: napari.Viewer) -> pd.DataFrame | None:
    """The hotspot table (``find_hotspots`` output) behind the hotspots layer, if any."""
    if _layers.HOTSPOTS not in viewer.layers:
        return None
    return viewer.layers[_layers.HOTSPOTS].metadata.get("hotspots_table")


def heatmap_rgba(layer: Any) -> np.ndarray:
    """The heatmap layer rendered with its own colormap and contrast limits (uint8 RGBA)."""
    data = np.asarray(layer.data, dtype=np.float32)
    lo, hi = layer.contrast_limits
    norm = np.clip((data - lo) / ((hi - lo) or 1.0), 0, 1)
    rgba = layer.colormap.map(norm.ravel()).reshape(*data.shape, 4)
    rgba[~np.isfinite(data)] = 0
    return (rgba * 255).round().astype(np.uint8)


def write_heatmap_png(layer: Any, path: str | Path) -> Path:
    """Save the heatmap layer as a PNG (one pixel per grid cell), atomically."""
    from PIL import Image

    from napari_histo.utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(heatmap_rgba(layer), mode="RGBA").save(tmp, format="PNG")
    return path


def export_kind(viewer: napari.Viewer, kind: str, path: str | Path, nuclei_layer: str | None = None) -> Path:
    """Write one export of the nuclei of ``nuclei_layer`` (default: the only nuclei layer);
    raises a clear error when its input is missing."""
    slide_layer = _layers.find_slide_layer(viewer)
    path = Path(path)
    if kind == "heatmap":
        if _layers.HEATMAP not in viewer.layers:
            raise ValueError("no density heatmap: run the Density & hotspots panel first")
        return write_heatmap_png(viewer.layers[_layers.HEATMAP], path)
    table = nuclei_table(viewer, nuclei_layer)
    hotspots = hotspot_annotations(viewer)
    rois = roi_annotations(viewer, slide_layer)
    if kind == "sedeen":
        from napari_histo.formats.sedeen import write_sedeen

        spots = hotspot_table(viewer)
        if table is None and spots is None and not rois:
            raise ValueError("nothing to export: no nuclei, hotspots or ROIs")
        slide_name = None
        if slide_layer is not None and (slide_file := _layers.layer_path(slide_layer)):
            slide_name = Path(slide_file).name
        dimensions, mpp = None, None
        if slide_layer is not None:  # the slide's true size, never the extent of the nuclei
            height, width = _layers.level0_shape(slide_layer)
            dimensions, mpp = (int(width), int(height)), _layers.layer_mpp(slide_layer)
        return write_sedeen(table, path, hotspots=spots, rois=rois or None, merge=True, slide_name=slide_name,
                            dimensions=dimensions, mpp=mpp)
    if table is None:
        raise ValueError("no nuclei to export: run the Nuclei panel (or import nuclei) first")
    if kind == "geojson":
        from napari_histo.formats.geojson import write_geojson

        write_geojson(table, path, annotations=[*rois, *hotspots])
    elif kind == "hovernet":
        from napari_histo.formats.hovernet_json import write_hovernet_json

        mag = None
        if slide_layer is not None and (info_path := _layers.layer_path(slide_layer)):
            try:
                from napari_histo.slide import open_slide

                with open_slide(info_path) as slide:
                    mag = slide.objective_power
            except Exception:
                mag = None
        write_hovernet_json(table, path, mag=mag)
    elif kind == "csv":
        from napari_histo.formats.csv import write_csv

        write_csv(table, path)
    else:
        raise ValueError(f"unknown export kind {kind!r}")
    return path


def import_file(viewer: napari.Viewer, path: str | Path) -> list:
    """Import any supported annotation file (format from its content) into layers aligned with the
    slide, synchronously: nuclei -> Points, regions -> Shapes (:func:`_layers.annotation_layers`)."""
    return _layers.add_layer_tuples(viewer, _layers.annotation_layers(path, _layers.find_slide_layer(viewer)))
