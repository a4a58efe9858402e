"""Exact segment and chain marginals: P(every segment of a chain of consecutive segments
is a segment of the path). Reference against brute-force enumeration, the CPU engine
against the reference, streaming against one call, numerics at chromosome scale."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoseg import crf
from tests.brute import brute_log_z, enumerate_scores
from tests.test_crf import _one, _problem

NEG = float("-inf")
F64 = torch.float64
PARAMS = ("transitions", "durations", "init", "final", "tail")
POSITIONAL = ("emissions", "seg_start", "seg_end", "max_dur", "label_mask")


def _args(kw):
    return {k: v for k, v in kw.items() if k != "emissions"}


def brute_chain_marginals(scores, log_z, chains):
    """Sum of P(path) over the paths containing every segment of each chain."""
    out = []
    for ch in chains:
        want = {tuple(s) for s in ch}
        p = 0.0
        for segs, s in scores:
            if s != NEG and want <= set(segs):
                p += math.exp(s - log_z)
        out.append(p)
    return out


def random_chains(rng: random.Random, L: int, C: int, paths, n: int = 12):
    """Sub-chains of the given segmentations (likely chains) and arbitrary chains (often
    forbidden or improbable), including single segments."""
    chains = []
    for _ in range(n):
        if paths and rng.random() < 0.6:
            segs = rng.choice(paths)
            i = rng.randrange(len(segs))
            j = rng.randrange(i, len(segs))
            chains.append([tuple(s) for s in segs[i : j + 1]])
        else:
            s = rng.randrange(L)
            ch = []
            while s < L and (not ch or rng.random() < 0.5):
                e = rng.randint(s + 1, L)
                ch.append((s, e, rng.randrange(C)))
                s = e
            chains.append(ch)
    return chains


@st.composite
def tiny_problems(draw):
    T = draw(st.integers(1, 7))
    C = draw(st.integers(1, 3 if T <= 6 else 2))
    K = draw(st.integers(1, 4))
    kw = _problem(
        T, C, K,
        seed=draw(st.integers(0, 2**31 - 1)),
        tail=draw(st.booleans()),
        bounds=draw(st.booleans()),
        max_dur=draw(st.booleans()),
        forbid=draw(st.sampled_from([0.0, 0.2, 0.5])),
        mask=draw(st.booleans()),
    )  # fmt: skip
    return T, C, kw, draw(st.integers(0, 10**6))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_problems())
def test_chain_marginals_match_brute_force(problem):
    T, C, kw, seed = problem
    scores = enumerate_scores(kw["emissions"][0], T, **_one(kw))
    log_z = brute_log_z(scores)
    if log_z == NEG:
        return
    rng = random.Random(seed)
    likely = sorted((s for s in scores if s[1] != NEG), key=lambda s: -s[1])[:5]
    chains = random_chains(rng, T, C, [segs for segs, _ in likely])
    want = torch.tensor(brute_chain_marginals(scores, log_z, chains), dtype=F64)
    for backend in ("reference", "cpu"):
        got = crf.chain_marginals(kw["emissions"], None, **_args(kw), chains=[chains],
                                  backend=backend)  # fmt: skip
        assert len(got) == 1 and got[0].dtype == F64 and got[0].shape == (len(chains),)
        torch.testing.assert_close(got[0], want, atol=1e-9, rtol=1e-9, msg=backend)


def test_single_segments_are_the_segment_posteriors_summed_to_boundaries():
    """Every segment's marginal, summed over the segments ending at t with label c, is
    the end posterior at t (and over those starting at s, the start posterior)."""
    T, C, K = 9, 3, 4
    kw = _problem(T, C, K, seed=4, max_dur=True, forbid=0.1)
    segs = [(s, e, c) for s in range(T) for e in range(s + 1, T + 1) for c in range(C)]
    p = crf.chain_marginals(kw["emissions"], None, **_args(kw), chains=[[[s] for s in segs]])[0]
    m = crf.marginals(kw["emissions"], None, **_args(kw))
    end = torch.zeros(T, C, dtype=F64)
    start = torch.zeros(T, C, dtype=F64)
    for (s, e, c), v in zip(segs, p.tolist()):
        end[e - 1, c] += v
        start[s, c] += v
    torch.testing.assert_close(end, m.end[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(start, m.start[0], atol=1e-12, rtol=0)


def _path_chains(kw, lengths, B, seed, n=25):
    """Chains per batch element: sub-chains of the Viterbi path and of paths that differ
    from it, single segments, forbidden ones."""
    _, paths = crf.viterbi(kw["emissions"], lengths, **_args(kw))
    rng = random.Random(seed)
    C = kw["emissions"].shape[2]
    out = []
    for b in range(B):
        L = int(lengths[b]) if lengths is not None else kw["emissions"].shape[1]
        out.append(random_chains(rng, L, C, [paths[b]], n))
        out[b].append(list(paths[b]))  # the whole best path
    return out


@pytest.mark.parametrize("seed", range(3))
def test_cpu_equals_reference_batch_mixed_lengths(seed):
    """Batch with mixed lengths, tails, boundary scores, max_dur, label_mask."""
    B, T, C, K = 3, 40, 4, 6
    kw = _problem(T, C, K, B=B, seed=seed, max_dur=True, forbid=0.1, mask=seed == 2)
    if seed == 2:  # keep it feasible: label 0 allowed everywhere, any length
        kw["label_mask"][:, :, 0] = True
        kw["max_dur"][:, :, 0] = T + 1
        kw["transitions"][0, 0] = 0.0
        kw["init"][0] = kw["final"][0] = 0.0
    lengths = torch.tensor([T, 17, 1])
    chains = _path_chains(kw, lengths, B, seed)
    got = crf.chain_marginals(kw["emissions"], lengths, **_args(kw), chains=chains)
    want = crf.chain_marginals(
        kw["emissions"], lengths, **_args(kw), chains=chains, backend="reference"
    )
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-9)
    assert any(float(g.max()) > 0.1 for g in got)


def test_forbidden_and_certain_chains():
    """The single allowed path of test_crf: its chains have probability 1, others 0."""
    T, C, K = 6, 3, 4
    h = torch.randn(1, T, C, dtype=F64)
    A = torch.full((C, C), NEG, dtype=F64)
    A[0, 1], A[1, 0] = 0.5, -0.25
    D = torch.full((C, K), NEG, dtype=F64)
    D[0, 1], D[0, 0], D[1, 2] = 0.1, 0.2, 0.3
    init = final = torch.tensor([0.0, NEG, NEG], dtype=F64)
    ss = torch.zeros(1, T, C, dtype=F64)
    ss[0, 2, 0] = ss[0, 4, 0] = NEG
    chains = [[(0, 2, 0), (2, 5, 1), (5, 6, 0)], [(2, 5, 1)], [(2, 5, 1), (5, 6, 0)],
              [(0, 1, 0)], [(2, 5, 2)], [(0, 2, 0), (2, 4, 1)]]  # fmt: skip
    for backend in ("cpu", "reference"):
        p = crf.chain_marginals(h, None, A, D, init, final, seg_start=ss, chains=[chains],
                                backend=backend)[0]  # fmt: skip
        assert p.tolist() == pytest.approx([1, 1, 1, 0, 0, 0], abs=1e-12), backend


@pytest.mark.parametrize(
    "chain,match",
    [
        ([], r"chains\[0\]\[0\] is empty"),
        ([(0, 3, 0), (4, 6, 1)], r"chains\[0\]\[0\]\[1\] starts at 4, but the previous"),
        ([(3, 3, 0)], r"chains\[0\]\[0\]\[0\] = \(3, 3, 0\) is not a segment of \[0, 8\)"),
        ([(5, 9, 0)], r"is not a segment of \[0, 8\)"),
        ([(0, 2, 3)], r"with a label < 3"),
        ([(0, 2)], r"is not \(start, end, label\)"),
    ],
)
def test_bad_chains_are_errors(chain, match):
    kw = _problem(8, 3, 3, seed=0)
    for backend in ("cpu", "reference"):
        with pytest.raises(ValueError, match=match):
            crf.chain_marginals(kw["emissions"], None, **_args(kw), chains=[[chain]],
                                backend=backend)  # fmt: skip
    with pytest.raises(ValueError, match="chains must have 1 entries"):
        crf.chain_marginals(kw["emissions"], None, **_args(kw), chains=[[], []])


def _stream_chains(kw, chains, sizes, B, checkpoint=None, late=False):
    """Chain marginals from a PosteriorStream fed ``sizes`` chunks; ``late``: the chains
    given after pass 1 (set_chains)."""
    params = {k: kw[k] for k in PARAMS}
    names = [k for k in POSITIONAL if k in kw]
    ps = crf.PosteriorStream(**params, batch=B, chains=None if late else chains,
                             checkpoint=checkpoint)  # fmt: skip
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for a, n in zip(starts, sizes):
        ps.forward(*[kw[k][:, a : a + n] for k in names])
    if late:
        ps.set_chains(chains)
    with pytest.raises(ValueError, match="needs every chunk of pass 2"):
        ps.chain_marginals()
    for a, n in reversed(list(zip(starts, sizes))):
        ps.backward(*[kw[k][:, a : a + n] for k in names])
    return ps.chain_marginals()


@pytest.mark.parametrize("mask", [False, True])
def test_stream_chains_equal_one_call(mask):
    """PosteriorStream(chains=...) equals one chain_marginals call, for several
    chunkings (1-row chunks, chains crossing chunk boundaries, a tail segment longer than
    K spanning several chunks)."""
    B, T, C, K = 2, 300, 3, 5
    kw = _problem(T, C, K, B=B, seed=7, max_dur=True, mask=mask, forbid=0.0)
    kw["tail"] = torch.tensor([-0.02, NEG, -0.5], dtype=F64)
    kw["max_dur"][:, :, 0] = T + 1  # label 0: unbounded, long tail segments
    kc2 = int(crf.inputs.label_table_lengths(kw["durations"])[2])
    kw["max_dur"][:, :, 2] = kw["max_dur"][:, :, 2].clamp(max=kc2)  # its tail cut off
    kw["emissions"][:, 100:220, 0] += 20.0  # a likely 120-long label-0 segment
    if mask:
        kw["label_mask"][:, :, 0] = True
    kw["transitions"][0, 0] = NEG
    chains = _path_chains(kw, None, B, seed=1, n=40)
    _, paths = crf.viterbi(kw["emissions"], None, **_args(kw))
    long = [s for s in paths[0] if s[1] - s[0] > K]
    assert long, paths[0]  # a tail segment is among the chains
    chains[0] += [[s] for s in long] + [[(0, T, 0)], [(5, 6, 1), (6, 300, 0)]]
    want = crf.chain_marginals(kw["emissions"], None, **_args(kw), chains=chains)
    ref_p = crf.chain_marginals(kw["emissions"], None, **_args(kw), chains=chains,
                                backend="reference")  # fmt: skip
    for w, r in zip(want, ref_p):
        torch.testing.assert_close(w, r, atol=1e-10, rtol=1e-9)
    for sizes in ([T], [1] * 7 + [T - 7], [37, 1, 62, 100, 100], [50] * 6):
        for late in (False, True):
            got = _stream_chains(kw, chains, sizes, B, checkpoint=16, late=late)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-10)


def test_stream_chain_errors():
    kw = _problem(20, 2, 3, seed=0, bounds=False)
    params = {k: kw[k] for k in PARAMS}
    with pytest.raises(ValueError, match="chains must have 1 entries"):
        crf.PosteriorStream(**params, chains=[[], []])
    with pytest.raises(ValueError, match=r"chains\[0\]\[0\]\[0\] = \(4, 2, 0\) is not a segment"):
        crf.PosteriorStream(**params, chains=[[[(4, 2, 0)]]])
    ps = crf.PosteriorStream(**params, chains=[[[(3, 8, 1)], [(15, 25, 0)]]])
    ps.forward(kw["emissions"])
    with pytest.raises(ValueError, match=r"chains\[0\]\[1\] ends at 25, after the end"):
        ps.backward(kw["emissions"])
    with pytest.raises(ValueError, match="has no chains"):
        crf.PosteriorStream(**params).chain_marginals()
    ps = crf.PosteriorStream(**params)
    ps.forward(kw["emissions"])
    with pytest.raises(ValueError, match=r"chains\[0\]\[0\] ends at 25, after the end"):
        ps.set_chains([[[(15, 25, 0)]]])
    ps = crf.PosteriorStream(**params, chains=[[[(3, 8, 1)]]])
    with pytest.raises(ValueError, match="has chains already"):
        ps.set_chains([[[(3, 8, 1)]]])
    ps = crf.PosteriorStream(**params)
    ps.forward(kw["emissions"])
    ps.backward(kw["emissions"])
    with pytest.raises(ValueError, match="after backward"):
        ps.set_chains([[[(3, 8, 1)]]])


@pytest.mark.slow
def test_chain_marginals_stable_at_a_million_positions_with_large_prefix_sums():
    """T = 10^6, and the same problem with prefix sums of 1e9 (emissions[0, c] - c·1e9,
    init[c] + c·1e9): the chain marginals agree to 1e-6, one call and streamed."""
    from tests.test_crf_hardening import _shifted_problem

    T = 1_000_000
    kw, big = _shifted_problem(T, seed=3)
    _, paths = crf.viterbi(kw["emissions"], None, **_args(kw))
    path = paths[0]
    rng = random.Random(0)
    chains = []
    for _ in range(300):
        i = rng.randrange(len(path))
        chains.append(path[i : i + rng.randint(1, 4)])
    chains += [path[:3], path[-3:], [(10, 20, 1)]]
    small_p = crf.chain_marginals(kw["emissions"], None, **_args(kw), chains=[chains])[0]
    big_p = crf.chain_marginals(big["emissions"], None, **_args(big), chains=[chains])[0]
    assert float(small_p.max()) > 0.5
    assert (small_p - big_p).abs().max() < 1e-6, (small_p - big_p).abs().max()
    params = {k: big[k] for k in PARAMS}
    ps = crf.PosteriorStream(**params, chains=[chains])
    bounds = [(a, min(a + 300_000, T)) for a in range(0, T, 300_000)]
    for a, b in bounds:
        ps.forward(big["emissions"][:, a:b])
    for a, b in reversed(bounds):
        ps.backward(big["emissions"][:, a:b])
    assert (ps.chain_marginals()[0] - small_p).abs().max() < 1e-6
