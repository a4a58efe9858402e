"""Semi-CRF engine: every implementation against brute-force enumeration and the float64
reference (DESIGN.md §1), edge cases, scale and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoseg import crf
from genoseg.crf import reference as ref
from tests.brute import brute_log_z, brute_marginals, enumerate_scores

NEG = float("-inf")
F64 = torch.float64
ENGINES = ["cpu", "reference"]


def _problem(
    T, C, K, B=1, seed=0, tail=True, bounds=True, max_dur=False, forbid=0.15, scale=1.0,
    mask=False,
):  # fmt: skip
    """Random §1 inputs (float64) with some forbidden entries, per-label K and tails."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=F64) * scale

    def holes(x, p):
        return x.masked_fill(torch.rand(x.shape, generator=g, dtype=F64) < p, NEG)

    D = holes(rnd(C, K), forbid)
    D[:, 0] = rnd(C)  # every label can make length-1 segments
    if K > 1:  # per-label K: cut some labels' tables short
        for c in range(C):
            kc = int(torch.randint(1, K + 1, (1,), generator=g))
            D[c, kc:] = NEG
    kw = dict(
        emissions=rnd(B, T, C),
        transitions=holes(rnd(C, C), forbid),
        durations=D,
        init=holes(rnd(C), forbid / 2),
        final=holes(rnd(C), forbid / 2),
    )
    if tail:
        t = -torch.rand(C, generator=g, dtype=F64)
        kw["tail"] = t.masked_fill(torch.rand(C, generator=g) < 0.4, NEG)
    if bounds:
        kw["seg_start"] = holes(rnd(B, T, C), forbid / 2)
        kw["seg_end"] = holes(rnd(B, T, C), forbid / 2)
    if max_dur:
        md = torch.randint(0, K + 2, (B, T, C), generator=g, dtype=torch.int32)
        if tail:  # a tailed label's bound is either <= K_c or unbounded
            kc = crf.inputs.label_table_lengths(D)
            for c in range(C):
                if math.isfinite(float(kw["tail"][c])):
                    unb = torch.rand(B, T, generator=g) < 0.6
                    md[:, :, c] = torch.where(unb, T + 1, md[:, :, c].clamp(max=int(kc[c])))
        kw["max_dur"] = md
    if mask:  # known labels at some positions (one-hot), unknown elsewhere
        known = torch.rand(B, T, generator=g) < 0.4
        gold = torch.randint(0, C, (B, T), generator=g)
        onehot = torch.nn.functional.one_hot(gold, C).bool()
        kw["label_mask"] = torch.where(known.unsqueeze(-1), onehot, torch.ones_like(onehot))
    return kw


def _one(kw, b=0):
    """Inputs of batch element b without the batch dimension (for brute force)."""
    out = {}
    for k, v in kw.items():
        if k == "emissions":
            continue
        out[k] = v[b] if k in ("seg_start", "seg_end", "max_dur", "label_mask") else v
    return out


def _call(fn, kw, lengths=None, **extra):
    args = dict(kw)
    h = args.pop("emissions")
    return fn(h, lengths, **args, **extra)


@st.composite
def tiny_problems(draw):
    T = draw(st.integers(1, 8))
    C = draw(st.integers(1, 3 if T <= 7 else 2))
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
    return T, C, kw


brute_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@brute_settings
@given(tiny_problems())
def test_all_operations_match_brute_force(problem):
    T, C, kw = problem
    scores = enumerate_scores(kw["emissions"][0], T, **_one(kw))
    log_z = brute_log_z(scores)
    if log_z == NEG:
        for be in ENGINES:
            with pytest.raises(ValueError, match="no segmentation has a finite score"):
                _call(crf.log_partition, kw, backend=be)
        return
    best_segs, best = max(scores, key=lambda s: s[1])
    pos, start, end = brute_marginals(scores, T, C, log_z)
    for be in ENGINES:
        z = _call(crf.log_partition, kw, backend=be)
        assert float(z[0]) == pytest.approx(log_z, rel=1e-9, abs=1e-9), be
        vs, paths = _call(crf.viterbi, kw, backend=be)
        assert float(vs[0]) == pytest.approx(best, rel=1e-9, abs=1e-9), be
        got = _score_of(scores, paths[0])
        assert got == pytest.approx(best, rel=1e-9, abs=1e-9), (be, paths[0], best_segs)
        m = _call(crf.marginals, kw, backend=be)
        torch.testing.assert_close(m.position[0], pos, atol=1e-9, rtol=0)
        torch.testing.assert_close(m.start[0], start, atol=1e-9, rtol=0)
        torch.testing.assert_close(m.end[0], end, atol=1e-9, rtol=0)
        torch.testing.assert_close(m.start_any[0], start.sum(-1), atol=1e-9, rtol=0)
        assert torch.allclose(m.position[0].sum(-1), torch.ones(T, dtype=F64))
    nll, z = _call(crf.nll, kw, gold_segments=[best_segs], return_log_z=True)
    assert float(nll[0]) == pytest.approx(log_z - best, rel=1e-9, abs=1e-9)
    assert float(z[0]) == pytest.approx(log_z, rel=1e-9, abs=1e-9)
    assert float(nll[0]) >= 0
    if len(scores) <= 400:  # the differentiable scorer is slow per call
        _check_nll_normalised(kw, scores, log_z)


