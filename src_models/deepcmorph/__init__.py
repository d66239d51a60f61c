"""DeepCMorph tissue classifier (segmentation maps + EfficientNet classifier), torch only."""
