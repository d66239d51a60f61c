"""QuPath GeoJSON: streamed writer (nuclei as detections/cells, ROIs and hotspots as annotations)
and a tolerant reader (FeatureCollection, Feature, bare array, ``.gz``).

Writer profile (QuPath's GeoJSON export, https://qupath.readthedocs.io/en/stable/docs/advanced/exporting_annotations.html):
UUID ids, ``classification`` always ``{name, color}``,
numeric finite measurements only (map, or list with ``qupath03=True``), coordinates rounded to
2 decimals and the geometry still valid after rounding (proved for star-shaped rings, checked by
shapely for the others, repaired when needed), compact UTF-8 output. Nuclei are written a chunk at
a time (text built by :mod:`napari_histo.formats._fastjson` without a Python step per nucleus) through a temporary file
renamed into place (bounded memory, no partial file on failure).

Coordinates in the file are QuPath's: level-0 px with the origin at the top-left pixel's corner.
The writer adds and the reader subtracts half a pixel
(:data:`~napari_histo.formats._common.VIEWER_PIXEL_OFFSET`), so tables keep pixel-centre
coordinates and an exported nucleus covers the same pixels in QuPath.

Modules: :mod:`.writer` (``write_geojson``), :mod:`.fast_writer` (the vectorised nucleus
writer), :mod:`._geometry` (rounding that keeps geometry valid),
:mod:`.reader` (``read_geojson``) and :mod:`.stream` (incremental reading of big files).
"""

from napari_histo.formats._common import Annotation
from napari_histo.formats.geojson.fast_writer import MEASUREMENT_COLUMNS, iter_nucleus_feature_bytes
from napari_histo.formats.geojson.reader import QuPathObjects, read_geojson
from napari_histo.formats.geojson.writer import annotation_feature, write_geojson

__all__ = [
    "MEASUREMENT_COLUMNS",
    "Annotation",
    "QuPathObjects",
    "annotation_feature",
    "iter_nucleus_feature_bytes",
    "read_geojson",
    "write_geojson",
]
