"""Brute-force enumeration of every segmentation of a tiny sequence (tests only).

Scores are computed here with plain Python floats straight from the DESIGN.md §1 rule,
independently of genoseg.crf, so they can check every engine including the reference.
"""

from __future__ import annotations

import itertools
import math

import torch

NEG = -math.inf


def all_segmentations(length: int, n_labels: int):
    """Yield every labelled tiling of [0, length) as [(start, end, label)]."""
    for mask in range(1 << (length - 1)):
        cuts = [0] + [i + 1 for i in range(length - 1) if mask >> i & 1] + [length]
        spans = list(zip(cuts[:-1], cuts[1:]))
        for labels in itertools.product(range(n_labels), repeat=len(spans)):
            yield [(s, e, c) for (s, e), c in zip(spans, labels)]


def _dur(D, tail, c, d):
    finite = [i for i, v in enumerate(D[c]) if v != NEG]
    kc = finite[-1] + 1 if finite else 0
    if d <= kc:
        return D[c][d - 1]
    if kc and tail is not None and tail[c] != NEG:
        return D[c][kc - 1] + tail[c] * (d - kc)
    return NEG


def score(segs, h, A, D, init, final, tail=None, ss=None, se=None, md=None, mask=None):
    """DESIGN.md §1 score of one segmentation; all arguments plain nested lists."""
    L = segs[-1][1]
    total, prev = 0.0, None
    for s, e, c in segs:
        d = e - s
        total += sum(h[t][c] for t in range(s, e)) + _dur(D, tail, c, d)
        total += init[c] if prev is None else A[prev][c]
        if ss is not None:
            total += ss[s][c]
        if se is not None:
            total += se[e - 1][c]
        if e == L:
            total += final[c]
        if md is not None and d > md[e - 1][c]:
            return NEG
        if mask is not None and not all(mask[t][c] for t in range(s, e)):
            return NEG
        prev = c
    return total


def enumerate_scores(emissions, length, **kw):
    """[(segments, score)] for one sequence; emissions (T, C) tensor; kw: the other §1
    inputs without batch dim (seg_start/seg_end/max_dur/label_mask as (T, C) tensors)."""
    lists = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    h = emissions.tolist()
    args = dict(
        A=lists["transitions"], D=lists["durations"], init=lists["init"],
        final=lists["final"], tail=lists.get("tail"), ss=lists.get("seg_start"),
        se=lists.get("seg_end"), md=lists.get("max_dur"), mask=lists.get("label_mask"),
    )  # fmt: skip
    C = len(h[0])
    return [(segs, score(segs, h, **args)) for segs in all_segmentations(length, C)]


def brute_log_z(scores) -> float:
    vals = [s for _, s in scores if s != NEG]
    if not vals:
        return NEG
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


def brute_marginals(scores, length, n_labels, log_z):
    """Position, start and end posteriors (length, C) as float64 tensors."""
    pos = torch.zeros(length, n_labels, dtype=torch.float64)
    start = torch.zeros_like(pos)
    end = torch.zeros_like(pos)
    for segs, s in scores:
        if s == NEG:
            continue
        p = math.exp(s - log_z)
        for a, b, c in segs:
            pos[a:b, c] += p
            start[a, c] += p
            end[b - 1, c] += p
    return pos, start, end
