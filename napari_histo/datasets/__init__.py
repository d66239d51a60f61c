"""Readers for public nucleus datasets (MoNuSeg, MoNuSAC, CPM-15, CRCHistoPhenotypes)."""
