"""Viterbi path -> gene models: gene -> transcript -> CDS parts (= exons) + introns.

Coordinates everywhere in this module are forward-strand contig coordinates, **0-based
half-open** ``[start, end)`` (the GFF3 writer adds 1 to ``start``). Minus-strand features use
the same forward coordinates; "transcription order" is descending on the minus strand.

Phase follows docs/grammar.md (transcript sense, the GHMM convention): the entry phase of a
CDS part is the number of coding bases of the interrupted codon that precede it
(0 for the part holding the start codon), its exit phase the same count after it (0 for the
part holding the stop codon); the GFF3 phase column of a CDS part is
``(3 - entry_phase) % 3`` (bases to skip at the part's 5' end to reach the first complete
codon).

Posteriors (see docs/outputs.md): a :class:`Segment` carries the exact marginal probability
of that segment (start, end and label) and of a boundary at its lower / upper coordinate;
``genes_from_path`` copies them onto the CDS parts and introns it builds. A transcript's
``posterior`` is set afterwards by the caller (the exact marginal of the whole exon-intron
chain); a gene's ``posterior`` is that of its transcript.

IDs are derived from coordinates, so the same gene gets the same ID in any run (shards of a
genome merge without renaming): gene ``{contig}:{start+1}-{end}:{strand}`` (the GFF3
coordinates of the gene, a region string that ``genoseg plot`` accepts after dropping the
strand), transcript ``{gene}.t1``. IDs are stored raw; the GFF3 writer percent-encodes
reserved characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from genoseg.grammar.spec import Grammar

__all__ = [
    "CDSPart",
    "Gene",
    "Intron",
    "Segment",
    "Transcript",
    "gene_id",
    "genes_from_path",
]


@dataclass(frozen=True)
class Segment:
    """One segment of a decoded path: ``[start, end)`` (0-based half-open, forward strand)
    with grammar label index ``label``.

    posterior: P(the segmentation contains exactly this segment, label included).
    start_posterior / end_posterior: posterior of a boundary at the segment's lower
    (``start``) / upper (``end - 1``, its last base) coordinate, summed over the labels of
    the same class and strand (see :func:`genoseg.decode.tracks.boundary_posteriors`).
    Any of the three is None when posteriors were not computed.
    """

    start: int
    end: int
    label: int
    posterior: float | None = None
    start_posterior: float | None = None
    end_posterior: float | None = None

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class CDSPart:
    """A coding part of a transcript (equal to its exon: the grammar has no UTRs yet).

    ``[start, end)`` 0-based half-open, forward strand. ``kind``: ``single``, ``initial``,
    ``internal`` or ``terminal`` (transcript sense); ``label`` the grammar label index.
    ``entry_phase`` / ``exit_phase``: transcript-sense phases (module docstring); ``phase``
    is the GFF3 phase column. Posteriors as on :class:`Segment` (lower / upper coordinate,
    whatever the strand).
    """

    start: int
    end: int
    kind: str
    label: int
    entry_phase: int
    exit_phase: int
    posterior: float | None = None
    start_posterior: float | None = None
    end_posterior: float | None = None

    @property
    def phase(self) -> int:
        """GFF3 phase column: ``(3 - entry_phase) % 3``."""
        return (3 - self.entry_phase) % 3

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Intron:
    """An intron ``[start, end)`` (0-based half-open, forward strand) between two CDS parts.

    ``phase``: transcript-sense intron phase (coding bases before it, mod 3); ``label`` the
    grammar label index (which also names the junction variant). Posteriors as on
    :class:`Segment`.
    """

    start: int
    end: int
    label: int
    phase: int
    posterior: float | None = None
    start_posterior: float | None = None
    end_posterior: float | None = None

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Transcript:
    """A coding transcript (mRNA). ``cds`` and ``introns`` are ascending in forward
    coordinates; ``[start, end)`` spans them (0-based half-open). ``strand`` is ``"+"`` or
    ``"-"``. ``posterior``: P(this exact exon-intron chain), set by the caller; None if not
    computed."""

    id: str
    gene_id: str
    contig: str
    strand: str
    cds: list[CDSPart]
    introns: list[Intron] = field(default_factory=list)
    posterior: float | None = None

    @property
    def start(self) -> int:
        return self.cds[0].start

    @property
    def end(self) -> int:
        return self.cds[-1].end

    @property
    def exons(self) -> list[CDSPart]:
        """Exons, ascending. Without UTRs they are the CDS parts themselves."""
        return self.cds

    @property
    def cds_length(self) -> int:
        return sum(p.length for p in self.cds)

    def cds_in_transcription_order(self) -> list[CDSPart]:
        """CDS parts 5' -> 3' on the transcript's strand (descending on ``-``)."""
        return list(self.cds) if self.strand == "+" else list(reversed(self.cds))

    def introns_in_transcription_order(self) -> list[Intron]:
        return list(self.introns) if self.strand == "+" else list(reversed(self.introns))


@dataclass
class Gene:
    """A gene on ``contig``: ``[start, end)`` 0-based half-open, strand ``"+"``/``"-"``,
    its transcripts (one per gene for now). ``posterior`` is the highest transcript
    posterior (with one transcript, that transcript's), None if not computed."""

    id: str
    contig: str
    strand: str
    start: int
    end: int
    transcripts: list[Transcript]

    @property
    def posterior(self) -> float | None:
        ps = [t.posterior for t in self.transcripts if t.posterior is not None]
        return max(ps) if ps else None