def _check_nll_normalised(kw, scores, log_z):
    """NLL >= 0 for every segmentation and exp(-NLL) sums to 1 over all of them."""
    x = crf.check_inputs(**kw, lengths=None)
    total = 0.0
    for segs, s in scores:
        gold = crf.segmentation_score(x, 0, segs)
        assert float(gold) == pytest.approx(s, rel=1e-9, abs=1e-9) or s == float(gold) == NEG
        if s != NEG:
            total += math.exp(float(gold) - log_z)  # exp(-NLL)
            assert log_z - float(gold) >= -1e-12
    assert total == pytest.approx(1.0, rel=1e-9)


def test_nll_normalised_over_all_segmentations():
    kw = _problem(5, 3, 4, seed=21, max_dur=True, forbid=0.2)
    scores = enumerate_scores(kw["emissions"][0], 5, **_one(kw))
    _check_nll_normalised(kw, scores, brute_log_z(scores))


def _score_of(scores, segs):
    for s, v in scores:
        if s == list(segs):
            return v
    raise AssertionError(f"{segs} is not a segmentation")


@pytest.mark.parametrize("seed", range(4))
def test_cpu_gradients_equal_reference_autograd(seed):
    """Exact adjoint of the CPU engine vs autograd through the float64 reference, for
    every float input, batch with mixed lengths, per-label K, tails, bounds, max_dur."""
    B, T, C, K = 3, 37, 4, 6
    kw = _problem(T, C, K, B=B, seed=seed, max_dur=True, forbid=0.1)
    lengths = torch.tensor([T, 11, 1])
    names = [
        "emissions",
        "transitions",
        "durations",
        "init",
        "final",
        "tail",
        "seg_start",
        "seg_end",
    ]
    w = torch.randn(B, dtype=F64)  # weights per batch element test grad_output handling
    grads = {}
    for be in ENGINES:
        args = {k: (v.clone().requires_grad_(True) if k in names else v) for k, v in kw.items()}
        z = _call(crf.log_partition, args, lengths, backend=be)
        (z * w).sum().backward()
        grads[be] = {k: args[k].grad for k in names}
        grads[be]["z"] = z.detach()
    torch.testing.assert_close(grads["cpu"]["z"], grads["reference"]["z"], rtol=1e-10, atol=1e-10)
    for k in names:
        torch.testing.assert_close(
            grads["cpu"][k], grads["reference"][k], rtol=1e-8, atol=1e-9, msg=k
        )


