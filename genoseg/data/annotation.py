"""GFF3 / GTF annotation reader: gene -> transcript -> exon/CDS models.

Coordinates in every object here are 0-based half-open ``[start, end)`` on the forward
strand of the contig (a GFF line ``start=11 end=20`` becomes ``(10, 20)``). Minus-strand
features use the same forward coordinates; "transcription order" reverses them.

The reader works structurally rather than from a fixed list of type names, so TAIR10,
WormBase, FlyBase, Ensembl GFF3/GTF and gene-finder output (AUGUSTUS, genoseg) all load:

* structural child lines are ``exon``, ``CDS``, ``start_codon``, ``stop_codon`` and UTRs
  (``five_prime_UTR``, ``three_prime_UTR``, ``UTR``, ``5UTR``, ``3UTR``) plus
  ``pseudogenic_exon`` / ``noncoding_exon``; ``intron`` lines are read only for their
  posterior scores (introns are derived from exons);
* a feature named as ``Parent`` by a child is a transcript, unless it is a top-level
  gene-typed feature (``gene``, ``pseudogene``, ``*_gene``), in which case the children form
  an implicit transcript with the gene's ID;
* a feature named as ``Parent`` by a transcript is its gene; a transcript without
  ``Parent`` is its own gene;
* parents of type ``protein`` / ``polypeptide`` (TAIR10 lists them beside the mRNA) are
  ignored; a CDS line may list several transcripts (WormBase, FlyBase); one CDS ``ID`` may
  span several lines (WormBase);
* GTF: ``transcript_id`` / ``gene_id`` group the lines; ``stop_codon`` intervals are merged
  into the CDS (the union, so files whose CDS already contains the stop are unchanged);
  AUGUSTUS-style ``gene``/``transcript`` lines whose attribute column is a bare ID work;
* a transcript without exon lines gets exons = union of its CDS, stop codon and UTR pieces
  (abutting pieces merged);
* every other feature type (RNASeq_splice introns, proteins, repeats, ...) is skipped and
  counted in :class:`AnnotationSummary.skipped_types`.

Every malformed input raises :class:`~genoseg.errors.GenosegError` with ``file:line``.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from genoseg.errors import GenosegError

__all__ = [
    "Annotation",
    "AnnotationSummary",
    "FeatureScore",
    "Gene",
    "Transcript",
    "read_annotation",
]

Interval = tuple[int, int]

EXON_TYPES = frozenset({"exon", "pseudogenic_exon", "noncoding_exon"})
UTR_TYPES = frozenset(
    {
        "five_prime_UTR",
        "three_prime_UTR",
        "UTR",
        "5UTR",
        "3UTR",
        "five_prime_utr",
        "three_prime_utr",
    }
)
CHILD_TYPES = EXON_TYPES | UTR_TYPES | {"CDS", "start_codon", "stop_codon"}
# Parents that are annotations of a product, not of a transcript (TAIR10 "protein").
IGNORED_PARENT_TYPES = frozenset({"protein", "polypeptide"})
GENE_TYPES = frozenset({"gene", "pseudogene", "ncRNA_gene", "protein_coding_gene"})
_VALID_STRANDS = frozenset({"+", "-", ".", "?"})


@dataclass(frozen=True)
class FeatureScore:
    """Score and boundary posteriors attached to one exon/CDS/intron line of a transcript.

    ``start``/``end`` are 0-based half-open. ``score`` is the GFF score column (genoseg
    writes the segment posterior there); ``start_posterior`` / ``end_posterior`` are the
    lowercase ``start_posterior`` / ``end_posterior`` attributes: the posterior of the
    boundary at the feature's lower / upper genomic coordinate (not strand-oriented).
    Missing values are ``None``.
    """

    kind: str  # "exon", "CDS" or "intron"
    start: int
    end: int
    score: float | None
    start_posterior: float | None = None
    end_posterior: float | None = None


@dataclass(frozen=True)
class Transcript:
    """One transcript. Intervals are 0-based half-open, sorted ascending by start.

    ``cds`` is ``()`` for non-coding transcripts. ``first_phase`` is the GFF phase of the
    first CDS piece in transcription order (0 for complete models). ``scores`` keeps the
    per-line scores/posteriors (see :class:`FeatureScore`) when the file has any.
    """

    id: str
    gene_id: str
    seqid: str
    strand: str  # '+' or '-'
    exons: tuple[Interval, ...]
    cds: tuple[Interval, ...]
    biotype: str
    source_line: int  # 1-based line of the transcript feature (first child line if implicit)
    score: float | None = None
    first_phase: int = 0
    scores: tuple[FeatureScore, ...] = ()

    @property
    def start(self) -> int:
        """0-based start of the transcript (lowest exon/CDS coordinate)."""
        return min(self.exons[0][0], self.cds[0][0]) if self.cds else self.exons[0][0]

    @property
    def end(self) -> int:
        """0-based exclusive end of the transcript."""
        return max(self.exons[-1][1], self.cds[-1][1]) if self.cds else self.exons[-1][1]

    @property
    def is_coding(self) -> bool:
        return bool(self.cds)

    @property
    def cds_start(self) -> int:
        """0-based lowest CDS coordinate (the start codon on '+', the stop on '-')."""
        if not self.cds:
            raise ValueError(f"transcript {self.id} is non-coding")
        return self.cds[0][0]

    @property
    def cds_end(self) -> int:
        """0-based exclusive highest CDS coordinate."""
        if not self.cds:
            raise ValueError(f"transcript {self.id} is non-coding")
        return self.cds[-1][1]

    @property
    def cds_length(self) -> int:
        return sum(e - s for s, e in self.cds)

    @property
    def introns(self) -> tuple[Interval, ...]:
        """Gaps between consecutive exons, 0-based half-open, ascending."""
        return _gaps(self.exons)

    @property
    def cds_introns(self) -> tuple[Interval, ...]:
        """Gaps between consecutive CDS pieces, 0-based half-open, ascending."""
        return _gaps(self.cds)

    def cds_in_transcription_order(self) -> tuple[Interval, ...]:
        """CDS pieces 5'->3' on the transcript's strand (descending on '-')."""
        return self.cds if self.strand == "+" else tuple(reversed(self.cds))

    @property
    def phases(self) -> tuple[int, ...]:
        """GFF3 phase of each CDS piece, in transcription order (0, 1 or 2).

        Phase = number of bases at the piece's 5' end before its first complete codon.
        """
        out = []
        done = 0
        for s, e in self.cds_in_transcription_order():
            out.append((self.first_phase - done) % 3)
            done += e - s
        return tuple(out)


