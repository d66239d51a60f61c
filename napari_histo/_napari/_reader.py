"""napari reader: whole-slide images as lazy multiscale RGB layers with physical scale in µm, and
annotation files (QuPath GeoJSON, HoVer-Net JSON, Sedeen session, ImageScope/ASAP XML) as nuclei
and region layers aligned with the slide already open."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_histo.formats import ANNOTATION_SUFFIXES
from napari_histo.slide._describe import PLAIN_EXTENSIONS, SUPPORTED_EXTENSIONS, TIFF_EXTENSIONS

# Lazy imports: napari, pandas are imported inside the functions that use them (directly or
# through the modules named there): napari-histo --help and napari's plugin discovery import this
# module.

PathLike = str | os.PathLike
LayerData = tuple[Any, ...]

_TIFF_BASED = TIFF_EXTENSIONS | {".svs", ".ndpi", ".scn", ".bif", ".svslide"}
_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".bmp": (b"BM",),
}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _looks_readable(path: PathLike) -> bool:
    """Cheap checks only: extension, non-empty regular file, header magic / OpenSlide probe."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        return False
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    if head[:4] in _TIFF_MAGIC:
        return ext in _TIFF_BASED or ext in PLAIN_EXTENSIONS
    if ext in _MAGIC:
        return head.startswith(_MAGIC[ext])
    if ext in _TIFF_BASED:
        return False
    from napari_histo.slide._describe import openslide_vendor

    return openslide_vendor(path) is not None  # .mrxs, .vms, .vmu (index files)




def _looks_like_annotations(path: PathLike) -> bool:
    """Annotation suffix and a recognised format in the first 4 KiB (never reads the whole file)."""
    if not str(path).lower().endswith(ANNOTATION_SUFFIXES) or not Path(path).is_file():
        return False
    from napari_histo.formats.auto import looks_like_annotations

    return looks_like_annotations(path)


def _slide_file(path: PathLike) -> bool:
    """A regular file with a slide or image extension this plugin reads (content unchecked)."""
    path = Path(path)
    return path.suffix.lower() in SUPPORTED_EXTENSIONS and path.is_file()


def _path_list(path: PathLike | Sequence[PathLike]) -> list[PathLike]:
    """napari passes one path or a list of them."""
    return [path] if isinstance(path, (str, os.PathLike)) else list(path)


def _viewer_slide_layer() -> Any | None:
    """The current viewer's slide layer: it supplies the scale that aligns overlays read from files
    (a reader cannot see the viewer it reads into)."""
    import napari

    from napari_histo._napari import _layers

    viewer = napari.current_viewer()
    return _layers.find_slide_layer(viewer) if viewer is not None else None


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """:func:`read_slides` when every path looks like a slide we can open, :func:`read_annotations`
    when every path is an annotation file we recognise, else None.

    A single file with a slide extension that fails the cheap checks (empty, truncated header,
    another format renamed) is still taken by :func:`read_slides`, which reports why it cannot
    be opened in the words the command line uses, instead of napari's bare "refused the file"
    when the user picked this plugin for it.
    """
    try:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            return None
        if all(_looks_readable(p) for p in paths):
            return read_slides
        if all(_looks_like_annotations(p) for p in paths):
            return read_annotations
        if len(paths) == 1 and _slide_file(paths[0]):
            return read_slides
    except Exception:  # get_reader must never raise
        return None
    return None


