"""A decoded genome that writes itself: :class:`Prediction`.

Collect contigs (all of the genome, in FASTA order), genes and, optionally, the decoded paths
while predicting, then write any output::

    pred = Prediction(genome.contigs, grammar=grammar, model="default", command=cmdline)
    for contig in genome.contigs:
        segments = ...                                   # Viterbi path with posteriors
        pred.add(contig, genes_from_path(grammar, contig, segments), segments)
    pred.write_gff3("genes.gff3")                        # or "-" (stdout), or a handle
    pred.write_bed("genes.bed")                          # BED12 of transcripts
    pred.write_segments_bed("segments.bed")              # every path segment
    pred.write_fasta("proteins.faa", genome, kind="protein")

Every path is written atomically (temporary + rename: no partial file on an error or
SIGTERM); pass ``inputs={"--fasta": path, ...}`` to refuse overwriting an input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from genoseg.decode.genes import Gene, Segment
from genoseg.grammar.spec import Grammar
from genoseg.io._dest import Destination
from genoseg.io.bed import write_bed12, write_segments_bed
from genoseg.io.gff3 import sort_genes, write_gff3
from genoseg.io.sequences import write_fasta

__all__ = ["Prediction"]

Inputs = Mapping[str, "str | os.PathLike | None"] | None


@dataclass
class Prediction:
    """Gene models (and paths) of a genome, with writers.

    Attributes:
        contigs: every contig of the genome, name -> length, in FASTA order (the GFF3
            ``##sequence-region`` lines and the output order).
        genes: decoded :class:`~genoseg.decode.genes.Gene` objects (any order).
        segments: contig -> decoded path (forward-ordered :class:`Segment` list), for the
            segment BED; optional.
        grammar: the grammar of the labels (needed for the segment BED's label names).
        model, command: recorded in the GFF3 header.
        comments: further GFF3 header comment lines (without the leading ``#``).
        source: GFF3 source column.
    """

    contigs: dict[str, int]
    genes: list[Gene] = field(default_factory=list)
    segments: dict[str, list[Segment]] = field(default_factory=dict)
    grammar: Grammar | None = None
    model: str | None = None
    command: str | None = None
    comments: list[str] = field(default_factory=list)
    source: str = "genoseg"

    def add(
        self, contig: str, genes: Iterable[Gene], segments: Sequence[Segment] | None = None
    ) -> None:
        """Add the genes (and optionally the path) of one contig (or one piece of it)."""
        if contig not in self.contigs:
            raise ValueError(f"contig {contig!r} is not in the genome")
        for g in genes:
            if g.contig != contig:
                raise ValueError(f"gene {g.id} is on {g.contig!r}, not {contig!r}")
            self.genes.append(g)
        if segments is not None:
            self.segments.setdefault(contig, []).extend(
                s if isinstance(s, Segment) else Segment(*s) for s in segments
            )

    def sorted_genes(self) -> list[Gene]:
        """Genes in output order: contig (FASTA) order, then start."""
        return sort_genes(list(self.contigs), self.genes)

    def write_gff3(
        self, dest: Destination, *, digits: int = 4, option: str = "-o", inputs: Inputs = None
    ) -> None:
        """GFF3 (genoseg.io.gff3) to a path, ``"-"`` or a handle."""
        write_gff3(
            dest,
            self.contigs,
            self.genes,
            source=self.source,
            model=self.model,
            command=self.command,
            comments=self.comments,
            digits=digits,
            option=option,
            inputs=inputs,
        )

    def write_bed(self, dest: Destination, *, option: str = "--bed", inputs: Inputs = None) -> None:
        """BED12 of the transcripts (genoseg.io.bed) to a path, ``"-"`` or a handle."""
        write_bed12(dest, list(self.contigs), self.genes, option=option, inputs=inputs)

    def write_segments_bed(
        self,
        dest: Destination,
        *,
        digits: int = 4,
        option: str = "--segments-bed",
        inputs: Inputs = None,
    ) -> None:
        """BED6+3 of every path segment (genoseg.io.bed); needs ``grammar`` and segments."""
        if self.grammar is None:
            raise ValueError("Prediction.write_segments_bed needs the grammar (label names)")
        write_segments_bed(
            dest,
            self.grammar,
            list(self.contigs),
            self.segments,
            digits=digits,
            option=option,
            inputs=inputs,
        )

    def write_fasta(
        self,
        dest: Destination,
        sequences: object,
        *,
        kind: str = "cds",
        table: int = 1,
        width: int = 60,
        option: str = "--fasta-out",
        inputs: Inputs = None,
    ) -> None:
        """CDS (``kind="cds"``) or protein (``"protein"``) FASTA (genoseg.io.sequences);
        ``sequences`` is the genome (a Genome, FASTA path, mapping or callable)."""
        write_fasta(
            dest,
            list(self.contigs),
            self.genes,
            sequences,
            kind=kind,
            table=table,
            width=width,
            option=option,
            inputs=inputs,
        )
