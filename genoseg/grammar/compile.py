"""Compile a grammar and a genome window into the semi-CRF's structural inputs.

Input sequence: uint8 codes (A=0, C=1, G=2, T=3, N=4), forward strand, 0-based. The
compiled window is ``codes[left_context : len(codes) - right_context]``; the context bases
are read by the motif rules (a donor after the window's last exon, a stop codon that
bounds an exon reaching back before the window) but get no rows of their own.

Outputs (T = window length, C = labels), see DESIGN.md §1:

* ``seg_start[t, c]`` / ``seg_end[t, c]``: sum of the label's start / end
  :class:`~genoseg.grammar.spec.MotifRule` scores for a segment starting / ending (last
  position) at t; -inf where the start codon, stop codon or splice site is missing.
* ``max_dur[t, c]`` int32: for exon labels, the longest exon ending at t that contains no
  in-frame stop codon (and no invalid position); ``MAX_DUR_UNBOUNDED`` where nothing bounds
  it (also for intron and intergenic labels, whose lengths are bounded by their tables and
  tails only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numba
import numpy as np
import torch

from genoseg.grammar.spec import Grammar, Label

__all__ = [
    "MAX_DUR_UNBOUNDED",
    "StructuralInputs",
    "compile_window",
    "compile_window_np",
    "max_dur_fast",
    "max_dur_reference",
    "motif_scores",
]

MAX_DUR_UNBOUNDED = 1 << 30
NEG_INF = float("-inf")
_CODES = "ACGTN"
_STOP_CACHE: dict[tuple[str, ...], np.ndarray] = {}


@dataclass
class StructuralInputs:
    """Engine inputs fixed by the grammar and the sequence (torch tensors, no batch dim).

    transitions (C, C), durations (C, K), init (C,), final (C,), tail (C,) float32;
    seg_start (T, C), seg_end (T, C) float32; max_dur (T, C) int32.
    """

    transitions: torch.Tensor
    durations: torch.Tensor
    init: torch.Tensor
    final: torch.Tensor
    tail: torch.Tensor
    seg_start: torch.Tensor
    seg_end: torch.Tensor
    max_dur: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device: torch.device | str) -> StructuralInputs:
        return StructuralInputs(**{k: v.to(device) for k, v in self.as_dict().items()})


def _shifted_kmer_index(codes: np.ndarray, shift: int, k: int) -> np.ndarray:
    """(n,) base-5 index of the k-mer codes[t+shift : t+shift+k] for every t (first base most
    significant; bases outside the sequence read as N)."""
    n = len(codes)
    pad = abs(shift) + k
    padded = np.full(n + 2 * pad, 4, dtype=np.int16)
    padded[pad : pad + n] = np.minimum(codes, 4)
    idx = np.zeros(n, dtype=np.int32)
    for j in range(k):
        a = pad + shift + j
        idx = idx * 5 + padded[a : a + n]
    return idx


def motif_scores(
    lab: Label, codes: np.ndarray, which: str, _cache: dict | None = None
) -> np.ndarray:
    """Summed start ("start") or end ("end") rule scores of one label at every position.

    Returns (len(codes),) float64; entry t is the score of a segment starting at t
    (``which="start"``) or whose last position is t (``which="end"``, reference e = t+1).
    """
    n = len(codes)
    out = np.zeros(n)
    rules = lab.start_rules if which == "start" else lab.end_rules
    cache = {} if _cache is None else _cache
    for rule in rules:
        shift = rule.offset + (0 if rule.anchor == "start" else 1)
        key = (shift, rule.k)
        idx = cache.get(key)
        if idx is None:
            idx = cache[key] = _shifted_kmer_index(codes, shift, rule.k)
        out += _rule_table(rule)[idx]
    return out


_TABLES: dict = {}


def _rule_table(rule) -> np.ndarray:
    tab = _TABLES.get(rule)
    if tab is None:
        tab = _TABLES[rule] = rule.table()
    return tab


def _stop_table(stops: tuple[str, ...]) -> np.ndarray:
    tab = _STOP_CACHE.get(stops)
    if tab is None:
        tab = np.zeros(125, dtype=bool)
        for s in stops:
            tab[(_CODES.index(s[0]) * 5 + _CODES.index(s[1])) * 5 + _CODES.index(s[2])] = True
        _STOP_CACHE[stops] = tab
    return tab


def max_dur_fast(
    grammar: Grammar,
    codes: np.ndarray,
    valid: np.ndarray | None = None,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Vectorized max_dur (T, C) int32 over the whole of ``codes`` (see module doc), or
    over ``codes`` rows ``[rows[0], rows[1])`` only (the stop codons before them are still
    read: the result equals the same rows of the whole).

    For an exon label with frame offset o ending at t, the aligned codons end at
    q ≡ t - o (mod 3); with q* the last aligned stop codon end at or before t - o (t - o - 3
    with skip_last), the exon may start no earlier than q* - 1 (q* - 2 with allow_first),
    so max_dur = t - q* + 2 (+1). Invalid positions cap it at t - (last invalid position).
    """
    n = len(codes)
    C = grammar.num_labels
    r0, r1 = (0, n) if rows is None else rows
    out = np.full((r1 - r0, C), MAX_DUR_UNBOUNDED, dtype=np.int32)
    t = np.arange(n, dtype=np.int64)
    tr = t[r0:r1]
    if valid is not None and not valid.all():
        inv = np.where(~valid, t, -1)
        last_invalid = np.maximum.accumulate(inv)[r0:r1]
        cap = np.where(last_invalid >= 0, tr - last_invalid, MAX_DUR_UNBOUNDED)
    else:
        cap = None
    cache: dict[tuple[str, ...], np.ndarray] = {}
    for c, lab in enumerate(grammar.labels):
        fr = lab.frame
        if fr is None:
            continue
        last = cache.get(fr.stops)
        if last is None:
            is_stop = _stop_table(fr.stops)[_shifted_kmer_index(codes, -2, 3)]
            q = np.where(is_stop & (t >= 2), t, -1)
            last = np.empty(n, dtype=np.int64)
            for m in range(3):
                last[m::3] = np.maximum.accumulate(q[m::3]) if len(q[m::3]) else q[m::3]
            cache[fr.stops] = last
        b = tr - fr.offset - (3 if fr.skip_last else 0)
        qstar = np.where(b >= 0, last[np.clip(b, 0, None)], -1)
        md = np.where(qstar >= 0, tr - qstar + 2 + (1 if fr.allow_first else 0), MAX_DUR_UNBOUNDED)
        md = np.where(md > tr, MAX_DUR_UNBOUNDED, md)  # reaches the sequence start
        if cap is not None:
            md = np.minimum(md, cap)
        out[:, c] = md
    return out


