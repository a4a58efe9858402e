"""Reference annotation -> per-position labels, masks and gold segments under a grammar.

Coordinates: forward strand, 0-based, half-open intervals; segments are
``(start, end, label)`` with ``end`` exclusive, as in the semi-CRF (DESIGN.md §1).

Per contig, every position gets a label index (``uint8``) and a mask bit:

* positions outside used genes are ``intergenic`` (UTRs, non-coding RNA genes included:
  the default grammar models the CDS of protein-coding genes only);
* a *used* gene's chosen transcript is written as exon and intron segments;
* positions whose annotation the grammar cannot represent are masked (``mask`` False,
  label ``IGNORE`` = 255), never mislabelled: genes with no usable transcript, genes that
  overlap or touch another gene (either strand: one segmentation cannot hold both), and
  genes of the ``mask_biotypes`` (pseudogenes, transposable-element genes by default).

Isoform rule: among a gene's coding transcripts that pass every check, the one with the
longest CDS (ties: more CDS pieces, then the smaller transcript ID). A gene is masked
with the reason of its longest-CDS transcript when none passes. Reasons (in the order
checked): ``incomplete_cds`` (5' partial, GFF phase of the first CDS != 0),
``cds_length_not_mod3``, ``missing_start``, ``missing_stop``, ``in_frame_stop``,
``noncanonical_splice``, ``short_intron``, ``exon_length`` (outside the grammar's length
tables), ``contig_edge`` (no intergenic base before or after the CDS), ``grammar`` (any
other rule of the compiled grammar, checked last by compiling the gene's own window), and
at the gene level ``overlapping_gene`` and ``masked_biotype``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from genoseg.data.annotation import Annotation, Gene, Transcript
from genoseg.grammar.compile import compile_window_np, segment_allowed
from genoseg.grammar.spec import Grammar, Label, reverse_complement

__all__ = [
    "DEFAULT_MASK_BIOTYPES",
    "IGNORE",
    "ContigLabels",
    "GeneModel",
    "GeneStatus",
    "LabelReport",
    "gene_models_from_segments",
    "label_annotation",
    "label_contig",
    "segments_from_labels",
    "transcript_segments",
]

IGNORE = 255
DEFAULT_MASK_BIOTYPES = (
    "pseudogene",
    "pseudogenic_transcript",
    "pseudogenic_tRNA",
    "transposable_element_gene",
    "mRNA_TE_gene",
    "transposon_protein_coding",
    "transposon_pseudogene",
)
_CODES = "ACGTN"


@dataclass(frozen=True)
class GeneModel:
    """A coding gene model: strand '+'/'-' and CDS pieces, 0-based half-open, ascending."""

    strand: str
    cds: tuple[tuple[int, int], ...]


@dataclass
class GeneStatus:
    """Outcome for one annotated gene. ``start``/``end``: the masked or labelled extent
    (0-based half-open); ``status`` is ``"used"`` or a masking reason; ``transcript`` the
    chosen transcript ID (used genes) or the one whose reason is reported."""

    gene_id: str
    seqid: str
    strand: str
    start: int
    end: int
    status: str
    transcript: str | None = None
    detail: str = ""


@dataclass
class LabelReport:
    """Counts of genes by outcome (``used`` or a masking reason), plus non-coding genes
    labelled intergenic."""

    counts: Counter = field(default_factory=Counter)
    noncoding_intergenic: int = 0
    masked_bp: int = 0
    total_bp: int = 0

    def add(self, other: LabelReport) -> None:
        self.counts.update(other.counts)
        self.noncoding_intergenic += other.noncoding_intergenic
        self.masked_bp += other.masked_bp
        self.total_bp += other.total_bp

    @property
    def used(self) -> int:
        return self.counts.get("used", 0)

    @property
    def masked(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "used")

    def as_dict(self) -> dict:
        return {
            "genes_used": self.used,
            "genes_masked": self.masked,
            "masked_by_reason": {k: v for k, v in sorted(self.counts.items()) if k != "used"},
            "noncoding_genes_intergenic": self.noncoding_intergenic,
            "masked_bp": self.masked_bp,
            "total_bp": self.total_bp,
        }

    def __str__(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()) if k != "used")
        return (
            f"{self.used} genes used, {self.masked} masked ({reasons or 'none'}); "
            f"{self.noncoding_intergenic} non-coding genes labelled intergenic; "
            f"{self.masked_bp} of {self.total_bp} bp masked"
        )


@dataclass
class ContigLabels:
    """Labels of one contig: ``labels`` (L,) uint8 label index (IGNORE where masked),
    ``mask`` (L,) bool (True = label usable), ``genes`` the outcome per gene,
    ``noncoding`` the non-coding genes labelled intergenic as (gene id, start, end)."""

    seqid: str
    labels: np.ndarray
    mask: np.ndarray
    genes: list[GeneStatus]
    report: LabelReport
    noncoding: list[tuple[str, int, int]] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def _seq(codes: np.ndarray, start: int, end: int) -> str:
    """Forward-strand letters of codes[start:end] (out of range reads as N)."""
    n = len(codes)
    return "".join(_CODES[min(int(codes[i]), 4)] if 0 <= i < n else "N" for i in range(start, end))


def _cds_sequence(tx: Transcript, codes: np.ndarray) -> str:
    """Spliced CDS in transcript sense."""
    s = "".join(_seq(codes, a, b) for a, b in tx.cds)
    return s if tx.strand == "+" else reverse_complement(s)


def _rules_score(lab: Label, codes: np.ndarray, s: int, e: int) -> float:
    """seg_start + seg_end score of label ``lab`` on segment [s, e)."""
    total = 0.0
    for rule in (*lab.start_rules, *lab.end_rules):
        ref = s if rule.anchor == "start" else e
        kmer = _seq(codes, ref + rule.offset, ref + rule.offset + rule.k)
        total += dict(rule.scores).get(kmer, rule.default)
    return total


def _find_label(grammar: Grammar, strand: int, kind: str, pin: int | None, pout: int | None):
    for i, lab in enumerate(grammar.labels):
        if lab.strand == strand and lab.kind == kind and lab.is_exon:
            if lab.phase_in == pin and lab.phase_out == pout:
                return i
    raise KeyError(f"grammar {grammar.name!r} has no {kind} exon label {pin}->{pout}")


def transcript_segments(
    tx: Transcript, grammar: Grammar, codes: np.ndarray
) -> tuple[list[tuple[int, int, int]], str | None]:
    """Exon and intron segments of a transcript's CDS, forward order, absolute coordinates.

    Exon labels follow from the phases; an intron gets the label (type, junction variant)
    whose splice-site rules hold on ``codes`` (the contig's codes), the best-scoring one
    if several do. Returns (segments, problem): problem is None, ``"noncanonical_splice"``
    or ``"in_frame_stop"`` (a stop codon spanning the junction), and then the intron's
    segment carries the plain variant of the first intron type.
    """
    pieces = list(tx.cds_in_transcription_order())
    strand = 1 if tx.strand == "+" else -1
    n = len(pieces)
    seg_tx: list[tuple[int, int, int]] = []  # transcription order
    problem = None
    done = 0
    for k, (a, b) in enumerate(pieces):
        pin = done % 3
        done += b - a
        pout = done % 3
        if n == 1:
            kind, pin, pout = "single", 0, 0
        elif k == 0:
            kind, pin = "initial", 0
        elif k == n - 1:
            kind, pout = "terminal", 0
        else:
            kind = "internal"
        seg_tx.append((a, b, _find_label(grammar, strand, kind, pin, pout)))
        if k < n - 1:
            na, nb = pieces[k + 1]
            s, e = (b, na) if strand > 0 else (nb, a)
            intron = _seq(codes, s, e)
            if strand < 0:
                intron = reverse_complement(intron)
            canonical = any(
                donors.get(intron[:2], -math.inf) > -math.inf
                and acceptors.get(intron[-2:], -math.inf) > -math.inf
                for donors, acceptors in _splice_sites(grammar)
            )
            best, best_score, fallback = None, -math.inf, None
            for i, lab in enumerate(grammar.labels):
                if lab.kind != "intron" or lab.strand != strand or lab.phase_in != pout:
                    continue
                if fallback is None and lab.variant == "":
                    fallback = i
                sc = _rules_score(lab, codes, s, e)
                if sc > best_score:
                    best, best_score = i, sc
            if best is None:
                best = fallback
                problem = problem or ("in_frame_stop" if canonical else "noncanonical_splice")
            seg_tx.append((s, e, best))
    segs = sorted(seg_tx)
    return segs, problem


def _splice_sites(grammar: Grammar) -> list[tuple[dict[str, float], dict[str, float]]]:
    """(donors, acceptors) per intron type, transcript sense (from the plus-strand
    phase-0 intron labels: first start rule = donor, first end rule = acceptor)."""
    return [
        (dict(lab.start_rules[0].scores), dict(lab.end_rules[0].scores))
        for lab in grammar.labels
        if lab.kind == "intron" and lab.strand > 0 and lab.phase_in == 0
    ]


def _check_transcript(
    tx: Transcript, grammar: Grammar, codes: np.ndarray, starts: set[str], stops: set[str]
) -> tuple[str | None, str, list[tuple[int, int, int]]]:
    """(reason or None, detail, segments)."""
    L = len(codes)
    if tx.first_phase != 0:
        return "incomplete_cds", f"first CDS phase {tx.first_phase}", []
    if tx.cds_length % 3:
        return "cds_length_not_mod3", f"CDS length {tx.cds_length}", []
    cds = _cds_sequence(tx, codes)
    if cds[:3] not in starts:
        return "missing_start", f"starts with {cds[:3]}", []
    if cds[-3:] not in stops:
        return "missing_stop", f"ends with {cds[-3:]}", []
    for j in range(0, len(cds) - 3, 3):
        if cds[j : j + 3] in stops:
            return "in_frame_stop", f"stop codon at CDS base {j + 1}", []
    segs, problem = transcript_segments(tx, grammar, codes)
    if problem:
        return problem, "", segs
    lens = grammar.lengths
    for s, e, c in segs:
        lab = grammar.labels[c]
        lm = lens[lab.length_class]
        top = lm.max if lm.model == "lognormal" else None
        if e - s < lm.min:
            reason = "short_intron" if lab.kind == "intron" else "exon_length"
            return reason, f"{lab.name} length {e - s} < {lm.min}", segs
        if top is not None and e - s > top:
            return "exon_length", f"{lab.name} length {e - s} > {top}", segs
    if tx.cds_start < 1 or tx.cds_end > L - 1:
        return "contig_edge", "", segs
    # everything else: compile the gene's own window and check the tiling
    ctx = 8
    lo, hi = tx.cds_start - 1, tx.cds_end + 1
    a, b = max(0, lo - ctx), min(L, hi + ctx)
    arrays = compile_window_np(grammar, codes[a:b], left_context=lo - a, right_context=b - hi)
    ig = grammar.intergenic
    tiling = [(0, 1, ig)] + [(s - lo, e - lo, c) for s, e, c in segs] + [(hi - lo - 1, hi - lo, ig)]
    problems = segment_allowed(grammar, arrays, tiling)
    if problems:
        return "grammar", "; ".join(problems[:3]), segs
    return None, "", segs


def _biotypes(gene: Gene) -> set[str]:
    return {gene.biotype, *(t.biotype for t in gene.transcripts)}


def label_contig(
    grammar: Grammar,
    seqid: str,
    codes: np.ndarray,
    genes: Iterable[Gene],
    *,
    mask_biotypes: Iterable[str] = DEFAULT_MASK_BIOTYPES,
) -> ContigLabels:
    """Labels, mask and gene outcomes of one contig (see the module docstring).

    codes: (L,) uint8 forward-strand codes of the whole contig. genes: the annotation's
    genes on this contig (as read with ``feature="exon"`` or ``"CDS"``).
    """
    L = len(codes)
    mask_bt = set(mask_biotypes)
    starts = {m for m, v in _start_motifs(grammar) if math.isfinite(v)}
    stops = set(_stop_codons(grammar))
    report = LabelReport(total_bp=L)
    statuses: list[GeneStatus] = []
    noncoding: list[tuple[str, int, int]] = []
    chosen: dict[int, list[tuple[int, int, int]]] = {}
    for gene in genes:
        coding = [t for t in gene.transcripts if t.is_coding]
        if _biotypes(gene) & mask_bt:
            statuses.append(
                GeneStatus(
                    gene.id,
                    seqid,
                    gene.strand,
                    gene.start,
                    gene.end,
                    "masked_biotype",
                    detail=",".join(sorted(_biotypes(gene) & mask_bt)),
                )
            )
            continue
        if not coding:
            report.noncoding_intergenic += 1
            noncoding.append((gene.id, gene.start, gene.end))
            continue
        order = sorted(coding, key=lambda t: (-t.cds_length, -len(t.cds), t.id))
        first_fail = None
        for tx in order:
            reason, detail, segs = _check_transcript(tx, grammar, codes, starts, stops)
            if reason is None:
                statuses.append(
                    GeneStatus(gene.id, seqid, tx.strand, tx.cds_start, tx.cds_end, "used", tx.id)
                )
                chosen[len(statuses) - 1] = segs
                break
            if first_fail is None:
                first_fail = (tx, reason, detail)
        else:
            tx, reason, detail = first_fail
            lo = min(t.cds_start for t in coding)
            hi = max(t.cds_end for t in coding)
            statuses.append(GeneStatus(gene.id, seqid, gene.strand, lo, hi, reason, tx.id, detail))
    # genes that overlap or touch another gene (either strand) cannot share one tiling
    order = sorted(range(len(statuses)), key=lambda i: (statuses[i].start, statuses[i].end))
    cluster: list[int] = []
    cluster_end = -1
    for i in [*order, None]:
        if i is not None and statuses[i].start <= cluster_end and cluster:
            cluster.append(i)
            cluster_end = max(cluster_end, statuses[i].end)
            continue
        if len(cluster) > 1:
            for j in cluster:
                if statuses[j].status == "used":
                    statuses[j].status = "overlapping_gene"
                    statuses[j].detail = "overlaps " + ",".join(
                        statuses[k].gene_id for k in cluster if k != j
                    )
        if i is not None:
            cluster, cluster_end = [i], statuses[i].end
    labels = np.full(L, grammar.intergenic, dtype=np.uint8)
    mask = np.ones(L, dtype=bool)
    for i, st in enumerate(statuses):
        if st.status == "used":
            for s, e, c in chosen[i]:
                labels[s:e] = c
    for st in statuses:
        if st.status != "used":
            lo, hi = max(0, st.start), min(L, st.end)
            mask[lo:hi] = False
    labels[~mask] = IGNORE
    report.counts.update(st.status for st in statuses)
    report.masked_bp = int((~mask).sum())
    return ContigLabels(seqid, labels, mask, statuses, report, noncoding)


def _start_motifs(grammar: Grammar):
    for lab in grammar.labels:
        if lab.kind == "single" and lab.strand > 0:
            return lab.start_rules[0].scores
    raise KeyError("grammar has no plus-strand single exon label")


def _stop_codons(grammar: Grammar) -> tuple[str, ...]:
    for lab in grammar.labels:
        if lab.kind == "single" and lab.strand > 0 and lab.frame is not None:
            return lab.frame.stops
    raise KeyError("grammar has no plus-strand single exon label")


def label_annotation(
    grammar: Grammar,
    annotation: Annotation,
    contig_codes: Iterable[tuple[str, np.ndarray]],
    *,
    mask_biotypes: Iterable[str] = DEFAULT_MASK_BIOTYPES,
) -> tuple[dict[str, ContigLabels], LabelReport]:
    """:func:`label_contig` for every (seqid, codes) pair; returns labels by seqid and the
    summed report."""
    out: dict[str, ContigLabels] = {}
    total = LabelReport()
    for seqid, codes in contig_codes:
        cl = label_contig(
            grammar, seqid, codes, annotation.genes.get(seqid, []), mask_biotypes=mask_biotypes
        )
        out[seqid] = cl
        total.add(cl.report)
    return out, total


# --------------------------------------------------------------------------- inverse


def segments_from_labels(
    labels: np.ndarray, mask: np.ndarray | None = None
) -> list[tuple[int, int, int]]:
    """Runs of equal labels as segments (start, end, label), 0-based half-open.

    The grammar forbids self-transitions, so runs are exactly the gold segments. Masked
    positions (mask False or label IGNORE) are skipped: they end the current run.
    """
    labels = np.asarray(labels)
    ok = labels != IGNORE if mask is None else (np.asarray(mask) & (labels != IGNORE))
    n = len(labels)
    if n == 0:
        return []
    key = np.where(ok, labels.astype(np.int64), -1)
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [n]])
    return [(int(s), int(e), int(key[s])) for s, e in zip(bounds[:-1], bounds[1:]) if key[s] >= 0]


def gene_models_from_segments(
    segments: Iterable[tuple[int, int, int]], grammar: Grammar
) -> list[GeneModel]:
    """Group a forward-ordered segmentation into gene models: a gene is a maximal run of
    contiguous exon/intron segments between intergenic (or missing) stretches; its CDS is
    the union of its exon segments. Segments are (start, end, label), 0-based half-open."""
    out: list[GeneModel] = []
    cur: list[tuple[int, int]] = []
    strand = 0
    last_end = None

    def flush() -> None:
        if cur:
            out.append(GeneModel("+" if strand > 0 else "-", tuple(cur)))
            cur.clear()

    for s, e, c in segments:
        lab = grammar.labels[c]
        if (
            lab.strand == 0
            or (last_end is not None and s != last_end)
            or (cur and lab.strand != strand)
        ):
            flush()
        if lab.strand != 0:
            strand = lab.strand
            if lab.is_exon:
                cur.append((s, e))
        last_end = e
    flush()
    return out
