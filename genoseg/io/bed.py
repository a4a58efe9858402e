"""BED writers: BED12 of transcripts, and BED6+3 of every segment of the decoded path.

Coordinates are 0-based half-open (BED's own convention, the same as genoseg's internal
one). docs/outputs.md lists every column.

Transcripts (BED12), one line per transcript::

    chrom start end name score strand thickStart thickEnd itemRgb blockCount blockSizes blockStarts

``name`` is the transcript ID, ``score`` = round(1000 · transcript posterior) (0 when no
posterior was computed), thickStart/thickEnd = the CDS extent (the whole transcript: no
UTRs yet), one block per exon, blockStarts relative to ``start``.

Segments (BED6+3), one line per segment of the path, after a ``#`` header line naming the
columns::

    chrom start end label score strand posterior start_posterior end_posterior

``label`` is the grammar label name (``intergenic``, ``initial+/1``, ``intron-/2TA``...),
``score`` = round(1000 · segment posterior) (0 when absent), ``strand`` ``+``, ``-`` or
``.`` (intergenic), ``posterior`` the segment posterior, ``start_posterior`` /
``end_posterior`` the boundary posteriors at its lower / upper coordinate (``.`` when
absent).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

from genoseg.decode.genes import Gene, Segment
from genoseg.grammar.spec import Grammar
from genoseg.io._dest import Destination, format_probability, open_destination
from genoseg.io.gff3 import sort_genes

__all__ = [
    "SEGMENT_COLUMNS",
    "bed12_lines",
    "bed_score",
    "segment_bed_lines",
    "write_bed12",
    "write_segments_bed",
]

SEGMENT_COLUMNS = (
    "chrom",
    "start",
    "end",
    "label",
    "score",
    "strand",
    "posterior",
    "start_posterior",
    "end_posterior",
)


def bed_score(p: float | None) -> int:
    """BED score of a posterior: round(1000 · p), clamped to 0..1000; 0 when None."""
    if p is None:
        return 0
    v = float(p)
    if v != v:
        raise ValueError("posterior is NaN")
    return int(round(1000 * min(1.0, max(0.0, v))))


def bed12_lines(contigs: Sequence[str], genes: Iterable[Gene]) -> Iterator[str]:
    """BED12 lines (newline-terminated) of every transcript, sorted by contig order (the
    order of ``contigs``) and start."""
    for gene in sort_genes(contigs, genes):
        for tx in gene.transcripts:
            exons = tx.exons
            sizes = ",".join(str(x.end - x.start) for x in exons) + ","
            starts = ",".join(str(x.start - tx.start) for x in exons) + ","
            yield (
                f"{tx.contig}\t{tx.start}\t{tx.end}\t{tx.id}\t{bed_score(tx.posterior)}\t"
                f"{tx.strand}\t{tx.cds[0].start}\t{tx.cds[-1].end}\t0\t{len(exons)}\t"
                f"{sizes}\t{starts}\n"
            )


def segment_bed_lines(
    grammar: Grammar,
    contigs: Sequence[str],
    segments: Mapping[str, Iterable[Segment | Sequence]],
    *,
    digits: int = 4,
    header: bool = True,
) -> Iterator[str]:
    """BED6+3 lines of every path segment (module docstring), contigs in the order of
    ``contigs``, segments in the order given (forward order)."""
    if header:
        yield "#" + "\t".join(SEGMENT_COLUMNS) + "\n"
    order = {c: i for i, c in enumerate(contigs)}
    for contig in segments:
        if contig not in order:
            raise ValueError(f"segments of contig {contig!r}, which is not in the genome")
    names = grammar.names
    strands = {1: "+", -1: "-", 0: "."}
    for contig in sorted(segments, key=order.__getitem__):
        for raw in segments[contig]:
            seg = raw if isinstance(raw, Segment) else Segment(*raw)
            lab = grammar.labels[seg.label]
            yield (
                f"{contig}\t{seg.start}\t{seg.end}\t{names[seg.label]}\t"
                f"{bed_score(seg.posterior)}\t{strands[lab.strand]}\t"
                f"{format_probability(seg.posterior, digits)}\t"
                f"{format_probability(seg.start_posterior, digits)}\t"
                f"{format_probability(seg.end_posterior, digits)}\n"
            )


def write_bed12(
    dest: Destination,
    contigs: Sequence[str],
    genes: Iterable[Gene],
    *,
    option: str = "--bed",
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> None:
    """Write the transcripts as BED12 to a path (atomically), ``"-"`` or a handle."""
    with open_destination(dest, option=option, inputs=inputs) as fh:
        for line in bed12_lines(contigs, genes):
            fh.write(line)


def write_segments_bed(
    dest: Destination,
    grammar: Grammar,
    contigs: Sequence[str],
    segments: Mapping[str, Iterable[Segment | Sequence]],
    *,
    digits: int = 4,
    option: str = "--segments-bed",
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> None:
    """Write every path segment as BED6+3 to a path (atomically), ``"-"`` or a handle."""
    with open_destination(dest, option=option, inputs=inputs) as fh:
        for line in segment_bed_lines(grammar, contigs, segments, digits=digits):
            fh.write(line)
