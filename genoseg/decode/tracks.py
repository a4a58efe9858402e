"""Engine marginals -> named posterior tracks and per-segment boundary posteriors.

Inputs are the engine's marginals of one chunk of a contig (``genoseg.crf.marginals`` or a
``PosteriorStream`` chunk, batch dimension removed), as numpy arrays (torch CPU tensors
work too), rows = positions ``offset .. offset + n - 1`` of the contig:

* ``position`` (n, C): P(position t is covered by a label-c segment); rows sum to 1;
* ``start`` (n, C): P(a label-c segment starts at t);
* ``end`` (n, C): P(a label-c segment's last position is t).

Tracks (float32, forward-strand coordinates, 0-based):

* position tracks, at every base t: ``coding+``, ``intron+``, ``coding-``, ``intron-``,
  ``intergenic`` = the position posterior summed over the exon / intron labels of a strand
  (or the intergenic label); the five sum to 1 at every base.
* boundary tracks, one value per base x = the posterior that the signal **occupies bases
  starting at x**, i.e. x is the signal's *lowest* forward coordinate (its first base when
  read on the forward strand), whatever the strand:

  =============== ================================= ===========================================
  track           signal                            value at x (sums over the labels named)
  =============== ================================= ===========================================
  start_codon+    ATG at [x, x+3)                   start[x]     of single+, initial+/*
  stop_codon+     TAA/TAG/TGA at [x, x+3)           end[x+2]     of single+, terminal+/*
  donor+          GT.. at [x, x+2)                  start[x]     of intron+/*
  acceptor+       ..AG at [x, x+2)                  end[x+1]     of intron+/*
  start_codon-    CAT at [x, x+3) (ATG on -)        end[x+2]     of single-, initial-/*
  stop_codon-     TTA/CTA/TCA at [x, x+3)           start[x]     of single-, terminal-/*
  donor-          ..AC at [x, x+2) (GT on -)        end[x+1]     of intron-/*
  acceptor-       CT.. at [x, x+2) (AG on -)        start[x]     of intron-/*
  =============== ================================= ===========================================

  Each is a proper probability (the events summed are mutually exclusive in one
  segmentation). Because of the shift, a chunk's ``end``-based tracks cover
  ``[offset - k + 1, offset + n - k + 1)`` for a k-base signal: consecutive chunks tile
  exactly; :func:`posterior_tracks` clips at 0 and, for the last chunk of a contig, pads the
  final ``k - 1`` bases (where no such signal fits) with 0.

Boundary posteriors of segments (what the GFF3 ``start_posterior`` / ``end_posterior``
attributes and the segment BED carry, as ``genoseg eval`` reads them): see
:func:`boundary_posteriors`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import numpy as np

from genoseg.decode.genes import Segment
from genoseg.grammar.spec import Grammar

__all__ = [
    "BOUNDARY_TRACKS",
    "POSITION_TRACKS",
    "TRACK_NAMES",
    "TrackChunk",
    "boundary_posteriors",
    "fill_boundary_posteriors",
    "label_groups",
    "posterior_tracks",
]

POSITION_TRACKS = ("coding+", "intron+", "coding-", "intron-", "intergenic")
BOUNDARY_TRACKS = (
    "start_codon+",
    "stop_codon+",
    "donor+",
    "acceptor+",
    "start_codon-",
    "stop_codon-",
    "donor-",
    "acceptor-",
)
TRACK_NAMES = POSITION_TRACKS + BOUNDARY_TRACKS

# boundary track -> (marginal used, label kinds, strand, signal length k, shift)
# value at x = marginal[x + shift] summed over the labels; shift = 0 (start) or k - 1 (end).
_BOUNDARY_SPEC = {
    "start_codon+": ("start", ("single", "initial"), 1, 3),
    "stop_codon+": ("end", ("single", "terminal"), 1, 3),
    "donor+": ("start", ("intron",), 1, 2),
    "acceptor+": ("end", ("intron",), 1, 2),
    "start_codon-": ("end", ("single", "initial"), -1, 3),
    "stop_codon-": ("start", ("single", "terminal"), -1, 3),
    "donor-": ("end", ("intron",), -1, 2),
    "acceptor-": ("start", ("intron",), -1, 2),
}


def label_groups(grammar: Grammar) -> dict[str, np.ndarray]:
    """Label indices of each position track: ``coding+`` (exon labels of the plus strand),
    ``intron+``, ``coding-``, ``intron-``, ``intergenic``; each (k,) int64."""
    out = {}
    for name in POSITION_TRACKS:
        if name == "intergenic":
            sel = [i for i, lab in enumerate(grammar.labels) if lab.kind == "intergenic"]
        else:
            strand = 1 if name.endswith("+") else -1
            want = "intron" if name.startswith("intron") else "exon"
            sel = [
                i
                for i, lab in enumerate(grammar.labels)
                if lab.strand == strand
                and (lab.kind == "intron" if want == "intron" else lab.is_exon)
            ]
        out[name] = np.array(sel, dtype=np.int64)
    return out


def _boundary_labels(grammar: Grammar, kinds: tuple[str, ...], strand: int) -> np.ndarray:
    return np.array(
        [i for i, lab in enumerate(grammar.labels) if lab.strand == strand and lab.kind in kinds],
        dtype=np.int64,
    )


def _as2d(a, name: str, C: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.shape[1] != C:
        raise ValueError(f"{name} must have shape (n, {C}), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class TrackChunk:
    """Values of one track for bases ``[start, start + len(values))`` (0-based, forward
    strand); ``values`` float32 (m,)."""

    name: str
    start: int
    values: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.values)


def posterior_tracks(
    grammar: Grammar,
    position,
    start,
    end,
    *,
    offset: int = 0,
    contig_length: int | None = None,
) -> dict[str, TrackChunk]:
    """Named tracks of one chunk of marginals (module docstring for each track's meaning).

    Args:
        grammar: the grammar of the label axis.
        position, start, end: (n, C) marginals of contig rows ``offset .. offset + n - 1``.
        offset: contig coordinate of row 0.
        contig_length: pass it for the chunk that ends the contig (``offset + n ==
            contig_length``): the boundary tracks are then padded with 0 up to the contig
            end. Otherwise an ``end``-based k-base track stops ``k - 1`` bases early and the
            next chunk continues it.

    Returns:
        {track name: :class:`TrackChunk`} for every name in :data:`TRACK_NAMES`, float32.
        Position tracks cover exactly ``[offset, offset + n)``; boundary tracks as above,
        clipped at 0.
    """
    C = grammar.num_labels
    position = _as2d(position, "position", C)
    start = _as2d(start, "start", C)
    end = _as2d(end, "end", C)
    n = position.shape[0]
    if start.shape[0] != n or end.shape[0] != n:
        raise ValueError("position, start and end must have the same number of rows")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    last = contig_length is not None and offset + n >= contig_length
    if contig_length is not None and offset + n > contig_length:
        raise ValueError(f"rows {offset}..{offset + n} run past contig_length {contig_length}")
    out: dict[str, TrackChunk] = {}
    for name, idx in label_groups(grammar).items():
        vals = position[:, idx].sum(axis=1, dtype=np.float64).astype(np.float32)
        out[name] = TrackChunk(name, offset, vals)
    for name, (which, kinds, strand, k) in _BOUNDARY_SPEC.items():
        src = start if which == "start" else end
        idx = _boundary_labels(grammar, kinds, strand)
        vals = src[:, idx].sum(axis=1, dtype=np.float64).astype(np.float32)
        first = offset if which == "start" else offset - (k - 1)
        if first < 0:
            vals = vals[-first:]
            first = 0
        if last and which == "end":
            vals = np.concatenate([vals, np.zeros(k - 1, dtype=np.float32)])
        out[name] = TrackChunk(name, first, vals)
    return out


def boundary_posteriors(grammar: Grammar, start, end) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment boundary posteriors, as ``genoseg eval`` reads them from GFF3.

    For a label-c segment ``[s, e)`` of a chunk whose rows are ``start`` / ``end`` (n, C)
    marginals (row i = contig position offset + i):

    * ``start_posterior = lower[s - offset, c]`` = P(some segment of c's class and strand
      has its lower coordinate at s);
    * ``end_posterior = upper[e - 1 - offset, c]`` = P(some segment of c's class and strand
      has its upper coordinate (last base) at e - 1).

    Classes: exon labels of one strand (single/initial/internal/terminal, any phase),
    intron labels of one strand (any phase/variant), intergenic. For an exon this is
    exactly the event ``genoseg eval`` scores a boundary by ("some reference part on the
    same strand has this lower / upper coordinate"), so the posterior is calibrated against
    what eval counts: on the plus strand the lower end of an exon is its start codon or
    acceptor, on the minus strand its stop codon or donor, but eval does not ask which.
    The summed events are mutually exclusive (two segments cannot start at one position).

    Returns:
        (lower, upper): float32 (n, C) each.
    """
    C = grammar.num_labels
    start = _as2d(start, "start", C)
    end = _as2d(end, "end", C)
    class_of = _classes(grammar)
    lower = _class_sums(np.asarray(start, dtype=np.float32), class_of)[:, class_of]
    upper = _class_sums(np.asarray(end, dtype=np.float32), class_of)[:, class_of]
    return lower, upper


def _class_sums(x: np.ndarray, class_of: np.ndarray) -> np.ndarray:
    """(n, K) float32: the sum of the columns of ``x`` (n, C) in each class, added column by
    column in label order. Elementwise adds give every row the same bits whatever the
    chunk it comes in and wherever its memory lies; a matrix product (BLAS) may block and
    vectorise rows differently by the number of rows and their alignment."""
    out = np.zeros((x.shape[0], int(class_of.max()) + 1), dtype=np.float32)
    for c, k in enumerate(class_of):
        out[:, k] += x[:, c]
    return out


def fill_boundary_posteriors(
    segments: list[Segment], lower: np.ndarray, upper: np.ndarray, offset: int = 0
) -> None:
    """Fill ``start_posterior`` / ``end_posterior`` of path segments from one chunk, in place.

    ``lower`` / ``upper`` are :func:`boundary_posteriors` of the chunk whose row i is contig
    position ``offset + i``. A segment ``[s, e)`` of label c gets ``start_posterior =
    lower[s - offset, c]`` when s lies in the chunk and ``end_posterior = upper[e - 1 -
    offset, c]`` when its last base does; other values are kept. Call it once per chunk, in
    any order (a segment spanning chunks gets its two ends from two calls). ``segments``
    (forward order) is updated in place (its frozen Segments are replaced); the cost is
    O(log len(segments) + segments touched).
    """
    n = len(lower)
    if len(upper) != n:
        raise ValueError("lower and upper must have the same number of rows")
    if n == 0 or not segments:
        return
    stop = offset + n
    k = bisect.bisect_right(segments, offset, key=lambda seg: seg.end)  # first end > offset
    while k < len(segments) and segments[k].start < stop:
        seg = segments[k]
        changes = {}
        if offset <= seg.start:
            changes["start_posterior"] = float(lower[seg.start - offset, seg.label])
        if seg.end - 1 < stop:
            changes["end_posterior"] = float(upper[seg.end - 1 - offset, seg.label])
        if changes:
            segments[k] = replace(seg, **changes)
        k += 1


def _classes(grammar: Grammar) -> np.ndarray:
    """class_of (C,) int64: the boundary class (strand and exon / intron / intergenic) of
    every label, numbered 0..K-1."""
    keys = [(lab.strand, "exon" if lab.is_exon else lab.kind) for lab in grammar.labels]
    uniq = sorted(set(keys))
    return np.array([uniq.index(k) for k in keys], dtype=np.int64)
