"""Tissue classification of image tiles (DeepCMorph) and nucleus typing by label completion."""
