"""Chunk-parallel decoding of one contig (genoseg.crf.parallel) against the sequential
streams / one call: identical Viterbi paths, posteriors and chain marginals within 1e-6,
with overlaps short enough that the convergence check must lengthen them and long enough
that it must not; parts really run on several threads; the batched (GPU) code path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from genoseg import crf
from genoseg.crf import parallel as par

NEG = float("-inf")


def synthetic(T: int, seed: int, C: int = 5, K: int = 16, scale: float = 0.3):
    """A small grammar with long tailed labels (slow geometric tails: runs of hundreds of
    positions), forbidden transitions, an init/final that differ from the open ones, and
    random emissions and boundary scores. Returns (tables, rows, tensors)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(C, C, generator=g) - 4.0  # costly label changes: long segments
    A[0, 3] = A[3, 0] = NEG
    A.fill_diagonal_(NEG)
    D = 0.3 * torch.randn(C, K, generator=g)
    D[1, 6:] = NEG  # label 1: short table, no tail
    tail = torch.tensor([-0.005, NEG, -0.01, NEG, -0.02])[:C]
    init = torch.full((C,), NEG)
    init[0] = 0.0
    final = torch.full((C,), NEG)
    final[[0, 2]] = 0.0
    h = scale * torch.randn(T, C, generator=g)
    ss = 0.5 * torch.randn(T, C, generator=g)
    se = 0.5 * torch.randn(T, C, generator=g)
    tables = dict(transitions=A, durations=D, init=init, final=final, tail=tail)

    def rows(a: int, b: int):
        return h[a:b], ss[a:b], se[a:b], None

    return tables, rows, (h[None], ss[None], se[None])


def one_call(tables, x):
    h, ss, se = x
    return dict(emissions=h, lengths=None, seg_start=ss, seg_end=se, **tables)


def gather(T: int):
    """on_chunk collector; check() returns (position, start, end) (T, C) after asserting
    that the chunks came in contig order and tile [0, T) once."""
    got: list = []

    def on_chunk(c0, c1, m):
        assert m.position.shape[:2] == (1, c1 - c0)
        got.append((c0, c1, m))

    def check():
        assert [c[0] for c in got] == [0] + [c[1] for c in got[:-1]]
        assert got[-1][1] == T
        return [
            torch.cat([getattr(m, f)[0] for _, _, m in got]) for f in ("position", "start", "end")
        ]

    return on_chunk, check


def path_chains(path, T, bounds):
    """Single segments, runs of 3 consecutive segments and every segment run crossing a
    planned core boundary (which core_boundaries must then move)."""
    chains = [[s] for s in path[::3]]
    chains += [path[i : i + 3] for i in range(0, len(path) - 3, 7)]
    for a in bounds:
        i = next(i for i, s in enumerate(path) if s[1] > a)
        chains.append(path[max(0, i - 2) : i + 3])
    return chains


@pytest.mark.parametrize("mode", ["threads", "batch"])
def test_viterbi_identical_short_and_long_overlap(mode):
    T = 3001
    tables, rows, x = synthetic(T, 0)
    want = crf.viterbi(**one_call(tables, x))[1][0]
    assert par.sequential_viterbi(rows, T, tables, chunk=500) == want
    short = par.parallel_viterbi(rows, T, tables, parts=4, overlap=4, chunk=300, mode=mode)
    assert short.segments == want
    assert short.report.lengthened >= 1 and short.report.part_runs > 4
    assert len(short.report.boundaries) == 3
    assert all(o > 4 for o in short.report.overlaps)
    longo = par.parallel_viterbi(rows, T, tables, parts=4, overlap=600, chunk=300, mode=mode)
    assert longo.segments == want
    assert longo.report.lengthened == 0 and longo.report.part_runs == 4
    kept = par.parallel_viterbi(rows, T, tables, parts=4, overlap=4, chunk=300, mode=mode,
                                keep_pointers=10 * T)  # fmt: skip
    assert kept.segments == want
    # the stitch points are segment ends of the path near the core boundaries
    ends = {e for _, e, _ in want}
    assert all(x in ends for x in longo.report.stitches)


@pytest.mark.parametrize("mode", ["threads", "batch"])
def test_posteriors_and_chains_within_1e6(mode):
    T = 2500
    tables, rows, x = synthetic(T, 1)
    kw = one_call(tables, x)
    ref = crf.marginals(**kw)
    path = crf.viterbi(**kw)[1][0]
    bounds = par.core_boundaries(T, 3)
    chains = path_chains(path, T, bounds)
    ref_chains = crf.chain_marginals(**kw, chains=[chains])[0]
    log_z = float(crf.log_partition(**kw)[0])
    for overlap, lengthened in ((4, True), (1200, False)):
        on_chunk, collected = gather(T)
        out = par.parallel_posteriors(
            rows, T, tables, parts=3, overlap=overlap, chunk=400, mode=mode, chains=chains,
            on_chunk=on_chunk,
        )  # fmt: skip
        assert (out.report.lengthened >= 1) == lengthened, out.report
        assert not out.report.fallback
        # boundaries moved out of the chains: none lies strictly inside one
        for a in out.report.boundaries:
            assert not any(ch[0][0] < a < ch[-1][1] for ch in chains)
        for got, want in zip(collected(), (ref.position, ref.start, ref.end), strict=True):
            assert got.dtype == torch.float32
            assert float((got.double() - want[0].double()).abs().max()) < 1e-6
        assert float((out.chain_marginals - ref_chains).abs().max()) < 1e-6
        assert int((out.chain_marginals > 0.01).sum()) >= 5  # likely chains, not all zeros
        assert abs(out.log_z - log_z) < 1e-6 * abs(log_z)
        assert max(out.report.band_diff) <= 1e-7


