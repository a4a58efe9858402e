"""``genoseg predict``: whole-contig decoding with exact posteriors
(:mod:`~genoseg.predict.pipeline`), the command's orchestration (:mod:`~genoseg.predict.run`)."""
