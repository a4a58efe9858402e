"""Decoded paths -> gene models, posterior tracks and structural checks.

* :mod:`genoseg.decode.genes`: :class:`Segment` (a path segment with posteriors) and
  :func:`genes_from_path` -> :class:`Gene` -> :class:`Transcript` -> :class:`CDSPart` /
  :class:`Intron`, with GFF3 phases and coordinate-derived IDs;
* :mod:`genoseg.decode.tracks`: engine marginals -> named per-strand posterior tracks
  (:func:`posterior_tracks`) and per-segment boundary posteriors
  (:func:`boundary_posteriors`);
* :mod:`genoseg.decode.check`: structural checks of gene models against the sequence
  (:func:`check_gene_models`, :func:`check_gff3`);
* :mod:`genoseg.decode.sequence`: CDS / protein sequences of gene models.

Coordinates: forward strand, 0-based half-open, throughout. Writers live in genoseg.io.
"""

from genoseg.decode.check import check_cds, check_gene_models, check_gff3
from genoseg.decode.genes import (
    CDSPart,
    Gene,
    Intron,
    Segment,
    Transcript,
    gene_id,
    genes_from_path,
)
from genoseg.decode.sequence import as_fetch, cds_sequence, translate
from genoseg.decode.tracks import (
    BOUNDARY_TRACKS,
    POSITION_TRACKS,
    TRACK_NAMES,
    TrackChunk,
    boundary_posteriors,
    fill_boundary_posteriors,
    label_groups,
    posterior_tracks,
)

__all__ = [
    "BOUNDARY_TRACKS",
    "POSITION_TRACKS",
    "TRACK_NAMES",
    "CDSPart",
    "Gene",
    "Intron",
    "Segment",
    "TrackChunk",
    "Transcript",
    "as_fetch",
    "boundary_posteriors",
    "cds_sequence",
    "check_cds",
    "check_gene_models",
    "check_gff3",
    "fill_boundary_posteriors",
    "gene_id",
    "genes_from_path",
    "label_groups",
    "posterior_tracks",
    "translate",
]
