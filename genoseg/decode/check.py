"""Structural checks of gene models against the genome sequence.

:func:`check_gene_models` checks decoded :class:`~genoseg.decode.genes.Gene` objects,
:func:`check_gff3` a GFF3 file (any tool's; parsed with genoseg.data.annotation). Both return
a list of problems, one human-readable line each, empty when everything holds:

* hierarchy: children lie within their parent, on the same contig and strand; IDs unique;
  CDS parts ascending, non-empty, non-overlapping; introns are exactly the gaps between
  consecutive parts (decoded genes; in a file: an ``intron`` line lies in a gap);
* coding: CDS length ≡ 0 (mod 3); the CDS starts with a start codon (ATG) and ends with a
  stop codon (TAA, TAG, TGA), which is part of the CDS (genoseg's convention and GFF3's);
  no in-frame stop codon before the last codon;
* introns: donor (first two intron bases, transcript sense) in GT/GC/AT and acceptor (last
  two) in AG/AC, the splice sites the default grammar allows;
* phases: the GFF3 phase of every CDS part equals ``(3 - (coding bases before it) % 3) % 3``
  in transcription order; decoded parts and introns also carry entry/exit/intron phases,
  checked against the lengths.

Coordinates in messages are 1-based inclusive (as in GFF3), strand and contig named.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from urllib.parse import unquote

from genoseg.decode.genes import Gene
from genoseg.decode.sequence import Fetch, as_fetch, cds_sequence
from genoseg.errors import GenosegError

__all__ = [
    "ACCEPTORS",
    "DONORS",
    "START_CODONS",
    "STOP_CODONS",
    "check_cds",
    "check_gene_models",
    "check_gff3",
]

START_CODONS = ("ATG",)
STOP_CODONS = ("TAA", "TAG", "TGA")
DONORS = ("GT", "GC", "AT")
ACCEPTORS = ("AG", "AC")


def _loc(contig: str, start: int, end: int, strand: str) -> str:
    return f"{contig}:{start + 1}-{end}({strand})"


def check_cds(
    name: str,
    fetch: Fetch,
    contig: str,
    strand: str,
    parts: Sequence[tuple[int, int]],
    *,
    start_codons: Iterable[str] = START_CODONS,
    stop_codons: Iterable[str] = STOP_CODONS,
    donors: Iterable[str] = DONORS,
    acceptors: Iterable[str] = ACCEPTORS,
) -> list[str]:
    """Sequence checks of one coding transcript: CDS length mod 3, start codon, stop codon,
    no in-frame stop, splice sites of the gaps between ``parts`` (ascending 0-based
    half-open CDS intervals). ``name`` prefixes every message."""
    starts, stops = set(start_codons), set(stop_codons)
    donor_set, acceptor_set = set(donors), set(acceptors)
    out: list[str] = []
    try:
        cds = cds_sequence(fetch, contig, strand, parts)
    except GenosegError as exc:
        return [f"{name}: cannot read its sequence: {exc}"]
    n = len(cds)
    if n % 3:
        out.append(f"{name}: CDS length {n} is not a multiple of 3")
    if cds[:3] not in starts:
        out.append(f"{name}: CDS starts with {cds[:3]!r}, not a start codon")
    if n < 6 or cds[n - 3 :] not in stops:
        out.append(f"{name}: CDS ends with {cds[n - 3 :]!r}, not a stop codon")
    for j in range(0, n - 3 - n % 3, 3):
        if cds[j : j + 3] in stops:
            out.append(f"{name}: in-frame stop codon {cds[j : j + 3]} at CDS base {j + 1}")
            break
    for (_, a), (b, _) in zip(parts[:-1], parts[1:]):
        if b <= a:
            continue  # reported by the hierarchy checks
        try:
            intron = cds_sequence(fetch, contig, strand, [(a, b)])
        except GenosegError as exc:
            out.append(f"{name}: cannot read intron {_loc(contig, a, b, strand)}: {exc}")
            continue
        if intron[:2] not in donor_set or intron[-2:] not in acceptor_set:
            out.append(
                f"{name}: intron {_loc(contig, a, b, strand)} has splice sites "
                f"{intron[:2]}..{intron[-2:]} (allowed donors {'/'.join(sorted(donor_set))}, "
                f"acceptors {'/'.join(sorted(acceptor_set))})"
            )
    return out


def check_gene_models(genes: Iterable[Gene], sequences: object, **codons) -> list[str]:
    """Problems of decoded genes (module docstring); [] when all hold.

    Args:
        genes: :class:`~genoseg.decode.genes.Gene` objects (any contigs, any order).
        sequences: a sequence source (:func:`genoseg.decode.sequence.as_fetch`): a Genome,
            FASTA path, mapping contig -> sequence or callable.
        codons: optional ``start_codons``, ``stop_codons``, ``donors``, ``acceptors``
            overriding the defaults (:data:`START_CODONS`, ...).
    """
    fetch = as_fetch(sequences)
    out: list[str] = []
    seen: dict[str, str] = {}

    def unique(ident: str, what: str) -> None:
        if ident in seen:
            out.append(f"duplicate ID {ident!r} ({what}; first used by a {seen[ident]})")
        seen.setdefault(ident, what)

    for gene in genes:
        gname = f"gene {gene.id} {_loc(gene.contig, gene.start, gene.end, gene.strand)}"
        unique(gene.id, "gene")
        if gene.strand not in ("+", "-"):
            out.append(f"{gname}: strand {gene.strand!r} is not + or -")
        if gene.end <= gene.start:
            out.append(f"{gname}: empty extent")
        if not gene.transcripts:
            out.append(f"{gname}: no transcript")
        for tx in gene.transcripts:
            tname = f"transcript {tx.id} {_loc(tx.contig, tx.start, tx.end, tx.strand)}"
            unique(tx.id, "transcript")
            if tx.gene_id != gene.id:
                out.append(f"{tname}: gene_id {tx.gene_id!r} is not its gene {gene.id!r}")
            if tx.contig != gene.contig:
                out.append(f"{tname}: on {tx.contig}, its gene on {gene.contig}")
            if tx.strand != gene.strand:
                out.append(f"{tname}: strand {tx.strand}, its gene's {gene.strand}")
            if not tx.cds:
                out.append(f"{tname}: no CDS")
                continue
            if tx.start < gene.start or tx.end > gene.end:
                out.append(f"{tname}: not within its gene {gene.start + 1}-{gene.end}")
            out += _check_parts(tname, tx)
            out += check_cds(
                tname, fetch, tx.contig, tx.strand, [(p.start, p.end) for p in tx.cds], **codons
            )
    return out


def _check_parts(tname: str, tx) -> list[str]:
    out = []
    parts = tx.cds
    for p in parts:
        if p.end <= p.start:
            out.append(f"{tname}: empty CDS part {p.start + 1}-{p.end}")
    for a, b in zip(parts[:-1], parts[1:]):
        if b.start < a.end:
            out.append(
                f"{tname}: CDS parts {a.start + 1}-{a.end} and {b.start + 1}-{b.end} "
                "overlap or are out of order"
            )
    gaps = [(a.end, b.start) for a, b in zip(parts[:-1], parts[1:]) if a.end < b.start]
    introns = [(i.start, i.end) for i in tx.introns]
    if introns != gaps:
        out.append(
            f"{tname}: introns {[(s + 1, e) for s, e in introns]} are not the gaps between its "
            f"CDS parts {[(s + 1, e) for s, e in gaps]}"
        )
    done = 0
    ordered = tx.cds_in_transcription_order()
    for k, p in enumerate(ordered):
        entry, exit_ = done % 3, (done + p.length) % 3
        where = f"{tname}: CDS part {p.start + 1}-{p.end}"
        if p.entry_phase != entry or p.exit_phase != exit_:
            out.append(
                f"{where}: phases {p.entry_phase}->{p.exit_phase}, lengths give {entry}->{exit_}"
            )
        if p.phase != (3 - entry) % 3:
            out.append(f"{where}: GFF3 phase {p.phase}, expected {(3 - entry) % 3}")
        done += p.length
        if k < len(ordered) - 1:
            tx_introns = tx.introns_in_transcription_order()
            if k < len(tx_introns) and tx_introns[k].phase != exit_:
                i = tx_introns[k]
                out.append(
                    f"{tname}: intron {i.start + 1}-{i.end} has phase {i.phase}, the coding "
                    f"bases before it give {exit_}"
                )
    return out


# --------------------------------------------------------------------------- GFF3 files


def check_gff3(path: str | os.PathLike, sequences: object, **codons) -> list[str]:
    """Problems of the gene models in a GFF3 file (module docstring); [] when all hold.

    Line-level checks (parents exist and contain their children, same contig and strand,
    CDS phases, intron lines inside gaps) read the raw lines with the project's GFF3
    parser; sequence checks run on every coding transcript as
    :func:`genoseg.data.annotation.read_annotation` assembles it (CDS mode).

    Args:
        path: GFF3 file (gzip allowed).
        sequences: sequence source (a Genome, FASTA path, mapping or callable).

    Raises:
        GenosegError: the file cannot be parsed (naming file:line).
    """
    from genoseg.data.annotation import _read_records, read_annotation

    path = os.fspath(path)
    fetch = as_fetch(sequences)
    _, recs, _ = _read_records(path, "gff3")
    out: list[str] = []
    by_id: dict[str, object] = {}
    for rec in recs:
        rid = rec.attrs.get("ID")
        if rid is not None:
            by_id.setdefault(unquote(rid), rec)
    children: dict[str, list] = defaultdict(list)
    for rec in recs:
        where = f"{path}:{rec.line}: {rec.type} {rec.start + 1}-{rec.end}"
        for pid in (unquote(p) for p in rec.attrs.get("Parent", "").split(",") if p):
            parent = by_id.get(pid)
            if parent is None:
                out.append(f"{where}: Parent {pid!r} is not in the file")
                continue
            children[pid].append(rec)
            if parent.seqid != rec.seqid:
                out.append(f"{where}: on {rec.seqid}, its parent {pid} on {parent.seqid}")
            if rec.start < parent.start or rec.end > parent.end:
                out.append(
                    f"{where}: not within its parent {parent.type} {pid} "
                    f"{parent.start + 1}-{parent.end} (line {parent.line})"
                )
            if rec.strand in "+-" and parent.strand in "+-" and rec.strand != parent.strand:
                out.append(f"{where}: strand {rec.strand}, its parent {pid}'s {parent.strand}")
    for pid, kids in children.items():
        cds = sorted((r for r in kids if r.type == "CDS"), key=lambda r: (r.start, r.end))
        if cds:
            strand = cds[0].strand
            done = 0
            for r in cds if strand != "-" else reversed(cds):
                want = (3 - done % 3) % 3
                if r.phase != want:
                    out.append(
                        f"{path}:{r.line}: CDS {r.start + 1}-{r.end} of {pid} has phase "
                        f"{'.' if r.phase is None else r.phase}, expected {want}"
                    )
                done += r.end - r.start
        exons = sorted(
            ((r.start, r.end) for r in kids if r.type in ("exon", "CDS")), key=lambda x: x
        )
        merged: list[list[int]] = []
        for s, e in exons:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        gaps = [(a[1], b[0]) for a, b in zip(merged[:-1], merged[1:])]
        for r in kids:
            if r.type == "intron" and not any(a <= r.start and r.end <= b for a, b in gaps):
                out.append(
                    f"{path}:{r.line}: intron {r.start + 1}-{r.end} of {pid} overlaps an exon"
                )
    ann = read_annotation(path, feature="CDS", format="gff3")
    for tx in ann.transcripts():
        name = f"{path}: transcript {tx.id} {_loc(tx.seqid, tx.cds_start, tx.cds_end, tx.strand)}"
        out += check_cds(name, fetch, tx.seqid, tx.strand, list(tx.cds), **codons)
    return out
