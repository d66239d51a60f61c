"""HoVer-Net inference: the official network (:mod:`.net`) and its checkpoint loader
(:mod:`.checkpoint`), the compact network shipped as the default model (:mod:`.compact`) and its
``config.json`` contract (:mod:`.config`). Training is in ``src_models.hovernet``."""