def _gaps(iv: tuple[Interval, ...]) -> tuple[Interval, ...]:
    return tuple((iv[i][1], iv[i + 1][0]) for i in range(len(iv) - 1) if iv[i][1] < iv[i + 1][0])


@dataclass
class Gene:
    """A gene: 0-based half-open extent and its transcripts (sorted by start, then id)."""

    id: str
    seqid: str
    strand: str
    start: int
    end: int
    transcripts: list[Transcript]
    biotype: str


@dataclass
class AnnotationSummary:
    """What the reader kept and skipped (all counts are of features, not lines)."""

    path: str
    format: str  # "gff3" or "gtf"
    feature_lines: int = 0
    genes: int = 0
    coding_genes: int = 0
    transcripts: int = 0
    coding_transcripts: int = 0
    noncoding_transcripts: int = 0
    skipped_types: Counter = field(default_factory=Counter)
    skipped_noncoding: int = 0  # non-coding transcripts dropped with feature="CDS"
    orphan_lines: int = 0  # child lines whose parent is absent (missing_parents="skip")
    synthesized_genes: int = 0  # genes made for transcripts whose gene line is absent
    # GTF transcripts whose gene_id equals their transcript_id: all of them in UCSC refGene /
    # Table Browser GTFs, whose isoforms then look like separate, overlapping genes
    gene_id_is_transcript_id: int = 0

    def __str__(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped_types.items()))
        text = (
            f"{self.path}: {self.genes} genes ({self.coding_genes} coding), "
            f"{self.transcripts} transcripts ({self.coding_transcripts} coding)"
        )
        if self.skipped_noncoding:
            text += f", {self.skipped_noncoding} non-coding transcripts left out"
        if self.orphan_lines:
            text += f", {self.orphan_lines} lines with a missing parent skipped"
        if self.synthesized_genes:
            text += f", {self.synthesized_genes} genes without a gene line"
        if skipped:
            text += f"; skipped types: {skipped}"
        return text


