"""DeepCMorph tissue classifier (nucleus segmentation module + EfficientNet classifier):
network and weight loading (:mod:`.model`), ``config.json`` contract (:mod:`.config`)."""
