"""Output files: atomic, signal-safe writing and the GFF3 / BED / bedGraph / bigWig /
FASTA writers of gene models and posterior tracks."""
