"""Semi-CRF engine hardening (issue 8): numerics at chromosome scale, max_dur range,
dtypes, padded positions, stream checks, devices."""

from __future__ import annotations

import pytest
import torch

from genoseg import crf

NEG = float("-inf")
F64 = torch.float64


def _shifted_problem(T: int, C: int = 2, K: int = 4, seed: int = 0):
    """A random problem and an equivalent one whose prefix sums reach 1e9: emissions[0, c]
    gets -c·1e9 and init[c] +c·1e9, which cancel in every path's score."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(
        emissions=torch.randn(1, T, C, generator=g, dtype=F64),
        transitions=torch.randn(C, C, generator=g, dtype=F64),
        durations=torch.randn(C, K, generator=g, dtype=F64),
        init=torch.randn(C, generator=g, dtype=F64),
        final=torch.randn(C, generator=g, dtype=F64),
        tail=-torch.rand(C, generator=g, dtype=F64),
    )
    shift = torch.arange(C, dtype=F64) * 1e9
    big = dict(kw, emissions=kw["emissions"].clone(), init=kw["init"] + shift)
    big["emissions"][0, 0] -= shift
    return kw, big


def _marg(kw, **extra):
    return crf.marginals(
        kw["emissions"], None, kw["transitions"], kw["durations"], kw["init"], kw["final"],
        kw["tail"], **extra,
    )  # fmt: skip


@pytest.mark.slow
def test_posteriors_do_not_drift_with_large_prefix_sums():
    """T = 10^6 with prefix sums of 1e9: the posteriors equal those of the same problem
    with small prefix sums to 1e-6 (they drifted by 2e-5 when the adjoint weights carried
    an error of ulp(1e9) per step along the reverse sweep); PosteriorStream too."""
    T = 1_000_000
    kw, big = _shifted_problem(T)
    small, large = _marg(kw), _marg(big)
    for f in ("position", "start", "end"):
        err = (getattr(small, f) - getattr(large, f)).abs().max().item()
        assert err < 1e-6, (f, err)
    for m in (small, large):
        assert (m.position.sum(-1) - 1).abs().max() < 1e-9
    params = {k: big[k] for k in ("transitions", "durations", "init", "final", "tail")}
    ps = crf.PosteriorStream(**params)
    chunks = [(a, min(a + 400_000, T)) for a in range(0, T, 400_000)]
    for a, b in chunks:
        ps.forward(big["emissions"][:, a:b])
    for a, b in reversed(chunks):
        part = ps.backward(big["emissions"][:, a:b])
        err = (part.position - small.position[:, a:b]).abs().max().item()
        assert err < 1e-6, err


def _small(T=12, C=3, K=4, B=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        emissions=torch.randn(B, T, C, generator=g, dtype=F64),
        transitions=torch.randn(C, C, generator=g, dtype=F64),
        durations=torch.randn(C, K, generator=g, dtype=F64),
        init=torch.randn(C, generator=g, dtype=F64),
        final=torch.randn(C, generator=g, dtype=F64),
        tail=torch.tensor([-0.3] + [NEG] * (C - 1), dtype=F64),
    )


def _logz(kw, lengths=None, backend="auto", **extra):
    args = {k: v for k, v in kw.items() if k != "emissions"}
    return crf.log_partition(kw["emissions"], lengths, **args, **extra, backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_max_dur_beyond_int32_means_unbounded(backend):
    """max_dur = 2^32 + 3 admits every length (it used to wrap to 3 in the int32 cast)."""
    T, C = 12, 3
    kw = _small(T, C)
    md = torch.randint(1, 4, (1, T, C), generator=torch.Generator().manual_seed(1))
    huge = md.to(torch.int64)
    huge[..., 0] = 2**32 + 3  # the tailed label: unbounded
    huge[0, ::2, 1] = 2**40
    same = huge.clamp(max=T + 1)
    want = _logz(kw, backend=backend, max_dur=same)
    assert torch.equal(_logz(kw, backend=backend, max_dur=huge), want)
    got = crf.check_inputs(**kw, lengths=None, max_dur=huge).max_dur
    assert torch.equal(got, huge.clamp(max=2**31 - 1).int())


def test_allowed_runs_carry_beyond_int32_is_capped():
    """The run carry of a stream grows with its position; past 2^31 it must stay long, not
    wrap to a short run that would forbid segments."""
    from genoseg.crf.api import allowed_runs

    mask = torch.ones(1, 4, 2, dtype=torch.bool).numpy()
    mask[0, 2, 1] = False
    runs = allowed_runs(mask, carry=torch.tensor([[2**32 + 3, 2**31 + 5]]).numpy())
    assert runs[0, :, 0].tolist() == [2**31 - 1] * 4
    assert runs[0, :, 1].tolist() == [2**31 - 1, 2**31 - 1, 0, 1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_emissions_give_float64_log_z(dtype):
    """Half-precision emissions are read as float32: log Z is float64 and equals the
    float64 computation on the same values (float16 used to overflow to inf at
    |log Z| > 65504; bfloat16 raised numpy's TypeError); gradients come back in the
    input's dtype, posteriors in float32."""
    T, C = 20_000, 2
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(1, T, C, generator=g) * 2 + 10).to(dtype)
    A, D = torch.randn(C, C, generator=g), torch.randn(C, 3, generator=g)
    z0 = torch.zeros(C)
    want = crf.log_partition(h.double(), None, A.double(), D.double(), z0.double(), z0.double())
    assert float(want) > 2e5
    leaf = h.clone().requires_grad_(True)
    z = crf.log_partition(leaf, None, A, D, z0, z0)
    assert z.dtype == F64 and torch.equal(z.detach(), want)
    z.sum().backward()
    assert leaf.grad.dtype == dtype
    m = crf.marginals(h, None, A, D, z0, z0)
    assert m.position.dtype == torch.float32 and m.log_z.dtype == F64
    assert torch.equal(m.log_z, want)
    small = h[:, :6]
    r = crf.log_partition(small, None, A, D, z0, z0, backend="reference")
    assert r.dtype == F64
    assert torch.allclose(r, crf.log_partition(small, None, A, D, z0, z0), rtol=1e-12)


