"""What every layer shares about nuclei: the nucleus table's columns (:mod:`.table`) and the
type vocabulary with its colours (:mod:`.types`)."""
