"""Chunk-parallel decoding of one long contig: Viterbi path and exact posteriors.

A contig of T positions (rows ``[0, T)``, 0-based half-open) is split into P parts with
cores ``[a_p, b_p)`` (``a_0 = 0``, ``b_p = a_p+1``, ``b_P-1 = T``). Part p is decoded on its
own by the engine's streams over the *window* ``[a_p - ov_p, b_p + ov_p+1)`` (clipped to
the contig), ``ov_k`` being the overlap at core boundary k:

* a window that starts inside the contig has an *open start*: every label may begin the
  sequence there (``init`` = 0 and the window's first ``seg_start`` row = 0); one that
  ends inside the contig an *open end* (``final`` = 0, last ``seg_end`` row = 0);
* a window that starts at 0 / ends at T gets the contig's own ``init`` / ``final``, folded
  into its first ``seg_start`` / last ``seg_end`` row, so that every part of a batch can
  share one stream made with ``init = final = 0`` (bitwise the same start scores: the
  engine adds ``init`` and ``seg_start`` in float64 either way).

Forward and backward messages, and Viterbi tracebacks, forget where they started, so
inside the cores the parts reproduce the sequential stream. Nothing is assumed about how
fast they forget: every core boundary is checked against both neighbouring parts, and an
overlap too short to converge is doubled (or lengthened past a gene desert at once, see
:func:`_desert_overlap`) and the affected parts are decoded again.

* Posteriors (:func:`parallel_posteriors`): parts p-1 and p both cover the *band*
  ``[a_p - g, a_p + g)`` (g = a quarter of the shorter of the two overlaps). Inside it, the
  rows left of ``a_p`` are at distance ``< ov`` from part p's open start (part p-1 is in
  its core there) and the rows right of it at distance ``< ov`` from part p-1's open end,
  so the two parts' float64 position, start and end posteriors differ by part p's forward
  error and part p-1's backward error at a distance *shorter* than the core's. The
  boundary passes when they agree within ``tol`` (default 1e-7) everywhere in the band.
* Viterbi (:func:`parallel_viterbi`): the two parts' paths must share a segment end
  ``x`` (same end, same label) near ``a_p`` and be identical over ``[x - g, x + g)``; the
  path is stitched there (part p-1's segments up to ``x``, part p's after). Part p-1's
  back-pointers are the sequential ones (long burn-in) and part p's path is traced back
  from a converged right side, so once both pass through the same node the sequential
  path passes through it too and everything left of it is part p-1's traceback.

An overlap that has reached the contig length and still fails (never seen in practice:
it needs a grammar that never forgets its start) makes the contig fall back to the
sequential stream.

Chain marginals (exons, introns, transcripts) need the forward message at a chain's
start and the backward message at its end: core boundaries are moved out of every chain
(to the nearer end of the run of overlapping chains), so each chain lies inside one core
and is computed by that part's :class:`~genoseg.crf.stream.PosteriorStream`.

Execution: ``mode="threads"`` decodes every part in its own batch-1 stream on a thread
pool (the numba kernels of one-sequence streams release the GIL: ``nogil=True``);
``mode="batch"`` decodes a group of parts in one stream of ``batch = len(group)``
(numba threads over the batch on CPU; one kernel launch for many parts on CUDA). A batch
advances every element by the same number of rows, so the windows of a group are padded
to one length by *extra overlap*: a window shorter than the longest is extended on the
side that stays inside the contig (more burn-in can only help; no row of a core changes).

Inputs come from ``rows(a, b)``, which returns the engine inputs of contig rows
``[a, b)``: ``(emissions, seg_start, seg_end, max_dur)`` (each (b - a, C) or (1, b - a, C);
the last three may be None; an optional fifth entry is a ``label_mask``). It is called
for overlapping ranges, twice per row of each window (forward and backward pass), and
must return the same values for a row whatever range it is asked for -- the rows the
sequential stream would see (see :func:`sequential_posteriors`).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from genoseg.crf.api import Marginals
from genoseg.crf.stream import PosteriorStream, ViterbiStream

__all__ = [
    "ParallelPosteriors",
    "ParallelReport",
    "ParallelViterbi",
    "RowsFn",
    "Window",
    "core_boundaries",
    "parallel_posteriors",
    "parallel_viterbi",
    "sequential_posteriors",
    "sequential_viterbi",
]

Segment = tuple[int, int, int]
RowsFn = Callable[[int, int], Sequence[Tensor | None]]
OnChunk = Callable[[int, int, Marginals], None]
MODES = ("auto", "threads", "batch")


# -- plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Part ``part``: core rows ``[core_start, core_end)`` decoded by a stream over rows
    ``[start, end)`` (contig coordinates, 0-based half-open)."""

    part: int
    core_start: int
    core_end: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class ParallelReport:
    """What a parallel run did. ``boundaries``: core boundaries ``a_1 .. a_P-1``;
    ``overlaps``: final overlap at each; ``part_runs``: part decodes (P when no overlap
    was lengthened); ``lengthened``: overlap lengthenings; ``stitches`` (Viterbi): the segment
    end where the path was stitched at each boundary; ``band_diff`` (posteriors): largest
    posterior difference between neighbours in the band of each boundary when it passed;
    ``fallback``: the contig was decoded sequentially (an overlap reached the contig length
    without converging)."""

    boundaries: list[int] = field(default_factory=list)
    overlaps: list[int] = field(default_factory=list)
    part_runs: int = 0
    lengthened: int = 0
    stitches: list[int] = field(default_factory=list)
    band_diff: list[float] = field(default_factory=list)
    fallback: bool = False


