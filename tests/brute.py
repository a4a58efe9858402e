"""Brute-force enumeration of every segmentation of a tiny sequence (tests only)."""

from __future__ import annotations

import itertools
import math

import torch

from genoseg.crf.reference import score_segmentation


def all_segmentations(length: int, n_labels: int):
    """Yield every labelled tiling of [0, length) as [(start, end, label)]."""
    for mask in range(1 << (length - 1)):
        cuts = [0] + [i + 1 for i in range(length - 1) if mask >> i & 1] + [length]
        spans = list(zip(cuts[:-1], cuts[1:]))
        for labels in itertools.product(range(n_labels), repeat=len(spans)):
            yield [(s, e, c) for (s, e), c in zip(spans, labels)]


def enumerate_scores(emissions, length, **kw):
    """[(segments, score)] for one sequence; emissions (T, C); kw: the other §1 inputs
    without batch dim (seg_start/seg_end/max_dur as (T, C))."""
    h = emissions[:length]
    kw = dict(kw)
    for k in ("seg_start", "seg_end", "max_dur"):
        if kw.get(k) is not None:
            kw[k] = kw[k][:length]
    out = []
    for segs in all_segmentations(length, h.shape[1]):
        out.append((segs, score_segmentation(h, segs, **kw)))
    return out


def brute_log_z(scores) -> float:
    vals = [s for _, s in scores if s != -math.inf]
    if not vals:
        return -math.inf
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


def brute_marginals(scores, length, n_labels, log_z):
    """Position, start and end posteriors (length, C) as float64 tensors."""
    pos = torch.zeros(length, n_labels, dtype=torch.float64)
    start = torch.zeros_like(pos)
    end = torch.zeros_like(pos)
    for segs, s in scores:
        if s == -math.inf:
            continue
        p = math.exp(s - log_z)
        for a, b, c in segs:
            pos[a:b, c] += p
            start[a, c] += p
            end[b - 1, c] += p
    return pos, start, end
