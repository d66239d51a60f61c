"""Annotation exchange formats (level-0 px everywhere).

- :mod:`.geojson`: QuPath GeoJSON, streamed writer and tolerant reader.
- :mod:`.sedeen`: Sedeen Viewer session XML, reader, writer and merge; :mod:`.colours` holds
  the class <-> pen colour table.
- :mod:`.hovernet_json`: HoVer-Net JSON.
- :mod:`.csv`: per-nucleus measurements.
- :mod:`.imagescope`: Aperio ImageScope XML reader; :mod:`.asap`: ASAP XML reader.
- :mod:`.auto`: any of these, the format found from the file's content; nuclei or point counts.
- :mod:`.rasterize`: polygons/ellipses/points to instance and type maps.

Readers raise :class:`._common.AnnotationFormatError` (an ``InputFileError``) naming the file and,
when known, the line and column. XML is parsed without entity expansion.
"""

#: File name endings of the annotation files the readers take (content decides the format).
ANNOTATION_SUFFIXES = (".geojson", ".json", ".xml", ".geojson.gz", ".json.gz", ".xml.gz")