def test_gradcheck_cpu_engine():
    B, T, C, K = 2, 7, 3, 3
    kw = _problem(T, C, K, B=B, seed=3, forbid=0.0)
    names = [
        "emissions",
        "transitions",
        "durations",
        "init",
        "final",
        "tail",
        "seg_start",
        "seg_end",
    ]
    kw["tail"] = torch.tensor([-0.3, -0.7, NEG], dtype=F64)
    leaves = [kw[k].clone().requires_grad_(True) for k in names[:-3]] + [
        kw["seg_start"].clone().requires_grad_(True),
        kw["seg_end"].clone().requires_grad_(True),
    ]

    def f(h, A, D, i, fi, ss, se):
        return crf.log_partition(
            h, torch.tensor([7, 4]), A, D, i, fi, kw["tail"], ss, se, backend="cpu"
        )

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6)
    tail = kw["tail"][:2].clone().requires_grad_(True)

    def g(t):
        return crf.log_partition(
            kw["emissions"], None, kw["transitions"], kw["durations"], kw["init"], kw["final"],
            torch.cat([t, kw["tail"][2:]]), backend="cpu",
        )  # fmt: skip

    assert torch.autograd.gradcheck(g, [tail], eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "T,K", [(1, 1), (1, 5), (3, 5), (5, 5), (6, 5), (40, 3)], ids=lambda v: str(v)
)
def test_short_lengths_and_k_against_reference(T, K):
    kw = _problem(T, 3, K, B=2, seed=T * 10 + K, max_dur=True, forbid=0.0)
    lengths = torch.tensor([T, 1])
    for fn in (crf.log_partition,):
        torch.testing.assert_close(
            _call(fn, kw, lengths, backend="cpu"), _call(fn, kw, lengths, backend="reference")
        )
    m1 = _call(crf.marginals, kw, lengths, backend="cpu")
    m2 = _call(crf.marginals, kw, lengths, backend="reference")
    for k in ("position", "start", "end"):
        torch.testing.assert_close(getattr(m1, k), getattr(m2, k), atol=1e-10, rtol=0)
    (s1, p1), (s2, p2) = (_call(crf.viterbi, kw, lengths, backend=be) for be in ENGINES)
    assert p1 == p2
    torch.testing.assert_close(s1, s2)


def test_forbidden_everywhere_but_one_path():
    """Only labels 0,1,0 with lengths 2,3,1 are allowed: log Z is that path's score and all
    posteriors are 0/1."""
    T, C, K = 6, 3, 4
    h = torch.randn(1, T, C, dtype=F64)
    A = torch.full((C, C), NEG, dtype=F64)
    A[0, 1] = 0.5
    A[1, 0] = -0.25
    D = torch.full((C, K), NEG, dtype=F64)
    D[0, 1] = 0.1  # label 0: length 2 ...
    D[0, 0] = 0.2  # ... or 1
    D[1, 2] = 0.3  # label 1: length 3
    init = torch.tensor([0.0, NEG, NEG], dtype=F64)
    final = torch.tensor([0.0, NEG, NEG], dtype=F64)
    ss = torch.zeros(1, T, C, dtype=F64)
    ss[0, 0, 0] = 0.0
    ss[0, 5, 0] = 0.0
    ss[0, 2, 0] = NEG  # label 0 cannot start at 2 ...
    ss[0, 4, 0] = NEG  # ... or at 4
    path = [(0, 2, 0), (2, 5, 1), (5, 6, 0)]
    expected = (
        float(h[0, 0:2, 0].sum() + h[0, 2:5, 1].sum() + h[0, 5, 0]) + 0.1 + 0.3 + 0.2 + 0.5 - 0.25
    )
    for be in ENGINES:
        z = crf.log_partition(h, None, A, D, init, final, seg_start=ss, backend=be)
        assert float(z) == pytest.approx(expected, rel=1e-12)
        s, p = crf.viterbi(h, None, A, D, init, final, seg_start=ss, backend=be)
        assert p == [path] and float(s) == pytest.approx(expected, rel=1e-12)
        m = crf.marginals(h, None, A, D, init, final, seg_start=ss, backend=be)
        onehot = torch.zeros(T, C, dtype=F64)
        for a, b, c in path:
            onehot[a:b, c] = 1
        torch.testing.assert_close(m.position[0], onehot)
        assert m.start_any[0].tolist() == [1, 0, 1, 0, 0, 1]


def test_all_forbidden_is_a_clear_error():
    kw = _problem(5, 2, 3, seed=1)
    kw["final"] = torch.full((2,), NEG, dtype=F64)
    for fn in (crf.log_partition, crf.marginals, crf.viterbi):
        for be in ENGINES:
            with pytest.raises(ValueError, match=r"no segmentation has a finite score .*\[0\]"):
                _call(fn, kw, backend=be)


def test_checkpoint_interval_does_not_change_bits():
    kw = _problem(300, 4, 20, B=2, seed=5, max_dur=True)
    lengths = torch.tensor([300, 123])
    runs = [
        _call(crf.marginals, kw, lengths, backend="cpu", checkpoint=c)
        for c in (1, 7, 20, 64, 299, 10_000)
    ]
    for m in runs[1:]:
        for k in ("position", "start", "end", "log_z"):
            assert torch.equal(getattr(m, k), getattr(runs[0], k)), k
    ref_m = _call(crf.marginals, kw, lengths, backend="reference")
    torch.testing.assert_close(runs[0].position, ref_m.position, atol=1e-9, rtol=0)


