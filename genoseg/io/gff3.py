"""GFF3 writer of decoded gene models (docs/outputs.md describes every column).

Layout::

    ##gff-version 3
    # genoseg <version>
    # model: <model>            (when given)
    # command: <command line>   (when given)
    ##sequence-region <contig> 1 <length>     one per contig, in genome (FASTA) order
    <contig> genoseg gene   ...                genes sorted by contig order, then start
    <contig> genoseg mRNA   ...
    <contig> genoseg exon   ...                then CDS, intron lines, ascending coordinate

Coordinates are 1-based closed (a 0-based half-open ``[s, e)`` becomes ``s+1 .. e``). The
score column holds posteriors (``.`` when not computed): the transcript posterior on gene
and mRNA lines, the segment posterior on exon, CDS and intron lines. Exon and CDS lines
carry ``start_posterior`` / ``end_posterior`` (boundary posteriors at the line's lower /
upper coordinate, whatever the strand), as ``genoseg eval`` reads them.

Escaping follows the GFF3 specification: in the seqid column every character outside
``[a-zA-Z0-9.:^*$@!+_?-|]`` is percent-encoded; in attribute values ``%``, ``;``, ``=``,
``&``, ``,``, tab, newline and other control characters are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

from genoseg import __version__
from genoseg.decode.genes import Gene
from genoseg.io._dest import Destination, format_probability, open_destination

__all__ = ["escape_attribute", "escape_seqid", "gff3_lines", "sort_genes", "write_gff3"]

_SEQID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:^*$@!+_?-|")
_ATTR_RESERVED = frozenset("%;=&,\t\n\r")


def _pct(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def escape_seqid(name: str) -> str:
    """A contig name for GFF3 column 1 (percent-encoding outside ``[a-zA-Z0-9.:^*$@!+_?-|]``)."""
    return "".join(ch if ch in _SEQID_OK else _pct(ch) for ch in name)


def escape_attribute(value: str) -> str:
    """An attribute value for GFF3 column 9 (percent-encodes ``% ; = & ,`` and control
    characters)."""
    return "".join(
        _pct(ch) if ch in _ATTR_RESERVED or ord(ch) < 32 or ord(ch) == 127 else ch for ch in value
    )


def sort_genes(contigs: Sequence[str], genes: Iterable[Gene]) -> list[Gene]:
    """Genes sorted by contig order (``contigs``), then start, end, strand. A gene on a
    contig not in ``contigs`` is a ValueError naming it."""
    order = {c: i for i, c in enumerate(contigs)}
    out = list(genes)
    for g in out:
        if g.contig not in order:
            raise ValueError(f"gene {g.id} is on contig {g.contig!r}, which is not in the genome")
    out.sort(key=lambda g: (order[g.contig], g.start, g.end, g.strand, g.id))
    return out


def _attrs(pairs: Sequence[tuple[str, object]]) -> str:
    return ";".join(f"{k}={escape_attribute(str(v))}" for k, v in pairs if v is not None)


def gff3_lines(
    contigs: Mapping[str, int],
    genes: Iterable[Gene],
    *,
    source: str = "genoseg",
    model: str | None = None,
    command: str | None = None,
    comments: Sequence[str] = (),
    digits: int = 4,
) -> Iterator[str]:
    """The lines (each ending in a newline) of the GFF3 file; see the module docstring.

    Args:
        contigs: every contig of the genome, name -> length, in FASTA order (one
            ``##sequence-region`` each; contigs of length 0 are skipped).
        genes: decoded genes on those contigs, any order.
        source: the source column.
        model, command: written into the header comments when given.
        comments: further header comment lines (without the leading ``#``).
        digits: decimals of the posteriors.
    """
    src = escape_attribute(source).replace(" ", "_") or "."
    yield "##gff-version 3\n"
    yield f"# genoseg {__version__}\n"
    if model is not None:
        yield f"# model: {_one_line(model)}\n"
    if command is not None:
        yield f"# command: {_one_line(command)}\n"
    for c in comments:
        yield f"# {_one_line(c)}\n"
    for name, length in contigs.items():
        if length > 0:
            yield f"##sequence-region {escape_seqid(name)} 1 {length}\n"
    prob = lambda p: format_probability(p, digits)  # noqa: E731
    for gene in sort_genes(list(contigs), genes):
        length = contigs[gene.contig]
        if gene.end > length:
            raise ValueError(
                f"gene {gene.id} ends at {gene.end}, past the end of {gene.contig} ({length})"
            )
        sid = escape_seqid(gene.contig)
        yield _line(
            sid,
            src,
            "gene",
            gene.start,
            gene.end,
            prob(gene.posterior),
            gene.strand,
            ".",
            _attrs([("ID", gene.id)]),
        )
        for tx in gene.transcripts:
            yield _line(
                sid,
                src,
                "mRNA",
                tx.start,
                tx.end,
                prob(tx.posterior),
                tx.strand,
                ".",
                _attrs([("ID", tx.id), ("Parent", gene.id)]),
            )
            n = len(tx.cds)
            rows: list[tuple[int, int, str]] = []
            for k, part in enumerate(tx.cds):
                number = k + 1 if tx.strand == "+" else n - k  # exon number, 5' -> 3'
                bounds = [
                    ("start_posterior", _opt(part.start_posterior, prob)),
                    ("end_posterior", _opt(part.end_posterior, prob)),
                ]
                exon = _line(
                    sid,
                    src,
                    "exon",
                    part.start,
                    part.end,
                    prob(part.posterior),
                    tx.strand,
                    ".",
                    _attrs([("ID", f"{tx.id}.exon{number}"), ("Parent", tx.id), *bounds]),
                )
                cds = _line(
                    sid,
                    src,
                    "CDS",
                    part.start,
                    part.end,
                    prob(part.posterior),
                    tx.strand,
                    str(part.phase),
                    _attrs([("ID", f"{tx.id}.cds"), ("Parent", tx.id), *bounds]),
                )
                rows.append((part.start, 0, exon))
                rows.append((part.start, 1, cds))
            m = len(tx.introns)
            for k, intron in enumerate(tx.introns):
                number = k + 1 if tx.strand == "+" else m - k
                rows.append(
                    (
                        intron.start,
                        2,
                        _line(
                            sid,
                            src,
                            "intron",
                            intron.start,
                            intron.end,
                            prob(intron.posterior),
                            tx.strand,
                            ".",
                            _attrs([("ID", f"{tx.id}.intron{number}"), ("Parent", tx.id)]),
                        ),
                    )
                )
            rows.sort(key=lambda r: (r[0], r[1]))
            for _, _, text in rows:
                yield text


def _opt(p, prob) -> str | None:
    return None if p is None else prob(p)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _line(seqid, source, ftype, start, end, score, strand, phase, attrs) -> str:
    return f"{seqid}\t{source}\t{ftype}\t{start + 1}\t{end}\t{score}\t{strand}\t{phase}\t{attrs}\n"


def write_gff3(
    dest: Destination,
    contigs: Mapping[str, int],
    genes: Iterable[Gene],
    *,
    source: str = "genoseg",
    model: str | None = None,
    command: str | None = None,
    comments: Sequence[str] = (),
    digits: int = 4,
    option: str = "-o",
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> None:
    """Write genes as GFF3 (:func:`gff3_lines`) to ``dest``: a path (written atomically,
    refused when equal to one of ``inputs``), ``"-"`` (stdout) or an open text handle."""
    lines = gff3_lines(
        contigs,
        genes,
        source=source,
        model=model,
        command=command,
        comments=comments,
        digits=digits,
    )
    with open_destination(dest, option=option, inputs=inputs) as fh:
        for line in lines:
            fh.write(line)
