"""CDS and protein FASTA of decoded transcripts (translation through biopython).

One record per transcript, in the GFF3 order (contig order, then start)::

    >{transcript ID} gene={gene ID} loc={contig}:{start+1}-{end}({strand}) posterior={p|.}
    ATGGCT...

The CDS is the spliced coding sequence in transcript sense, stop codon included; the
protein is its translation with NCBI table ``table`` (1 = standard) without the final
``*``. Lines are wrapped at ``width`` characters (0 = no wrapping).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

from genoseg.decode.genes import Gene
from genoseg.decode.sequence import as_fetch, cds_sequence, translate
from genoseg.io._dest import Destination, format_probability, open_destination
from genoseg.io.gff3 import sort_genes

__all__ = ["fasta_records", "write_fasta"]


def fasta_records(
    contigs: Sequence[str],
    genes: Iterable[Gene],
    sequences: object,
    *,
    kind: str = "cds",
    table: int = 1,
) -> Iterator[tuple[str, str]]:
    """(header without ``>``, sequence) per transcript; ``kind`` ``"cds"`` or ``"protein"``;
    ``sequences`` a sequence source (:func:`genoseg.decode.sequence.as_fetch`)."""
    if kind not in ("cds", "protein"):
        raise ValueError(f"kind must be 'cds' or 'protein', not {kind!r}")
    fetch = as_fetch(sequences)
    for gene in sort_genes(contigs, genes):
        for tx in gene.transcripts:
            cds = cds_sequence(fetch, tx.contig, tx.strand, [(p.start, p.end) for p in tx.cds])
            seq = cds if kind == "cds" else translate(cds, table)
            header = (
                f"{tx.id} gene={gene.id} loc={tx.contig}:{tx.start + 1}-{tx.end}({tx.strand}) "
                f"posterior={format_probability(tx.posterior)}"
            )
            yield header, seq


def write_fasta(
    dest: Destination,
    contigs: Sequence[str],
    genes: Iterable[Gene],
    sequences: object,
    *,
    kind: str = "cds",
    table: int = 1,
    width: int = 60,
    option: str = "--fasta-out",
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> None:
    """Write CDS (``kind="cds"``) or protein (``"protein"``) FASTA of every transcript to a
    path (atomically), ``"-"`` or a handle."""
    records = fasta_records(contigs, genes, sequences, kind=kind, table=table)
    with open_destination(dest, option=option, inputs=inputs) as fh:
        for header, seq in records:
            fh.write(f">{header}\n")
            if width > 0:
                for i in range(0, len(seq), width):
                    fh.write(seq[i : i + width] + "\n")
            elif seq:
                fh.write(seq + "\n")