@pytest.mark.slow
def test_float32_nll_at_a_million_positions_is_exact():
    """NLL of float32 inputs at T = 10^6: log Z and the gold score are ~1e7, so their
    difference is taken in float64 (it was off by ~0.5 nats in float32)."""
    T, C = 1_000_000, 2
    g = torch.Generator().manual_seed(1)
    h = torch.randn(1, T, C, generator=g) * 2 + 10
    A, D = torch.randn(C, C, generator=g), torch.randn(C, 3, generator=g)
    z0 = torch.zeros(C)
    tail = torch.tensor([-0.1, -0.2])
    _, paths = crf.viterbi(h, None, A, D, z0, z0, tail)
    leaf = h.clone().requires_grad_(True)
    nll32 = crf.nll(leaf, None, A, D, z0, z0, tail, gold_segments=paths)
    f = [t.double() for t in (h, A, D, z0, z0, tail)]
    nll64 = crf.nll(f[0], None, *f[1:], gold_segments=paths)
    assert nll32.dtype == F64
    diff = float(nll32.detach()) - float(nll64)
    assert abs(diff) < 1e-6, diff
    nll32.sum().backward()
    assert leaf.grad.dtype == torch.float32 and torch.isfinite(leaf.grad).all()
    mask = torch.ones(1, T, C, dtype=torch.bool)
    mask[0, :1000, 1] = False
    p32 = crf.partial_nll(h, None, A, D, z0, z0, tail, label_mask=mask)
    p64 = crf.partial_nll(f[0], None, *f[1:], label_mask=mask)
    assert p32.dtype == F64 and abs(float(p32) - float(p64)) < 1e-6