def core_boundaries(
    T: int, parts: int, chains: Sequence[Sequence[Segment]] | None = None
) -> list[int]:
    """Core boundaries ``[a_1, ..., a_P'-1]`` (ascending, inside ``(0, T)``) splitting
    ``[0, T)`` into ``parts`` near-equal cores, each moved out of every chain (to the
    nearer end of the run of overlapping chains containing it), so that every chain lies
    inside one core. Boundaries that collapse are dropped (fewer parts)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    cuts = [round(k * T / parts) for k in range(1, parts)]
    if chains:
        spans = sorted((int(ch[0][0]), int(ch[-1][1])) for ch in chains if len(ch))
        runs: list[list[int]] = []  # merged (lo, hi): no cut strictly inside
        for lo, hi in spans:
            if runs and lo < runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], hi)
            else:
                runs.append([lo, hi])
        los = [r[0] for r in runs]
        moved = []
        for c in cuts:
            i = bisect.bisect_right(los, c) - 1
            if i >= 0 and runs[i][0] < c < runs[i][1]:
                lo, hi = runs[i]
                c = lo if c - lo <= hi - c else hi
            moved.append(c)
        cuts = moved
    return sorted({c for c in cuts if 0 < c < T})


def _windows(T: int, bounds: list[int], ov: list[int]) -> list[Window]:
    """Windows of every part for overlaps ``ov[k]`` at boundary k (ov[0] unused)."""
    edges = [0, *bounds, T]
    out = []
    for p in range(len(edges) - 1):
        a, b = edges[p], edges[p + 1]
        s = 0 if p == 0 else max(0, a - ov[p])
        e = T if p == len(edges) - 2 else min(T, b + ov[p + 1])
        out.append(Window(p, a, b, s, e))
    return out


def _pad(wins: list[Window], T: int) -> list[Window]:
    """The windows of a batch extended to one length by extra overlap."""
    N = max(w.length for w in wins)
    out = []
    for w in wins:
        s = min(w.start, T - N)
        out.append(Window(w.part, w.core_start, w.core_end, s, s + N))
    return out


# -- inputs ------------------------------------------------------------------------------


@dataclass
class _Context:
    rows: RowsFn
    T: int
    A: Tensor
    D: Tensor
    init: Tensor
    final: Tensor
    tail: Tensor | None
    chunk: int
    lock: threading.Lock | None
    out_dtype: torch.dtype | None = None
    # reduce(c0, c1, marginals) of every core chunk, in the worker (parallel_posteriors)
    reduce: Callable[[int, int, Marginals], object] | None = None
    first_row: int = 0  # rows below it are not kept (the fallback after delivered parts)
    keep_pointers: int = 0  # Viterbi streams of at most this many rows keep back-pointers

    def stream_args(self):
        z = torch.zeros_like(self.init)
        return (self.A, self.D, z, torch.zeros_like(self.final), self.tail)

    def fetch(self, a: int, b: int) -> list[Tensor | None]:
        if self.lock is not None:
            with self.lock:
                got = self.rows(a, b)
        else:
            got = self.rows(a, b)
        if not isinstance(got, (tuple, list)) or len(got) not in (4, 5):
            raise ValueError(
                f"rows({a}, {b}) must return (emissions, seg_start, seg_end, max_dur[, label_mask])"
            )
        out: list[Tensor | None] = []
        for i, t in enumerate(got):
            if t is None:
                out.append(None)
                continue
            if not isinstance(t, Tensor):
                t = torch.as_tensor(t)
            if t.dim() == 2:
                t = t.unsqueeze(0)
            if t.dim() != 3 or t.shape[0] != 1 or t.shape[1] != b - a:
                raise ValueError(
                    f"rows({a}, {b}) entry {i} has shape {tuple(t.shape)}, expected "
                    f"({b - a}, C) or (1, {b - a}, C)"
                )
            out.append(t)
        if out[0] is None:
            raise ValueError(f"rows({a}, {b}) returned no emissions")
        if self.out_dtype is None:
            self.out_dtype = torch.float64 if out[0].dtype == torch.float64 else torch.float32
        while len(out) < 5:
            out.append(None)
        return out

    def window_rows(self, w: Window, u: int, v: int) -> list[Tensor | None]:
        """Engine inputs of window rows [u, v) (local), float64 scores, with the window's
        start / end rules (module doc)."""
        a, b = w.start + u, w.start + v
        em, ss, se, md, mask = self.fetch(a, b)
        em = em.to(torch.float64)  # exact; the engine accumulates in float64 anyway
        n, C = em.shape[1], em.shape[2]
        first, last = u == 0, v == w.length
        if ss is not None:
            ss = ss.to(torch.float64)
        if se is not None:
            se = se.to(torch.float64)
        if first:
            ss = ss.clone() if ss is not None else em.new_zeros(1, n, C)
            if w.start == 0:
                ss[0, 0] += self.init.to(ss)
            else:
                ss[0, 0] = 0.0
        if last:
            se = se.clone() if se is not None else em.new_zeros(1, n, C)
            if w.end == self.T:
                se[0, n - 1] += self.final.to(se)
            else:
                se[0, n - 1] = 0.0
        return [em, ss, se, md, mask]

    def batch_rows(self, wins: list[Window], u: int, v: int) -> list[Tensor | None]:
        per = [self.window_rows(w, u, v) for w in wins]
        if len(per) == 1:
            return per[0]
        out: list[Tensor | None] = []
        for i in range(5):
            got = [p[i] for p in per]
            if all(g is None for g in got):
                out.append(None)
                continue
            ref = next(g for g in got if g is not None)
            if i == 3:
                fill = torch.iinfo(torch.int32).max  # no max_dur bound
                got = [g if g is not None else torch.full_like(ref, fill) for g in got]
            elif i == 4:
                got = [g if g is not None else torch.ones_like(ref) for g in got]
            else:
                got = [g if g is not None else torch.zeros_like(ref) for g in got]
            out.append(torch.cat(got, 0))
        return out


def _pieces(wins: list[Window], chunk: int) -> list[tuple[int, int]]:
    """Local row ranges fed to a stream: chunks of at most ``chunk`` rows, cut at every
    window's core edges (log Z is read there)."""
    N = wins[0].length
    cuts = set(range(0, N, chunk)) | {N}
    for w in wins:
        cuts |= {w.core_start - w.start, w.core_end - w.start}
    cuts = sorted(c for c in cuts if 0 <= c <= N)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _log_z(stream) -> np.ndarray:
    """(B,) log of the forward mass so far (nan if some element has none)."""
    try:
        return stream.log_z().to(torch.float64).cpu().numpy()
    except ValueError:
        return np.full(stream.B, np.nan)


