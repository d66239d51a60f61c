"""Data shipped with napari-histo: sample slide, model weights and cards, type tables.

Installed as ``napari_histo.resources``; locate files with :func:`napari_histo.utils.resource_path`.
"""