def test_gene_grammar_random_dna():
    """The default gene grammar (45 labels, exon K = 15,000, ORF max_dur) on random DNA with
    random emissions, against the streams made with the contig's own init/final."""
    from genoseg.grammar import compile_window, load_grammar

    T = 12_000
    rng = np.random.default_rng(3)
    s = compile_window(load_grammar(), rng.integers(0, 4, T).astype(np.uint8))
    C = s.transitions.shape[0]
    h = 2.0 * torch.randn(T, C, generator=torch.Generator().manual_seed(3))
    tables = dict(transitions=s.transitions, durations=s.durations, init=s.init,
                  final=s.final, tail=s.tail)  # fmt: skip
    cols = (h, s.seg_start, s.seg_end, s.max_dur)

    def rows(a, b):
        return tuple(t[a:b] for t in cols)

    whole = tuple(t[None] for t in cols)
    vs = crf.ViterbiStream(**tables)
    vs.forward(*whole)
    want = vs.backward(*whole)[0]
    pv = par.parallel_viterbi(rows, T, tables, parts=3, overlap=40, chunk=3000)
    assert pv.segments == want
    assert pv.report.lengthened >= 1
    chains = [[seg] for seg in want if seg[2] != 0]
    ps = crf.PosteriorStream(**tables, chains=[chains])
    ps.forward(*whole)
    ref = ps.backward(*whole)
    on_chunk, collected = gather(T)
    out = par.parallel_posteriors(
        rows, T, tables, parts=3, overlap=300, chunk=3000, chains=chains, on_chunk=on_chunk
    )
    assert out.report.lengthened >= 1
    for got, w in zip(collected(), (ref.position, ref.start, ref.end), strict=True):
        assert float((got.double() - w[0].double()).abs().max()) < 1e-6
    assert float((out.chain_marginals - ps.chain_marginals()[0]).abs().max()) < 1e-6
    assert abs(out.log_z - float(ps.log_z()[0])) < 1e-9 * abs(out.log_z)


def test_start_never_forgotten_lengthens_to_the_contig_start():
    """Two label classes that never meet: the part's open start cannot tell which one the
    contig is in, so no overlap short of the contig start converges; the check keeps
    lengthening until the windows reach position 0, and the result is still exact."""
    T, C = 1200, 4
    g = torch.Generator().manual_seed(5)
    A = torch.full((C, C), NEG)
    A[0, 1] = A[1, 0] = A[2, 3] = A[3, 2] = 0.0
    D = torch.randn(C, 8, generator=g)
    tail = torch.full((C,), -0.1)
    init = torch.tensor([0.0, NEG, NEG, NEG])
    final = torch.zeros(C)
    h = torch.randn(T, C, generator=g)
    tables = dict(transitions=A, durations=D, init=init, final=final, tail=tail)

    def rows(a, b):
        return h[a:b], None, None, None

    kw = dict(emissions=h[None], lengths=None, **tables)
    on_chunk, collected = gather(T)
    out = par.parallel_posteriors(rows, T, tables, parts=3, overlap=16, chunk=200,
                                  on_chunk=on_chunk)  # fmt: skip
    ref = crf.marginals(**kw)
    assert float((collected()[0].double() - ref.position[0].double()).abs().max()) < 1e-6
    assert all(o >= a for o, a in zip(out.report.overlaps, out.report.boundaries, strict=True))
    assert not out.report.fallback
    pv = par.parallel_viterbi(rows, T, tables, parts=3, overlap=16, chunk=200)
    assert pv.segments == crf.viterbi(**kw)[1][0]


def test_unreachable_tolerance_falls_back_to_sequential():
    T = 900
    tables, rows, x = synthetic(T, 2)
    on_chunk, collected = gather(T)
    out = par.parallel_posteriors(
        rows, T, tables, parts=3, overlap=8, chunk=100, tol=1e-300, on_chunk=on_chunk
    )
    assert out.report.fallback
    ref = crf.marginals(**one_call(tables, x))
    assert torch.equal(collected()[0], ref.position[0])  # the sequential stream itself


def test_parts_run_on_several_threads():
    T = 2000
    tables, rows, _ = synthetic(T, 4)
    seen: set[int] = set()

    def spy(a, b):
        seen.add(threading.get_ident())
        return rows(a, b)

    par.parallel_viterbi(spy, T, tables, parts=4, overlap=300, chunk=100, workers=2,
                         mode="threads", thread_safe_rows=True)  # fmt: skip
    assert len(seen - {threading.get_ident()}) == 2


