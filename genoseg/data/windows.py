"""Windows over a genome: fixed-size cores plus a halo of context on both sides.

A region ``[start, end)`` (0-based half-open) is tiled by cores of ``window`` bp (the last
one shorter). Each window's arrays cover the padded range ``[core_start - halo,
core_end + halo)``, which may stick out of the contig: positions outside ``[0, contig
length)`` are padding (code N, ``in_contig`` and ``valid`` False). Context inside the contig
is always read, also beyond the region, so a window's content depends only on its core
and the halo, never on where the region or the neighbouring windows fall.

Only the padded range of one window is read at a time: memory is O(window + 2 * halo).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from genoseg.data.bam import N_CHANNELS, Evidence, reverse_evidence
from genoseg.data.fasta import CODE_N, Genome, reverse_complement_codes
from genoseg.data.regions import Region, missing_contig_message
from genoseg.errors import GenosegError

__all__ = ["DEFAULT_WINDOW", "Window", "WindowSpec", "iter_windows", "plan_windows", "read_window"]

DEFAULT_WINDOW = 100_000


@dataclass(frozen=True)
class WindowSpec:
    """Coordinates of one window (0-based half-open, forward strand).

    ``index`` counts the windows of its region from 0; ``last`` marks the region's last
    window (where a decoder streaming over the region finishes).

    ``start``/``end`` is the padded range ``[core_start - halo, core_end + halo)``; it may
    extend past the contig ends (``start < 0`` or ``end > contig_length``).
    """

    contig: str
    contig_length: int
    core_start: int
    core_end: int
    halo: int
    index: int = 0
    last: bool = True

    @property
    def start(self) -> int:
        return self.core_start - self.halo

    @property
    def end(self) -> int:
        return self.core_end + self.halo

    @property
    def length(self) -> int:
        """Padded length: core length + 2 * halo."""
        return self.end - self.start

    @property
    def core_length(self) -> int:
        return self.core_end - self.core_start

    @property
    def core_slice(self) -> slice:
        """Slice of the core within the window's arrays (forward strand)."""
        return slice(self.halo, self.halo + self.core_length)


@dataclass(frozen=True, eq=False)
class Window:
    """One window's data; arrays have the padded length ``spec.length``.

    ``codes`` uint8 (A=0 C=1 G=2 T=3, 4 = N / padding), ``softmask`` bool (lowercase),
    ``in_contig`` bool (inside the contig), ``valid`` bool (inside the contig and not N),
    ``evidence`` float32 (8, length) or None (see genoseg.data.bam.CHANNELS).

    ``strand`` '+' : index i is forward position ``spec.start + i``.
    ``strand`` '-' : arrays are reverse-complemented, index i is forward position
    ``spec.end - 1 - i``; the coordinates in ``spec`` stay forward-strand.
    """

    spec: WindowSpec
    codes: np.ndarray
    softmask: np.ndarray
    in_contig: np.ndarray
    valid: np.ndarray
    evidence: np.ndarray | None = None
    strand: str = "+"

    @property
    def core_slice(self) -> slice:
        """Slice of the core within this window's arrays, for either strand."""
        return self.spec.core_slice

    def reverse_complement(self) -> Window:
        """The same window on the other strand (arrays reversed, codes complemented)."""
        return replace(
            self,
            codes=reverse_complement_codes(self.codes),
            softmask=self.softmask[::-1].copy(),
            in_contig=self.in_contig[::-1].copy(),
            valid=self.valid[::-1].copy(),
            evidence=None if self.evidence is None else reverse_evidence(self.evidence),
            strand="-" if self.strand == "+" else "+",
        )

    def forward_position(self, i: int | np.ndarray) -> int | np.ndarray:
        """Forward-strand contig coordinate of array index i."""
        return self.spec.start + i if self.strand == "+" else self.spec.end - 1 - i


def plan_windows(
    regions: Iterable[Region],
    contigs: dict[str, int],
    *,
    window: int = DEFAULT_WINDOW,
    halo: int = 0,
) -> list[WindowSpec]:
    """Tile each region with cores of ``window`` bp (last one shorter), halo on both sides.

    Windows come in region order; coordinates 0-based half-open.
    """
    if window < 1:
        raise GenosegError(f"window size must be >= 1, got {window}")
    if halo < 0:
        raise GenosegError(f"halo must be >= 0, got {halo}")
    out: list[WindowSpec] = []
    for r in regions:
        if r.contig not in contigs:
            raise GenosegError(f"region {r}: " + missing_contig_message(r.contig, contigs))
        n = contigs[r.contig]
        if r.end > n:
            raise GenosegError(f"region {r}: beyond contig '{r.contig}' of length {n}")
        for k, s in enumerate(range(r.start, r.end, window)):
            e = min(s + window, r.end)
            out.append(WindowSpec(r.contig, n, s, e, halo, k, e == r.end))
    return out


def read_window(genome: Genome, spec: WindowSpec, evidence: Evidence | None = None) -> Window:
    """Read one window (forward strand) from the genome (and evidence, when given)."""
    a, b = max(spec.start, 0), min(spec.end, spec.contig_length)
    lo, hi = a - spec.start, b - spec.start
    codes = np.full(spec.length, CODE_N, dtype=np.uint8)
    softmask = np.zeros(spec.length, dtype=bool)
    in_contig = np.zeros(spec.length, dtype=bool)
    c, m = genome.encode(spec.contig, a, b)
    codes[lo:hi], softmask[lo:hi], in_contig[lo:hi] = c, m, True
    valid = in_contig & (codes != CODE_N)
    ev = None
    if evidence is not None:
        ev = np.zeros((N_CHANNELS, spec.length), dtype=np.float32)
        ev[:, lo:hi] = evidence.track(spec.contig, a, b)
    return Window(spec, codes, softmask, in_contig, valid, ev)


def iter_windows(
    genome: Genome,
    regions: Sequence[Region] | None = None,
    *,
    window: int = DEFAULT_WINDOW,
    halo: int = 0,
    evidence: Evidence | None = None,
    both_strands: bool = False,
) -> Iterator[Window]:
    """Windows over ``regions`` (default: every contig), in genome order, read lazily.

    With ``both_strands`` each forward window is followed by its reverse complement.
    """
    if regions is None:
        regions = [Region(c, 0, n) for c, n in genome.contigs.items()]
    for spec in plan_windows(regions, genome.contigs, window=window, halo=halo):
        w = read_window(genome, spec, evidence)
        yield w
        if both_strands:
            yield w.reverse_complement()
