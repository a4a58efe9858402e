"""``genoseg merge``: gather the outputs of ``genoseg predict --shard i/n`` into one run.

Inputs are the files the shards wrote, recognised by their content (module functions
:func:`sniff_kind`): GFF3 (``##gff-version``), BED12 of transcripts, the segment BED
(its ``#chrom start end label ...`` header line) and bedGraph tracks (``track
type=bedGraph name="..."``). An empty ``.bed`` file is a BED12 of a shard without genes.

Every GFF3 must carry predict's run line (docs/outputs.md)::

    # genoseg-run: {"genome": <sha256>, "model": <sha256>, "shard": [i, n],
                    "posteriors": <bool>, "bam": <bool>}

``genome`` is :func:`genome_digest` of the contigs (names and lengths, FASTA order),
``model`` the sha256 of the checkpoint file. Merging checks, before anything is written:

* one run: every GFF3 has the same genome, model, shard count n, ``posteriors`` and
  ``bam``, and the same ``##sequence-region`` lines (which must hash to ``genome``);
  otherwise a one-line error names two disagreeing files (*mixed runs*);
* complete: shards 1..n are all present (``missing shards 2, 5 of 6``). A shard given
  twice is allowed (its genes are simply duplicates);
* genes: a gene (keyed by its coordinate-derived ID) found in several inputs is written
  once when its lines are identical; when only posteriors differ (overlapping ``--region``
  runs decode its neighbourhood differently) the first input's lines are kept and a warning
  counts them; two different gene structures under one ID are an error. Every feature ID
  of the output is unique (checked);
* companions: each kind of companion file (BED12, segment BED, each track) must come one
  per GFF3; the merged BED12 must hold exactly the transcripts of the merged GFF3.

Output:

* GFF3: ``##gff-version 3``, ``# genoseg <version>``, ``# model: ...`` (when all inputs
  agree), ``# command: ...`` (when given), one run line with ``"shard": [1, 1]`` and
  ``"merged": <number of GFF3 inputs>`` (a merged file is one whole-genome run again and
  can itself be merged), one ``##sequence-region`` per contig, then the gene blocks (each
  gene line with its mRNA/exon/CDS/intron lines, copied verbatim) sorted like predict
  sorts them: contig (FASTA) order, then start, end, strand, ID. With shards of one run
  the feature lines equal those of the single-process ``genoseg predict`` exactly.
* BED12: the transcripts sorted the same way, duplicates once.
* segment BED: one header line, segments sorted by contig and start, duplicates once;
  overlapping segments that differ are an error (a path is a tiling).
* tracks: one ``{PREFIX}.{track}.bedgraph`` per track name (``+``/``-`` spelled
  ``_plus``/``_minus``), streamed: runs sorted, equal neighbouring values joined into one
  line (as predict's writer does), overlaps allowed only where values agree.

Coordinates are copied verbatim (GFF3 1-based closed, BED/bedGraph 0-based half-open). Every
output is written through :mod:`genoseg.io.atomic` and renamed only after all outputs are
complete; an error leaves no output file. An output equal to an input is refused.

This module imports only the standard library (no torch, numpy): merging is text work.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import unquote

from genoseg import __version__
from genoseg.errors import GenosegError
from genoseg.io.atomic import atomic_output, check_not_input
from genoseg.io.bedgraph import check_tracks_prefix, track_file_name

__all__ = [
    "RUN_PREFIX",
    "GeneBlock",
    "MergeReport",
    "RunInfo",
    "ShardGFF3",
    "genome_digest",
    "merge_outputs",
    "read_shard_gff3",
    "run_comment",
    "sniff_kind",
    "track_path",
]

#: Prefix of predict's run line in the GFF3 header (the JSON object follows).
RUN_PREFIX = "# genoseg-run: "
_RUN_KEYS = ("genome", "model", "shard", "posteriors", "bam")
_POSTERIOR_ATTRS = ("start_posterior", "end_posterior")
_TRACK_NAME = re.compile(r'\bname="([^"]*)"')


def genome_digest(contigs: Mapping[str, int] | Iterable[tuple[str, int]]) -> str:
    """sha256 hex of ``"\\n".join(f"{name}\\t{length}")`` over the contigs in FASTA order
    (raw names, not GFF3-escaped): the ``genome`` of the run line."""
    items = contigs.items() if isinstance(contigs, Mapping) else contigs
    text = "\n".join(f"{name}\t{int(length)}" for name, length in items)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_comment(
    genome: str,
    model: str,
    shard: tuple[int, int] = (1, 1),
    *,
    posteriors: bool,
    bam: bool,
    strand_average: bool = False,
    **extra: object,
) -> str:
    """The run line's text without the leading ``"# "`` (what ``gff3_lines(comments=...)``
    takes): ``genoseg-run: {json}`` with the keys in the documented order;
    ``"strand_average": true`` only when on (run lines from before it lack the key)."""
    obj: dict[str, object] = {
        "genome": genome,
        "model": model,
        "shard": [int(shard[0]), int(shard[1])],
        "posteriors": bool(posteriors),
        "bam": bool(bam),
    }
    if strand_average:
        obj["strand_average"] = True
    obj.update(extra)
    return RUN_PREFIX[2:] + json.dumps(obj)


@dataclass(frozen=True)
class RunInfo:
    """The run line of one GFF3: what must agree between the shards of one run."""

    genome: str
    model: str
    shard: int
    shards: int
    posteriors: bool
    bam: bool
    strand_average: bool = False  # written only when true (older run lines lack it)

    @classmethod
    def parse(cls, text: str, where: str) -> RunInfo:
        """Parse the JSON after :data:`RUN_PREFIX`; GenosegError naming ``where``."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenosegError(f"{where}: genoseg-run line is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise GenosegError(f"{where}: genoseg-run line must hold a JSON object")
        missing = [k for k in _RUN_KEYS if k not in obj]
        if missing:
            raise GenosegError(f"{where}: genoseg-run line lacks {', '.join(missing)}")
        shard = obj["shard"]
        ok = (
            isinstance(shard, list)
            and len(shard) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
            and 1 <= shard[0] <= shard[1]
        )
        if not ok:
            raise GenosegError(f"{where}: genoseg-run 'shard' must be [i, n] with 1 <= i <= n")
        for key in ("genome", "model"):
            if not isinstance(obj[key], str) or not obj[key]:
                raise GenosegError(f"{where}: genoseg-run '{key}' must be a non-empty string")
        for key in ("posteriors", "bam", "strand_average"):
            if not isinstance(obj.get(key, False), bool):
                raise GenosegError(f"{where}: genoseg-run '{key}' must be true or false")
        return cls(obj["genome"], obj["model"], shard[0], shard[1], obj["posteriors"], obj["bam"],
                   obj.get("strand_average", False))  # fmt: skip


