"""Conversions between core results (nucleus tables, maps, hotspots) and napari layer data.

One coordinate convention for every layer the plugin adds (napari's layer ``scale`` and
``translate``, https://napari.org/stable/guides/layers.html): data are in
**level-0 pixels** of the slide, and each layer copies the slide layer's ``scale``/``translate``
(µm when the mpp is known, pixels otherwise), so results line up with the slide at every zoom.
Functions here are pure (numpy/pandas in, layer-data tuples out) except the few that read a
viewer or layer, and are unit-testable without a Qt viewer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# Lazy imports: napari, pandas, qtpy are imported inside the functions that use them (directly or
# through the modules named there): napari-histo --help and napari's plugin discovery import this
# module.

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import pandas as pd

    from napari_histo.schema.types import TypeInfo

NUCLEI_POINTS = "nuclei (centroids)"
NUCLEI_LABELS = "nuclei (labels)"
NUCLEUS_CLASSES = "nucleus classes"
NUCLEUS_PROBABILITY = "nucleus probability"
HOTSPOTS = "hotspots"
HEATMAP = "density"
TISSUE = "tissue mask"

#: Columns copied into the Points ``features`` table when present.
FEATURE_COLUMNS = (
    "id",
    "type",
    "type_name",
    "type_prob",
    "area_px",
    "area_um2",
    "perimeter_px",
    "circularity",
    "eccentricity",
    "solidity",
    "dab_od",
    "positive",
)


# ---------------------------------------------------------------------------------------------
# slide layer geometry
# ---------------------------------------------------------------------------------------------
def is_slide_like(layer: Any) -> bool:
    """An Image layer that holds a slide or tile (RGB or single channel, not our overlays)."""
    from napari.layers import Image

    return isinstance(layer, Image) and not layer.metadata.get("napari_histo_overlay", False)


def find_slide_layer(viewer: napari.Viewer) -> Any | None:
    """The slide the panels act on: the selected image layer, else the topmost slide-like one."""
    active = viewer.layers.selection.active
    if active is not None and is_slide_like(active):
        return active
    candidates = [layer for layer in viewer.layers if is_slide_like(layer)]
    with_path = [layer for layer in candidates if layer.metadata.get("path")]
    pool = with_path or candidates
    return pool[-1] if pool else None


def layer_geometry(layer: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(scale, translate)`` of the last two (y, x) axes of ``layer``."""
    scale = tuple(float(s) for s in layer.scale[-2:])
    translate = tuple(float(t) for t in layer.translate[-2:])
    return scale, translate  # type: ignore[return-value]


def level0_shape(layer: Any) -> tuple[int, int]:
    """(height, width) of the layer's full-resolution data."""
    data = layer.data[0] if layer.multiscale else layer.data
    return int(data.shape[0]), int(data.shape[1])


def layer_mpp(layer: Any) -> float | None:
    """µm per level-0 pixel recorded by the reader (``metadata['mpp']``), else None."""
    mpp = layer.metadata.get("mpp")
    if mpp is None:
        return None
    if isinstance(mpp, Sequence | np.ndarray):
        values = [float(v) for v in mpp if v is not None]
        return float(np.mean(values)) if values else None
    return float(mpp)


def layer_path(layer: Any) -> str | None:
    """The slide file behind ``layer`` (reader metadata or napari's source), else None."""
    path = layer.metadata.get("path")
    if path:
        return str(path)
    source = getattr(getattr(layer, "source", None), "path", None)
    return str(source) if source else None


def vertices_to_world(layer: Any, vertices: np.ndarray) -> np.ndarray:
    """(N, 2) data (y, x) of a Shapes/Points layer -> world (y, x) (scale and translate)."""
    scale, translate = layer_geometry(layer)
    return np.asarray(vertices, float)[:, -2:] * np.asarray(scale) + np.asarray(translate)


def world_to_level0(layer: Any, world_yx: np.ndarray) -> np.ndarray:
    """Map world (y, x) coordinates to the layer's level-0 pixel (y, x) coordinates."""
    scale, translate = layer_geometry(layer)
    return (np.asarray(world_yx, float) - np.asarray(translate)) / np.asarray(scale)


