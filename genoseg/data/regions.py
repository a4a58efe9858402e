"""Genome regions, region strings, BED region files and the deterministic shard plan.

A :class:`Region` is 0-based half-open ``[start, end)`` on a named contig. User-facing
strings ``chr:start-end`` are 1-based inclusive (like samtools), BED files are 0-based
half-open. ``contigs`` arguments are ``{name: length}`` mappings in genome (FASTA) order,
e.g. ``Genome.contigs``.
"""

from __future__ import annotations

import bisect
import fnmatch
import gzip
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from genoseg.errors import GenosegError

__all__ = [
    "Region",
    "merge_regions",
    "missing_contig_message",
    "parse_region",
    "parse_shard",
    "read_bed_regions",
    "shard",
    "shard_plan",
    "select_regions",
    "whole_genome",
]


@dataclass(frozen=True)
class Region:
    """``[start, end)`` on ``contig``, 0-based half-open (``start < end``)."""

    contig: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.end):
            raise ValueError(f"invalid region {self.contig}:[{self.start},{self.end})")

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def length(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        """1-based inclusive ``contig:start-end`` (what :func:`parse_region` reads)."""
        return f"{self.contig}:{self.start + 1}-{self.end}"


def missing_contig_message(name: str, contigs: Iterable[str], source: str = "the genome") -> str:
    """'contig X is not in <source>' with a few known names and a 'chr' prefix hint."""
    names = list(contigs)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    msg = f"contig '{name}' is not in {source} (it has {len(names)}: {shown})"

    def norm(x: str) -> str:
        x = x.lower()
        return x[3:] if x.startswith("chr") else x

    lookup: dict[str, str] = {}
    for known in names:
        lookup.setdefault(norm(known), known)
    if norm(name) in lookup:
        msg += f"; did you mean '{lookup[norm(name)]}'? ('chr' prefix or case differs)"
    return msg


def whole_genome(contigs: Mapping[str, int]) -> list[Region]:
    """One region per contig, in genome order."""
    return [Region(name, 0, n) for name, n in contigs.items()]


_RANGE = re.compile(r"^([0-9][0-9,]*)-([0-9][0-9,]*)?$")


def parse_region(text: str, contigs: Mapping[str, int], *, source: str = "the genome") -> Region:
    """Parse ``contig``, ``contig:start-end`` or ``contig:start-`` (1-based inclusive).

    Commas in numbers are allowed (``Chr1:1,000-2,000``). Contig names may contain ':':
    a string equal to a contig name is that whole contig; otherwise the longest contig name
    followed by ':' and a valid range wins. Returns a 0-based half-open Region; raises
    GenosegError for an unknown contig or coordinates outside the contig; ``source``
    names the genome (e.g. the FASTA path) in that message.
    """
    s = text.strip()
    if not s:
        raise GenosegError("empty region string")
    if s in contigs:
        return Region(s, 0, contigs[s])
    best: tuple[str, re.Match[str]] | None = None
    for name in contigs:
        if s.startswith(name + ":") and (best is None or len(name) > len(best[0])):
            m = _RANGE.match(s[len(name) + 1 :])
            if m:
                best = (name, m)
    if best is None:
        head, sep, tail = s.rpartition(":")
        if sep and (_RANGE.match(tail) or tail.replace(",", "").isdigit()):
            if head in contigs:
                raise GenosegError(
                    f"region '{text}': expected {head}:START-END (1-based inclusive)"
                )
            raise GenosegError(f"region '{text}': " + missing_contig_message(head, contigs, source))
        raise GenosegError(f"region '{text}': " + missing_contig_message(s, contigs, source))
    name, m = best
    n = contigs[name]
    start = int(m.group(1).replace(",", ""))
    end = int(m.group(2).replace(",", "")) if m.group(2) else n
    if start < 1 or end < start:
        raise GenosegError(
            f"region '{text}': need 1 <= start <= end (1-based inclusive), got {start}-{end}"
        )
    if end > n:
        raise GenosegError(f"region '{text}': end {end} is beyond contig '{name}' of length {n}")
    return Region(name, start - 1, end)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob(pattern: str, contigs: Mapping[str, int], source: str, key: str) -> list[str]:
    names = [n for n in contigs if fnmatch.fnmatchcase(n, pattern)]
    if not names:
        raise GenosegError(f"{key}: pattern {pattern!r} matches no contig of {source}")
    return names


def select_regions(
    regions: list[str] | None,
    exclude: list[str] | None,
    contigs: Mapping[str, int],
    source: str,
) -> list[Region]:
    """The regions a list selects (a prepare config's), in the order given (0-based half-open).

    ``regions`` entries are ``contig``, ``contig:start-end`` (1-based inclusive) or a
    shell-style pattern of whole contig names (``KOG*_SPA*``); None means every contig.
    ``exclude`` drops whole contigs by name or pattern (held-out loci of a locus set).
    """
    out: list[Region] = []
    for r in regions or list(contigs):
        if _is_glob(r):
            out += [Region(n, 0, contigs[n]) for n in _glob(r, contigs, source, "regions")]
        else:
            out.append(parse_region(r, contigs, source=source))
    dropped: set[str] = set()
    for pat in exclude or []:
        if _is_glob(pat):
            dropped.update(_glob(pat, contigs, source, "exclude"))
        elif pat in contigs:
            dropped.add(pat)
        else:
            raise GenosegError(f"exclude: {missing_contig_message(pat, contigs, source)}")
    out = [r for r in out if r.contig not in dropped]
    if not out:
        raise GenosegError("regions/exclude: no region left to prepare")
    return out


def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_bed_regions(
    path: str | os.PathLike, contigs: Mapping[str, int], *, source: str = "the genome"
) -> list[Region]:
    """Regions of a BED file (0-based half-open; first three columns; plain or gzip).

    Blank, ``#``, ``track`` and ``browser`` lines are skipped. Regions are returned in file
    order (use :func:`merge_regions` to sort and merge). Errors name ``file:line``.
    """
    p = Path(path)
    out: list[Region] = []
    try:
        fh = _open_text(p)
    except OSError as exc:
        raise GenosegError(f"{p}: cannot read BED file: {exc.strerror or exc}") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                s = line.strip()
                if not s or s.startswith(("#", "track", "browser")):
                    continue
                f = s.split("\t") if "\t" in s else s.split()
                if len(f) < 3:
                    raise GenosegError(
                        f"{p}:{lineno}: expected at least 3 columns (contig, start, end)"
                    )
                name = f[0].strip()
                try:
                    start, end = int(f[1]), int(f[2])
                except ValueError:
                    raise GenosegError(
                        f"{p}:{lineno}: start and end must be integers, got '{f[1]}' and '{f[2]}'"
                    ) from None
                if name not in contigs:
                    raise GenosegError(
                        f"{p}:{lineno}: " + missing_contig_message(name, contigs, source)
                    )
                if not (0 <= start < end):
                    raise GenosegError(
                        f"{p}:{lineno}: need 0 <= start < end (BED is 0-based half-open), "
                        f"got {start} {end}"
                    )
                if end > contigs[name]:
                    raise GenosegError(
                        f"{p}:{lineno}: end {end} is beyond contig '{name}' of length "
                        f"{contigs[name]}"
                    )
                out.append(Region(name, start, end))
        except OSError as exc:
            raise GenosegError(f"{p}: cannot read BED file: {exc}") from None
    if not out:
        raise GenosegError(f"{p}: BED file has no regions")
    return out


def merge_regions(regions: Iterable[Region], contigs: Mapping[str, int]) -> list[Region]:
    """Sort regions in genome order and merge overlapping or adjacent ones."""
    order = {name: i for i, name in enumerate(contigs)}
    items = sorted(regions, key=lambda r: (order.get(r.contig, len(order)), r.start, r.end))
    out: list[Region] = []
    for r in items:
        if out and out[-1].contig == r.contig and r.start <= out[-1].end:
            if r.end > out[-1].end:
                out[-1] = Region(r.contig, out[-1].start, r.end)
        else:
            out.append(r)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard i/n`` (1-based i, 1 <= i <= n); returns (i, n)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise GenosegError(f"--shard '{text}': expected I/N, e.g. 3/10 (shard 3 of 10)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not (1 <= i <= n):
        raise GenosegError(f"--shard '{text}': need 1 <= I <= N")
    return i, n


def _as_regions(where: Mapping[str, int] | Sequence[Region]) -> list[Region]:
    if isinstance(where, Mapping):
        return whole_genome(where)
    return list(where)


def _split_even(r: Region, parts: int) -> list[Region]:
    n = r.length
    cuts = [r.start + (k * n) // parts for k in range(parts + 1)]
    return [Region(r.contig, a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def shard_plan(
    where: Mapping[str, int] | Sequence[Region],
    n: int,
    *,
    max_piece: int | None = None,
    snap: float = 0.05,
) -> list[list[Region]]:
    """Split a genome (``{contig: length}``) or a region list into n bp-balanced shards.

    Lay the regions end to end (genome order as given) and cut this line at the ideal
    points ``k * total // n``; a cut moves to the nearest region (contig) end within
    ``snap * total / n`` bp, so contigs are split only where balance needs it. Every base
    is in exactly one shard, pieces keep genome order, and each shard holds at most
    ``ceil(total / n) + 2 * floor(snap * total / n)`` bp. Pieces longer than
    ``max_piece`` are cut into equal parts. Integer arithmetic only: the plan is a pure
    function of the input, identical on every machine. Returns n lists (some empty when
    the genome has fewer than n bp); shard i of ``--shard i/n`` is ``plan[i - 1]``.
    """
    if n < 1:
        raise GenosegError(f"number of shards must be >= 1, got {n}")
    if max_piece is not None and max_piece < 1:
        raise GenosegError(f"max_piece must be >= 1, got {max_piece}")
    regions = _as_regions(where)
    total = sum(r.length for r in regions)
    ends, acc = [], 0  # positions of region ends on the concatenated line
    for r in regions:
        acc += r.length
        ends.append(acc)
    tol = int(snap * total / n) if total >= n else 0
    cuts = [0]
    for k in range(1, n):
        ideal = (k * total) // n
        best = ideal
        j = bisect.bisect_left(ends, ideal)
        cands = [e for e in ends[max(j - 1, 0) : j + 1] if abs(e - ideal) <= tol and e < total]
        if cands:
            best = min(cands, key=lambda e: (abs(e - ideal), e))
        cuts.append(max(best, cuts[-1]))
    cuts.append(total)

    plan: list[list[Region]] = []
    ri, offset = 0, 0  # current region and its start on the line
    for k in range(n):
        a, b = cuts[k], cuts[k + 1]
        pieces: list[Region] = []
        while a < b:
            while offset + regions[ri].length <= a:
                offset += regions[ri].length
                ri += 1
            r = regions[ri]
            lo = r.start + (a - offset)
            hi = r.start + min(b - offset, r.length)
            piece = Region(r.contig, lo, hi)
            if max_piece is not None and piece.length > max_piece:
                pieces.extend(_split_even(piece, -(-piece.length // max_piece)))
            else:
                pieces.append(piece)
            a += hi - lo
        plan.append(pieces)
    return plan


def shard(
    where: Mapping[str, int] | Sequence[Region],
    i: int,
    n: int,
    *,
    max_piece: int | None = None,
    snap: float = 0.05,
) -> list[Region]:
    """The regions of shard i of n (1-based i, as in ``--shard i/n``); see shard_plan."""
    if n < 1 or not (1 <= i <= n):
        raise GenosegError(f"--shard {i}/{n}: need 1 <= I <= N")
    return shard_plan(where, n, max_piece=max_piece, snap=snap)[i - 1]