@dataclass
class GeneBlock:
    """One gene of a GFF3 with all its descendant lines, verbatim.

    ``contig`` is the seqid as written (escaped), ``start``/``end`` the gene line's 1-based
    closed coordinates, ``id`` the raw (unescaped) gene ID, ``ids`` every raw feature ID of
    the block, ``transcripts`` the raw mRNA IDs, ``where`` ``file:line`` of the gene line.
    """

    contig: str
    start: int
    end: int
    strand: str
    id: str
    where: str
    lines: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    transcripts: list[str] = field(default_factory=list)

    def structure(self) -> tuple[str, ...]:
        """The lines without posteriors (score column and posterior attributes): what must
        agree when one gene comes from two inputs."""
        out = []
        for line in self.lines:
            cols = line.rstrip("\n").split("\t")
            cols[5] = "."
            cols[8] = ";".join(
                kv for kv in cols[8].split(";") if kv.split("=", 1)[0] not in _POSTERIOR_ATTRS
            )
            out.append("\t".join(cols))
        return tuple(out)


@dataclass
class ShardGFF3:
    """A parsed shard GFF3: run line, contigs (raw name -> length, header order), seqids
    as written (same order), the ``# model:`` comment and the gene blocks."""

    path: Path
    run: RunInfo
    contigs: dict[str, int]
    seqids: list[str]
    model_comment: str | None
    genes: list[GeneBlock]