def level0_to_world(layer: Any, yx: np.ndarray) -> np.ndarray:
    """Map level-0 pixel (y, x) coordinates to world coordinates."""
    scale, translate = layer_geometry(layer)
    return np.asarray(yx, float) * np.asarray(scale) + np.asarray(translate)


def field_of_view(viewer: napari.Viewer, layer: Any) -> tuple[int, int, int, int]:
    """The part of ``layer`` currently on screen as a level-0 box ``(x0, y0, x1, y1)``.

    Computed from the camera (centre, zoom) and canvas size, clipped to the layer extent.
    """
    camera = viewer.scene.camera
    size = np.asarray(viewer.canvas.size, float)[-2:]  # (h, w) screen px
    centre = np.asarray(camera.center, float)[-2:]
    half = size / (2.0 * float(camera.zoom))
    lo = world_to_level0(layer, centre - half)
    hi = world_to_level0(layer, centre + half)
    h, w = level0_shape(layer)
    y0, x0 = (int(max(0, np.floor(v))) for v in lo)
    y1, x1 = int(min(h, np.ceil(hi[0]))), int(min(w, np.ceil(hi[1])))
    return x0, y0, x1, y1


def shape_bbox(shape_layer: Any, slide_layer: Any, index: int | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A Shapes-layer polygon as level-0 (x, y) vertices and its integer bbox ``(x0, y0, x1, y1)``.

    ``index`` selects the shape (default: the selected one, else the last).
    """
    if not len(shape_layer.data):
        raise ValueError(f"Shapes layer {shape_layer.name!r} has no shapes; draw a rectangle or polygon")
    if index is None:
        selected = sorted(shape_layer.selected_data)
        index = selected[0] if selected else len(shape_layer.data) - 1
    world = vertices_to_world(shape_layer, shape_layer.data[index])
    yx = world_to_level0(slide_layer, world)
    h, w = level0_shape(slide_layer)
    x0, y0 = max(0, int(np.floor(yx[:, 1].min()))), max(0, int(np.floor(yx[:, 0].min())))
    x1, y1 = min(w, int(np.ceil(yx[:, 1].max()))), min(h, int(np.ceil(yx[:, 0].max())))
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the drawn shape does not overlap the slide")
    return yx[:, ::-1].astype(np.float64), (x0, y0, x1, y1)


def units_kwargs(slide_layer: Any | None) -> dict[str, Any]:
    """``units`` of the slide's (y, x) axes, so overlays never mix units with it."""
    units = getattr(slide_layer, "units", None) if slide_layer is not None else None
    return {"units": tuple(str(u) for u in units[-2:])} if units is not None else {}


def overlay_kwargs(slide_layer: Any | None) -> dict[str, Any]:
    """``scale``/``translate``/``units`` that align an overlay in level-0 px with ``slide_layer``."""
    if slide_layer is None:
        return {}
    scale, translate = layer_geometry(slide_layer)
    return {"scale": scale, "translate": translate, **units_kwargs(slide_layer)}


def aligned_kwargs(slide_layer: Any | None, origin: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """:func:`overlay_kwargs` for data whose ``[0, 0]`` is level-0 pixel ``origin`` (x, y) of the slide."""
    kwargs = overlay_kwargs(slide_layer)
    if tuple(origin) != (0, 0):
        (sy, sx), (ty, tx) = layer_geometry(slide_layer) if slide_layer is not None else ((1.0, 1.0), (0.0, 0.0))
        kwargs["translate"] = (ty + origin[1] * sy, tx + origin[0] * sx)
        kwargs["scale"] = (sy, sx)
    return kwargs


# ---------------------------------------------------------------------------------------------
# nuclei
# ---------------------------------------------------------------------------------------------
def type_info_of(table: pd.DataFrame) -> TypeInfo:
    """The table's :class:`TypeInfo` (``attrs['type_info']``), else nucleus-only."""
    from napari_histo.schema.types import NUCLEUS_ONLY, TypeInfo

    info = table.attrs.get("type_info")
    if isinstance(info, TypeInfo):
        return info
    if info:
        return TypeInfo.from_json_dict(info)
    return NUCLEUS_ONLY


def type_rgba(type_info: TypeInfo, type_ids: np.ndarray) -> np.ndarray:
    """(N, 4) float RGBA colours of the type ids."""
    ids = np.asarray(type_ids, dtype=np.int64)
    lut_ids = sorted(set(type_info.ids) | set(np.unique(ids).tolist()))
    colours = {t: np.array([*type_info.colour(t), 255], float) / 255.0 for t in lut_ids}
    out = np.empty((len(ids), 4), float)
    for t, c in colours.items():
        out[ids == t] = c
    return out


def nuclei_features(table: pd.DataFrame) -> pd.DataFrame:
    """The per-nucleus measurements shown in napari (one row per nucleus)."""
    import pandas as pd

    info = type_info_of(table)
    cols: dict[str, Any] = {}
    for col in FEATURE_COLUMNS:
        if col == "type_name":
            cols[col] = pd.Categorical([info.name(t) for t in table["type"].to_numpy()])
        elif col in table.columns:
            cols[col] = table[col].to_numpy()
    return pd.DataFrame(cols)


def points_layer_data(table: pd.DataFrame, slide_layer: Any | None = None, name: str = NUCLEI_POINTS) -> tuple:
    """A Points ``LayerDataTuple`` of nucleus centroids coloured by type, with a features table."""
    info = type_info_of(table)
    coords = np.column_stack([table["y"].to_numpy(float), table["x"].to_numpy(float)]) if len(table) else np.zeros((0, 2))
    kwargs = overlay_kwargs(slide_layer)
    scale = kwargs.get("scale", (1.0, 1.0))
    meta: dict[str, Any] = {
        "name": name,
        "features": nuclei_features(table),
        "face_color": type_rgba(info, table["type"].to_numpy()) if len(table) else "yellow",
        "border_width": 0,
        "size": 8.0 * float(scale[0]),
        "metadata": {"napari_histo_overlay": True, "type_info": info.to_json_dict(), "mpp": table.attrs.get("mpp")},
        **kwargs,
    }
    return coords, meta, "points"


def labels_colormap(table: pd.DataFrame) -> Any:
    """A :class:`DirectLabelColormap` painting each instance id with its type colour."""
    from napari.utils.colormaps import DirectLabelColormap

    info = type_info_of(table)
    colours = type_rgba(info, table["type"].to_numpy()) if len(table) else np.zeros((0, 4))
    color_dict: dict[int | None, Any] = {None: np.zeros(4), 0: np.zeros(4)}
    color_dict.update(zip(table["id"].to_numpy().tolist(), colours, strict=True))
    return DirectLabelColormap(color_dict=color_dict)


#: Largest nucleus id shown with a per-id colormap; napari 0.9 needs numba beyond 2**16 keys, so
#: larger results are shown as type-coded display values (``_preview.type_coded``).
MAX_DIRECT_IDS = 65_000


def labels_layer_data(labels: Any, table: pd.DataFrame, slide_layer: Any | None = None, name: str = NUCLEI_LABELS, origin: tuple[int, int] = (0, 0)) -> tuple:
    """A Labels ``LayerDataTuple`` (single array or a multiscale list) coloured by nucleus type.

    ``origin`` (x, y) is the level-0 position of ``labels[0, 0]`` (a crop of the slide). Up to
    :data:`MAX_DIRECT_IDS` nuclei the layer holds the true ids (picking a label gives its id);
    beyond, it holds display values coloured by type and ``metadata['label_ids']`` keeps the
    level-0 array of true ids, read where the user clicks.
    """
    import pandas as pd

    if len(table) and int(table["id"].max()) > MAX_DIRECT_IDS:
        from napari_histo._napari._preview import type_coded, type_colormap

        levels = labels if isinstance(labels, list) else [labels]
        coded = type_coded(levels, table["id"].to_numpy(), table["type"].to_numpy())
        meta = {
            "name": name,
            "colormap": type_colormap(type_info_of(table)),
            "opacity": 0.9,
            "metadata": {"napari_histo_overlay": True, "label_ids": levels[0]},
            "multiscale": isinstance(labels, list),
            **aligned_kwargs(slide_layer, origin),
        }
        return (coded if isinstance(labels, list) else coded[0]), meta, "labels"
    features = nuclei_features(table)
    features = pd.concat([pd.DataFrame({"index": [0]}), features.assign(index=features["id"].to_numpy())], ignore_index=True) if len(features) else None
    meta: dict[str, Any] = {
        "name": name,
        "colormap": labels_colormap(table),
        "opacity": 0.9,
        "metadata": {"napari_histo_overlay": True},
        "multiscale": isinstance(labels, list),
        **aligned_kwargs(slide_layer, origin),
    }
    if features is not None:
        meta["features"] = features
    return labels, meta, "labels"


def type_counts(table: pd.DataFrame) -> list[tuple[int, str, tuple[int, int, int], int]]:
    """``(type id, name, RGB, count)`` for every type present (or declared) in the table."""
    info = type_info_of(table)
    counts = table["type"].value_counts().to_dict() if len(table) else {}
    ids = sorted(set(t for t in info.ids if t != 0) | set(int(t) for t in counts))
    return [(t, info.name(t), info.colour(t), int(counts.get(t, 0))) for t in ids]


# ---------------------------------------------------------------------------------------------
# heatmaps and hotspots
# ---------------------------------------------------------------------------------------------
def heatmap_colormap(base: str = "inferno") -> Any:
    """napari's ``base`` colormap with its lowest colour transparent: where no nucleus is counted the
    slide shows through instead of a grey veil."""
    from napari.utils.colormaps import AVAILABLE_COLORMAPS, Colormap

    colours = np.array(AVAILABLE_COLORMAPS[base].colors, dtype=np.float32)
    colours[0, 3] = 0.0
    return Colormap(colours, name=f"{base} (zero transparent)")


def heatmap_layer_data(values: np.ndarray, cell_px: float, slide_layer: Any | None, *, name: str = HEATMAP, colormap: Any = None, contrast_limits: tuple[float, float] | None = None, offset: tuple[float, float] | None = None) -> tuple:
    """An Image ``LayerDataTuple`` for a grid map with ``cell_px`` level-0 px per cell.

    napari puts pixel *centres* at ``index * scale + translate``, so a cell of P
    level-0 px (each of size s0) gets ``scale = P*s0`` and ``translate = t0 + (P-1)/2 * s0``.
    ``offset`` (x, y) overrides the level-0 centre of cell (0, 0) (default ``(P-1)/2``).
    """
    values = np.asarray(values, dtype=np.float32)
    (s0y, s0x), (t0y, t0x) = layer_geometry(slide_layer) if slide_layer is not None else ((1.0, 1.0), (0.0, 0.0))
    p = float(cell_px)
    off_x, off_y = offset if offset is not None else ((p - 1) / 2, (p - 1) / 2)
    finite = values[np.isfinite(values)]
    hi = float(finite.max()) if finite.size else 1.0
    limits = contrast_limits or (0.0, hi if hi > 0 else 1.0)
    meta = {
        "name": name,
        "scale": (p * s0y, p * s0x),
        "translate": (t0y + off_y * s0y, t0x + off_x * s0x),
        "colormap": colormap if colormap is not None else heatmap_colormap(),
        "contrast_limits": limits,
        "opacity": 0.6,
        "blending": "translucent",
        "metadata": {"napari_histo_overlay": True, "cell_px": p},
        **units_kwargs(slide_layer),
    }
    return values, meta, "image"


def circle_polygon(cx: float, cy: float, r: float, n: int = 48) -> np.ndarray:
    """(n, 2) level-0 (y, x) vertices of a circle."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cy + r * np.sin(t), cx + r * np.cos(t)])


#: Largest extent (level-0 px) of imported nuclei drawn as outlines (int32 labels: 256 MB); beyond
#: it the nuclei are shown as centroids only, with a notice.
MAX_OUTLINE_PX = 64_000_000


def outline_layer_data(table: pd.DataFrame, slide_layer: Any | None, name: str) -> tuple | None:
    """Imported nucleus outlines as a Labels layer (contours, coloured by type) over the nuclei's
    extent, or None when the table has no outlines or the extent is too large to paint."""
    from napari_histo.formats.rasterize import paint_polygons

    contours = [np.asarray(c, np.float64) for c in table["contour"]] if "contour" in table.columns else []
    if not contours or not any(len(c) >= 3 for c in contours):
        return None
    x0, y0 = int(np.floor(table["bbox_x0"].min())), int(np.floor(table["bbox_y0"].min()))
    x1, y1 = int(np.ceil(table["bbox_x1"].max())) + 1, int(np.ceil(table["bbox_y1"].max())) + 1
    if (x1 - x0) * (y1 - y0) > MAX_OUTLINE_PX:
        from napari.utils.notifications import show_info

        show_info(f"{name}: {len(table):,} nuclei over {x1 - x0:,} × {y1 - y0:,} px: shown as centroids only "
                  "(outlines are drawn up to 64 Mpx)")
        return None
    shifted = [c - np.array([x0, y0]) for c in contours]
    labels, _ = paint_polygons(shifted, (y1 - y0, x1 - x0), edges="top-left", values=None)
    ids = np.arange(1, len(table) + 1, dtype=np.int64)
    keyed = table.assign(id=ids)
    data, meta, kind = labels_layer_data(labels.astype(np.int32), keyed, slide_layer, name=name, origin=(x0, y0))
    meta["metadata"]["imported_outlines"] = True
    meta["opacity"] = 1.0
    return data, meta, kind


def _warn_if_off_slide(path: Any, table: pd.DataFrame, slide_layer: Any | None) -> None:
    """Warn when most imported nuclei fall outside the open slide (a file from another slide, or
    coordinates of another origin), with the offset that would bring them onto it."""
    if slide_layer is None or not len(table):
        return
    height, width = level0_shape(slide_layer)
    x, y = table["x"].to_numpy(float), table["y"].to_numpy(float)
    outside = (x < 0) | (y < 0) | (x >= width) | (y >= height)
    if outside.mean() <= 0.5:
        return
    from napari.utils.notifications import show_warning

    dx = 0.0 if 0 <= x.min() and x.max() < width else (-x.min() if x.min() < 0 else width - 1 - x.max())
    dy = 0.0 if 0 <= y.min() and y.max() < height else (-y.min() if y.min() < 0 else height - 1 - y.max())
    show_warning(
        f"{Path(path).name}: {int(outside.sum()):,} of {len(table):,} nuclei lie outside {slide_layer.name} "
        f"({width:,} × {height:,} px); the file may belong to another slide, or use another origin "
        f"(an offset of at least ({dx:+,.0f}, {dy:+,.0f}) px would bring them onto it)"
    )


def annotation_layers(path: str | os.PathLike, slide_layer: Any | None) -> list[tuple]:
    """``LayerDataTuple``s of an annotation file (QuPath GeoJSON, HoVer-Net JSON, Sedeen session,
    ImageScope or ASAP XML; format from the content), aligned with ``slide_layer``.

    Nuclei become a Points layer carrying the nucleus table (so density, hotspots and export
    work on them) and, when the file has outlines, a Labels layer drawing them coloured by type;
    a file without nucleus outlines has its point annotations (manual counts) taken as nuclei.
    Nuclei mostly outside the open slide raise a warning with the offset. Polygon regions become a Shapes layer that behaves like user ROIs.

    Raises
    ------
    HistoError
        Unreadable file (named in the message), or one with neither nuclei nor polygon regions.
    """
    from pathlib import Path

    import pandas as pd

    from napari_histo.formats._common import AnnotationFormatError
    from napari_histo.formats.auto import points_as_nuclei, read_annotation_file

    path = Path(path)
    mpp = layer_mpp(slide_layer) if slide_layer is not None else None
    content = read_annotation_file(path, mpp=mpp)
    table = content.table if len(content.table) else points_as_nuclei(content, mpp)
    stem = path.name.split(".")[0]
    layers: list[tuple] = []
    nucleus_classes: set[str] = set()
    if table is not None and len(table):
        _warn_if_off_slide(path, table, slide_layer)
        outlines = outline_layer_data(table, slide_layer, name=f"{stem} outlines")
        if outlines is not None:
            layers.append(outlines)
        data, meta, kind = points_layer_data(table, slide_layer, name=f"{stem} nuclei")
        meta["metadata"]["nuclei_table"] = table
        layers.append((data, meta, kind))
        info = type_info_of(table)
        nucleus_classes = {info.name(t) for t in info.ids if t != 0}
    polygons, names, colours = [], [], []
    for ann in content.annotations:
        if ann.class_name in nucleus_classes and ann.shape in (None, "polygon"):
            continue  # already imported as a nucleus
        for part in getattr(ann.geometry, "geoms", [ann.geometry]):
            if part.geom_type != "Polygon":
                continue
            polygons.append(np.asarray(part.exterior.coords)[:-1, :2][:, ::-1])
            names.append(ann.name or ann.class_name or "region")
            colours.append(np.array([*(ann.colour or (0, 255, 255)), 255]) / 255.0)
    if polygons:
        data, meta, kind = shapes_layer_data(polygons, slide_layer, name=f"{stem} regions", features=pd.DataFrame({"name": names}))
        meta["edge_color"] = np.asarray(colours)
        meta["metadata"] = {}  # imported regions behave like user ROIs
        layers.append((data, meta, kind))
    if not layers:
        raise AnnotationFormatError(path, f"{content.format_name} file holds no nuclei, points or polygon regions")
    return layers


def annotation_import_events(path: str | os.PathLike, slide_layer: Any | None):
    """Worker generator for :func:`annotation_layers`: yields "reading", returns the layer tuples
    (file reading and layer data off the GUI thread; only adding the layers is left to it)."""
    yield "reading"
    return annotation_layers(path, slide_layer)


def add_layer_tuples(viewer: napari.Viewer, layer_tuples: list[tuple]) -> list:
    """Add ``(data, kwargs, kind)`` tuples to ``viewer`` (GUI thread) and return the layers."""
    return [getattr(viewer, f"add_{kind}")(data, **meta) for data, meta, kind in layer_tuples]


def shapes_layer_data(polygons_yx: list[np.ndarray], slide_layer: Any | None, *, name: str, features: pd.DataFrame | None = None, edge_color: str = "cyan") -> tuple:
    """A Shapes ``LayerDataTuple`` of polygons in level-0 (y, x) px (ROIs, hotspots)."""
    meta: dict[str, Any] = {
        "name": name,
        "shape_type": "polygon",
        "face_color": "transparent",
        "edge_color": edge_color,
        "edge_width": 3.0 * float(overlay_kwargs(slide_layer).get("scale", (1.0,))[0]),
        "metadata": {"napari_histo_overlay": True},
        **overlay_kwargs(slide_layer),
    }
    if features is not None:
        meta["features"] = features
    return [np.asarray(p, float) for p in polygons_yx], meta, "shapes"


def remove_layers(viewer: napari.Viewer, layers: Sequence[Any]) -> None:
    """Remove layers (or names), letting Qt process each removal before the next.

    Removing two layers back to back and then drawing crashes napari 0.9 with vispy on Mesa's
    software rasteriser (segfault in ``glDrawArrays``, reproduced under Xvfb with an image and
    two layers removed in one event-loop turn); one ``processEvents`` between removals avoids it.
    """
    from qtpy.QtWidgets import QApplication

    present = [layer for layer in layers if layer in viewer.layers]
    for i, layer in enumerate(present):
        if i:
            app = QApplication.instance()
            if app is not None:
                app.processEvents()
        if layer in viewer.layers:
            viewer.layers.remove(layer)


def add_or_update(viewer: napari.Viewer, layer_data: tuple) -> Any:
    """Add a ``LayerDataTuple``, replacing a layer of the same name and type."""
    data, meta, kind = layer_data
    name = meta.get("name")
    if name in viewer.layers:
        old = viewer.layers[name]
        if type(old).__name__.lower() == kind:  # the public class name (napari's _type_string is deprecated)
            viewer.layers.remove(old)
    add = getattr(viewer, f"add_{kind}")
    return add(data, **meta)


class ViewportCulling:
    """Show only the points of a large Points layer that are near the current view.

    napari hands every point of a layer to the renderer on each draw, so a whole-slide result
    (10^5-10^6 centroids) makes panning slow even when a few hundred are on screen. This keeps
    the layer's ``shown`` mask to the points inside the view enlarged by ``margin`` (a fraction
    of the view on each side), recomputed on camera moves. Layers with fewer than
    ``min_points`` points are never culled.

    Culling only further restricts the user's choice: a ``shown`` mask set by anyone else (a
    features filter, a script) becomes :attr:`user_shown`, and the layer shows
    ``user_shown & near the view``, so a point the user hid stays hidden wherever the camera
    goes. Reading ``layer.shown`` gives what is drawn; :attr:`user_shown` gives the choice.
    """

    def __init__(self, viewer: napari.Viewer, layer: Any, *, margin: float = 0.5, min_points: int = 20_000) -> None:
        self.viewer, self.layer = viewer, layer
        self.margin, self.min_points = float(margin), int(min_points)
        self._world = np.zeros((0, 2))
        self._region: tuple | None = None
        self.user_shown = np.array(layer.shown, bool)
        self._applied = self.user_shown.copy()  # the mask this object last wrote
        self._writing = False
        self._data_changed()
        camera = viewer.scene.camera
        camera.events.center.connect(self.update)
        camera.events.zoom.connect(self.update)
        layer.events.data.connect(self._data_changed)
        layer.events.set_data.connect(self._shown_maybe_set)
        self.update()

    def _data_changed(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        action = str(getattr(action, "value", action) or "")
        if action.endswith("ing"):  # "adding", "removing", "changing": wait for the change itself
            return
        n = len(self.layer.data)
        self._world = vertices_to_world(self.layer, self.layer.data) if n else np.zeros((0, 2))
        user = self.user_shown
        removed = getattr(event, "data_indices", None) if action == "removed" else None
        if removed is not None and len(user) == n + len(removed):
            user = np.delete(user, np.asarray(removed, int))
        # napari truncates ``shown`` or extends it with True when points go or come; so does the choice
        self.user_shown = user[:n] if len(user) >= n else np.concatenate([user, np.ones(n - len(user), bool)])
        self._applied = np.array(self.layer.shown, bool)
        self._region = None
        self.update()

    def _shown_maybe_set(self, *_: Any) -> None:
        """``shown`` written by someone else since our last update: adopt it as the user's choice."""
        if self._writing or len(self.layer.shown) != len(self._applied):
            return
        if not np.array_equal(self.layer.shown, self._applied):
            self.user_shown = np.array(self.layer.shown, bool)
            self._applied = self.user_shown.copy()
            self._region = None
            self.update()

    def _view(self, grow: float) -> tuple[np.ndarray, np.ndarray]:
        camera = self.viewer.scene.camera
        size = np.asarray(self.viewer.canvas.size, float)[-2:]
        half = size / (2.0 * float(camera.zoom)) * grow
        centre = np.asarray(camera.center, float)[-2:]
        return centre - half, centre + half

    def visible_mask(self) -> np.ndarray:
        """Points inside the enlarged view (all True for small layers), ignoring the user's choice."""
        n = len(self._world)
        if n < self.min_points:
            return np.ones(n, bool)
        lo, hi = self._view(1.0 + 2.0 * self.margin)
        self._region = (lo, hi, float(self.viewer.scene.camera.zoom))
        w = self._world
        return (w[:, 0] >= lo[0]) & (w[:, 0] <= hi[0]) & (w[:, 1] >= lo[1]) & (w[:, 1] <= hi[1])

    def _still_covered(self) -> bool:
        """The view is inside the region of the last mask at a similar zoom: nothing to do
        (a ``shown`` change re-slices the whole layer, so it is done only when needed)."""
        region = self._region
        if region is None or len(self._world) < self.min_points:
            return False
        lo, hi, zoom = region
        view_lo, view_hi = self._view(1.0)
        same_zoom = 0.5 < float(self.viewer.scene.camera.zoom) / zoom < 2.0
        return same_zoom and bool(np.all(view_lo >= lo) and np.all(view_hi <= hi))

    def update(self, *_: Any) -> None:
        if self.layer not in self.viewer.layers or len(self._world) != len(self.layer.data):
            return
        if len(self.user_shown) != len(self._world):
            return
        if not self._writing and not np.array_equal(self.layer.shown, self._applied):
            self._shown_maybe_set()  # a user write we were not told about: adopt it first
            return
        if self._still_covered():
            return
        mask = self.visible_mask() & self.user_shown
        if not np.array_equal(mask, self.layer.shown):
            self._writing = True
            try:
                self.layer.shown = mask
            finally:
                self._writing = False
        self._applied = np.array(self.layer.shown, bool)

    def disconnect(self) -> None:
        camera = self.viewer.scene.camera
        camera.events.center.disconnect(self.update)
        camera.events.zoom.disconnect(self.update)
        self.layer.events.data.disconnect(self._data_changed)
        self.layer.events.set_data.disconnect(self._shown_maybe_set)