def read_annotations(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Nuclei (Points) and regions (Shapes) of annotation files, as layer data aligned with the
    viewer's slide.

    A reader cannot see the viewer it reads into; the current viewer's slide layer, when there is
    one, only supplies the scale so the annotations (level-0 px) land on the slide. The reader
    returns layer data and adds nothing to the viewer itself; files are read on the calling thread
    (a whole-slide export of a million nuclei takes tens of seconds: the Import button of the
    Export & import panel reads in the background). Errors become notifications.
    """
    from napari.utils.notifications import show_error

    from napari_histo._napari import _layers
    from napari_histo.utils import HistoError

    slide_layer = _viewer_slide_layer()
    layers: list[LayerData] = []
    for one in _path_list(path):
        try:
            layers.extend(_layers.annotation_layers(one, slide_layer))
        except HistoError as exc:
            show_error(f"napari-histo could not import the annotations: {exc}")
    return layers or [(None,)]


def slide_layer_data(slide) -> LayerData:
    """(pyramid, kwargs, "image") for an open :class:`~napari_histo.slide.Slide`."""
    pyramid = slide.pyramid()
    metadata = slide.metadata()
    metadata["pyramid_downsamples"] = slide.pyramid_downsamples()
    metadata["slide_spec"] = slide.spec()
    kwargs: dict[str, Any] = {
        "name": slide.path.name,
        "rgb": True,
        "multiscale": len(pyramid) > 1,
        "contrast_limits": (0, 255),
        "metadata": metadata,
    }
    if slide.mpp is not None:
        kwargs["scale"] = (slide.mpp[1], slide.mpp[0])
        kwargs["units"] = ("um", "um")
        metadata["scale_units"] = "um"
    else:
        metadata["scale_units"] = "pixel"
    data = pyramid if len(pyramid) > 1 else pyramid[0]
    return (data, kwargs, "image")


def _scale_bar_in_microns(layers: list[LayerData]) -> None:
    """Show napari's scale bar in µm when a slide with a pixel size is opened into a viewer."""
    if not any(layer[1].get("units") for layer in layers if len(layer) > 1):
        return
    try:
        import napari

        viewer = napari.current_viewer()
        if viewer is not None:  # the bar takes its unit from the layers' (µm)
            viewer.canvas.overlays.scale_bar.visible = True
    except Exception:  # no viewer (scripts), or an older napari: the layer still opens
        pass


def read_slides(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Open each slide as a multiscale RGB image layer; errors become one notification."""
    from napari.utils.notifications import show_error, show_info

    from napari_histo.slide import open_slide
    from napari_histo.utils import HistoError

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    from napari_histo.utils import check_input_file

    for one in paths:
        try:
            check_input_file(one, "slide or image file")  # empty, not a file: the CLI's words
            slide = open_slide(one)
            layer = slide_layer_data(slide)
        except HistoError as exc:
            show_error(f"napari-histo could not open the slide: {exc}")
            continue
        if slide.mpp is None:
            show_info(
                f"{slide.path.name}: the file states no pixel size (mpp); the layer is shown in "
                "pixels. Magnification prediction can estimate it."
            )
        layers.append(layer)
    if layers:
        from napari_histo._napari._reader_preference import prefer_this_reader

        prefer_this_reader()
        _scale_bar_in_microns(layers)
    return layers or [(None,)]


def _is_nucleus_maps(path: PathLike) -> bool:
    """A folder written by ``classify`` as its nucleus-map store (cheap: its zarr.json names the
    nucleus classes)."""
    meta = Path(path) / "zarr.json"
    try:
        return Path(path).is_dir() and meta.is_file() and b'"class_ids"' in meta.read_bytes()[:65536]
    except OSError:
        return False


def get_maps_reader(path: PathLike | Sequence[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """:func:`read_nucleus_maps` for ``nucleus_maps.zarr`` folders written by ``classify``, else None."""
    try:
        paths = _path_list(path)
        if paths and all(_is_nucleus_maps(p) for p in paths):
            return read_nucleus_maps
    except Exception:  # get_reader must never raise
        return None
    return None


def read_nucleus_maps(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """The nucleus classes (Labels, coloured by coarse type) and the nucleus probability (Image)
    of ``classify``'s nucleus-map stores, read lazily and aligned with the viewer's slide."""
    from napari.utils.notifications import show_error

    from napari_histo._napari import _layers
    from napari_histo.utils import HistoError

    slide_layer = _viewer_slide_layer()
    layers: list[LayerData] = []
    for one in _path_list(path):
        try:
            layers.append(_layers.nucleus_probability_layer_data(one, slide_layer))
            layers.append(_layers.nucleus_classes_layer_data(one, slide_layer))
        except (HistoError, KeyError) as exc:
            show_error(f"napari-histo could not open the nucleus maps {one}: {exc}")
    return layers or [(None,)]