def test_core_boundaries():
    assert par.core_boundaries(100, 4) == [25, 50, 75]
    assert par.core_boundaries(10, 1) == []
    # a run of overlapping chains [20, 40) takes the cut at 25 to 20 and the one at 50 stays
    chains = [[(20, 30, 0)], [(28, 35, 1), (35, 40, 0)], [(60, 70, 1)]]
    assert par.core_boundaries(100, 4, chains) == [20, 50, 75]
    assert par.core_boundaries(100, 2, [[(10, 95, 0)]]) == [10]  # the nearer end
    assert par.core_boundaries(100, 2, [[(0, 100, 0)]]) == []  # one part


def test_bad_arguments():
    T = 50
    tables, rows, _ = synthetic(T, 0)
    with pytest.raises(ValueError, match="parts"):
        par.parallel_viterbi(rows, T, tables, parts=0)
    with pytest.raises(ValueError, match="overlap"):
        par.parallel_viterbi(rows, T, tables, parts=2, overlap=0)
    with pytest.raises(ValueError, match="init"):
        par.parallel_viterbi(rows, T, {"transitions": tables["transitions"],
                                       "durations": tables["durations"]}, parts=2)  # fmt: skip
    with pytest.raises(ValueError, match="mode"):
        par.parallel_viterbi(rows, T, tables, parts=2, mode="gpu")
    with pytest.raises(ValueError, match=r"rows\(0, \d+\) entry 0 has shape"):
        par.parallel_viterbi(lambda a, b: (torch.zeros(3, 5), None, None, None), T, tables,
                             parts=2)  # fmt: skip
    with pytest.raises(ValueError, match=r"chains\[0\]"):
        par.parallel_posteriors(rows, T, tables, parts=2, chains=[[(10, 60, 0)]])


def test_stream_kernels_release_the_gil():
    """Threads give parallelism only if the numba kernels of batch-1 streams run without
    the GIL: the main thread must keep running Python while a stream works in another."""
    C, K, T = 8, 100, 150_000
    g = torch.Generator().manual_seed(0)
    A, D, z = torch.randn(C, C, generator=g), torch.randn(C, K, generator=g), torch.zeros(C)
    h = torch.randn(1, T, C, generator=g)
    crf.PosteriorStream(A, D, z, z).forward(h[:, :10])  # compile outside the measurement
    ps = crf.PosteriorStream(A, D, z, z)
    counts = []
    for call in (lambda: ps.forward(h), lambda: ps.backward(h)):
        th = threading.Thread(target=call)
        n = 0
        th.start()
        while th.is_alive():
            n += 1
        counts.append(n)
    # a kernel holding the GIL leaves the main thread a few thousand iterations at most
    assert min(counts) > 100_000, counts


def test_viterbi_desert_lengthens_past_the_segment_at_once():
    """A path that is one long segment across a core boundary (a gene desert) has no
    segment end to stitch at: once both paths hold one segment across the stitch zone, the
    overlap is lengthened past that segment in one step (here past the contig, so the contig
    is decoded sequentially) instead of doubling and redoing both parts again and again.
    The path is still the sequential one."""
    T = 4000
    tables, _, x = synthetic(T, 3)
    h, ss, se = (t[0].clone() for t in x)
    h[:, 0] += 3.0  # label 0 (tailed) wins everywhere: one segment [0, T)
    x = (h[None], ss[None], se[None])

    def rows(a: int, b: int):
        return h[a:b], ss[a:b], se[a:b], None

    want = crf.viterbi(**one_call(tables, x))[1][0]
    assert len(want) == 1
    got = par.parallel_viterbi(rows, T, tables, parts=2, overlap=50, chunk=500)
    assert got.segments == want
    # (doubling alone took 7 doublings, 16 part runs, before falling back)
    assert got.report.fallback and got.report.part_runs <= 4 and got.report.lengthened <= 1


def test_posteriors_reduce_keeps_only_what_the_caller_asks():
    """``reduce`` runs in the worker on every core chunk; on_chunk gets its result, in
    contig order, covering every row once (also through the sequential fallback)."""
    T = 2500
    tables, rows, x = synthetic(T, 1)
    ref = crf.marginals(**one_call(tables, x))
    for parts, overlap in ((3, 1200), (3, 4)):
        got = []
        par.parallel_posteriors(
            rows, T, tables, parts=parts, overlap=overlap, chunk=300,
            reduce=lambda a, b, m: (a, b, m.position[0].sum(-1).double().numpy()),
            on_chunk=lambda a, b, r, got=got: got.append((a, b, r)),
        )  # fmt: skip
        assert [g[0] for g in got] == sorted(g[0] for g in got)
        assert got[0][0] == 0 and got[-1][1] == T
        assert all(u[1] == v[0] for u, v in zip(got[:-1], got[1:]))
        for a, b, (ra, rb, sums) in got:
            assert (ra, rb) == (a, b)
            np.testing.assert_allclose(sums, ref.position[0, a:b].sum(-1).numpy(), atol=1e-6)
