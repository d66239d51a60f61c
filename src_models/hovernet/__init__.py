"""HoVer-Net models: the official architecture (:mod:`.net`) and its checkpoint loader
(:mod:`.checkpoint`), plus the compact trainable variant and its training code.

Import submodules directly (``from napari_histo.models.hovernet.net import HoVerNet``); nothing heavy is
imported here.
"""
