"""Genome inputs: sequence (fasta), regions and shards (regions), windows (windows),
RNA-seq evidence (bam), reference annotation and training data (other modules).

Coordinates inside the library are 0-based half-open everywhere; 1-based inclusive
coordinates appear only in user-facing strings (``chr:start-end``) and GFF3.
"""
