"""Nucleus-table analysis: density maps (:mod:`.density`), hotspots (:mod:`.hotspots`), report
figures (:mod:`.plots`) and result-folder loading (:mod:`.results`). Pure core: no Qt/napari."""
