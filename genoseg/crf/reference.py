"""Float64 reference semi-CRF: short, obviously correct, slow. Ground truth for tests.

One dynamic program, generic over the semiring (log -> partition, max -> Viterbi), loops
over segment end positions ``e = 1..L`` and, at each, over every admissible length
``d = 1..min(e, W)`` (``W = L`` when a label has a tail, else ``K``): no ring buffers, no
running tails, no checkpoints. Marginals are gradients of log Z (autograd).

Scoring rule (DESIGN.md §1; per-label ``K_c`` and tail as in :mod:`genoseg.crf.inputs`):
a segment ``(s, e, c)``, 0-based half-open, scores
``sum(h[s:e, c]) + dur(c, e - s) + seg_start[s, c] + seg_end[e - 1, c]
+ (init[c] if s == 0 else A[c_prev, c]) + (final[c] if e == L)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from genoseg.crf.inputs import NEG_INF, CRFInputs, check_inputs, label_table_lengths


class _SafeLogSumExp(torch.autograd.Function):
    """logsumexp whose gradient is 0 (not NaN) where every input is -inf."""

    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:
        out = torch.logsumexp(x, dim)
        ctx.save_for_backward(x, out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, out = ctx.saved_tensors
        o = out.unsqueeze(ctx.dim)
        w = torch.where(torch.isfinite(o), torch.exp(x - o), torch.zeros_like(x))
        return g.unsqueeze(ctx.dim) * w, None


class LogSemiring:
    """(logsumexp, +): sums over segmentations -> log partition function."""

    @staticmethod
    def sum(x: Tensor, dim: int) -> Tensor:
        return _SafeLogSumExp.apply(x, dim)


class MaxSemiring:
    """(max, +): best segmentation -> Viterbi score."""

    @staticmethod
    def sum(x: Tensor, dim: int) -> Tensor:
        return x.amax(dim)


def duration_scores(durations: Tensor, tail: Tensor | None, n: int) -> Tensor:
    """Score of every length d = 1..n per label, tail included. Returns (C, n).

    dur[c, d-1] = durations[c, d-1] for d <= K_c; durations[c, K_c-1] + tail[c]*(d - K_c)
    for d > K_c when tail[c] is finite; -inf otherwise.
    """
    C, K = durations.shape
    rows = []
    for c in range(C):
        finite = torch.isfinite(durations[c]).nonzero()
        kc = int(finite[-1]) + 1 if len(finite) else 0
        head = durations[c, : min(kc, n)]
        rest = n - head.shape[0]
        if rest > 0 and kc > 0 and tail is not None and math.isfinite(float(tail[c].detach())):
            steps = torch.arange(1, rest + 1, dtype=durations.dtype)
            body = durations[c, kc - 1] + tail[c] * steps
        else:
            body = torch.full((rest,), NEG_INF, dtype=durations.dtype)
        rows.append(torch.cat([head, body]))
    return torch.stack(rows)


def _window(x: CRFInputs) -> int:
    has_tail = x.tail is not None and bool(torch.isfinite(x.tail).any())
    return x.T if has_tail else x.K


def _chart(sr, x: CRFInputs, b: int):
    """Run the DP for batch element b. Returns (score, alpha, S, dur, P, se, bound) in
    float64 (bound: :func:`length_bound`), where
    alpha[e] (C,) sums segmentations of [0, e) whose last segment ends at e, S[s] (C,)
    sums those of [0, s) followed by a label-c segment starting at s (start scores
    included), and dur is the (C, W) length table."""
    f64 = torch.float64
    L = int(x.lengths[b])
    h = x.emissions[b, :L].to(f64)
    C = x.C
    A, init, final = x.transitions.to(f64), x.init.to(f64), x.final.to(f64)
    zeros = torch.zeros(L, C, dtype=f64)
    ss = x.seg_start[b, :L].to(f64) if x.seg_start is not None else zeros
    se = x.seg_end[b, :L].to(f64) if x.seg_end is not None else zeros
    tail = x.tail.to(f64) if x.tail is not None else None
    W = min(_window(x), L)
    dur = duration_scores(x.durations.to(f64), tail, W)
    P = torch.cat([torch.zeros(1, C, dtype=f64), torch.cumsum(h, 0)])
    bound = length_bound(x, b)
    alpha: list[Tensor] = [torch.full((C,), NEG_INF, dtype=f64)]
    S: list[Tensor] = []
    for e in range(1, L + 1):
        s = e - 1
        enter = init if s == 0 else sr.sum(alpha[s].unsqueeze(1) + A, 0)
        S.append(enter + ss[s])
        n = min(e, W)
        starts = torch.stack(S[e - n :][::-1])  # row d-1 = S[e-d]
        content = P[e] - P[e - n : e].flip(0)  # row d-1 = sum h[e-d:e]
        terms = starts + content + dur[:, :n].T + se[e - 1]
        if bound is not None:
            d = torch.arange(1, n + 1).unsqueeze(1)
            terms = terms.masked_fill(d > bound[e - 1], NEG_INF)
        alpha.append(sr.sum(terms, 0))
    score = sr.sum(alpha[L] + final, 0)
    return score, alpha, S, dur, P, se, bound


def length_bound(x: CRFInputs, b: int) -> Tensor | None:
    """(L, C) int64: longest admissible label-c segment whose last position is t, from
    max_dur and label_mask (a segment may cover only allowed positions); None if neither."""
    L = int(x.lengths[b])
    bound = None
    if x.max_dur is not None:
        bound = x.max_dur[b, :L].to(torch.int64)
    if x.label_mask is not None:
        run = torch.zeros(L, x.C, dtype=torch.int64)
        prev = torch.zeros(x.C, dtype=torch.int64)
        for t in range(L):
            prev = torch.where(x.label_mask[b, t], prev + 1, torch.zeros_like(prev))
            run[t] = prev
        bound = run if bound is None else torch.minimum(bound, run)
    return bound


def _as_inputs(*args, **kwargs) -> CRFInputs:
    if len(args) == 1 and isinstance(args[0], CRFInputs) and not kwargs:
        return args[0]
    return check_inputs(*args, **kwargs)


def log_partition(*args, **kwargs) -> Tensor:
    """log Z per batch element, (B,) float64; differentiable (autograd). Arguments as
    :func:`genoseg.crf.inputs.check_inputs` or one :class:`CRFInputs`."""
    x = _as_inputs(*args, **kwargs)
    return torch.stack([_chart(LogSemiring, x, b)[0] for b in range(x.B)])


def viterbi(*args, **kwargs) -> tuple[Tensor, list[list[tuple[int, int, int]]]]:
    """Best score (B,) float64 and its segments [(start, end, label)] per batch element,
    0-based half-open, in order. Ties go to the shortest segment and the lowest label."""
    x = _as_inputs(*args, **kwargs)
    scores, paths = [], []
    with torch.no_grad():
        for b in range(x.B):
            score, alpha, S, dur, P, se, bound = _chart(MaxSemiring, x, b)
            L = int(x.lengths[b])
            scores.append(score)
            if not math.isfinite(float(score)):
                paths.append([])
                continue
            W = dur.shape[1]
            c = int(torch.argmax(alpha[L] + x.final.to(torch.float64)))
            e, segs = L, []
            while e > 0:
                n = min(e, W)
                cand = torch.stack(
                    [S[e - d][c] + P[e, c] - P[e - d, c] + dur[c, d - 1] for d in range(1, n + 1)]
                )
                cand = cand + se[e - 1, c]
                if bound is not None:
                    cand[torch.arange(1, n + 1) > int(bound[e - 1, c])] = NEG_INF
                d = int(torch.argmax(cand)) + 1
                segs.append((e - d, e, c))
                e -= d
                if e > 0:
                    c_next = c
                    c = int(torch.argmax(alpha[e] + x.transitions.to(torch.float64)[:, c_next]))
            paths.append(segs[::-1])
    return torch.stack(scores), paths


def marginals(*args, **kwargs) -> dict[str, Tensor]:
    """Posteriors as gradients of log Z. Returns float64 tensors:
    ``position`` (B, T, C), P(position t has label c);
    ``start`` / ``end`` (B, T, C), P(a label-c segment starts at t / ends at t, i.e. its
    last position is t); ``start_any`` / ``end_any`` (B, T), summed over labels;
    ``log_z`` (B,). Positions >= L_b are 0."""
    x = _as_inputs(*args, **kwargs)
    f64 = torch.float64
    h = x.emissions.detach().to(f64).requires_grad_(True)
    ss = x.seg_start.detach().to(f64) if x.seg_start is not None else torch.zeros_like(h)
    se = x.seg_end.detach().to(f64) if x.seg_end is not None else torch.zeros_like(h)
    ss.requires_grad_(True)
    se.requires_grad_(True)
    y = CRFInputs(h, x.lengths, x.transitions.detach(), x.durations.detach(), x.init.detach(),
                  x.final.detach(), x.tail, ss, se, x.max_dur, x.label_k, x.label_mask)  # fmt: skip
    logz = log_partition(y)
    gh, gs, ge = torch.autograd.grad(logz.sum(), [h, ss, se])
    return {
        "position": gh, "start": gs, "end": ge,
        "start_any": gs.sum(-1), "end_any": ge.sum(-1), "log_z": logz.detach(),
    }  # fmt: skip


def nll(*args, gold_segments: Sequence[Sequence[tuple[int, int, int]]], **kwargs) -> Tensor:
    """log Z - score(gold) per batch element, (B,) float64."""
    x = _as_inputs(*args, **kwargs)
    logz = log_partition(x)
    gold = torch.stack([_score(x, b, gold_segments[b]) for b in range(x.B)])
    return logz - gold


def _score(x: CRFInputs, b: int, segments: Sequence[tuple[int, int, int]]) -> Tensor:
    L = int(x.lengths[b])
    check_tiling(segments, L, x.C)
    f64 = torch.float64
    h = x.emissions[b].to(f64)
    tail = x.tail.to(f64) if x.tail is not None else None
    longest = max(e - s for s, e, _ in segments)
    dur = duration_scores(x.durations.to(f64), tail, longest)
    total = torch.zeros((), dtype=f64)
    prev = None
    for s, e, c in segments:
        d = e - s
        total = total + h[s:e, c].sum() + dur[c, d - 1]
        if x.seg_start is not None:
            total = total + x.seg_start[b, s, c].to(f64)
        if x.seg_end is not None:
            total = total + x.seg_end[b, e - 1, c].to(f64)
        total = total + (x.init[c].to(f64) if prev is None else x.transitions[prev, c].to(f64))
        if e == L:
            total = total + x.final[c].to(f64)
        if x.max_dur is not None and d > int(x.max_dur[b, e - 1, c]):
            total = total + NEG_INF
        if x.label_mask is not None and not bool(x.label_mask[b, s:e, c].all()):
            total = total + NEG_INF
        prev = c
    return total


def check_tiling(segments: Sequence[tuple[int, int, int]], length: int, n_labels: int) -> None:
    """Raise ValueError unless segments tile [0, length) in order with labels < n_labels."""
    if not segments:
        raise ValueError("segments must not be empty")
    pos = 0
    for s, e, c in segments:
        if s != pos or e <= s or not 0 <= c < n_labels:
            raise ValueError(
                f"segments do not tile [0, {length}): bad segment {(s, e, c)} at {pos}"
            )
        pos = e
    if pos != length:
        raise ValueError(f"segments end at {pos}, expected {length}")


def score_segmentation(
    emissions: Tensor,
    segments: Sequence[tuple[int, int, int]],
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    seg_start: Tensor | None = None,
    seg_end: Tensor | None = None,
    max_dur: Tensor | None = None,
    label_mask: Tensor | None = None,
) -> float:
    """Score of one segmentation of a single sequence (emissions (T, C), no batch dim;
    segments [(start, end, label)], 0-based half-open, tiling [0, T)). -inf if forbidden."""
    x = check_inputs(
        emissions, None, transitions, durations, init, final, tail, seg_start, seg_end, max_dur
    )
    return float(_score(x, 0, segments))


def log_partition_linear_chain(
    emissions: Tensor,
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    block: int = 4096,
) -> float:
    """log Z of one sequence (emissions (L, C)) by an independent method for long inputs.

    The semi-CRF is expanded into an equivalent linear chain whose states are
    ``(label c, age a)``, ``a = 1..K_c``, plus an age ``K_c + 1`` state ("longer than
    K_c", entered and re-entered with score ``tail[c]``) for tailed labels; a segment's
    duration score is paid when it ends.
    log Z is then a product of (S, S) log-space matrices, reduced as a balanced tree
    within blocks in float64 -- no loop over time in Python. No seg_start/seg_end/max_dur.
    """
    f64 = torch.float64
    h = emissions.detach().to(f64)
    L, C = h.shape
    A, D = transitions.detach().to(f64), durations.detach().to(f64)
    kc = label_table_lengths_list(D)
    has_tail = [tail is not None and kc[c] > 0 and math.isfinite(float(tail[c])) for c in range(C)]
    # age a = 1..K_c, plus age K_c + 1 standing for "longer than K_c" when tailed
    states = [(c, a) for c in range(C) for a in range(1, kc[c] + 1 + has_tail[c])]
    S = len(states)
    lab = torch.tensor([c for c, _ in states])
    trans = torch.full((S, S), NEG_INF, dtype=f64)
    end = torch.full((S,), NEG_INF, dtype=f64)  # score of ending the segment in state i
    for i, (c, a) in enumerate(states):
        end[i] = D[c, min(a, kc[c]) - 1]
    for i, (c, a) in enumerate(states):
        for j, (c2, a2) in enumerate(states):
            if a2 == 1:
                trans[i, j] = end[i] + A[c, c2]
            elif c2 == c and a2 == a + 1 <= kc[c]:
                trans[i, j] = 0.0
            elif c2 == c and a2 == kc[c] + 1 and a >= kc[c]:
                trans[i, j] = float(tail[c])  # one more position beyond K_c
    start = torch.full((S,), NEG_INF, dtype=f64)
    for i, (c, a) in enumerate(states):
        if a == 1:
            start[i] = init[c].to(f64)
    vec = start + h[0, lab]
    for b0 in range(1, L, block):
        M = trans.unsqueeze(0) + h[b0 : b0 + block, lab].unsqueeze(1)  # (n, S, S)
        while M.shape[0] > 1:
            if M.shape[0] % 2:
                M = torch.cat([M, _log_identity(S, f64).unsqueeze(0)])
            M = torch.logsumexp(M[0::2].unsqueeze(3) + M[1::2].unsqueeze(1), dim=2)
        vec = torch.logsumexp(vec.unsqueeze(1) + M[0], dim=0)
    return float(torch.logsumexp(vec + end + final.to(f64)[lab], dim=0))


def _log_identity(n: int, dtype) -> Tensor:
    eye = torch.full((n, n), NEG_INF, dtype=dtype)
    eye.fill_diagonal_(0.0)
    return eye


def label_table_lengths_list(durations: Tensor) -> list[int]:
    """K_c per label as Python ints (see :func:`genoseg.crf.inputs.label_table_lengths`)."""
    return [int(k) for k in label_table_lengths(durations)]


Chain = Sequence[tuple[int, int, int]]


def check_chain(chain: Chain, length: int | None, n_labels: int, where: str) -> None:
    """Raise ValueError unless ``chain`` is a non-empty list of consecutive segments
    ``(start, end, label)`` (0-based half-open, each starting where the previous ends)
    inside [0, length) (``None``: length not known yet) with labels < n_labels. ``where``
    names it in the message."""
    if len(chain) == 0:
        raise ValueError(f"{where} is empty: a chain has at least one segment")
    prev = None
    for i, seg in enumerate(chain):
        if len(seg) != 3:
            raise ValueError(f"{where}[{i}] = {seg!r} is not (start, end, label)")
        s, e, c = (int(v) for v in seg)
        inside = 0 <= s < e and (length is None or e <= length)
        if not inside or not 0 <= c < n_labels:
            span = "a segment" if length is None else f"a segment of [0, {length})"
            raise ValueError(f"{where}[{i}] = {(s, e, c)} is not {span} with a label < {n_labels}")
        if prev is not None and s != prev:
            raise ValueError(f"{where}[{i}] starts at {s}, but the previous segment ends at {prev}")
        prev = e


def _outside(x: CRFInputs, b: int, P: Tensor, dur: Tensor, bound: Tensor | None) -> list[Tensor]:
    """beta[e] (C,) float64 for e = 0..L: log-sum over continuations [e, L) after a label-c
    segment ending at e (final[c] at e = L): the mirror image of :func:`_chart`, looping
    over every next segment (e, e + d, c2)."""
    f64 = torch.float64
    L = int(x.lengths[b])
    C = x.C
    A, final = x.transitions.detach().to(f64), x.final.detach().to(f64)
    zeros = torch.zeros(L, C, dtype=f64)
    ss = x.seg_start[b, :L].detach().to(f64) if x.seg_start is not None else zeros
    se = x.seg_end[b, :L].detach().to(f64) if x.seg_end is not None else zeros
    W = dur.shape[1]
    beta: list[Tensor] = [torch.empty(0)] * (L + 1)
    beta[L] = final
    for e in range(L - 1, -1, -1):
        n = min(L - e, W)
        d = torch.arange(1, n + 1)
        # row d-1: a label-c2 segment [e, e + d) and everything after it
        seg = ss[e] + (P[e + 1 : e + n + 1] - P[e]) + dur[:, :n].T + se[e : e + n]
        if bound is not None:
            seg = seg.masked_fill(d.unsqueeze(1) > bound[e : e + n], NEG_INF)
        after = torch.stack(beta[e + 1 : e + n + 1])
        nxt = torch.logsumexp(seg + after, 0)  # (C,) suffixes starting with c2 at e
        beta[e] = torch.logsumexp(A + nxt.unsqueeze(0), 1)  # (C,) from source label c
    return beta


def chain_marginals(*args, chains: Sequence[Sequence[Chain]], **kwargs) -> list[Tensor]:
    """P(every segment of the chain is a segment of the path), per chain, by an explicit
    inside-outside computation: for a chain [(s1, e1, c1), ..., (sn, en, cn)] (consecutive
    segments, 0-based half-open), log P = alpha_in(s1, c1) + sum of the segments' scores +
    sum of A[c_k, c_k+1] + beta_out(en, cn) - log Z, with alpha_in the forward sum of
    prefixes ending at s1 followed by a label-c1 start (init at 0) and beta_out the sum of
    continuations after en (final at L). ``chains[b]``: list of chains of batch element b.
    Returns one float64 tensor (n_chains,) per batch element; forbidden chains get 0."""
    x = _as_inputs(*args, **kwargs)
    if len(chains) != x.B:
        raise ValueError(
            f"chains must have {x.B} entries (one list per sequence), got {len(chains)}"
        )
    f64 = torch.float64
    out = []
    with torch.no_grad():
        for b in range(x.B):
            L = int(x.lengths[b])
            for i, ch in enumerate(chains[b]):
                check_chain(ch, L, x.C, f"chains[{b}][{i}]")
            logz, alpha, _, dur, P, _, bound = _chart(LogSemiring, x, b)
            if not math.isfinite(float(logz)):
                raise ValueError(
                    f"no segmentation has a finite score for batch element(s) [{b}]: every "
                    "path is forbidden"
                )
            beta = _outside(x, b, P, dur, bound)
            A, init = x.transitions.to(f64), x.init.to(f64)
            probs = []
            for ch in chains[b]:
                s1, _, c1 = ch[0]
                total = init[c1] if s1 == 0 else torch.logsumexp(alpha[s1] + A[:, c1], 0)
                for k, (s, e, c) in enumerate(ch):
                    total = total + _segment_score(x, b, s, e, c, dur, P, bound)
                    if k + 1 < len(ch):
                        total = total + A[c, ch[k + 1][2]]
                en, cn = ch[-1][1], ch[-1][2]
                total = total + beta[en][cn] - logz
                probs.append(math.exp(float(total)) if math.isfinite(float(total)) else 0.0)
            out.append(torch.tensor(probs, dtype=f64))
    return out


def _segment_score(x: CRFInputs, b: int, s, e, c, dur: Tensor, P: Tensor, bound) -> Tensor:
    """Score of one segment (s, e, c) without init/final/transitions: content, length,
    boundary scores; -inf if forbidden by max_dur/label_mask or its length."""
    f64 = torch.float64
    d = e - s
    if d > dur.shape[1] or (bound is not None and d > int(bound[e - 1, c])):
        return torch.tensor(NEG_INF, dtype=f64)
    total = P[e, c] - P[s, c] + dur[c, d - 1]
    if x.seg_start is not None:
        total = total + x.seg_start[b, s, c].to(f64)
    if x.seg_end is not None:
        total = total + x.seg_end[b, e - 1, c].to(f64)
    return total
