"""Nucleus typing across datasets with different vocabularies: correlation-based label completion."""