def gene_id(contig: str, strand: str, start: int, end: int) -> str:
    """Coordinate-derived gene ID: ``{contig}:{start+1}-{end}:{strand}`` for the 0-based
    half-open gene ``[start, end)`` (1-based inclusive numbers, as in the GFF3 line)."""
    return f"{contig}:{start + 1}-{end}:{strand}"


def _as_segment(seg: Segment | Sequence) -> Segment:
    if isinstance(seg, Segment):
        return seg
    return Segment(*seg)


def genes_from_path(
    grammar: Grammar, contig: str, segments: Iterable[Segment | Sequence]
) -> list[Gene]:
    """Gene models of a decoded path.

    Args:
        grammar: the grammar whose label indices the path uses.
        contig: contig name (for the genes' ``contig`` and IDs).
        segments: the path in forward order, :class:`Segment` objects or tuples
            ``(start, end, label[, posterior, start_posterior, end_posterior])``, 0-based
            half-open. Consecutive segments abut; a gap is allowed only where no gene is
            open (e.g. around masked stretches of a gold path), and the path may start or
            end inside an intergenic stretch or at a gene boundary.

    Returns:
        Genes in forward order: every run of exon/intron segments between intergenic
        segments (or gaps, or the path ends) becomes one gene with one transcript.

    Raises:
        ValueError naming the contig and position: an unknown label, an empty or
        overlapping segment, a transition the grammar forbids (including a gene cut by a
        gap or a path end), or an exon whose length contradicts its phases.
    """
    labels = grammar.labels
    n_labels = len(labels)
    trans = grammar.transitions
    ig = grammar.intergenic
    # labels that may begin / end a gene run (follow / precede intergenic)
    can_open = {b for a, b in trans if a == ig}
    can_close = {a for a, b in trans if b == ig}
    genes: list[Gene] = []
    run: list[Segment] = []
    prev: Segment | None = None

    def where(pos: int) -> str:
        return f"path of {contig} at {pos} (0-based)"

    def close(at: int) -> None:
        if not run:
            return
        last = run[-1]
        if last.label not in can_close:
            raise ValueError(
                f"{where(at)}: gene cut after {labels[last.label].name} "
                f"[{last.start},{last.end}) (a gene must end with a terminal or single exon)"
            )
        genes.append(_build_gene(grammar, contig, run))
        run.clear()

    for raw in segments:
        seg = _as_segment(raw)
        if not 0 <= seg.label < n_labels:
            raise ValueError(f"{where(seg.start)}: label {seg.label} is not a label of the grammar")
        if seg.start < 0 or seg.end <= seg.start:
            raise ValueError(
                f"{where(seg.start)}: empty or negative segment [{seg.start},{seg.end})"
            )
        lab = labels[seg.label]
        contiguous = prev is not None and seg.start == prev.end
        if prev is not None and seg.start < prev.end:
            raise ValueError(
                f"{where(seg.start)}: segment [{seg.start},{seg.end}) overlaps or precedes "
                f"the previous one [{prev.start},{prev.end})"
            )
        if contiguous:
            if (prev.label, seg.label) not in trans:
                raise ValueError(
                    f"{where(seg.start)}: transition {labels[prev.label].name} -> {lab.name} "
                    "is not allowed by the grammar"
                )
        if lab.strand == 0:
            close(seg.start)
        else:
            if not contiguous:
                close(seg.start)  # a gap ends any open gene (close() rejects a cut gene)
            if not run and seg.label not in can_open:
                raise ValueError(
                    f"{where(seg.start)}: a gene cannot begin with {lab.name} "
                    "(it must follow an intergenic stretch)"
                )
            if lab.is_exon and (lab.phase_in + seg.length) % 3 != lab.phase_out:
                raise ValueError(
                    f"{where(seg.start)}: {lab.name} exon [{seg.start},{seg.end}) of length "
                    f"{seg.length} cannot have entry phase {lab.phase_in} and exit phase "
                    f"{lab.phase_out}"
                )
            run.append(seg)
        prev = seg
    close(prev.end if prev is not None else 0)
    return genes


def _build_gene(grammar: Grammar, contig: str, run: list[Segment]) -> Gene:
    labels = grammar.labels
    strand = "+" if labels[run[0].label].strand > 0 else "-"
    start, end = run[0].start, run[-1].end
    gid = gene_id(contig, strand, start, end)
    cds: list[CDSPart] = []
    introns: list[Intron] = []
    for seg in run:
        lab = labels[seg.label]
        if lab.is_exon:
            cds.append(
                CDSPart(
                    seg.start,
                    seg.end,
                    lab.kind,
                    seg.label,
                    lab.phase_in,
                    lab.phase_out,
                    seg.posterior,
                    seg.start_posterior,
                    seg.end_posterior,
                )
            )
        else:
            introns.append(
                Intron(
                    seg.start,
                    seg.end,
                    seg.label,
                    lab.phase_in,
                    seg.posterior,
                    seg.start_posterior,
                    seg.end_posterior,
                )
            )
    tx = Transcript(f"{gid}.t1", gid, contig, strand, cds, introns)
    return Gene(gid, contig, strand, start, end, [tx])