@dataclass
class Annotation:
    """Genes by seqid (each list sorted by start, then id)."""

    genes: dict[str, list[Gene]]
    sequence_regions: dict[str, int] = field(default_factory=dict)
    summary: AnnotationSummary | None = None

    def transcripts(self, seqid: str | None = None) -> Iterator[Transcript]:
        """All transcripts, genes in order, optionally of one seqid."""
        seqids = [seqid] if seqid is not None else list(self.genes)
        for sid in seqids:
            for gene in self.genes.get(sid, ()):
                yield from gene.transcripts

    def seqids(self) -> list[str]:
        return list(self.genes)


# --------------------------------------------------------------------------- parsing


@dataclass
class _Rec:
    line: int
    seqid: str
    source: str
    type: str
    start: int  # 0-based
    end: int  # exclusive
    score: float | None
    strand: str
    phase: int | None
    attrs: dict[str, str]


def _open_text(path: str) -> io.TextIOBase:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except IsADirectoryError as exc:
        raise GenosegError(f"{path}: is a directory, not an annotation file") from exc
    except OSError as exc:
        raise GenosegError(f"{path}: cannot read annotation: {exc.strerror}") from exc
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


_GTF_ATTR = re.compile(r'\s*([^\s;"]+)\s+(?:"([^"]*)"|([^;\s]+))\s*;?')