# -- one group of parts ------------------------------------------------------------------


@dataclass
class _PostResult:
    win: Window
    want: tuple[int, int]  # (left, right) overlap asked for
    chunks: list[tuple[int, int, Tensor, Tensor, Tensor]]  # core rows, ascending
    bands: dict[str, tuple[int, np.ndarray]]  # "left"/"right": (first row, (3, n, C))
    chains: np.ndarray | None
    log_z: tuple[float, float]  # at core start, core end


@dataclass
class _VitResult:
    win: Window
    want: tuple[int, int]
    path: list[Segment]


def _band_ranges(w: Window, T: int) -> dict[str, tuple[int, int]]:
    out = {}
    if w.core_start > 0:
        g = max(1, (w.core_start - w.start) // 4)
        out["left"] = (max(w.start, w.core_start - g), min(w.end, w.core_start + g))
    if w.core_end < T:
        g = max(1, (w.end - w.core_end) // 4)
        out["right"] = (max(w.start, w.core_end - g), min(w.end, w.core_end + g))
    return out


def _run_posteriors(
    ctx: _Context, wins: list[Window], wants, chains: list[list[list[Segment]]] | None
) -> list[_PostResult]:
    B = len(wins)
    local = None
    if chains is not None and any(chains[w.part] for w in wins):
        local = [
            [[(s - w.start, e - w.start, c) for s, e, c in ch] for ch in chains[w.part]]
            for w in wins
        ]
    ps = PosteriorStream(*ctx.stream_args(), batch=B, chains=local)
    pieces = _pieces(wins, ctx.chunk)
    la, lb = np.zeros(B), np.zeros(B)
    for u, v in pieces:
        ps.forward(*ctx.batch_rows(wins, u, v))
        hit_a = [i for i, w in enumerate(wins) if v == w.core_start - w.start]
        hit_b = [i for i, w in enumerate(wins) if v == w.core_end - w.start]
        if hit_a or hit_b:
            z = _log_z(ps)
            la[hit_a], lb[hit_b] = z[hit_a], z[hit_b]
    bands = [_band_ranges(w, ctx.T) for w in wins]
    band_out = [
        {k: (lo, np.zeros((3, hi - lo, ctx.A.shape[0]))) for k, (lo, hi) in bd.items()}
        for bd in bands
    ]
    chunks: list[list] = [[] for _ in wins]
    for u, v in reversed(pieces):
        m = ps.backward(*ctx.batch_rows(wins, u, v))
        trio = (m.position, m.start, m.end)
        for i, w in enumerate(wins):
            a, b = w.start + u, w.start + v
            lo, hi = max(a, w.core_start, ctx.first_row), min(b, w.core_end)
            if lo < hi:
                sl = slice(lo - a, hi - a)
                kept = tuple(t[i : i + 1, sl].to(ctx.out_dtype).cpu() for t in trio)
                if ctx.reduce is not None:
                    nan = torch.full((1,), float("nan"), dtype=torch.float64)
                    st, en = kept[1], kept[2]
                    m = Marginals(*kept, st.sum(-1), en.sum(-1), nan)
                    chunks[i].append((lo, hi, ctx.reduce(lo, hi, m)))
                else:
                    chunks[i].append((lo, hi, *kept))
            for key, (blo, bhi) in bands[i].items():
                lo, hi = max(a, blo), min(b, bhi)
                if lo < hi:
                    arr = band_out[i][key][1]
                    for j, t in enumerate(trio):
                        arr[j, lo - blo : hi - blo] = t[i, lo - a : hi - a].cpu().numpy()
    cm = ps.chain_marginals() if local is not None else None
    out = []
    for i, w in enumerate(wins):
        chunks[i].reverse()
        out.append(
            _PostResult(
                w,
                wants[i],
                chunks[i],
                band_out[i],
                cm[i].numpy() if cm is not None else None,
                (float(la[i]), float(lb[i])),
            )  # fmt: skip
        )
    return out


def _run_viterbi(ctx: _Context, wins: list[Window], wants, chains=None) -> list[_VitResult]:
    B = len(wins)
    keep = B * wins[0].length <= ctx.keep_pointers  # pass 2 traces back without inputs
    vs = ViterbiStream(*ctx.stream_args(), batch=B, keep_pointers=keep)
    pieces = _pieces(wins, ctx.chunk)
    for u, v in pieces:
        vs.forward(*ctx.batch_rows(wins, u, v))
    paths: list[list[Segment]] = [[] for _ in wins]
    for u, v in reversed(pieces):
        got = vs.backward() if keep else vs.backward(*ctx.batch_rows(wins, u, v))
        for i, w in enumerate(wins):
            paths[i] = [(s + w.start, e + w.start, c) for s, e, c in got[i]] + paths[i]
    return [_VitResult(w, wants[i], paths[i]) for i, w in enumerate(wins)]


# -- checks ------------------------------------------------------------------------------


def _band_check(left: _PostResult, right: _PostResult) -> float:
    """Largest posterior difference of two neighbours over their common band rows."""
    lo1, arr1 = left.bands["right"]
    lo2, arr2 = right.bands["left"]
    lo, hi = max(lo1, lo2), min(lo1 + arr1.shape[1], lo2 + arr2.shape[1])
    if lo >= hi:
        return float("inf")
    x = arr1[:, lo - lo1 : hi - lo1]
    y = arr2[:, lo - lo2 : hi - lo2]
    return float(np.abs(x - y).max())


def _segments_in(path: list[Segment], ends: list[int], lo: int, hi: int) -> list[Segment]:
    """Segments of ``path`` (ends ascending in ``ends``) that intersect [lo, hi)."""
    i = bisect.bisect_right(ends, lo)
    out = []
    while i < len(path) and path[i][0] < hi:
        out.append(path[i])
        i += 1
    return out


def _desert_overlap(left: _VitResult, right: _VitResult) -> int | None:
    """When both paths hold one segment of the same label across the whole zone where
    :func:`_stitch_point` looks for a stitch (a gene desert; the paths may differ near the
    windows' open ends), the overlap that reaches past that segment's start in the left
    path and its end in the right path, plus the current overlap; else None."""
    a = right.win.core_start
    s0, e0 = right.win.start, left.win.end
    lo, hi = a - (a - s0) // 2, a + (e0 - a) // 2  # the stitch zone
    spans = []
    for path in (left.path, right.path):
        inside = _segments_in(path, [s[1] for s in path], lo, hi)
        if len(inside) != 1:
            return None
        spans.append(inside[0])
    if spans[0][2] != spans[1][2]:
        return None
    first, last = spans[0][0], spans[1][1]  # left path's segment start, right path's end
    return max(a - first, last - a) + (e0 - s0) // 2


def _stitch_point(left: _VitResult, right: _VitResult) -> int | None:
    """A segment end x near the core boundary where both paths agree (module doc), the
    closest to the boundary; None if there is none."""
    a = right.win.core_start
    s0, e0 = right.win.start, left.win.end  # rows both windows cover: [s0, e0)
    hl, hr = (a - s0) // 2, (e0 - a) // 2
    g = max(1, min(a - s0, e0 - a) // 4)
    lp, rp = left.path, right.path
    lends, rends = [s[1] for s in lp], [s[1] for s in rp]
    right_nodes = {(e, c) for _, e, c in rp}
    cands = [(abs(e - a), e, c) for _, e, c in lp if a - hl <= e <= a + hr and s0 < e < e0]
    for _, x, c in sorted(cands):
        if (x, c) not in right_nodes:
            continue
        lo, hi = max(s0, x - g), min(e0, x + g)
        if _segments_in(lp, lends, lo, hi) == _segments_in(rp, rends, lo, hi):
            return x
    return None


# -- scheduler ---------------------------------------------------------------------------


class _Fallback(Exception):
    pass


def _schedule(
    ctx: _Context,
    bounds: list[int],
    overlap: int,
    run,
    check,
    *,
    mode: str,
    workers: int,
    batch: int,
    max_pending: int,
    on_ready,
    report: ParallelReport,
    chains=None,
) -> list:
    """Decode every part, check every boundary, lengthen and redo until all pass; calls
    ``on_ready(result)`` for parts in contig order once both their boundaries pass."""
    T = ctx.T
    P = len(bounds) + 1
    ov = [0] + [overlap] * (P - 1) + [0]
    results: list = [None] * P
    verified: set[int] = set()
    queue: set[int] = set(range(P))
    running: dict[Future, list[int]] = {}
    in_flight: set[int] = set()
    delivered = 0
    pool = ThreadPoolExecutor(max_workers=workers) if mode == "threads" else None

    def want(p: int) -> tuple[int, int]:
        return (ov[p] if p > 0 else 0, ov[p + 1] if p + 1 < P else 0)

    def launch() -> None:
        limit = delivered + max_pending
        ready = sorted(p for p in queue if p < limit and p not in in_flight)
        if mode == "threads":
            while ready and len(running) < workers:
                p = ready.pop(0)
                submit([p])
        elif ready and not running:
            submit(ready[:batch])

    def submit(ps: list[int]) -> None:
        wins_all = _windows(T, bounds, ov)
        wins = [wins_all[p] for p in ps]
        if len(wins) > 1:
            wins = _pad(wins, T)
        wants = [want(p) for p in ps]
        for p in ps:
            queue.discard(p)
            in_flight.add(p)
        report.part_runs += len(ps)
        if pool is not None:
            fut = pool.submit(run, ctx, wins, wants, chains)
        else:
            fut = Future()
            try:
                fut.set_result(run(ctx, wins, wants, chains))
            except BaseException as exc:  # noqa: BLE001 - re-raised by fut.result()
                fut.set_exception(exc)
        running[fut] = ps

    try:
        launch()
        while running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            touched: set[int] = set()
            for fut in done:
                ps = running.pop(fut)
                for p in ps:
                    in_flight.discard(p)
                for res in fut.result():
                    p = res.win.part
                    if res.want != want(p):  # an overlap grew while it ran
                        queue.add(p)
                        continue
                    results[p] = res
                    touched |= {p, p + 1}
            for k in sorted(touched):
                if not (1 <= k < P) or k in verified:
                    continue
                if results[k - 1] is None or results[k] is None:
                    continue
                if k - 1 in queue or k in queue or k - 1 in in_flight or k in in_flight:
                    continue
                verdict = check(results[k - 1], results[k], k)
                if verdict is True:
                    verified.add(k)
                    continue
                # failed: double the overlap, or lengthen it to the check's hint at once
                new = max(2 * ov[k], verdict if isinstance(verdict, int) else 0)
                if ov[k] >= T or new >= T:  # parts as long as the contig: sequential is
                    raise _Fallback  # cheaper than redoing both neighbours
                ov[k] = new
                report.lengthened += 1
                for p in (k - 1, k):
                    if p >= delivered:
                        results[p] = None
                        queue.add(p)
                        verified.discard(p)
                        verified.discard(p + 1)
            while delivered < P and results[delivered] is not None:
                p = delivered
                if (p > 0 and p not in verified) or (p + 1 < P and p + 1 not in verified):
                    break
                on_ready(results[p])
                delivered += 1
            launch()
        if delivered < P:  # pragma: no cover - scheduler invariant
            raise RuntimeError(f"parallel decode stopped after {delivered} of {P} parts")
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    report.overlaps = ov[1:P]
    return results


# -- public API --------------------------------------------------------------------------


def _context(rows, T, tables, chunk, thread_safe_rows) -> _Context:
    if not isinstance(tables, Mapping):
        raise ValueError(
            "tables must be a mapping with transitions, durations, init, final[, tail]"
        )
    missing = [k for k in ("transitions", "durations", "init", "final") if k not in tables]
    if missing:
        raise ValueError(f"tables is missing {', '.join(missing)}")
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return _Context(
        rows, T, tables["transitions"], tables["durations"], tables["init"], tables["final"],
        tables.get("tail"), chunk, None if thread_safe_rows else threading.Lock(),
    )  # fmt: skip


def _resolve_mode(mode: str, ctx: _Context) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "batch" if ctx.A.is_cuda else "threads"
    return mode


def _check_counts(parts: int, overlap: int, workers: int) -> None:
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if overlap < 1:
        raise ValueError(f"overlap must be >= 1, got {overlap}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


@dataclass
class ParallelViterbi:
    """Best path of the contig: ``segments`` [(start, end, label)] in contig coordinates
    (0-based half-open, ascending, tiling [0, T)), and what the run did."""

    segments: list[Segment]
    report: ParallelReport


@dataclass
class ParallelPosteriors:
    """``log_z``: log Z of the contig summed from the parts' forward masses over their
    cores (float; None when a core boundary has no forward mass). ``chain_marginals``:
    (n_chains,) float64 in the order given (None without chains). ``report``: what the
    run did. The posteriors themselves went to ``on_chunk``."""

    log_z: float | None
    chain_marginals: Tensor | None
    report: ParallelReport


def sequential_viterbi(
    rows: RowsFn, T: int, tables: Mapping[str, Tensor], *, chunk: int = 100_000
) -> list[Segment]:
    """The best path by one :class:`~genoseg.crf.stream.ViterbiStream` over the contig
    (what :func:`parallel_viterbi` reproduces)."""
    ctx = _context(rows, T, tables, chunk, True)
    return _run_viterbi(ctx, [Window(0, 0, T, 0, T)], [(0, 0)])[0].path


def sequential_posteriors(
    rows: RowsFn,
    T: int,
    tables: Mapping[str, Tensor],
    *,
    chunk: int = 100_000,
    chains: Sequence[Sequence[Segment]] | None = None,
    on_chunk: OnChunk | None = None,
    first_row: int = 0,
    reduce: Callable[[int, int, Marginals], object] | None = None,
) -> ParallelPosteriors:
    """Posteriors by one :class:`~genoseg.crf.stream.PosteriorStream` over the contig;
    ``on_chunk`` gets the rows ``>= first_row`` in contig order (what
    :func:`parallel_posteriors` reproduces, and its fallback); ``reduce`` as there."""
    ctx = _context(rows, T, tables, chunk, True)
    ctx.reduce, ctx.first_row = reduce, first_row
    ch = [[list(map(tuple, c)) for c in chains]] if chains is not None else None
    res = _run_posteriors(ctx, [Window(0, 0, T, 0, T)], [(0, 0)], ch)[0]
    if on_chunk is not None:
        _deliver(res, on_chunk, first_row)
    cm = torch.from_numpy(res.chains) if res.chains is not None else None
    lz = res.log_z[1]
    return ParallelPosteriors(None if np.isnan(lz) else lz, cm, ParallelReport(part_runs=1))


def _deliver(res: _PostResult, on_chunk: OnChunk, first_row: int = 0) -> None:
    nan = torch.full((1,), float("nan"), dtype=torch.float64)
    for item in res.chunks:
        if len(item) == 3:  # reduced in the worker (rows below first_row never kept)
            on_chunk(*item)
            continue
        lo, hi, pos, st, en = item
        if hi <= first_row:
            continue
        k = max(0, first_row - lo)
        pos, st, en = pos[:, k:], st[:, k:], en[:, k:]
        on_chunk(lo + k, hi, Marginals(pos, st, en, st.sum(-1), en.sum(-1), nan))


def parallel_viterbi(
    rows: RowsFn,
    T: int,
    tables: Mapping[str, Tensor],
    *,
    parts: int,
    overlap: int = 20_000,
    chunk: int = 100_000,
    workers: int = 2,
    mode: str = "auto",
    batch: int | None = None,
    thread_safe_rows: bool = False,
    keep_pointers: int = 0,
) -> ParallelViterbi:
    """Best segmentation of contig rows ``[0, T)``, decoded in ``parts`` parallel parts;
    the same path as :func:`sequential_viterbi` (module doc: how parts are checked and
    stitched).

    Args:
        rows: ``rows(a, b)`` -> engine inputs of contig rows ``[a, b)`` (module doc).
        T: contig length.
        tables: ``transitions`` (C, C), ``durations`` (C, K), ``init``, ``final`` and
            optionally ``tail`` (C,): the contig's parameters (as for the streams).
        parts: number of parts (cores of near-equal length; 1 = sequential).
        overlap: initial overlap on each side of a core boundary; doubled where the
            check fails.
        chunk: rows per stream call (memory: one stream state of 2·R·C float64 is kept per
            chunk of a window, plus one chunk's inputs and back-pointers).
        workers: threads for ``mode="threads"``.
        mode: ``"threads"`` (one stream per part on a thread pool), ``"batch"`` (parts in
            batched streams of ``batch`` parts, padded to one length), ``"auto"`` (batch
            for CUDA tables, threads otherwise).
        batch: parts per batched stream (default: all parts).
        thread_safe_rows: ``rows`` may be called from several threads at once; if False
            calls are serialized by a lock (the engine still runs in parallel).
        keep_pointers: a part's stream of at most this many rows (times its batch) keeps
            its back-pointers (``ViterbiStream(keep_pointers=True)``, 3·C bytes per row):
            its traceback needs no second call of ``rows`` (default 0: never).
    """
    _check_counts(parts, overlap, workers)
    ctx = _context(rows, T, tables, chunk, thread_safe_rows)
    ctx.keep_pointers = keep_pointers
    mode = _resolve_mode(mode, ctx)
    bounds = core_boundaries(T, parts)
    report = ParallelReport(boundaries=list(bounds))
    if not bounds:
        report.part_runs = 1
        return ParallelViterbi(sequential_viterbi(rows, T, tables, chunk=chunk), report)
    stitch: dict[int, int] = {}

    def check(left: _VitResult, right: _VitResult, k: int) -> bool | int:
        x = _stitch_point(left, right)
        if x is None:
            # no shared segment end: if both paths hold one segment across the whole
            # overlap (a gene desert), a longer overlap helps only once it spans that
            # segment, and every try redoes both parts: lengthen to it at once
            return _desert_overlap(left, right) or False
        stitch[k] = x
        return True

    try:
        results = _schedule(
            ctx, bounds, overlap, _run_viterbi, check, mode=mode, workers=workers,
            batch=batch or len(bounds) + 1, max_pending=len(bounds) + 1,
            on_ready=lambda r: None, report=report,
        )  # fmt: skip
    except _Fallback:
        report.fallback = True
        return ParallelViterbi(sequential_viterbi(rows, T, tables, chunk=chunk), report)
    xs = [0] + [stitch[k] for k in range(1, len(bounds) + 1)] + [T]
    report.stitches = xs[1:-1]
    path: list[Segment] = []
    for p, res in enumerate(results):
        path += [s for s in res.path if s[0] >= xs[p] and s[1] <= xs[p + 1]]
    if (
        path[0][0] != 0
        or path[-1][1] != T
        or any(u[1] != v[0] for u, v in zip(path[:-1], path[1:], strict=True))
    ):  # pragma: no cover - stitch points are segment ends of both paths
        raise RuntimeError(f"stitched Viterbi path does not tile [0, {T})")
    return ParallelViterbi(path, report)


def parallel_posteriors(
    rows: RowsFn,
    T: int,
    tables: Mapping[str, Tensor],
    *,
    parts: int,
    overlap: int = 20_000,
    chunk: int = 100_000,
    workers: int = 2,
    mode: str = "auto",
    batch: int | None = None,
    chains: Sequence[Sequence[Segment]] | None = None,
    on_chunk: OnChunk | None = None,
    tol: float = 1e-7,
    max_pending: int | None = None,
    thread_safe_rows: bool = False,
    reduce: Callable[[int, int, Marginals], object] | None = None,
) -> ParallelPosteriors:
    """Exact posteriors of contig rows ``[0, T)`` decoded in ``parts`` parallel parts:
    within ``tol``-scale of :func:`sequential_posteriors` (module doc: the band check).

    Args (as :func:`parallel_viterbi`, plus):
        chains: chains of consecutive segments ``[(s1, e1, c1), (e1, e2, c2), ...]`` in
            contig coordinates (0-based half-open) whose marginals are wanted; core
            boundaries are moved out of them (:func:`core_boundaries`).
        on_chunk: ``on_chunk(c0, c1, marginals)`` for every chunk of rows ``[c0, c1)``, in
            contig order, once the rows are checked: :class:`~genoseg.crf.api.Marginals`
            with position/start/end (1, c1 - c0, C) in the stream's dtype (float32 unless
            the emissions are float64) and ``log_z`` nan (the contig's is returned).
        tol: a boundary passes when the neighbours' posteriors agree within ``tol`` in its
            band (rows closer to the open ends than the cores are).
        max_pending: parts decoded but not yet handed to ``on_chunk`` (memory: their core
            posteriors, 12·C bytes per row in float32; default workers + 2, or two
            batches).
        reduce: ``reduce(c0, c1, marginals)`` is called in the worker for every chunk of
            core rows as soon as it is computed, and only its result is kept for
            ``on_chunk(c0, c1, result)``: what a caller needs of the posteriors (tracks,
            a few boundary values) instead of 12·C bytes per row until delivery.

    Returns:
        :class:`ParallelPosteriors` (log Z, chain marginals, report).
    """
    _check_counts(parts, overlap, workers)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    ctx = _context(rows, T, tables, chunk, thread_safe_rows)
    ctx.reduce = reduce
    mode = _resolve_mode(mode, ctx)
    chains_l = [[tuple(map(int, s)) for s in ch] for ch in chains] if chains is not None else None
    if chains_l is not None:
        for i, ch in enumerate(chains_l):
            if not ch or any(len(s) != 3 for s in ch):
                raise ValueError(f"chains[{i}] must be a non-empty list of (start, end, label)")
            if ch[0][0] < 0 or ch[-1][1] > T:
                raise ValueError(f"chains[{i}] is not inside [0, {T})")
    bounds = core_boundaries(T, parts, chains_l)
    report = ParallelReport(boundaries=list(bounds))
    if not bounds:
        out = sequential_posteriors(
            rows, T, tables, chunk=chunk, chains=chains_l, on_chunk=on_chunk, reduce=reduce
        )
        out.report = report
        report.part_runs = 1
        return out
    P = len(bounds) + 1
    edges = [0, *bounds, T]
    owner = None
    per_part: list[list[list[Segment]]] | None = None
    if chains_l is not None:
        per_part = [[] for _ in range(P)]
        owner = []
        for ch in chains_l:
            p = bisect.bisect_right(edges, ch[0][0]) - 1
            owner.append((p, len(per_part[p])))
            per_part[p].append(ch)
    band_diff: dict[int, float] = {}

    def check(left: _PostResult, right: _PostResult, k: int) -> bool:
        d = _band_check(left, right)
        band_diff[k] = d
        return d <= tol

    delivered_row = [0]
    finished: list[_PostResult | None] = [None] * P

    def ready(res: _PostResult) -> None:
        if on_chunk is not None:
            _deliver(res, on_chunk)
        delivered_row[0] = res.win.core_end
        finished[res.win.part] = res
        res.chunks = []  # delivered: free the core posteriors

    nb = batch or P
    pending = max_pending or (workers + 2 if mode == "threads" else 2 * nb)
    try:
        _schedule(
            ctx, bounds, overlap, _run_posteriors, check, mode=mode, workers=workers,
            batch=nb, max_pending=max(pending, 3 if mode == "threads" else nb),
            on_ready=ready, report=report, chains=per_part,
        )  # fmt: skip
    except _Fallback:
        report.fallback = True
        out = sequential_posteriors(
            rows, T, tables, chunk=chunk, chains=chains_l, on_chunk=on_chunk,
            first_row=delivered_row[0], reduce=reduce,
        )  # fmt: skip
        out.report = report
        return out
    report.band_diff = [band_diff[k] for k in range(1, P)]
    lz = finished[0].log_z[1] + sum(r.log_z[1] - r.log_z[0] for r in finished[1:])
    cm = None
    if owner is not None:
        cm = torch.tensor([float(finished[p].chains[i]) for p, i in owner], dtype=torch.float64)
    return ParallelPosteriors(None if np.isnan(lz) else float(lz), cm, report)