def test_deterministic_bits():
    kw = _problem(2000, 5, 30, B=2, seed=9, max_dur=True)
    names = ["emissions", "durations", "tail"]
    outs = []
    for _ in range(2):
        args = {k: (v.clone().requires_grad_(True) if k in names else v) for k, v in kw.items()}
        z = _call(crf.log_partition, args)
        z.sum().backward()
        outs.append([z.detach()] + [args[k].grad for k in names] + list(_call(crf.viterbi, kw)[1]))
    for a, b in zip(*outs):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


STREAM_INPUTS = ("emissions", "seg_start", "seg_end", "max_dur", "label_mask")


def _streamed(kw, chunks, batch, keep_pointers=False):
    """(log Z, best score, best paths) of kw fed chunk by chunk [(start, n)] through
    ForwardStream and the two passes of ViterbiStream (with ``keep_pointers``, pass 2 gets
    no inputs)."""
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    fs = crf.ForwardStream(**params, batch=batch)
    vs = crf.ViterbiStream(**params, batch=batch, keep_pointers=keep_pointers)
    parts = [[kw[k][:, a : a + n] if k in kw else None for k in STREAM_INPUTS] for a, n in chunks]
    for part in parts:
        fs.update(*part)
        vs.forward(*part)
    paths = [[] for _ in range(batch)]
    for part in reversed(parts):
        for b, segs in enumerate(vs.backward() if keep_pointers else vs.backward(*part)):
            paths[b] = segs + paths[b]
    return fs.log_z(), vs.score(), paths


@pytest.mark.parametrize("keep_pointers", [False, True])
def test_chunked_stream_equals_one_call(keep_pointers):
    T = 1500
    kw = _problem(T, 4, 12, B=2, seed=11, max_dur=True)
    z = _call(crf.log_partition, kw)
    vs, vp = _call(crf.viterbi, kw)
    for sizes in ([T], [1] * 13 + [T - 13], [5, 11, 700, 784]):
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        z2, s2, p2 = _streamed(kw, list(zip(starts, sizes)), 2, keep_pointers)
        assert torch.equal(z2, z.to(F64))
        assert torch.equal(s2, vs) and p2 == vp


def test_kept_pointers_check_inputs_given_again():
    """keep_pointers: pass 2 takes no inputs, and checks them when they are given."""
    kw = _problem(300, 3, 8, seed=4)
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    vs = crf.ViterbiStream(**params, keep_pointers=True)
    vs.update(kw["emissions"][:, :200])  # (the alias of forward keeps pointers too)
    vs.forward(kw["emissions"][:, 200:])
    with pytest.raises(ValueError, match="chunk has 200 rows"):
        vs.backward(kw["emissions"][:, :200])
    assert vs.backward(kw["emissions"][:, 200:]) and vs.backward()
    with pytest.raises(ValueError, match="more times than forward"):
        vs.backward()
    plain = crf.ViterbiStream(**params)
    plain.forward(kw["emissions"])
    with pytest.raises(ValueError, match="needs the chunk's inputs"):
        plain.backward()


def test_viterbi_stream_long_tail_segment_across_chunks():
    """A tail segment spanning several whole chunks is traced back across them."""
    T, C = 3000, 2
    h = torch.zeros(1, T, C, dtype=F64)
    h[0, :, 0] = 1.0
    h[0, 200:2700] = torch.tensor([0.0, 1.0], dtype=F64)
    kw = dict(
        emissions=h, transitions=torch.tensor([[NEG, -5.0], [-5.0, NEG]], dtype=F64),
        durations=torch.zeros(C, 1, dtype=F64), init=torch.zeros(C, dtype=F64),
        final=torch.zeros(C, dtype=F64), tail=torch.tensor([-0.01, -0.01], dtype=F64),
    )  # fmt: skip
    _, score, paths = _streamed(kw, [(a, 250) for a in range(0, T, 250)], 1)
    assert paths[0] == [(0, 200, 0), (200, 2700, 1), (2700, T, 0)]
    assert torch.equal(score, _call(crf.viterbi, kw)[0])
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    vs = crf.ViterbiStream(**params)
    vs.forward(h[:, :100])
    with pytest.raises(ValueError, match="more times than forward"):
        vs.backward(h[:, :100]) + vs.backward(h[:, :100])


