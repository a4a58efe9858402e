"""``genoseg train``: config schema (:mod:`~genoseg.train.config`) and the training loop
(:mod:`~genoseg.train.train`, one file, top to bottom)."""