# ---------------------------------------------------------------------------------------------
# nucleus maps (DeepCMorph)
# ---------------------------------------------------------------------------------------------
def nucleus_classes_layer_data(store: Any, slide_layer: Any | None) -> tuple:
    """A Labels ``LayerDataTuple`` of the nucleus classes of a nucleus-map store (lazy)."""
    import dask.array as da
    from napari.utils.colormaps import DirectLabelColormap

    from napari_histo.models.classification import open_nucleus_maps
    from napari_histo.schema.vocabulary import coarse_colour

    _, classes, attrs = open_nucleus_maps(store)
    colours: dict[int | None, Any] = {None: np.zeros(4), 0: np.zeros(4)}
    for name, k in attrs["class_ids"].items():
        rgb = coarse_colour(name) or (200, 200, 200)
        colours[int(k)] = np.array([*rgb, 255]) / 255.0
    meta = {"name": NUCLEUS_CLASSES, "colormap": DirectLabelColormap(color_dict=colours), "opacity": 0.7,
            "metadata": {"napari_histo_overlay": True, "class_ids": dict(attrs["class_ids"])},
            **grid_kwargs(slide_layer, attrs["origin_level0"], float(attrs["level0_per_px"]))}
    return da.from_zarr(classes), meta, "labels"


def grid_kwargs(slide_layer: Any | None, origin: tuple[float, float], level0_per_px: float) -> dict[str, Any]:
    """``scale``/``translate`` of an array whose pixel ``[0, 0]`` covers level-0 px ``origin`` (x, y)
    onwards and whose pixels are ``level0_per_px`` level-0 px wide (nucleus maps, tile grids),
    aligned with ``slide_layer`` pixel centre on pixel centre."""
    kwargs = aligned_kwargs(slide_layer, tuple(origin))
    sy, sx = kwargs.get("scale", (1.0, 1.0))
    ty, tx = kwargs.get("translate", (origin[1] * sy, origin[0] * sx))
    kwargs["scale"] = (sy * level0_per_px, sx * level0_per_px)
    kwargs["translate"] = (ty + (level0_per_px - 1) * sy / 2, tx + (level0_per_px - 1) * sx / 2)
    return kwargs


def nucleus_probability_layer_data(store: Any, slide_layer: Any | None) -> tuple:
    """An Image ``LayerDataTuple`` of the nucleus probability of a nucleus-map store (lazy, 0-255)."""
    import dask.array as da

    from napari_histo.models.classification import open_nucleus_maps

    nuclei, _, attrs = open_nucleus_maps(store)
    meta = {"name": NUCLEUS_PROBABILITY, "colormap": "magma", "contrast_limits": (0, 255), "opacity": 0.6,
            "blending": "additive", "metadata": {"napari_histo_overlay": True}, **grid_kwargs(slide_layer, attrs["origin_level0"], float(attrs["level0_per_px"]))}
    return da.from_zarr(nuclei), meta, "image"
