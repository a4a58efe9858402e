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
