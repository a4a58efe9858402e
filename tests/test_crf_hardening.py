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