def _translate_has_stop(seq: str, frame_start: int, stops: set[str], skip_final: bool) -> bool:
    """Does seq (transcript sense) hold a stop codon among its complete codons starting at
    frame_start, frame_start+3, ...? skip_final exempts a codon that ends at the last base."""
    for j in range(frame_start, len(seq) - 2, 3):
        if skip_final and j + 3 == len(seq):
            continue
        if seq[j : j + 3] in stops:
            return True
    return False


def max_dur_reference(
    grammar: Grammar, codes: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Obviously-correct max_dur (T, C) int32: for every end t and exon label, grow the exon
    leftwards, translating it in transcript sense, until it would hold an in-frame stop or
    an invalid position. Slow (quadratic in ORF length); for tests."""
    from genoseg.grammar.spec import reverse_complement

    seq = "".join(_CODES[min(int(b), 4)] for b in codes)
    n = len(seq)
    valid = np.ones(n, dtype=bool) if valid is None else valid
    out = np.full((n, grammar.num_labels), MAX_DUR_UNBOUNDED, dtype=np.int64)
    for c, lab in enumerate(grammar.labels):
        if not lab.is_exon:
            continue
        stops = {"TAA", "TAG", "TGA"}  # transcript sense
        if lab.frame is not None and lab.strand > 0:
            stops = set(lab.frame.stops)
        elif lab.frame is not None:
            stops = {reverse_complement(s) for s in lab.frame.stops}
        terminal = lab.kind in ("single", "terminal")
        for t in range(n):
            best = None
            for s in range(t, -1, -1):
                if not valid[s]:
                    best = t - s
                    break
                if lab.strand > 0:
                    z = seq[s : t + 1]
                    # frame anchored at the 3' end: the last phase_out bases are partial
                    first = (len(z) - lab.phase_out) % 3
                else:
                    z = reverse_complement(seq[s : t + 1])
                    # frame anchored at the 5' end (forward t): entry phase
                    first = (3 - lab.phase_in) % 3
                if _translate_has_stop(z, first, stops, skip_final=terminal):
                    best = t - s
                    break
            out[t, c] = MAX_DUR_UNBOUNDED if best is None else best
    return out.astype(np.int32)


def compile_window_np(
    grammar: Grammar,
    codes: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    left_context: int = 0,
    right_context: int = 0,
    open_start: bool = False,
    open_end: bool = False,
    backend: str = "numba",
) -> dict[str, np.ndarray]:
    """numpy-array version of :func:`compile_window` (float32 / int32 arrays).

    ``backend``: ``"numba"`` (default) computes the motif scores and ``max_dur`` in one
    compiled pass over the rows (:func:`_compile_rows_kernel`); ``"numpy"`` is the short
    vectorized reference (:func:`motif_scores`, :func:`max_dur_fast`). Both return the
    same arrays bit for bit (tested)."""
    if backend not in ("numba", "numpy"):
        raise ValueError(f"backend must be numba or numpy, got {backend!r}")
    codes = np.asarray(codes, dtype=np.uint8)
    n = len(codes)
    if valid is None:
        valid = np.ones(n, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != codes.shape:
        raise ValueError(f"valid has shape {valid.shape}, codes {codes.shape}")
    lo, hi = left_context, n - right_context
    if not (0 <= lo < hi <= n):
        raise ValueError(f"empty window: len {n}, left_context {lo}, right_context {right_context}")
    C = grammar.num_labels
    T = hi - lo
    gene = grammar.strand_array != 0
    if backend == "numba":
        ss = np.empty((T, C), dtype=np.float32)
        se = np.empty((T, C), dtype=np.float32)
        md = np.empty((T, C), dtype=np.int32)
        _compile_rows_kernel(codes, valid, lo, hi, gene, *_kernel_plan(grammar), ss, se, md)
    else:
        # float32 (as returned): the float64 motif scores are rounded once, on assignment
        ss = np.zeros((T, C), dtype=np.float32)
        se = np.zeros((T, C), dtype=np.float32)
        cache: dict = {}  # k-mer indices shared by rules with the same shift and k
        for c, lab in enumerate(grammar.labels):
            if lab.start_rules:
                ss[:, c] = motif_scores(lab, codes, "start", cache)[lo:hi]
            if lab.end_rules:
                se[:, c] = motif_scores(lab, codes, "end", cache)[lo:hi]
        bad = ~valid[lo:hi]
        if bad.any():
            ss[np.ix_(bad, gene)] = NEG_INF
            se[np.ix_(bad, gene)] = NEG_INF
        md = max_dur_fast(grammar, codes, valid, rows=(lo, hi))
    tabs = grammar.static_tables
    init, final = tabs["init"].copy(), tabs["final"].copy()
    if open_start:
        init[:] = 0.0
        ss[0, :] = np.where(valid[lo] | ~gene, 0.0, NEG_INF)
    if open_end:
        final[:] = 0.0
        se[T - 1, :] = np.where(valid[hi - 1] | ~gene, 0.0, NEG_INF)
    return {
        "transitions": tabs["transitions"],
        "durations": tabs["durations"],
        "init": init,
        "final": final,
        "tail": tabs["tail"],
        "seg_start": ss,
        "seg_end": se,
        "max_dur": md,
    }


def _kernel_plan(grammar: Grammar) -> tuple[np.ndarray, ...]:
    """The grammar's motif and frame rules as flat arrays for :func:`_compile_rows_kernel`:
    per rule (label, is an end rule, k-mer shift from the row, k, offset of its 5**k-entry
    table in one float64 array), the tables; per frame rule (label, offset, skip_last,
    allow_first, index of its stop set), the stop sets as (S, 125) bool tables."""
    r_label, r_end, r_shift, r_k, r_off, tables = [], [], [], [], [], []
    f_label, f_offset, f_skip, f_allow, f_set = [], [], [], [], []
    stop_sets: list[tuple[str, ...]] = []
    size = 0
    for c, lab in enumerate(grammar.labels):
        for end, rules in ((0, lab.start_rules), (1, lab.end_rules)):
            for rule in rules:  # in order: the float64 sums are the reference's
                tab = _rule_table(rule)
                r_label.append(c)
                r_end.append(end)
                r_shift.append(rule.offset + (0 if rule.anchor == "start" else 1))
                r_k.append(rule.k)
                r_off.append(size)
                tables.append(tab)
                size += len(tab)
        fr = lab.frame
        if fr is not None:
            if fr.stops not in stop_sets:
                stop_sets.append(fr.stops)
            f_label.append(c)
            f_offset.append(fr.offset)
            f_skip.append(fr.skip_last)
            f_allow.append(fr.allow_first)
            f_set.append(stop_sets.index(fr.stops))
    i64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return (
        i64(r_label), i64(r_end), i64(r_shift), i64(r_k), i64(r_off),
        np.concatenate(tables) if tables else np.zeros(1),
        i64(f_label), i64(f_offset), i64(f_skip), i64(f_allow), i64(f_set),
        np.stack([_stop_table(st) for st in stop_sets]) if stop_sets
        else np.zeros((1, 125), dtype=bool),
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _compile_rows_kernel(
    codes, valid, lo, hi, gene, r_label, r_end, r_shift, r_k, r_off, tables,
    f_label, f_offset, f_skip, f_allow, f_set, stop_tabs, ss, se, md,
):  # fmt: skip
    """Rows [lo, hi) of ``codes`` into ``ss``, ``se`` (T, C) float32 and ``md`` (T, C)
    int32: the reference's :func:`motif_scores` (k-mers past the sequence read as N, sums
    in float64 in rule order, rounded once) and :func:`max_dur_fast`, in one pass."""
    n = codes.shape[0]
    C = ss.shape[1]
    acc = np.zeros((2, C))
    pad = 3  # codes clamped to N = 4, with N past both ends (no bounds test per base)
    for r in range(r_label.shape[0]):
        pad = max(pad, abs(r_shift[r]) + r_k[r])
    x = np.full(n + 2 * pad, 4, dtype=np.int64)
    for t in range(n):
        x[pad + t] = min(codes[t], 4)
    # the last in-frame stop codon end q <= t with q = t (mod 3), per stop set, rows < hi
    S = stop_tabs.shape[0]
    last = np.empty((S, hi), dtype=np.int64)
    for s in range(S):
        run = np.full(3, -1, dtype=np.int64)
        for t in range(hi):
            if t >= 2 and stop_tabs[s, (x[pad + t - 2] * 5 + x[pad + t - 1]) * 5 + x[pad + t]]:
                run[t % 3] = t
            last[s, t] = run[t % 3]
    for t in range(lo, hi):  # motif scores; no gene segment starts or ends off-sequence
        i = t - lo
        acc[:] = 0.0
        for r in range(r_label.shape[0]):
            idx = 0
            p = pad + t + r_shift[r]
            for q in range(p, p + r_k[r]):
                idx = idx * 5 + x[q]
            acc[r_end[r], r_label[r]] += tables[r_off[r] + idx]
        ok = valid[t]
        for c in range(C):
            if gene[c] and not ok:
                ss[i, c] = -np.inf
                se[i, c] = -np.inf
            else:
                ss[i, c] = acc[0, c]
                se[i, c] = acc[1, c]
    li = -1  # the last invalid position at or before t
    for t in range(lo):
        if not valid[t]:
            li = t
    for t in range(lo, hi):  # max_dur: open reading frames, capped at invalid positions
        i = t - lo
        if not valid[t]:
            li = t
        cap = t - li if li >= 0 else MAX_DUR_UNBOUNDED
        for c in range(C):
            md[i, c] = MAX_DUR_UNBOUNDED
        for f in range(f_label.shape[0]):
            b = t - f_offset[f] - (3 if f_skip[f] else 0)
            qstar = last[f_set[f], b] if b >= 0 else -1
            v = MAX_DUR_UNBOUNDED
            if qstar >= 0:
                v = t - qstar + 2 + (1 if f_allow[f] else 0)
                if v > t:  # reaches the sequence start
                    v = MAX_DUR_UNBOUNDED
            md[i, f_label[f]] = min(v, cap)


def compile_window(
    grammar: Grammar,
    codes: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    left_context: int = 0,
    right_context: int = 0,
    open_start: bool = False,
    open_end: bool = False,
) -> StructuralInputs:
    """Structural engine inputs for one window of a contig.

    Args:
        grammar: the compiled-from-YAML grammar.
        codes: (N,) uint8 forward-strand codes of context + window + context.
        valid: (N,) bool, False at positions that are not real sequence (padding, long N
            runs): no gene segment (exon or intron) may start or end there and no exon may
            contain one. Default: all valid.
        left_context, right_context: number of context bases at either end of ``codes``;
            the window is ``codes[left_context : N - right_context]`` (T positions).
        open_start: the window does not start at a contig start or an intergenic cut, and
            is decoded on its own (not streamed): ``init`` allows every label and the
            first position's start rules are lifted (its first segment began earlier).
            The modulo-3 length rule of a truncated first exon still applies, so exact
            results on partial windows need streaming (the engine carries its state).
            Default: ``init`` allows only intergenic (complete genes only).
        open_end: the same at the window's end (``final``, last position's end rules).

    Returns:
        :class:`StructuralInputs` (T rows).
    """
    arr = compile_window_np(
        grammar,
        codes,
        valid,
        left_context=left_context,
        right_context=right_context,
        open_start=open_start,
        open_end=open_end,
    )
    return StructuralInputs(
        **{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arr.items()}
    )


def segment_allowed(
    grammar: Grammar, arrays: dict[str, np.ndarray], segments: list[tuple[int, int, int]]
) -> list[str]:
    """Reasons (human-readable) why a tiling is forbidden under compiled arrays; [] if
    allowed. A numpy mirror of the engine's score rule, for reporting masked genes."""
    problems = []
    D, tail, A = arrays["durations"], arrays["tail"], arrays["transitions"]
    prev = None
    for s, e, c in segments:
        d = e - s
        name = grammar.labels[c].name
        finite = np.flatnonzero(np.isfinite(D[c]))
        kc = int(finite[-1]) + 1 if len(finite) else 0
        if d <= kc:
            dur = D[c, d - 1]
        else:
            dur = D[c, kc - 1] + tail[c] * (d - kc) if math.isfinite(tail[c]) else NEG_INF
        if not math.isfinite(dur):
            problems.append(f"{name} [{s},{e}) length {d} not allowed")
        if not math.isfinite(arrays["seg_start"][s, c]):
            problems.append(f"{name} [{s},{e}) start rule")
        if not math.isfinite(arrays["seg_end"][e - 1, c]):
            problems.append(f"{name} [{s},{e}) end rule")
        if d > arrays["max_dur"][e - 1, c]:
            problems.append(f"{name} [{s},{e}) in-frame stop or invalid base")
        if prev is None:
            if not math.isfinite(arrays["init"][c]):
                problems.append(f"{name} cannot start the sequence")
        elif not math.isfinite(A[prev, c]):
            problems.append(f"{grammar.labels[prev].name} -> {name} transition")
        prev = c
    if prev is not None and not math.isfinite(arrays["final"][prev]):
        problems.append(f"{grammar.labels[prev].name} cannot end the sequence")
    return problems
