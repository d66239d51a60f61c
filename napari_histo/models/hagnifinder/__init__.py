"""Hagnifinder magnification regressor: network (:mod:`.model`), ``config.json`` contract
(:mod:`.config`), calibration applied at prediction time (:mod:`.calibration`) and image helpers
(:mod:`.images`). Prediction over images and slides: :mod:`napari_histo.models.magnification`."""
