"""Sequence access for gene models: CDS and protein sequences in transcript sense.

A *sequence source* is any of

* a :class:`genoseg.data.fasta.Genome` (or anything with ``fetch(contig, start, end)``),
* a mapping ``{contig: sequence string}``,
* a callable ``f(contig, start, end) -> str``,
* a path to a FASTA file (opened with :meth:`Genome.open`).

Coordinates are 0-based half-open on the forward strand; letters are returned uppercase.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from genoseg.errors import GenosegError
from genoseg.grammar.spec import reverse_complement

__all__ = ["Fetch", "as_fetch", "cds_sequence", "translate"]

Fetch = Callable[[str, int, int], str]


def as_fetch(source: object) -> Fetch:
    """A function ``fetch(contig, start, end) -> str`` (uppercase, 0-based half-open) over a
    sequence source (module docstring). Reading past a contig end or an unknown contig
    raises GenosegError naming it."""
    if isinstance(source, (str, os.PathLike)):
        from genoseg.data.fasta import Genome

        source = Genome.open(source)
    if hasattr(source, "fetch"):
        genome = source

        def fetch(contig: str, start: int, end: int) -> str:
            return genome.fetch(contig, start, end).upper()

        return fetch
    if isinstance(source, Mapping):
        seqs = source

        def fetch_map(contig: str, start: int, end: int) -> str:
            try:
                seq = seqs[contig]
            except KeyError:
                raise GenosegError(f"contig {contig!r} is not in the sequences given") from None
            if not 0 <= start <= end <= len(seq):
                raise GenosegError(
                    f"{contig}:{start}-{end} (0-based half-open) is outside contig {contig!r} "
                    f"of length {len(seq)}"
                )
            return str(seq[start:end]).upper()

        return fetch_map
    if callable(source):
        fn = source

        def fetch_fn(contig: str, start: int, end: int) -> str:
            return str(fn(contig, start, end)).upper()

        return fetch_fn
    raise TypeError(
        "sequence source must be a Genome, a FASTA path, a mapping contig -> sequence or a "
        f"callable (contig, start, end) -> str, not {type(source).__name__}"
    )


def cds_sequence(fetch: Fetch, contig: str, strand: str, parts: Sequence[tuple[int, int]]) -> str:
    """Spliced sequence of ``parts`` (ascending 0-based half-open intervals) in transcript
    sense: concatenated on ``+``, reverse-complemented on ``-``."""
    seq = "".join(fetch(contig, s, e) for s, e in parts)
    return seq if strand == "+" else reverse_complement(seq)


def translate(cds: str, table: int = 1) -> str:
    """Protein of a complete CDS (biopython, NCBI translation table ``table``), without the
    final stop ``*``. Codons with N translate to ``X``."""
    from Bio.Seq import Seq

    usable = len(cds) - len(cds) % 3
    protein = str(Seq(cds[:usable]).translate(table=table))
    return protein[:-1] if protein.endswith("*") else protein