def test_long_intron_is_one_segment_via_tail():
    """A 50 kb run of one tailed label is a single Viterbi segment; K stays small."""
    T, C = 60_000, 2
    h = torch.zeros(1, T, C)
    h[0, :, 0] = 1.0
    h[0, 5_000:55_000] = torch.tensor([0.0, 1.0])  # label 1 wins inside
    D = torch.tensor([[0.0, NEG], [0.0, NEG]])  # K_c = 1 for both, tails extend
    tail = torch.tensor([-0.01, -0.01])
    A = torch.tensor([[NEG, -5.0], [-5.0, NEG]])
    z0 = torch.zeros(C)
    s, p = crf.viterbi(h, None, A, D, z0, z0, tail)
    assert p[0] == [(0, 5_000, 0), (5_000, 55_000, 1), (55_000, T, 0)]
    x = crf.check_inputs(h, None, A, D, z0, z0, tail)
    assert float(s) == pytest.approx(float(crf.segmentation_score(x, 0, p[0])), rel=1e-6)


def test_viterbi_exact_at_long_length():
    T = 200_000
    kw = _problem(T, 3, 8, seed=2, scale=2.0, bounds=False)
    s, p = _call(crf.viterbi, kw)
    segs = p[0]
    assert segs[0][0] == 0 and segs[-1][1] == T
    assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
    x = crf.check_inputs(**kw, lengths=None)
    assert float(crf.segmentation_score(x, 0, segs)) == pytest.approx(float(s), rel=1e-12)


def test_scale_million_positions_matches_float64_reference():
    """T = 10^6, uncentred emissions ~10: finite, equal to an independent float64
    reference (linear-chain expansion reduced as a tree) and the same bits twice."""
    T, C, K = 1_000_000, 2, 3
    g = torch.Generator().manual_seed(0)
    h = torch.randn(1, T, C, generator=g) * 10 + 10  # float32, like the network's output
    kw = _problem(8, C, K, seed=4, bounds=False)
    kw["emissions"] = h
    z1 = _call(crf.log_partition, kw)
    z2 = _call(crf.log_partition, kw)
    assert torch.isfinite(z1).all() and torch.equal(z1, z2)
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    expected = ref.log_partition_linear_chain(h[0], **params)
    assert float(z1[0]) == pytest.approx(expected, rel=1e-6)
    fs = crf.ForwardStream(**params)
    for a in range(0, T, 100_000):
        fs.update(h[:, a : a + 100_000])
    assert float(fs.log_z()[0]) == pytest.approx(expected, rel=1e-9)


def test_linear_chain_reference_agrees_with_reference():
    kw = _problem(60, 3, 4, seed=7, bounds=False, forbid=0.1)
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    expected = float(_call(ref.log_partition, kw))
    assert ref.log_partition_linear_chain(kw["emissions"][0], **params, block=8) == pytest.approx(
        expected, rel=1e-12
    )


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda kw: kw.update(emissions=kw["emissions"][0, 0]), "emissions must have shape"),
        (lambda kw: kw["emissions"].__setitem__((0, 1, 1), float("nan")), "emissions contains NaN"),
        (lambda kw: kw["emissions"].__setitem__((0, 1, 1), float("inf")), "emissions contains inf"),
        (lambda kw: kw["emissions"].__setitem__((0, 1, 1), NEG), "emissions contains inf"),
        (lambda kw: kw.update(transitions=kw["transitions"][:1]), "transitions must have shape"),
        (lambda kw: kw.update(durations=kw["durations"][:, :0]), "K >= 1"),
        (lambda kw: kw.update(durations=kw["durations"][0]), "durations must have shape"),
        (lambda kw: kw["init"].__setitem__(0, float("nan")), "init contains NaN"),
        (lambda kw: kw["final"].__setitem__(0, float("inf")), r"final contains \+inf"),
        (lambda kw: kw.update(tail=kw["tail"][:1]), "tail must have shape"),
        (lambda kw: kw.update(seg_start=kw["seg_start"][:, :2]), "seg_start must have shape"),
        (lambda kw: kw.update(seg_end=kw["seg_end"].int()), "seg_end must be a floating"),
        (lambda kw: kw.update(max_dur=torch.full((1, 5, 2), -1)), "max_dur must be >= 0"),
        (lambda kw: kw.update(max_dur=torch.ones(1, 5, 2)), "max_dur must be an integer"),
        (lambda kw: kw.update(lengths=torch.tensor([0])), r"lengths must lie in \[1, T=5\]"),
        (lambda kw: kw.update(lengths=torch.tensor([6])), r"lengths must lie in \[1, T=5\]"),
        (lambda kw: kw.update(lengths=torch.tensor([5, 5])), "lengths must have shape"),
        (lambda kw: kw.update(lengths=torch.tensor([5.0])), "lengths must be an integer"),
    ],
)
def test_bad_input_names_the_argument(change, match):
    kw = _problem(5, 2, 3, seed=0)
    kw["lengths"] = None
    change(kw)
    h = kw.pop("emissions")
    lengths = kw.pop("lengths")
    for be in ENGINES:
        with pytest.raises(ValueError, match=match):
            crf.log_partition(h, lengths, **kw, backend=be)