def test_float64_boundary_scores_are_not_downcast():
    """float64 seg_start/seg_end with float32 emissions are used at full precision."""
    T, C = 500, 3
    kw = _small(T, C)
    kw["emissions"] = kw["emissions"].float()
    g = torch.Generator().manual_seed(2)
    ss, se = torch.randn(2, 1, T, C, generator=g, dtype=F64)
    ss = ss * 1e3 + 1e-9  # float32 would round these by ~3e-5
    want = _logz(dict(kw, emissions=kw["emissions"].double()), seg_start=ss, seg_end=se)
    assert torch.equal(_logz(kw, seg_start=ss, seg_end=se), want)
    args = {k: v for k, v in kw.items() if k != "emissions"}
    m = crf.marginals(kw["emissions"], None, **args, seg_start=ss, seg_end=se)
    m64 = crf.marginals(kw["emissions"].double(), None, **args, seg_start=ss, seg_end=se)
    assert m.position.dtype == torch.float32
    torch.testing.assert_close(m.start.double(), m64.start, atol=1e-7, rtol=0)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_padded_positions_are_ignored(backend):
    """NaN/inf scores and negative max_dur at positions >= lengths[b] are ignored (the
    contract says so), not rejected; results equal those with clean padding."""
    B, T, C = 2, 9, 3
    kw = _small(T, C, B=B)
    g = torch.Generator().manual_seed(3)
    kw["seg_start"] = torch.randn(B, T, C, generator=g, dtype=F64)
    md = torch.randint(1, 4, (B, T, C), generator=g)
    md[..., 0] = T + 1  # the tailed label: unbounded
    lengths = torch.tensor([T, 5])
    clean = dict(kw, max_dur=md)
    dirty = {k: v.clone() for k, v in clean.items()}
    dirty["emissions"][1, 5:] = float("nan")
    dirty["emissions"][1, 6, 0] = float("inf")
    dirty["seg_start"][1, 7:] = float("nan")
    dirty["max_dur"][1, 5:] = -1
    want = _logz(clean, lengths, backend)
    assert torch.equal(_logz(dirty, lengths, backend), want)
    args = {k: v for k, v in dirty.items() if k != "emissions"}
    m = crf.marginals(dirty["emissions"], lengths, **args, backend=backend)
    assert torch.isfinite(m.position).all() and m.position[1, 5:].abs().max() == 0
    cargs = {k: v for k, v in clean.items() if k != "emissions"}
    m0 = crf.marginals(clean["emissions"], lengths, **cargs, backend=backend)
    torch.testing.assert_close(m.position, m0.position, atol=0, rtol=0)
    assert (
        crf.viterbi(dirty["emissions"], lengths, **args, backend=backend)[1]
        == crf.viterbi(clean["emissions"], lengths, **cargs, backend=backend)[1]
    )
    h = dirty["emissions"].clone().requires_grad_(True)
    crf.log_partition(h, lengths, **args, backend=backend).sum().backward()
    assert torch.isfinite(h.grad).all() and h.grad[1, 5:].abs().max() == 0
    # inside the valid range they are still errors
    bad = {k: v.clone() for k, v in clean.items()}
    bad["emissions"][1, 4, 0] = float("nan")
    with pytest.raises(ValueError, match="emissions contains NaN"):
        _logz(bad, lengths, backend)
    bad = {k: v.clone() for k, v in clean.items()}
    bad["max_dur"][1, 4, 1] = -1
    with pytest.raises(ValueError, match="max_dur must be >= 0"):
        _logz(bad, lengths, backend)


def test_chunk_inputs_record_their_position():
    """check_inputs records the absolute position it validated a chunk for, so a chunk
    engine (Triton forward_chunk) can refuse a chunk validated elsewhere."""
    kw = _small(6, 3)
    args = {k: v for k, v in kw.items() if k != "emissions"}
    x = crf.check_inputs(kw["emissions"], None, **args, position_offset=40)
    assert x.position_offset == 40
    crf.inputs.check_position(x, 40)
    with pytest.raises(ValueError, match="position_offset=40, but the stream is at position 6"):
        crf.inputs.check_position(x, 6)
    assert crf.check_inputs(kw["emissions"], None, **args).position_offset == 0


@pytest.mark.parametrize("name", ["seg_start", "max_dur", "label_mask", "transitions", "tail"])
def test_inputs_on_another_device_name_the_argument(name):
    """An input on another device than the emissions is a ValueError naming it (it used
    to fail later, at launch, with an unrelated message)."""
    T, C = 6, 3
    kw = _small(T, C)
    kw["seg_start"] = torch.zeros(1, T, C, dtype=F64)
    kw["max_dur"] = torch.full((1, T, C), T + 1)
    kw["label_mask"] = torch.ones(1, T, C, dtype=torch.bool)
    kw[name] = kw[name].to("meta")
    with pytest.raises(ValueError, match=rf"{name} is on device meta but emissions are on cpu"):
        _logz(kw)


def test_lengths_may_live_on_another_device():
    kw = _small(6, 3)
    want = _logz(kw, torch.tensor([4]))
    x = crf.check_inputs(**kw, lengths=torch.tensor([4], dtype=torch.int32))
    assert x.lengths.dtype == torch.int64 and torch.equal(_logz(kw, x.lengths), want)


def test_viterbi_stream_first_pass_allocates_no_back_pointers():
    """Pass 1 of ViterbiStream keeps states only: no (B, n, C) back-pointer array per chunk
    (6.4 MB for this chunk)."""
    import tracemalloc

    T, C = 200_000, 8
    kw = _small(T, C)
    h = kw["emissions"].float()
    params = {k: kw[k] for k in ("transitions", "durations", "init", "final", "tail")}
    vs = crf.ViterbiStream(**params)
    vs.forward(h[:, :100])  # compile and warm up outside the measurement
    tracemalloc.start()
    vs.forward(h[:, 100:])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000, peak
    path = []
    for part in (h[:, 100:], h[:, :100]):
        path = vs.backward(part)[0] + path
    assert path == crf.viterbi(h, None, **params)[1][0]
