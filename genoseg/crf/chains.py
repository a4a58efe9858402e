"""Exact segment and chain marginals from the CPU engine's quantities (docs/crf.md).

A *chain* is a list of consecutive segments ``[(s1, e1, c1), (s2 = e1, e2, c2), ...]``
(0-based half-open); its marginal is P(every segment of the chain is a segment of the
path). A single segment is a chain of length 1 (an exon); an intron with its two flanking
exons, or a whole transcript, are longer chains.

By the Markov property of the semi-CRF, walking the chain backwards from its end:

    P(chain) = P(a label-cn segment ends at en)                 end posterior (reverse sweep)
             * prod_k P(segment k starts at s_k | a label-c_k segment ends at e_k)
             * prod_k P(label c_k ends at s_k+1 | a label-c_k+1 segment starts there)

The second factor is the weight of length e_k - s_k in the length log-sum-exp of
alpha[e_k, c_k], ``exp(Q[s_k, c_k] + dur - m - lacc)``; the third the weight of c_k in the
log-sum-exp that enters c_k+1 at s_k+1, ``exp(alpha[s_k+1, c_k] + A[c_k, c_k+1] - LSE)``. The
forward records, at every chain boundary only, the start score Q, alpha, and the length
log-sum-exp split as (m, lacc) -- the engine's own rounded values, so each weight is exact
to a few ulp(1) even when prefix sums reach 1e9, as in the reverse sweep (docs/crf.md,
numerics). Cost: one forward with these probes plus one reverse sweep for the end
posteriors, then O(total number of chain segments) -- independent of T per chain. What the
chains need of the probes is gathered per segment as the forward goes (:class:`ChainProbes`),
so a stream keeps O(1) floats per chain segment, and one chunk's probes at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genoseg.crf.reference import check_chain

Chain = Sequence[tuple[int, int, int]]


@dataclass
class FlatChains:
    """The chains of one sequence as flat arrays.

    seg_s, seg_e, seg_c, seg_chain (N,) int64: every chain segment and its chain index;
    has_next (N,) bool: the segment is followed by another in its chain (at seg_e);
    last_e, last_c (n_chains,) int64: end and label of each chain's last segment;
    points (n_p,) int64: sorted unique segment boundaries (the forward's probe positions).
    """

    n_chains: int
    seg_s: np.ndarray
    seg_e: np.ndarray
    seg_c: np.ndarray
    seg_chain: np.ndarray
    has_next: np.ndarray
    last_e: np.ndarray
    last_c: np.ndarray
    points: np.ndarray


def flatten(chains: Sequence[Chain], length: int | None, n_labels: int, where: str) -> FlatChains:
    """Validate (ValueError naming ``where``[i][k]) and flatten the chains of one sequence
    of ``length`` positions (None: not known yet, checked later by :func:`check_ends`)."""
    if isinstance(chains, (str, bytes)) or not isinstance(chains, Sequence):
        raise ValueError(f"{where} must be a list of chains, got {type(chains).__name__}")
    segs: list[tuple[int, int, int]] = []
    chain_of: list[int] = []
    has_next: list[bool] = []
    for i, ch in enumerate(chains):
        check_chain(ch, length, n_labels, f"{where}[{i}]")
        for k, (s, e, c) in enumerate(ch):
            segs.append((int(s), int(e), int(c)))
            chain_of.append(i)
            has_next.append(k + 1 < len(ch))
    arr = np.asarray(segs, dtype=np.int64).reshape(-1, 3)
    nxt = np.asarray(has_next, dtype=bool)
    last = arr[~nxt] if len(arr) else arr
    return FlatChains(
        n_chains=len(chains),
        seg_s=arr[:, 0].copy(),
        seg_e=arr[:, 1].copy(),
        seg_c=arr[:, 2].copy(),
        seg_chain=np.asarray(chain_of, dtype=np.int64),
        has_next=nxt,
        last_e=last[:, 1].copy(),
        last_c=last[:, 2].copy(),
        points=np.unique(np.concatenate([arr[:, 0], arr[:, 1]])),
    )


def check_ends(fc: FlatChains, length: int, where: str) -> None:
    """ValueError if a chain of ``where`` ends after ``length`` (streams learn the length
    only at the end of pass 1)."""
    if fc.n_chains and int(fc.last_e.max()) > length:
        i = int(np.argmax(fc.last_e > length))
        raise ValueError(
            f"{where}[{i}] ends at {int(fc.last_e[i])}, after the end of the sequence "
            f"({length} positions were given)"
        )


def probe_rows(flats: Sequence[FlatChains]) -> np.ndarray:
    """(B, max n_p) int64 probe positions per sequence, padded with a position never
    reached."""
    from genoseg.crf.cpu import PROBE_PAD

    n = max((len(f.points) for f in flats), default=0)
    pp = np.full((len(flats), n), PROBE_PAD, dtype=np.int64)
    for b, f in enumerate(flats):
        pp[b, : len(f.points)] = f.points
    return pp


def durations_of(D: np.ndarray, Kc: np.ndarray, tail: np.ndarray, c, d) -> np.ndarray:
    """Length score of label-c segments of length d (arrays): D[c, d-1] for d <= K_c,
    D[c, K_c-1] + tail[c]·(d - K_c) beyond (-inf without a tail or when K_c = 0)."""
    kc = Kc[c]
    inside = d <= kc
    table = D[c, np.clip(np.minimum(d, kc) - 1, 0, None)]
    with np.errstate(invalid="ignore"):
        beyond = D[c, np.clip(kc - 1, 0, None)] + tail[c] * np.maximum(d - kc, 1)
    out = np.where(inside, table, beyond)
    return np.where(kc > 0, out, -np.inf)


@dataclass
class ChainProbes:
    """What the chain marginals need of the forward, per chain segment (the order of
    :class:`FlatChains`), gathered from the probes as the forward goes (:func:`gather`):
    O(1) floats per segment instead of the probes' 5·C per boundary, so a stream's memory
    for chains does not grow with C.

    q (N,): the start score Q of the segment's label at its start; m, lacc, bound (N,):
    at its end, the label's length log-sum-exp split and length bound (:func:`cpu._advance`
    rows 2-4); enter (N,): log of the weight of its label in the log-sum-exp entering the
    next segment's label at its end (0 for a chain's last segment). All float64, -inf
    (q, m, enter), nan (lacc) or -inf (bound) until gathered.
    """

    q: np.ndarray
    m: np.ndarray
    lacc: np.ndarray
    bound: np.ndarray
    enter: np.ndarray
    by_s: np.ndarray  # segment order by start, then the sorted starts
    s_sorted: np.ndarray
    by_e: np.ndarray
    e_sorted: np.ndarray

    @classmethod
    def empty(cls, fc: FlatChains) -> ChainProbes:
        N = len(fc.seg_s)
        by_s = np.argsort(fc.seg_s, kind="stable")
        by_e = np.argsort(fc.seg_e, kind="stable")
        return cls(
            q=np.full(N, -np.inf), m=np.full(N, -np.inf), lacc=np.full(N, np.nan),
            bound=np.full(N, -np.inf), enter=np.where(fc.has_next, -np.inf, 0.0),
            by_s=by_s, s_sorted=fc.seg_s[by_s], by_e=by_e, e_sorted=fc.seg_e[by_e],
        )  # fmt: skip


def window(fc: FlatChains, lo: int, hi: int) -> tuple[int, int]:
    """Indices [i0, i1) of the probe points ``fc.points`` in [lo, hi] (closed)."""
    return (int(np.searchsorted(fc.points, lo, "left")),
            int(np.searchsorted(fc.points, hi, "right")))  # fmt: skip


def gather(
    fc: FlatChains,
    probes: ChainProbes,
    pv: np.ndarray,
    i0: int,
    starts: tuple[float, float],
    ends: tuple[float, float],
    A: np.ndarray,
) -> None:
    """Copy into ``probes`` what the chains need of probe values ``pv`` (n, 5, C), rows for
    the points ``fc.points[i0 : i0 + n]``: the start scores of segments starting in
    [starts[0], starts[1]) and the end quantities of segments ending in [ends[0], ends[1])
    -- the positions whose probes this forward call recorded (a chunk over ends (e0, e0+n]
    records starts e0..e0+n-1 and ends e0+1..e0+n). ``A`` (C, C) the transitions."""
    pts = fc.points
    a, b = np.searchsorted(probes.s_sorted, starts, "left")
    sel = probes.by_s[a:b]
    if len(sel):
        rows = np.searchsorted(pts, fc.seg_s[sel]) - i0
        probes.q[sel] = pv[rows, 0, fc.seg_c[sel]]
    a, b = np.searchsorted(probes.e_sorted, ends, "left")
    sel = probes.by_e[a:b]
    if not len(sel):
        return
    rows = np.searchsorted(pts, fc.seg_e[sel]) - i0
    c = fc.seg_c[sel]
    probes.m[sel], probes.lacc[sel], probes.bound[sel] = (pv[rows, k, c] for k in (2, 3, 4))
    link = fc.has_next[sel]
    if link.any():
        k, rows = sel[link], rows[link]
        c_to = fc.seg_c[k + 1]
        x = pv[rows, 1, :] + A[:, c_to].T  # (n_links, C): alpha[s, c'] + A[c', c_to]
        top = x.max(axis=1)
        safe = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            lse = safe + np.log(np.exp(x - safe[:, None]).sum(axis=1))
            probes.enter[k] = np.where(
                np.isfinite(top), x[np.arange(len(k)), fc.seg_c[k]] - lse, -np.inf
            )


def probabilities(
    fc: FlatChains,
    probes: ChainProbes,
    end_posterior: np.ndarray,
    D: np.ndarray,
    Kc: np.ndarray,
    tail: np.ndarray,
) -> np.ndarray:
    """(n_chains,) float64 chain marginals of one sequence.

    probes: the forward's quantities at the chain boundaries (:func:`gather`);
    end_posterior (n_chains,): P(a label-last_c segment ends at last_e).
    """
    out = np.zeros(fc.n_chains)
    if fc.n_chains == 0:
        return out
    c = fc.seg_c
    d = fc.seg_e - fc.seg_s
    q, m, lacc = probes.q, probes.m, probes.lacc
    dur = durations_of(D, Kc, tail, c, d)
    ok = (d <= probes.bound) & np.isfinite(q) & np.isfinite(m) & np.isfinite(dur)
    with np.errstate(invalid="ignore", divide="ignore"):
        # (q + dur) - m rounds exactly as the forward's term - m (for lengths <= K_c)
        log_len = np.where(ok, ((q + dur) - m) - lacc, -np.inf)
        np.add.at(out, fc.seg_chain, log_len)
        k = np.flatnonzero(fc.has_next)
        if len(k):
            np.add.at(out, fc.seg_chain[k], probes.enter[k])
        out += np.log(end_posterior)
        p = np.exp(out)
    return np.minimum(np.nan_to_num(p, nan=0.0), 1.0)