def test_partial_tail_bound_is_rejected():
    kw = _problem(6, 2, 2, seed=0, bounds=False)
    kw["tail"] = torch.tensor([-0.5, NEG], dtype=F64)
    kw["durations"] = torch.zeros(2, 2, dtype=F64)
    md = torch.full((1, 6, 2), 100, dtype=torch.int32)
    md[0, 5, 0] = 4  # K_c = 2 < 4 < 6 = t + 1
    with pytest.raises(ValueError, match=r"max_dur\[0, 5, 0\] = 4 bounds label 0's geometric tail"):
        _call(crf.log_partition, kw, max_dur=md)


def test_unknown_backend():
    kw = _problem(5, 2, 3)
    with pytest.raises(ValueError, match="backend must be one of"):
        _call(crf.log_partition, kw, backend="gpu")


@pytest.mark.parametrize("seed", range(3))
def test_label_mask_gradients_and_stream(seed):
    """label_mask (partially known labels) on every engine: log Z, posteriors and
    gradients against the reference; streaming carries runs of allowed positions."""
    B, T, C, K = 2, 40, 3, 5
    kw = _problem(T, C, K, B=B, seed=seed, max_dur=True, mask=True, forbid=0.0)
    kw["label_mask"][:, :, 0] |= (
        torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.9
    )
    names = ["emissions", "transitions", "durations", "tail", "seg_end"]
    grads = {}
    for be in ENGINES:
        args = {k: (v.clone().requires_grad_(True) if k in names else v) for k, v in kw.items()}
        z = _call(crf.log_partition, args, backend=be)
        z.sum().backward()
        grads[be] = [z.detach()] + [args[k].grad for k in names]
    for a, b in zip(grads["cpu"], grads["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    m = _call(crf.marginals, kw)
    assert m.position[~kw["label_mask"]].abs().max() < 1e-12, "posterior on a forbidden label"
    for keep_pointers in (False, True):
        z2, _, p2 = _streamed(kw, [(0, 7), (7, 1), (8, 32)], B, keep_pointers)
        assert torch.equal(z2, grads["cpu"][0])
        assert p2 == _call(crf.viterbi, kw)[1]


def test_partial_nll():
    T, C, K = 30, 3, 4
    kw = _problem(T, C, K, seed=3, forbid=0.0, bounds=False)
    kw["transitions"].fill_diagonal_(NEG)  # no label follows itself: labels fix segments
    kw["tail"] = torch.full((C,), -0.1, dtype=F64)  # any length allowed
    gold = [(0, 3, 0), (3, 7, 1), (7, 8, 2), (8, 12, 0), (12, 30, 1)]
    onehot = torch.zeros(1, T, C, dtype=torch.bool)
    for s, e, c in gold:
        onehot[0, s:e, c] = True
    full = _call(crf.nll, kw, gold_segments=[gold])
    torch.testing.assert_close(_call(crf.partial_nll, kw, label_mask=onehot), full)
    everything = torch.ones(1, T, C, dtype=torch.bool)
    assert float(_call(crf.partial_nll, kw, label_mask=everything)) == pytest.approx(0, abs=1e-9)
    some = everything.clone()
    some[0, :8] = onehot[0, :8]  # first part known, rest masked
    h = kw["emissions"].clone().requires_grad_(True)
    part, z = _call(crf.partial_nll, {**kw, "emissions": h}, label_mask=some, return_log_z=True)
    torch.testing.assert_close(z, _call(crf.log_partition, kw))
    assert 0 < float(part.detach()) < float(full)
    part.backward()
    assert torch.isfinite(h.grad).all()


@pytest.mark.parametrize("mask", [False, True])
def test_posterior_stream_equals_one_call(mask):
    """Two-pass chunked posteriors (forward over chunks, backward in reverse) equal the
    whole-sequence marginals, with chunk boundaries inside blocks and tails."""
    B, T = 2, 900
    kw = _problem(T, 4, 12, B=B, seed=5, max_dur=True, mask=mask, forbid=0.0)
    if mask:  # keep it feasible: label 0 allowed everywhere, any length
        kw["label_mask"][:, :, 0] = True
        kw["max_dur"][:, :, 0] = T + 1
        kw["transitions"][0, 0] = 0.0
    whole = _call(crf.marginals, kw)
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    names = [k for k in ("emissions", "seg_start", "seg_end", "max_dur", "label_mask") if k in kw]
    chunks = [(0, 100), (100, 1), (101, 399), (500, 400)]
    ps = crf.PosteriorStream(**params, batch=B, checkpoint=50)
    for a, n in chunks:
        ps.forward(*[kw[k][:, a : a + n] for k in names])
    assert torch.equal(ps.log_z(), whole.log_z)
    for a, n in reversed(chunks):
        got = ps.backward(*[kw[k][:, a : a + n] for k in names])
        for f in ("position", "start", "end", "start_any"):
            torch.testing.assert_close(
                getattr(got, f), getattr(whole, f)[:, a : a + n], atol=1e-12, rtol=0
            )
    with pytest.raises(ValueError, match="more times than forward"):
        ps.backward(kw["emissions"][:, :100])


def test_posterior_stream_wrong_chunk_order_is_an_error():
    kw = _problem(50, 2, 3, seed=1, forbid=0.0, bounds=False)
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    ps = crf.PosteriorStream(**params)
    ps.forward(kw["emissions"][:, :20])
    ps.forward(kw["emissions"][:, 20:])
    with pytest.raises(ValueError, match="give the chunks of forward\\(\\) again in reverse order"):
        ps.backward(kw["emissions"][:, :20])
    # the rejected call changed nothing: the right chunks still give the right answer
    whole = _call(crf.marginals, kw)
    torch.testing.assert_close(
        ps.backward(kw["emissions"][:, 20:]).position, whole.position[:, 20:]
    )
    torch.testing.assert_close(
        ps.backward(kw["emissions"][:, :20]).position, whole.position[:, :20]
    )


@pytest.mark.parametrize("seed", range(4))
def test_streams_with_a_chunk_without_mask(seed):
    """A chunk given without label_mask (= all allowed) after a masked one: its segments
    must not reach back over forbidden positions of the previous chunk."""
    B, T, C, K = 1, 40, 3, 6
    kw = _problem(T, C, K, B=B, seed=seed, mask=True, forbid=0.0, bounds=False)
    kw["label_mask"][:, :, 0] = True
    kw["transitions"][0, 0] = 0.0
    kw["label_mask"][:, 15:25] = True  # the middle chunk is unconstrained
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    whole_z = _call(crf.log_partition, kw)
    whole = _call(crf.marginals, kw)
    chunks = [(0, 15, True), (15, 10, False), (25, 15, True)]
    fs, ps = crf.ForwardStream(**params, batch=B), crf.PosteriorStream(**params, batch=B)
    for a, n, masked in chunks:
        m = kw["label_mask"][:, a : a + n] if masked else None
        fs.update(kw["emissions"][:, a : a + n], label_mask=m)
        ps.forward(kw["emissions"][:, a : a + n], label_mask=m)
    assert float(fs.log_z()[0]) == pytest.approx(float(whole_z[0]), rel=1e-12)
    for a, n, masked in reversed(chunks):
        m = kw["label_mask"][:, a : a + n] if masked else None
        got = ps.backward(kw["emissions"][:, a : a + n], label_mask=m)
        torch.testing.assert_close(got.position, whole.position[:, a : a + n], atol=1e-12, rtol=0)


def test_length_steps():
    D = torch.full((4, 9), NEG, dtype=F64)
    D[0, [2, 5, 8]] = 0.0  # lengths 3, 6, 9
    D[1, [0, 3]] = 0.0  # lengths 1, 4
    D[2, [1, 2, 6]] = 0.0  # lengths 2, 3, 7: gcd 1
    got = crf.api.length_steps(D.numpy())
    assert got.tolist() == [[3, 3], [1, 3], [2, 1], [10, 1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stepped_lengths_and_sparse_boundaries_match_reference(seed):
    """The engine's shortcuts (length loops stepping through lengths fixed mod 3, no
    length loop at an end no successor can follow, no entry sum at a forbidden start) on
    gene-grammar-like inputs: exon-like labels whose lengths are fixed mod 3, boundaries
    allowed at few positions. Every result equals the float64 reference, whole and in
    chunks."""
    T, C, K = 300, 4, 30
    kw = _problem(T, C, K, B=2, seed=seed, max_dur=True, forbid=0.0)
    g = torch.Generator().manual_seed(seed)
    D = kw["durations"]
    for c in (1, 2):  # lengths r + 3i only
        keep = (torch.arange(K) + 1) % 3 == c % 3
        D[c] = torch.where(keep, D[c], torch.full_like(D[c], NEG))
    kw["durations"] = D
    kw["tail"][1:3] = NEG  # exon-like labels have no geometric tail
    for k, p in (("seg_start", 0.8), ("seg_end", 0.7)):
        x = kw[k]
        sparse = torch.rand(x.shape, generator=g, dtype=F64) < p
        sparse[:, :, 0] = False  # label 0 can start and end anywhere (feasible)
        kw[k] = x.masked_fill(sparse, NEG)
    kw["max_dur"][:, :, 0] = T + 1
    allowed = torch.zeros(C, C, dtype=torch.bool)  # 0 -> 0, 0 -> 1 -> 2 -> 3 -> 0, 2 -> 0
    for a, b in ((0, 0), (0, 1), (1, 2), (2, 3), (3, 0), (2, 0)):
        allowed[a, b] = True
    kw["transitions"] = kw["transitions"].masked_fill(~allowed, NEG)
    kw["init"][0] = kw["final"][0] = 0.0
    for fn in (crf.log_partition,):
        torch.testing.assert_close(_call(fn, kw, backend="cpu"), _call(fn, kw, backend="reference"))
    m1, m2 = (_call(crf.marginals, kw, backend=be) for be in ENGINES)
    for k in ("position", "start", "end"):
        torch.testing.assert_close(getattr(m1, k), getattr(m2, k), atol=1e-10, rtol=0)
    (s1, p1), (s2, p2) = (_call(crf.viterbi, kw, backend=be) for be in ENGINES)
    assert p1 == p2
    torch.testing.assert_close(s1, s2)
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    names = ["emissions", "seg_start", "seg_end", "max_dur"]
    chunks = [(0, 70), (70, 1), (71, 229)]
    ps = crf.PosteriorStream(**params, batch=2, checkpoint=16)
    for a, n in chunks:
        ps.forward(*[kw[k][:, a : a + n] for k in names])
    for a, n in reversed(chunks):
        got = ps.backward(*[kw[k][:, a : a + n] for k in names])
        for f in ("position", "start", "end"):
            torch.testing.assert_close(
                getattr(got, f), getattr(m1, f)[:, a : a + n], atol=1e-12, rtol=0
            )


def test_pack_rings_roundtrip():
    """A saved stream state keeps only the finite start scores; unpacking gives the rings
    back bit for bit (both halves), and the packed state is smaller when most are -inf."""
    from genoseg.crf.stream import pack_rings, unpack_rings

    rng = np.random.default_rng(0)
    half = rng.normal(size=(2, 5, 300))
    half[rng.random(half.shape) < 0.9] = NEG
    rings = np.concatenate([half, half], axis=2)
    packed = pack_rings(rings)
    back = unpack_rings(packed)
    assert back.dtype == np.float64 and back.flags.c_contiguous
    assert np.array_equal(back, rings)
    assert packed[1].nbytes + packed[2].nbytes < rings.nbytes / 5


def test_expected_score_is_the_teacher_expectation_by_brute_force() -> None:
    """E_teacher[score_student(path)] from the teacher's score marginals (d log Z / d inputs)
    equals the enumeration over every segmentation, forbidden entries (-inf) included."""
    for seed in range(6):
        T, C, K = 6, 3, 3
        teacher = _problem(T, C, K, seed=seed, max_dur=seed % 2 == 1)
        g = torch.Generator().manual_seed(100 + seed)
        student = {k: v + torch.randn(v.shape, generator=g, dtype=v.dtype)
                   if v.is_floating_point() else v for k, v in teacher.items()}  # fmt: skip
        st_t = enumerate_scores(teacher["emissions"][0], T, **_one(teacher))
        st_s = enumerate_scores(student["emissions"][0], T, **_one(student))
        log_z = brute_log_z(st_t)
        want = sum(math.exp(a - log_z) * b for (_, a), (_, b) in zip(st_t, st_s)
                   if a != -math.inf)  # fmt: skip
        got = float(crf.expected_score(student, crf.score_marginals(teacher)))
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), seed