def _attributes(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in text.split(";"):
        if not kv.strip():
            continue
        key, sep, value = kv.partition("=")
        if not sep:
            raise GenosegError(f"{where}: attribute '{kv}' has no '='")
        out[key.strip()] = value
    return out


def _open_text(path: Path, what: str) -> IO[str]:
    try:
        return open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise GenosegError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise GenosegError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise GenosegError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def read_shard_gff3(path: str | os.PathLike) -> ShardGFF3:
    """Parse a GFF3 written by ``genoseg predict`` (or ``genoseg merge``).

    Gene blocks are a ``gene`` line followed by lines whose ``Parent`` is an ID defined
    earlier in the same block (predict writes each gene's lines together). Raises
    GenosegError naming ``file:line`` for anything else: no run line, a feature outside a
    gene, a seqid without ``##sequence-region``, a feature past its contig's end.
    """
    p = Path(path)
    run: RunInfo | None = None
    seqids: list[str] = []
    lengths: dict[str, int] = {}
    model_comment: str | None = None
    genes: list[GeneBlock] = []
    block: GeneBlock | None = None
    with _open_text(p, "GFF3 file") as fh:
        for no, raw in enumerate(fh, 1):
            where = f"{p}:{no}"
            line = raw.rstrip("\r\n")
            if no == 1:
                if not line.startswith("##gff-version 3"):
                    raise GenosegError(f"{where}: not a GFF3 file (no '##gff-version 3' line)")
                continue
            if not line.strip():
                continue
            if line.startswith("#"):
                if line.startswith(RUN_PREFIX):
                    if run is not None:
                        raise GenosegError(f"{where}: a second genoseg-run line")
                    run = RunInfo.parse(line[len(RUN_PREFIX) :], where)
                elif line.startswith("# model: "):
                    model_comment = line[len("# model: ") :]
                elif line.startswith("##sequence-region"):
                    f = line.split()
                    if len(f) != 4 or not f[2].isdigit() or not f[3].isdigit():
                        raise GenosegError(f"{where}: malformed ##sequence-region line")
                    if f[1] in lengths:
                        raise GenosegError(f"{where}: second ##sequence-region for {f[1]}")
                    seqids.append(f[1])
                    lengths[f[1]] = int(f[3])
                elif line.startswith("##FASTA"):
                    raise GenosegError(f"{where}: ##FASTA sections are not genoseg output")
                continue
            cols = line.split("\t")
            if len(cols) != 9:
                raise GenosegError(f"{where}: expected 9 tab-separated columns, got {len(cols)}")
            seqid, _, ftype, s, e, _, strand, _, attrs = cols
            if seqid not in lengths:
                raise GenosegError(f"{where}: seqid {seqid} has no ##sequence-region line")
            try:
                start, end = int(s), int(e)
            except ValueError:
                raise GenosegError(f"{where}: start/end are not integers") from None
            if not 1 <= start <= end <= lengths[seqid]:
                raise GenosegError(
                    f"{where}: {ftype} {start}-{end} is outside {seqid} (1-{lengths[seqid]})"
                )
            a = _attributes(attrs, where)
            fid = unquote(a["ID"]) if "ID" in a else None
            if ftype == "gene":
                if fid is None:
                    raise GenosegError(f"{where}: gene line without ID")
                block = GeneBlock(seqid, start, end, strand, fid, where)
                genes.append(block)
            else:
                parents = [unquote(x) for x in a.get("Parent", "").split(",") if x]
                if block is None or not parents or not all(x in block.ids for x in parents):
                    raise GenosegError(
                        f"{where}: {ftype} line whose Parent is not in the gene above it "
                        "(genoseg merge reads genoseg predict output)"
                    )
                if block.contig != seqid or block.strand != strand:
                    raise GenosegError(f"{where}: {ftype} on another seqid/strand than its gene")
                if ftype == "mRNA" and fid is not None:
                    block.transcripts.append(fid)
            assert block is not None
            if fid is not None:
                block.ids.add(fid)
            block.lines.append(line + "\n")
    if run is None:
        raise GenosegError(
            f"{p}: no '{RUN_PREFIX.strip()}' header line; genoseg merge reads the GFF3 of "
            "genoseg predict"
        )
    contigs = {unquote(s): lengths[s] for s in seqids}
    if genome_digest(contigs) != run.genome:
        raise GenosegError(
            f"{p}: the ##sequence-region lines do not match the genome of its genoseg-run line"
        )
    return ShardGFF3(p, run, contigs, seqids, model_comment, genes)


# -- companion files -------------------------------------------------------------------


def sniff_kind(path: str | os.PathLike) -> str:
    """``"gff3"``, ``"bed12"``, ``"segments"`` or ``"bedgraph"`` from the first line of the
    file (an empty ``.bed`` file is ``"bed12"``); GenosegError otherwise."""
    p = Path(path)
    with _open_text(p, "input file") as fh:
        first = ""
        for line in fh:
            if line.strip():
                first = line.rstrip("\r\n")
                break
    if not first:
        if p.suffix.lower() == ".bed":
            return "bed12"
        raise GenosegError(f"{p}: empty file (only an empty .bed is accepted: a BED12 shard)")
    if first.startswith("##gff-version"):
        return "gff3"
    if first.startswith("track") and "bedGraph" in first:
        return "bedgraph"
    if first.startswith("#chrom\tstart\tend\tlabel"):
        return "segments"
    if len(first.split("\t")) == 12:
        return "bed12"
    raise GenosegError(f"{p}: not a genoseg predict output (GFF3, BED12, segment BED or bedGraph)")


def track_path(prefix: str | os.PathLike, name: str) -> Path:
    """Merged bedGraph of track ``name``: ``{prefix}.{name}.bedgraph`` with ``+``/``-``
    spelled ``_plus``/``_minus`` (the rule of genoseg.io.bedgraph.track_file_name)."""
    return track_file_name(prefix, name)


def _track_name(path: Path) -> tuple[str, str]:
    with _open_text(path, "bedGraph file") as fh:
        for line in fh:
            if line.strip():
                head = line.rstrip("\r\n")
                m = _TRACK_NAME.search(head)
                if not m:
                    raise GenosegError(f'{path}:1: track line without name="..."')
                return m.group(1), head
    raise GenosegError(f"{path}: empty bedGraph file")  # pragma: no cover - sniffed before


@dataclass
class _Record:
    key: tuple
    line: str
    name: str
    core: tuple[str, ...]  # the columns that must agree for duplicates
    where: str


def _bed_columns(
    line: str, where: str, ncols: int, what: str, order: Mapping[str, int]
) -> tuple[list[str], int, int]:
    """The tab-separated columns of a BED line and its 0-based half-open start and end;
    GenosegError naming ``where`` for a wrong column count, an unknown contig or a
    non-integer coordinate."""
    c = line.split("\t")
    if len(c) != ncols:
        raise GenosegError(f"{where}: expected {ncols} {what} columns, got {len(c)}")
    if c[0] not in order:
        raise GenosegError(f"{where}: contig {c[0]} is not in the genome of the GFF3s")
    try:
        return c, int(c[1]), int(c[2])
    except ValueError:
        raise GenosegError(f"{where}: start/end are not integers") from None


def _read_bed12(path: Path, order: Mapping[str, int]) -> list[_Record]:
    out = []
    with _open_text(path, "BED file") as fh:
        for no, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            where = f"{path}:{no}"
            c, s, e = _bed_columns(line, where, 12, "BED", order)
            key = (order[c[0]], s, e, c[5], c[3])
            out.append(_Record(key, line + "\n", c[3], tuple(c[:4] + c[5:]), where))
    return out


def _read_segments(path: Path, order: Mapping[str, int]) -> tuple[str, list[_Record]]:
    out = []
    header = ""
    with _open_text(path, "segment BED file") as fh:
        for no, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                header = header or line + "\n"
                continue
            where = f"{path}:{no}"
            c, s, e = _bed_columns(line, where, 9, "segment BED", order)
            key = (order[c[0]], s, e, c[3])
            out.append(_Record(key, line + "\n", c[3], (c[0], c[1], c[2], c[3], c[5]), where))
    return header, out


def _bedgraph_runs(
    path: Path, order: Mapping[str, int]
) -> Iterator[tuple[int, int, int, float, str, str, str]]:
    """(contig order, start, end, value, value text, contig, where) of every line, checked
    to be sorted and non-overlapping within the file."""
    prev: tuple[int, int] = (-1, 0)
    with _open_text(path, "bedGraph file") as fh:
        for no, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith(("track", "#", "browser")):
                continue
            c = line.split("\t")
            where = f"{path}:{no}"
            if len(c) != 4:
                raise GenosegError(f"{where}: expected 4 bedGraph columns, got {len(c)}")
            if c[0] not in order:
                raise GenosegError(f"{where}: contig {c[0]} is not in the genome of the GFF3s")
            try:
                s, e, v = int(c[1]), int(c[2]), float(c[3])
            except ValueError:
                raise GenosegError(f"{where}: malformed bedGraph line") from None
            o = order[c[0]]
            if e <= s or (o, s) < prev:
                raise GenosegError(f"{where}: bedGraph lines not sorted or overlapping")
            prev = (o, e)
            yield o, s, e, v, c[3], c[0], where


# -- merging ---------------------------------------------------------------------------


@dataclass
class MergeReport:
    """What a merge did (also logged to stderr by the command)."""

    inputs: int = 0
    shards: int = 1
    genes: int = 0
    duplicate_genes: int = 0
    posterior_conflicts: int = 0
    bed12: int = 0
    segments: int = 0
    tracks: dict[str, Path] = field(default_factory=dict)


def _short(v: object) -> str:
    s = str(v)
    return s[:12] + "..." if len(s) > 15 else s


def _check_one_run(shards: Sequence[ShardGFF3]) -> None:
    first = shards[0]
    for other in shards[1:]:
        for what, a, b in (
            ("genome", first.run.genome, other.run.genome),
            ("model", first.run.model, other.run.model),
            ("shard count", first.run.shards, other.run.shards),
            ("posteriors", first.run.posteriors, other.run.posteriors),
            ("bam", first.run.bam, other.run.bam),
            ("strand averaging", first.run.strand_average, other.run.strand_average),
        ):
            if a != b:
                raise GenosegError(
                    f"mixed runs: {first.path} and {other.path} differ in {what} "
                    f"({_short(a)} vs {_short(b)}); merge only the outputs of one "
                    "genoseg predict run"
                )
        if other.seqids != first.seqids or list(other.contigs.values()) != list(
            first.contigs.values()
        ):
            raise GenosegError(
                f"mixed runs: {first.path} and {other.path} have different ##sequence-region lines"
            )
    n = first.run.shards
    have = {s.run.shard for s in shards}
    missing = [i for i in range(1, n + 1) if i not in have]
    if missing:
        raise GenosegError(
            f"missing shards {', '.join(map(str, missing))} of {n} "
            f"(given {len(shards)} GFF3 file{'s' if len(shards) != 1 else ''}: "
            f"shards {', '.join(map(str, sorted(have)))})"
        )


def _merge_genes(shards: Sequence[ShardGFF3], report: MergeReport) -> list[GeneBlock]:
    order = {s: i for i, s in enumerate(shards[0].seqids)}
    kept: dict[str, GeneBlock] = {}
    for shard in shards:
        for g in shard.genes:
            old = kept.get(g.id)
            if old is None:
                kept[g.id] = g
                continue
            report.duplicate_genes += 1
            if old.lines == g.lines:
                continue
            if old.structure() != g.structure():
                raise GenosegError(
                    f"gene {g.id} differs between {old.where} and {g.where}: two different "
                    "gene models under one ID (outputs of different runs?)"
                )
            report.posterior_conflicts += 1
    genes = sorted(kept.values(), key=lambda g: (order[g.contig], g.start, g.end, g.strand, g.id))
    owner: dict[str, GeneBlock] = {}
    for g in genes:
        for fid in g.ids:
            other = owner.setdefault(fid, g)
            if other is not g:
                raise GenosegError(f"ID {fid} is used by two genes ({other.where} and {g.where})")
    report.genes = len(genes)
    return genes


def _merge_records(
    records: Iterable[_Record], what: str, report: MergeReport, *, tiling: bool
) -> list[_Record]:
    out: list[_Record] = []
    seen: dict[tuple, _Record] = {}
    for r in sorted(records, key=lambda r: r.key):
        ident = r.key if tiling else r.name
        old = seen.get(ident)
        if old is not None:
            if old.core != r.core:
                raise GenosegError(f"{what}: {r.name} differs between {old.where} and {r.where}")
            continue
        seen[ident] = r
        if tiling and out:
            prev = out[-1]
            if prev.key[0] == r.key[0] and r.key[1] < prev.key[2]:
                raise GenosegError(
                    f"{what}: segments overlap ({prev.where} and {r.where}): the inputs "
                    "decoded one stretch differently (overlapping regions?)"
                )
        out.append(r)
    return out


def _merged_tracks(files: Sequence[Path], order: Mapping[str, int]) -> Iterator[str]:
    """bedGraph lines of the union of ``files`` (one track), runs joined."""
    runs = heapq.merge(*(_bedgraph_runs(f, order) for f in files), key=lambda r: r[:3])
    cur: list | None = None  # [order, start, end, value, text, contig, where]
    for r in runs:
        if cur is not None and r[0] == cur[0] and r[1] <= cur[2]:
            if r[3] == cur[3]:
                cur[2] = max(cur[2], r[2])
                continue
            if r[1] < cur[2]:
                raise GenosegError(
                    f"tracks disagree on {r[5]}:{r[1]}-{min(r[2], cur[2])} "
                    f"({cur[6]} has {cur[4]}, {r[6]} has {r[4]})"
                )
        if cur is not None:
            yield f"{cur[5]}\t{cur[1]}\t{cur[2]}\t{cur[4]}\n"
        cur = list(r)
    if cur is not None:
        yield f"{cur[5]}\t{cur[1]}\t{cur[2]}\t{cur[4]}\n"


def _log(msg: str) -> None:
    print(f"genoseg merge: {msg}", file=sys.stderr, flush=True)


def merge_outputs(
    inputs: Sequence[str | os.PathLike],
    gff3_out: str | os.PathLike,
    *,
    bed_out: str | os.PathLike | None = None,
    segments_out: str | os.PathLike | None = None,
    tracks_prefix: str | os.PathLike | None = None,
    command: str | None = None,
    log: bool = True,
) -> MergeReport:
    """Merge shard outputs (see the module docstring) into ``gff3_out`` (a path or ``"-"``)
    and, when given, ``bed_out`` (BED12), ``segments_out`` and the tracks
    ``{tracks_prefix}.{track}.bedgraph``. Raises GenosegError before writing anything when
    the inputs are not one complete run; nothing is written on any error."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise GenosegError("no input files")
    kinds: dict[str, list[Path]] = {"gff3": [], "bed12": [], "segments": [], "bedgraph": []}
    seen_paths: set[Path] = set()
    for p in paths:
        rp = p.resolve()
        if rp in seen_paths:
            raise GenosegError(f"{p}: given twice")
        seen_paths.add(rp)
        kinds[sniff_kind(p)].append(p)
    if not kinds["gff3"]:
        raise GenosegError("no GFF3 input: give the GFF3 of every shard")
    for kind, opt, out in (
        ("bed12", "--bed", bed_out),
        ("segments", "--segments-bed", segments_out),
        ("bedgraph", "--tracks", tracks_prefix),
    ):
        if kinds[kind] and out is None:
            shown = ", ".join(map(str, kinds[kind][:3])) + (", ..." if len(kinds[kind]) > 3 else "")
            raise GenosegError(f"{kind} inputs given ({shown}) but no {opt} output")
        if out is not None and not kinds[kind]:
            raise GenosegError(f"{opt} {out}: no {kind} inputs given")
    check_tracks_prefix(tracks_prefix)
    n_gff = len(kinds["gff3"])
    shards = [read_shard_gff3(p) for p in kinds["gff3"]]
    shards.sort(key=lambda s: (s.run.shard, str(s.path)))
    _check_one_run(shards)  # before the counts below: "missing shards 3 of 3" says more
    for kind in ("bed12", "segments"):
        if kinds[kind] and len(kinds[kind]) != n_gff:
            raise GenosegError(
                f"{n_gff} GFF3 inputs but {len(kinds[kind])} {kind} inputs: give one per GFF3"
            )
    first = shards[0]
    report = MergeReport(inputs=n_gff, shards=first.run.shards)
    genes = _merge_genes(shards, report)
    order = {name: i for i, name in enumerate(first.contigs)}

    bed12: list[_Record] = []
    if kinds["bed12"]:
        recs = [r for p in kinds["bed12"] for r in _read_bed12(p, order)]
        bed12 = _merge_records(recs, "BED12", report, tiling=False)
        names = {r.name for r in bed12}
        txs = {t for g in genes for t in g.transcripts}
        if names != txs:
            extra, lack = sorted(names - txs), sorted(txs - names)
            what = (
                f"{len(lack)} transcripts of the GFF3s are missing from them (first: {lack[0]})"
                if lack
                else f"{len(extra)} transcripts are not in the GFF3s (first: {extra[0]})"
            )
            raise GenosegError(f"BED12 inputs do not match the GFF3 inputs: {what}")
        report.bed12 = len(bed12)
    seg_header, segments = "", []
    if kinds["segments"]:
        recs = []
        for p in kinds["segments"]:
            head, rs = _read_segments(p, order)
            seg_header = seg_header or head
            recs.extend(rs)
        segments = _merge_records(recs, "segment BED", report, tiling=True)
        report.segments = len(segments)
    tracks: dict[str, list[Path]] = {}
    heads: dict[str, str] = {}
    for p in kinds["bedgraph"]:
        name, head = _track_name(p)
        tracks.setdefault(name, []).append(p)
        heads.setdefault(name, head)
    for name, files in tracks.items():
        if len(files) != n_gff:
            raise GenosegError(
                f"{n_gff} GFF3 inputs but {len(files)} files of track {name}: give one per GFF3"
            )

    outputs: dict[str, str | os.PathLike | None] = {"-o": gff3_out, "--bed": bed_out,
                                                    "--segments-bed": segments_out}  # fmt: skip
    if tracks_prefix is not None:
        for name in tracks:
            report.tracks[name] = track_path(tracks_prefix, name)
            outputs[f"--tracks ({name})"] = report.tracks[name]
    named_inputs = {f"input {i + 1}": p for i, p in enumerate(paths)}
    check_not_input(outputs, named_inputs)
    targets = [Path(o) for o in outputs.values() if o is not None and str(o) != "-"]
    dup = {t.resolve() for t in targets if sum(u.resolve() == t.resolve() for u in targets) > 1}
    if dup:
        raise GenosegError(f"two outputs are the same file: {sorted(map(str, dup))[0]}")

    models = {s.model_comment for s in shards}
    run = run_comment(
        first.run.genome,
        first.run.model,
        (1, 1),
        posteriors=first.run.posteriors,
        bam=first.run.bam,
        strand_average=first.run.strand_average,
        merged=n_gff,
    )
    with contextlib.ExitStack() as stack:
        # Companions first, the GFF3 last: every input is read (and every conflict found)
        # before the first GFF3 byte, which matters when the GFF3 goes to stdout.
        if bed_out is not None:
            bh = stack.enter_context(atomic_output(bed_out, option="--bed"))
            bh.writelines(r.line for r in bed12)
        if segments_out is not None:
            sh = stack.enter_context(atomic_output(segments_out, option="--segments-bed"))
            sh.write(seg_header)
            sh.writelines(r.line for r in segments)
        for name, files in tracks.items():
            th = stack.enter_context(
                atomic_output(report.tracks[name], option=f"--tracks ({name})")
            )
            th.write(heads[name] + "\n")
            th.writelines(_merged_tracks(files, order))
        fh = stack.enter_context(atomic_output(gff3_out, option="-o"))
        fh.write("##gff-version 3\n")
        fh.write(f"# genoseg {__version__}\n")
        if len(models) == 1 and first.model_comment is not None:
            fh.write(f"# model: {first.model_comment}\n")
        if command is not None:
            fh.write(f"# command: {' '.join(command.split())}\n")
        fh.write(f"# {run}\n")
        for seqid, length in zip(first.seqids, first.contigs.values()):
            fh.write(f"##sequence-region {seqid} 1 {length}\n")
        for g in genes:
            fh.writelines(g.lines)
    if log:
        dups = f", {report.duplicate_genes} duplicates dropped" if report.duplicate_genes else ""
        _log(
            f"{n_gff} GFF3 files (shards of {report.shards}): {report.genes} genes{dups}"
            + (f", {report.bed12} BED12 transcripts" if bed_out is not None else "")
            + (f", {report.segments} segments" if segments_out is not None else "")
            + (f", {len(tracks)} tracks" if tracks else "")
        )
        if report.posterior_conflicts:
            _log(
                f"warning: {report.posterior_conflicts} genes came with different posteriors "
                "from different inputs (overlapping regions?); kept the first input's"
            )
    return report
