"""Label completion: a nucleus type classifier that merges datasets with different label sets
(network in :mod:`.model`, typing of segmented nuclei in :mod:`.inference`)."""