def _parse_gff3_attrs(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    text = text.strip()
    if text in ("", "."):
        return out
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise GenosegError(f"{where}: malformed GFF3 attribute {part!r} (expected tag=value)")
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _parse_gtf_attrs(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    text = text.strip()
    if text in ("", "."):
        return out
    if '"' not in text and ";" not in text and " " not in text:
        return {"ID": text}  # AUGUSTUS gene/transcript lines: a bare ID
    pos = 0
    while pos < len(text):
        m = _GTF_ATTR.match(text, pos)
        if not m or m.end() == pos:
            raise GenosegError(f"{where}: malformed GTF attribute near {text[pos : pos + 30]!r}")
        key = m.group(1)
        value = m.group(2) if m.group(2) is not None else m.group(3)
        out.setdefault(key, value)
        pos = m.end()
    return out


def _sniff_format(path: str, lines: list[str]) -> str:
    for line in lines:
        if line.startswith("##gff-version"):
            return "gff3" if line.split()[1:2] and line.split()[1].startswith("3") else "gtf"
    low = path.lower().removesuffix(".gz")
    if low.endswith(".gtf") or low.endswith(".gff2"):
        return "gtf"
    if low.endswith(".gff3"):
        return "gff3"
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) == 9:
            if re.search(r'\w+ "[^"]*"', cols[8]):
                return "gtf"
            if "=" in cols[8]:
                return "gff3"
    return "gff3"


def _parse_float(text: str, where: str, what: str) -> float | None:
    if text == ".":
        return None
    try:
        value = float(text)
    except ValueError:
        raise GenosegError(f"{where}: {what} {text!r} is not a number") from None
    if math.isnan(value):
        raise GenosegError(f"{where}: {what} is NaN")
    return value


def _read_records(
    path: str, fmt_hint: str | None
) -> tuple[str, list[_Rec], dict[str, tuple[int, int]]]:
    """Parse every feature line. Returns (format, records, sequence-region lengths)."""
    with _open_text(path) as fh:
        try:
            lines = fh.readlines()
        except (OSError, EOFError) as exc:
            raise GenosegError(f"{path}: cannot read (corrupt compressed file?): {exc}") from exc
    fmt = fmt_hint or _sniff_format(path, lines[:200])
    regions: dict[str, tuple[int, int]] = {}
    recs: list[_Rec] = []
    parse_attrs = _parse_gff3_attrs if fmt == "gff3" else _parse_gtf_attrs
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        if line.startswith("#"):
            if line.startswith("##FASTA"):
                break
            if line.startswith("##sequence-region"):
                parts = line.split()
                if len(parts) != 4:
                    raise GenosegError(
                        f"{where}: malformed ##sequence-region (expected seqid start end)"
                    )
                try:
                    regions[parts[1]] = (int(parts[3]), lineno)
                except ValueError:
                    raise GenosegError(
                        f"{where}: ##sequence-region end is not an integer"
                    ) from None
            continue
        cols = line.split("\t")
        if len(cols) != 9:
            raise GenosegError(f"{where}: expected 9 tab-separated columns, found {len(cols)}")
        seqid, source, ftype, s_start, s_end, s_score, strand, s_phase, s_attrs = cols
        if not seqid or not ftype:
            raise GenosegError(f"{where}: empty seqid or type column")
        try:
            start = int(s_start)
            end = int(s_end)
        except ValueError:
            raise GenosegError(
                f"{where}: coordinates {s_start!r}, {s_end!r} are not integers"
            ) from None
        if start < 1:
            raise GenosegError(f"{where}: start {start} < 1 (GFF coordinates are 1-based)")
        if end < start:
            raise GenosegError(f"{where}: end {end} < start {start}")
        if strand not in _VALID_STRANDS:
            raise GenosegError(f"{where}: bad strand {strand!r} (expected +, -, . or ?)")
        if s_phase == ".":
            phase = None
        elif s_phase in ("0", "1", "2"):
            phase = int(s_phase)
        else:
            raise GenosegError(f"{where}: bad phase {s_phase!r} (expected 0, 1, 2 or .)")
        score = _parse_float(s_score, where, "score")
        attrs = parse_attrs(s_attrs, where)
        recs.append(_Rec(lineno, seqid, source, ftype, start - 1, end, score, strand, phase, attrs))
    return fmt, recs, regions


def _merge(intervals: list[Interval]) -> tuple[Interval, ...]:
    """Sort and merge overlapping or abutting half-open intervals."""
    out: list[list[int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((s, e) for s, e in out)


def _posterior_attr(rec: _Rec, key: str, path: str) -> float | None:
    if key not in rec.attrs:
        return None
    return _parse_float(rec.attrs[key], f"{path}:{rec.line}", f"attribute {key}")


@dataclass
class _TxBuild:
    id: str
    gene_id: str
    seqid: str
    strand: str
    biotype: str
    line: int
    score: float | None = None
    exons: list[Interval] = field(default_factory=list)
    cds: list[tuple[int, int, int | None]] = field(default_factory=list)
    extra: list[Interval] = field(default_factory=list)  # stop codons, UTRs
    stops: list[Interval] = field(default_factory=list)
    scores: list[FeatureScore] = field(default_factory=list)

    def add_child(self, rec: _Rec, path: str) -> None:
        where = f"{path}:{rec.line}"
        if rec.seqid != self.seqid:
            raise GenosegError(
                f"{where}: {rec.type} is on {rec.seqid} but its transcript {self.id} is on "
                f"{self.seqid}"
            )
        if rec.strand in ("+", "-") and self.strand in ("+", "-") and rec.strand != self.strand:
            raise GenosegError(
                f"{where}: {rec.type} is on strand {rec.strand} but its transcript {self.id} "
                f"is on {self.strand}"
            )
        if self.strand not in ("+", "-") and rec.strand in ("+", "-"):
            self.strand = rec.strand
        iv = (rec.start, rec.end)
        if rec.type in EXON_TYPES:
            self.exons.append(iv)
        elif rec.type == "CDS":
            self.cds.append((rec.start, rec.end, rec.phase))
        elif rec.type == "stop_codon":
            self.stops.append(iv)
        elif rec.type in UTR_TYPES:
            self.extra.append(iv)
        if rec.type in EXON_TYPES or rec.type in ("CDS", "intron"):
            sp = _posterior_attr(rec, "start_posterior", path)
            ep = _posterior_attr(rec, "end_posterior", path)
            if rec.score is not None or sp is not None or ep is not None:
                kind = "exon" if rec.type in EXON_TYPES else rec.type
                self.scores.append(FeatureScore(kind, rec.start, rec.end, rec.score, sp, ep))

    def build(self, path: str) -> Transcript:
        where = f"{path}:{self.line}"
        if self.strand not in ("+", "-"):
            raise GenosegError(f"{where}: transcript {self.id} has no strand (+ or -)")
        cds = _merge([(s, e) for s, e, _ in self.cds] + (self.stops if self.cds else []))
        first_phase = 0
        if self.cds:
            key = (lambda t: t[0]) if self.strand == "+" else (lambda t: -t[1])
            first = min(self.cds, key=key)
            first_phase = first[2] or 0
        if self.exons:
            exons = _merge(self.exons)
        else:
            exons = _merge(list(cds) + self.extra + self.stops)
        if not exons:
            raise GenosegError(f"{where}: transcript {self.id} has no exon, CDS or UTR lines")
        return Transcript(
            id=self.id,
            gene_id=self.gene_id,
            seqid=self.seqid,
            strand=self.strand,
            exons=exons,
            cds=cds,
            biotype=self.biotype,
            source_line=self.line,
            score=self.score,
            first_phase=first_phase,
            scores=tuple(sorted(self.scores, key=lambda f: (f.start, f.end, f.kind))),
        )


def _introns_last(recs: list[_Rec]) -> list[_Rec]:
    """Records with intron lines moved to the end (they only add scores to transcripts
    that exon/CDS lines create, wherever they appear in the file)."""
    return [r for r in recs if r.type != "intron"] + [r for r in recs if r.type == "intron"]


def _is_gene_type(ftype: str) -> bool:
    return ftype in GENE_TYPES or (ftype.endswith("_gene") and not ftype.startswith("mRNA"))


def _check_bounds(recs: list[_Rec], lengths: dict[str, int], path: str, source: str) -> None:
    for rec in recs:
        length = lengths.get(rec.seqid)
        if length is None:
            if source == "contig_lengths":
                raise GenosegError(
                    f"{path}:{rec.line}: contig {rec.seqid!r} is not in the genome "
                    f"({len(lengths)} contigs)"
                )
            continue
        if rec.end > length:
            raise GenosegError(
                f"{path}:{rec.line}: {rec.type} {rec.start + 1}-{rec.end} lies outside contig "
                f"{rec.seqid} (length {length})"
            )


def read_annotation(
    path: str | os.PathLike,
    *,
    feature: str = "CDS",
    contig_lengths: dict[str, int] | None = None,
    missing_parents: str = "error",
    format: str | None = None,
) -> Annotation:
    """Read a GFF3 or GTF file (format sniffed; gzip/bgzip allowed) into gene models.

    Args:
        path: the annotation file.
        feature: ``"CDS"`` keeps only coding transcripts (and genes that have one);
            ``"exon"`` keeps every transcript (ncRNA, pseudogenic, TE transcripts too).
        contig_lengths: contig lengths (e.g. from the FASTA index); when given, a feature on
            another contig or past a contig's end is an error. Without it the file's
            ``##sequence-region`` lines are used for the bounds check.
        missing_parents: ``"error"`` (default) raises on a line whose ``Parent`` ID is not in
            the file; ``"skip"`` drops such child lines (counted in ``summary.orphan_lines``)
            and gives a transcript whose gene line is absent a gene of its own (the sliced
            example genomes in data/ need this).
        format: force ``"gff3"`` or ``"gtf"`` instead of sniffing.

    Returns:
        :class:`Annotation` with 0-based half-open coordinates and a ``summary``.

    Raises:
        GenosegError: naming ``file:line`` for malformed lines, end < start, features outside
        their contig, missing parents, CDS lines without a transcript, conflicting strands.
    """
    if feature not in ("CDS", "exon"):
        raise GenosegError(f"feature must be 'CDS' or 'exon', not {feature!r}")
    if missing_parents not in ("error", "skip"):
        raise GenosegError(f"missing_parents must be 'error' or 'skip', not {missing_parents!r}")
    if format not in (None, "gff3", "gtf"):
        raise GenosegError(f"format must be 'gff3' or 'gtf', not {format!r}")
    path = os.fspath(path)
    fmt, recs, regions = _read_records(path, format)
    summary = AnnotationSummary(path=path, format=fmt, feature_lines=len(recs))
    if contig_lengths is not None:
        for sid, (length, lineno) in regions.items():
            if sid in contig_lengths and contig_lengths[sid] != length:
                raise GenosegError(
                    f"{path}:{lineno}: ##sequence-region {sid} has length {length} but the "
                    f"genome's {sid} has length {contig_lengths[sid]}"
                )
        _check_bounds(recs, contig_lengths, path, "contig_lengths")
    else:
        _check_bounds(recs, {k: v[0] for k, v in regions.items()}, path, "sequence-region")
    if fmt == "gff3":
        txs, genes_meta = _assemble_gff3(recs, path, missing_parents, summary)
    else:
        txs, genes_meta = _assemble_gtf(recs, path, summary)

    built: list[Transcript] = [t.build(path) for t in txs.values()]
    by_gene: dict[str, list[Transcript]] = {}
    for t in built:
        if feature == "CDS" and not t.is_coding:
            summary.skipped_noncoding += 1
            continue
        by_gene.setdefault(t.gene_id, []).append(t)

    genes: dict[str, list[Gene]] = {}
    for gid, ts in by_gene.items():
        ts.sort(key=lambda t: (t.start, t.end, t.id))
        meta = genes_meta.get(gid)
        first = ts[0]
        seqid = meta.seqid if meta else first.seqid
        for t in ts:
            if t.seqid != seqid:
                raise GenosegError(
                    f"{path}:{t.source_line}: transcript {t.id} is on {t.seqid} but its gene "
                    f"{gid} is on {seqid}"
                )
        strand = meta.strand if meta and meta.strand in ("+", "-") else first.strand
        start = min(t.start for t in ts)
        end = max(t.end for t in ts)
        if meta:
            start, end = min(start, meta.start), max(end, meta.end)
        biotype = meta.type if meta else ("gene" if any(t.is_coding for t in ts) else first.biotype)
        if meta and "biotype" in meta.attrs and biotype == "gene":
            biotype = meta.attrs["biotype"]
        genes.setdefault(seqid, []).append(Gene(gid, seqid, strand, start, end, ts, biotype))
    for lst in genes.values():
        lst.sort(key=lambda g: (g.start, g.end, g.id))
    summary.genes = sum(len(v) for v in genes.values())
    summary.coding_genes = sum(
        1 for v in genes.values() for g in v if any(t.is_coding for t in g.transcripts)
    )
    summary.transcripts = sum(len(g.transcripts) for v in genes.values() for g in v)
    summary.coding_transcripts = sum(
        1 for v in genes.values() for g in v for t in g.transcripts if t.is_coding
    )
    summary.noncoding_transcripts = summary.transcripts - summary.coding_transcripts
    return Annotation(
        genes=genes,
        sequence_regions={k: v[0] for k, v in regions.items()},
        summary=summary,
    )


def _assemble_gff3(
    recs: list[_Rec], path: str, missing_parents: str, summary: AnnotationSummary
) -> tuple[dict[str, _TxBuild], dict[str, _Rec]]:
    by_id: dict[str, _Rec] = {}
    for rec in recs:
        rid = rec.attrs.get("ID")
        if rid is None:
            continue
        rid = unquote(rid)
        prev = by_id.get(rid)
        if prev is None:
            by_id[rid] = rec
        elif rec.type not in CHILD_TYPES and rec.type != "intron":
            raise GenosegError(
                f"{path}:{rec.line}: duplicate ID {rid!r} (first used on line {prev.line})"
            )
        elif prev.type != rec.type:
            raise GenosegError(
                f"{path}:{rec.line}: ID {rid!r} is used by a {prev.type} on line {prev.line} "
                f"and by this {rec.type}"
            )

    def parents(rec: _Rec) -> list[str]:
        value = rec.attrs.get("Parent")
        if not value:
            return []
        return [unquote(p) for p in value.split(",") if p]

    txs: dict[str, _TxBuild] = {}
    genes_meta: dict[str, _Rec] = {}
    gene_of_missing: dict[str, str] = {}

    def gene_for(tx_rec: _Rec, tx_id: str) -> str:
        """Gene ID of a transcript feature (validating its Parent)."""
        ps = parents(tx_rec)
        if not ps:
            genes_meta.setdefault(tx_id, tx_rec)
            return tx_id
        gid = ps[0]
        grec = by_id.get(gid)
        if gid == tx_id or (grec is not None and tx_id in parents(grec)):
            raise GenosegError(
                f"{path}:{tx_rec.line}: cyclic Parent: {tx_rec.type} {tx_id} has Parent {gid!r}, "
                f"which is {'itself' if gid == tx_id else f'its own child (line {grec.line})'}"
            )
        if grec is None:
            if missing_parents == "error":
                raise GenosegError(
                    f"{path}:{tx_rec.line}: Parent {gid!r} of {tx_rec.type} {tx_id} is not in "
                    f"the file"
                )
            if gid not in gene_of_missing:
                gene_of_missing[gid] = gid
                summary.synthesized_genes += 1
            return gid
        if grec.seqid != tx_rec.seqid:
            raise GenosegError(
                f"{path}:{tx_rec.line}: {tx_rec.type} {tx_id} is on {tx_rec.seqid} but its "
                f"gene {gid} (line {grec.line}) is on {grec.seqid}"
            )
        genes_meta[gid] = grec
        return gid

    def transcript_for(pid: str, prec: _Rec) -> _TxBuild:
        tx = txs.get(pid)
        if tx is not None:
            return tx
        if not parents(prec) and _is_gene_type(prec.type):
            # child directly under a gene: an implicit transcript with the gene's ID
            genes_meta[pid] = prec
            biotype = "mRNA" if prec.type in ("gene", "protein_coding_gene") else prec.type
            tx = _TxBuild(pid, pid, prec.seqid, prec.strand, biotype, prec.line)
        else:
            gid = gene_for(prec, pid)
            tx = _TxBuild(pid, gid, prec.seqid, prec.strand, prec.type, prec.line, prec.score)
        txs[pid] = tx
        return tx

    transcript_ids: set[str] = set()
    for rec in _introns_last(recs):
        if rec.type not in CHILD_TYPES and rec.type != "intron":
            continue
        ps = parents(rec)
        if rec.type == "intron" and not ps:
            continue  # free-standing intron evidence (RNASeq_splice)
        where = f"{path}:{rec.line}"
        targets: list[str] = []
        missing: list[str] = []
        for pid in ps:
            prec = by_id.get(pid)
            if prec is None:
                missing.append(pid)
            elif prec.type not in IGNORED_PARENT_TYPES:
                targets.append(pid)
        if missing:
            if missing_parents == "error":
                raise GenosegError(
                    f"{where}: Parent {missing[0]!r} of {rec.type} is not in the file"
                )
            if not targets:
                summary.orphan_lines += 1
                continue
        if not targets:
            if rec.type == "intron":
                continue
            what = (
                "CDS without an mRNA/transcript"
                if rec.type == "CDS"
                else (f"{rec.type} without a transcript")
            )
            raise GenosegError(f"{where}: {what} (no Parent naming a transcript or gene)")
        for pid in targets:
            prec = by_id[pid]
            if prec.type in CHILD_TYPES:
                raise GenosegError(f"{where}: Parent {pid!r} is a {prec.type}, not a transcript")
            if rec.type == "intron" and pid not in txs:
                continue  # intron lines never create transcripts; scores only
            transcript_for(pid, prec).add_child(rec, path)
            transcript_ids.add(pid)

    # transcripts (and genes) that have children decide what is kept; everything else is
    # counted as skipped by type.
    used_lines = {t.line for t in txs.values()} | {g.line for g in genes_meta.values()}
    for rec in recs:
        if rec.type in CHILD_TYPES:
            continue
        if rec.line not in used_lines:
            if rec.type == "intron" and parents(rec):
                continue
            summary.skipped_types[rec.type] += 1
    # transcripts must sit inside their gene's contig; check transcript features whose
    # gene lines are present and which lie outside the gene extent (a corrupted file).
    for tx in txs.values():
        g = genes_meta.get(tx.gene_id)
        if (
            g is not None
            and g.line != tx.line
            and g.strand in ("+", "-")
            and tx.strand
            in (
                "+",
                "-",
            )
        ):
            if g.strand != tx.strand:
                raise GenosegError(
                    f"{path}:{tx.line}: transcript {tx.id} is on strand {tx.strand} but its gene "
                    f"{tx.gene_id} (line {g.line}) is on {g.strand}"
                )
    return txs, genes_meta


def _assemble_gtf(
    recs: list[_Rec], path: str, summary: AnnotationSummary
) -> tuple[dict[str, _TxBuild], dict[str, _Rec]]:
    txs: dict[str, _TxBuild] = {}
    genes_meta: dict[str, _Rec] = {}
    tx_lines: dict[str, _Rec] = {}
    for rec in recs:
        if rec.type == "gene":
            gid = rec.attrs.get("gene_id") or rec.attrs.get("ID")
            if gid:
                genes_meta[gid] = rec
        elif rec.type in ("transcript", "mRNA"):
            tid = rec.attrs.get("transcript_id") or rec.attrs.get("ID")
            if tid:
                tx_lines[tid] = rec
    for rec in _introns_last(recs):
        if rec.type not in CHILD_TYPES and rec.type != "intron":
            if rec.type not in ("gene", "transcript", "mRNA"):
                summary.skipped_types[rec.type] += 1
            continue
        where = f"{path}:{rec.line}"
        tid = rec.attrs.get("transcript_id")
        if not tid:
            if rec.type == "intron":
                continue
            what = "CDS without an mRNA/transcript" if rec.type == "CDS" else rec.type
            raise GenosegError(f"{where}: {what}: no transcript_id attribute")
        tx = txs.get(tid)
        if tx is None:
            if rec.type == "intron":
                continue
            gid = rec.attrs.get("gene_id")
            tline = tx_lines.get(tid)
            if not gid:
                raise GenosegError(f"{where}: {rec.type} of {tid} has no gene_id attribute")
            biotype = "transcript"
            line = rec.line
            score = None
            if tline is not None:
                biotype = (
                    tline.attrs.get("transcript_biotype")
                    or tline.attrs.get("transcript_type")
                    or tline.type
                )
                line, score = tline.line, tline.score
            tx = _TxBuild(tid, gid, rec.seqid, rec.strand, biotype, line, score)
            txs[tid] = tx
        elif tx.gene_id != rec.attrs.get("gene_id", tx.gene_id):
            raise GenosegError(
                f"{where}: transcript {tid} has gene_id {rec.attrs['gene_id']!r} here but "
                f"{tx.gene_id!r} on line {tx.line}"
            )
        tx.add_child(rec, path)
    for tx in txs.values():
        if tx.biotype == "transcript" and tx.cds:
            tx.biotype = "mRNA"
    summary.gene_id_is_transcript_id = sum(1 for tid, tx in txs.items() if tx.gene_id == tid)
    return txs, genes_meta
