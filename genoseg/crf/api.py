"""Public semi-CRF operations (DESIGN.md §1) with backend dispatch and autograd.

All functions take the §1 inputs: ``emissions`` (B, T, C) (or (T, C)), ``lengths`` (B,)
int64 or None (= T), ``transitions`` (C, C), ``durations`` (C, K), ``init``, ``final`` (C,),
and optionally ``tail`` (C,), ``seg_start``, ``seg_end`` (B, T, C), ``max_dur`` (B, T, C),
``label_mask`` (B, T, C) bool (a label-c segment may cover only positions where it is True:
constrained decoding, partially labelled training windows).
Positions are 0-based; segments are ``(start, end, label)`` half-open.

``backend``: ``"auto"`` (CPU engine for CPU tensors, Triton kernels for CUDA tensors),
``"cpu"``, ``"triton"`` or ``"reference"`` (float64, slow; for tests).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from genoseg.crf import cpu
from genoseg.crf import reference as ref
from genoseg.crf.inputs import INT32_MAX, CRFInputs, check_inputs

Segments = list[tuple[int, int, int]]
F64, F32 = torch.float64, torch.float32

BACKENDS = ("auto", "cpu", "triton", "reference")


@dataclass
class Marginals:
    """Exact posteriors. position/start/end: (B, T, C); start_any/end_any: (B, T);
    log_z: (B,). ``start[b, t, c]`` = P(a label-c segment starts at t); ``end[b, t, c]`` =
    P(a label-c segment's last position is t). Rows t >= L_b are 0."""

    position: Tensor
    start: Tensor
    end: Tensor
    start_any: Tensor
    end_any: Tensor
    log_z: Tensor


def default_checkpoint(T: int, R: int) -> int:
    """Checkpoint interval balancing checkpoint memory (T/Δ · 2R · C) and block memory
    (Δ · C): Δ ≈ sqrt(2·T·R), clamped to [64, 65536]."""
    return int(min(65536, max(64, math.isqrt(2 * T * R))))


def _resolve_backend(backend: str, x: CRFInputs) -> str:
    """ "auto": Triton kernels for CUDA tensors when usable, else the CPU engine (one
    warning per process when CUDA tensors fall back). "triton" forced but unusable is a
    ValueError saying why; CPU tensors run the kernels only under TRITON_INTERPRET=1."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if not x.emissions.is_cuda:
            return "cpu"
        reason = _triton_usable(x)
        if reason is None:
            return "triton"
        global _TRITON_WARNED
        if not _TRITON_WARNED:
            _TRITON_WARNED = True
            warnings.warn(
                f"genoseg.crf: Triton kernels unavailable ({reason}); using the CPU engine",
                RuntimeWarning,
                stacklevel=3,
            )
        return "cpu"
    if backend == "triton":
        reason = _triton_usable(x)
        if reason is not None:
            raise ValueError(f"backend='triton' cannot run these inputs: {reason}")
    return backend


_TRITON_WARNED = False


def _triton_usable(x: CRFInputs) -> str | None:
    """None if the Triton kernels can run ``x``, else the reason they cannot."""
    try:
        from genoseg.crf import triton_kernels
    except Exception as exc:  # pragma: no cover - depends on the install
        return f"cannot import triton ({type(exc).__name__}: {exc})"
    if not triton_kernels.supports(x):
        return f"C={x.C} labels exceeds the kernels' limit of {triton_kernels.MAX_LABELS}"
    if not x.emissions.is_cuda and not triton_kernels.interpreted():
        return "tensors are on the CPU (set TRITON_INTERPRET=1 to run the Triton interpreter)"
    return None


def _backend_for(backend: str, x: CRFInputs) -> str:
    """The backend to run x on (see :func:`_resolve_backend`); every input, label_mask
    included, runs on every backend."""
    return _resolve_backend(backend, x)


class _Arrays:
    """numpy views of checked inputs for the numba engine (float64 parameters).
    ``static``: an earlier instance for the same parameters, whose parameter arrays are
    reused (streams convert them once, not per chunk)."""

    def __init__(self, x: CRFInputs, static: _Arrays | None = None):
        def f(t: Tensor | None, dtype) -> np.ndarray | None:
            if t is None:
                return None
            t = t.detach()
            if t.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
                t = t.to(torch.float32)
            return np.ascontiguousarray(t.cpu().numpy(), dtype=dtype)

        hd = np.float64 if position_dtype(x) == torch.float64 else np.float32
        self.h = f(x.emissions, hd)
        self.has_ss = x.seg_start is not None
        self.has_se = x.seg_end is not None
        self.has_md = x.max_dur is not None
        self.ss = f(x.seg_start, hd) if self.has_ss else np.zeros((1, 1, 1), hd)
        self.se = f(x.seg_end, hd) if self.has_se else np.zeros((1, 1, 1), hd)
        self.md = f(x.max_dur, np.int32) if self.has_md else np.zeros((1, 1, 1), np.int32)
        self.has_run = x.label_mask is not None
        self.run = allowed_runs(f(x.label_mask, np.bool_)) if self.has_run else self.md[:1, :1, :1]
        self.lengths = f(x.lengths, np.int64)
        if static is not None:
            for k in ("A", "preds", "succs", "D", "dstep", "Kc", "tail", "init", "final", "R"):
                setattr(self, k, getattr(static, k))
            return
        self.A = f(x.transitions, np.float64)
        self.preds = predecessors(self.A)
        self.succs = predecessors(self.A.T)
        self.D = f(x.durations, np.float64)
        self.dstep = length_steps(self.D)
        self.Kc = f(x.label_k, np.int64)
        self.tail = f(x.tail, np.float64) if x.tail is not None else np.full(x.C, -np.inf)
        self.init = f(x.init, np.float64)
        self.final = f(x.final, np.float64)
        self.R = int(self.Kc.max()) + 1

    def common(self):
        return (
            self.h, self.ss, self.se, self.md, self.run,
            self.has_ss, self.has_se, self.has_md, self.has_run,
            self.lengths, self.A, self.preds, self.succs,
            self.D, self.dstep, self.Kc, self.tail, self.init,
            self.final, self.R,
        )  # fmt: skip


def position_dtype(x: CRFInputs) -> torch.dtype:
    """dtype in which the CPU engine reads the per-position scores (emissions, seg_start,
    seg_end): float64 if any of them is float64 (nothing is downcast), else float32 (half
    types are upcast). The engine accumulates in float64 either way."""
    given = (x.emissions, x.seg_start, x.seg_end)
    return torch.float64 if any(t is not None and t.dtype == F64 for t in given) else F32


def result_dtype(x: CRFInputs) -> torch.dtype:
    """dtype of the returned posteriors: float64 if the emissions are, else float32 (half
    emissions give float32 posteriors). log Z, NLL and scores are always float64."""
    return F64 if x.emissions.dtype == F64 else F32


def allowed_runs(mask: np.ndarray, carry: np.ndarray | None = None) -> np.ndarray:
    """(B, T, C) int32: number of consecutive True entries of mask (B, T, C) ending at t,
    counting ``carry`` (B, C) True entries just before row 0 (streaming), capped at
    2^31 - 1 (longer than any segment; the carry of a stream grows with its position and a
    bare int32 cast would wrap)."""
    B, T, C = mask.shape
    idx = np.arange(1, T + 1, dtype=np.int64).reshape(1, T, 1)
    before = (
        np.zeros((B, 1, C), np.int64)
        if carry is None
        else -np.asarray(carry, dtype=np.int64).reshape(B, 1, C)
    )
    last_false = np.maximum.accumulate(np.where(mask, before, idx), axis=1)  # 1-based
    return np.minimum(idx - last_false, INT32_MAX).astype(np.int32)


def predecessors(A: np.ndarray) -> np.ndarray:
    """(C, C+1) int64: row c = [n, c'_1 .. c'_n], the labels with finite A[c', c] ascending."""
    C = A.shape[0]
    out = np.zeros((C, C + 1), dtype=np.int64)
    for c in range(C):
        src = np.flatnonzero(np.isfinite(A[:, c]))
        out[c, 0] = len(src)
        out[c, 1 : 1 + len(src)] = src
    return out


def length_steps(D: np.ndarray) -> np.ndarray:
    """(C, 2) int64: row c = [d0, g] such that every length d (1-based) with finite
    D[c, d-1] is d0 + i*g (d0 = the shortest, g = gcd of the differences; exon labels
    whose length is fixed mod 3 get g = 3). The engine's length loops step through these
    lengths only; a label without finite lengths gets d0 = K + 1 (empty loop)."""
    C, K = D.shape
    out = np.ones((C, 2), dtype=np.int64)
    for c in range(C):
        d = np.flatnonzero(np.isfinite(D[c])) + 1
        if len(d) == 0:
            out[c] = (K + 1, 1)
            continue
        g = int(np.gcd.reduce(d - d[0])) if len(d) > 1 else 1
        out[c] = (d[0], max(g, 1))
    return out


def _raise_forbidden(log_z: np.ndarray | Tensor) -> None:
    bad = [i for i, v in enumerate(np.asarray(log_z, dtype=np.float64).tolist()) if v == -math.inf]
    if bad:
        raise ValueError(
            f"no segmentation has a finite score for batch element(s) {bad}: every path is "
            "forbidden by transitions/durations/init/final/seg_start/seg_end/max_dur"
        )


def _cpu_gradients(x: CRFInputs, checkpoint: int | None):
    a = _Arrays(x)
    block = checkpoint or default_checkpoint(x.T, a.R)
    if block < 1:
        raise ValueError(f"checkpoint must be >= 1, got {block}")
    out = cpu._backward_batch(*a.common(), block, np.zeros((x.B, 0), np.int64))
    _raise_forbidden(out[0])
    return out[:-1]


class _CPULogPartition(torch.autograd.Function):
    """log Z (B,) with the exact adjoint computed eagerly by the CPU engine; backward
    weights batch element b's adjoint by grad_output[b]."""

    @staticmethod
    def forward(ctx, x: CRFInputs, checkpoint, *tensors):  # tensors only connect autograd
        logz, gh, gss, gse, gA, gD, gt, gi, gf = _cpu_gradients(x, checkpoint)
        # same order as `tensors`; per-position grads are (B, T, C), parameter grads (B, ...)
        ctx.grads = (gh, gA, gD, gi, gf, gt, gss, gse)
        ctx.per_position = (True, False, False, False, False, False, True, True)
        ctx.meta = [(t is not None, t.dtype if t is not None else None) for t in tensors]
        ctx.device = x.emissions.device
        return torch.from_numpy(logz).to(device=ctx.device)

    @staticmethod
    def backward(ctx, g: Tensor):
        g64 = g.detach().to(torch.float64).cpu()
        out = []
        for grad, per_pos, (present, dtype) in zip(ctx.grads, ctx.per_position, ctx.meta):
            if not present:
                out.append(None)
                continue
            t = torch.from_numpy(grad)
            t = t * g64.view(-1, *([1] * (t.dim() - 1)))
            if not per_pos:
                t = t.sum(0)
            out.append(t.to(device=ctx.device, dtype=dtype))
        return (None, None, *out)


def log_partition(
    emissions: Tensor,
    lengths: Tensor | None,
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    seg_start: Tensor | None = None,
    seg_end: Tensor | None = None,
    max_dur: Tensor | None = None,
    label_mask: Tensor | None = None,
    *,
    backend: str = "auto",
    checkpoint: int | None = None,
) -> Tensor:
    """log Z per batch element, (B,) float64 whatever the input dtypes (|log Z| reaches
    1e7 on a chromosome, beyond float32 resolution and float16 range), differentiable with
    respect to every float input (gradients come back in each input's dtype). Half-precision
    inputs are accepted and read as float32.

    ``checkpoint``: positions between saved forward states in the backward pass (default
    :func:`default_checkpoint`); results do not depend on it.
    Raises ValueError if some batch element has no segmentation of finite score.
    """
    x = check_inputs(
        emissions,
        lengths,
        transitions,
        durations,
        init,
        final,
        tail,
        seg_start,
        seg_end,
        max_dur,
        label_mask,
    )
    be = _backend_for(backend, x)
    if be == "reference":
        out = ref.log_partition(x)
        _raise_forbidden(out.detach())
        return out
    if be == "triton":
        from genoseg.crf import triton_kernels

        return triton_kernels.log_partition(x, checkpoint=checkpoint).to(F64)
    tensors = (
        x.emissions,
        x.transitions,
        x.durations,
        x.init,
        x.final,
        x.tail,
        x.seg_start,
        x.seg_end,
    )
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _CPULogPartition.apply(x, checkpoint, *tensors)
    a = _Arrays(x)
    logz = cpu._forward_batch(*a.common(), cpu.LOG)[0]
    _raise_forbidden(logz)
    return torch.from_numpy(logz).to(device=x.emissions.device)


def marginals(
    emissions: Tensor,
    lengths: Tensor | None,
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    seg_start: Tensor | None = None,
    seg_end: Tensor | None = None,
    max_dur: Tensor | None = None,
    label_mask: Tensor | None = None,
    *,
    backend: str = "auto",
    checkpoint: int | None = None,
) -> Marginals:
    """Exact position and boundary posteriors (see :class:`Marginals`), float32 unless the
    emissions are float64 (:func:`result_dtype`); ``log_z`` is float64. They are the
    gradients of log Z with respect to the emissions, seg_start and seg_end."""
    x = check_inputs(
        emissions,
        lengths,
        transitions,
        durations,
        init,
        final,
        tail,
        seg_start,
        seg_end,
        max_dur,
        label_mask,
    )
    be = _backend_for(backend, x)
    dt, dev = result_dtype(x), x.emissions.device
    if be == "reference":
        m = ref.marginals(x)
        _raise_forbidden(m["log_z"])
        pos, st, en, logz = m["position"], m["start"], m["end"], m["log_z"]
    elif be == "triton":
        from genoseg.crf import triton_kernels

        m = triton_kernels.marginals(x, checkpoint=checkpoint)
        m.log_z = m.log_z.to(F64)
        return m
    else:
        logz, gh, gss, gse, *_ = _cpu_gradients(x, checkpoint)
        pos, st, en, logz = (torch.from_numpy(v) for v in (gh, gss, gse, logz))

    def conv(t: Tensor) -> Tensor:
        return t.to(device=dev, dtype=dt)

    return Marginals(
        conv(pos), conv(st), conv(en), conv(st.sum(-1)), conv(en.sum(-1)), logz.to(dev, F64)
    )


def viterbi(
    emissions: Tensor,
    lengths: Tensor | None,
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    seg_start: Tensor | None = None,
    seg_end: Tensor | None = None,
    max_dur: Tensor | None = None,
    label_mask: Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[Tensor, list[Segments]]:
    """Best segmentation per batch element: scores (B,) float64 and segments
    [(start, end, label)] (0-based half-open, tiling [0, L_b)), exactly traced back at any
    length. Ties go to the shortest last segment and the lowest label. Back-pointers take
    8 bytes per position and label; for chromosomes use :class:`~genoseg.crf.ViterbiStream`,
    which holds one chunk's."""
    x = check_inputs(
        emissions,
        lengths,
        transitions,
        durations,
        init,
        final,
        tail,
        seg_start,
        seg_end,
        max_dur,
        label_mask,
    )
    be = _backend_for(backend, x)
    if be == "reference":
        scores, paths = ref.viterbi(x)
        _raise_forbidden(scores)
        return scores, paths
    if be == "triton":
        from genoseg.crf import triton_kernels

        return triton_kernels.viterbi(x)
    a = _Arrays(x)
    scores, last, bp_len, bp_prev = cpu._forward_batch(*a.common(), cpu.MAX)
    _raise_forbidden(scores)
    paths = [
        cpu.traceback(bp_len[b], bp_prev[b], int(a.lengths[b]), int(last[b])) for b in range(x.B)
    ]
    return torch.from_numpy(scores), paths


def segmentation_score(x: CRFInputs, b: int, segments: Sequence[tuple[int, int, int]]) -> Tensor:
    """Differentiable score of one segmentation of batch element b (DESIGN.md §1 rule),
    vectorised over segments; -inf if any part is forbidden. Returns a 0-d float64 tensor
    (every term is upcast before it is summed: a chromosome's score is ~1e7)."""
    L = int(x.lengths[b])
    ref.check_tiling(segments, L, x.C)
    seg = torch.as_tensor(segments, dtype=torch.int64, device=x.emissions.device)
    s, e, c = seg[:, 0], seg[:, 1], seg[:, 2]
    d = e - s
    labels = torch.repeat_interleave(c, d)
    total = x.emissions[b, :L].gather(1, labels.unsqueeze(1)).to(F64).sum()
    kc = x.label_k.to(seg.device)[c]
    inside = d <= kc
    table = x.durations.to(F64)[c, (torch.minimum(d, kc) - 1).clamp(min=0)]  # -inf if K_c = 0
    slope = x.tail.to(F64)[c] if x.tail is not None else torch.full_like(table, -math.inf)
    dur = table + torch.where(inside, torch.zeros_like(table), slope * (d - kc).clamp(min=1))
    total = total + dur.sum()
    if x.seg_start is not None:
        total = total + x.seg_start[b, s, c].to(F64).sum()
    if x.seg_end is not None:
        total = total + x.seg_end[b, e - 1, c].to(F64).sum()
    total = (
        total + x.init.to(F64)[c[0]] + x.final.to(F64)[c[-1]]
        + x.transitions.to(F64)[c[:-1], c[1:]].sum()
    )  # fmt: skip
    if x.max_dur is not None and bool((d > x.max_dur[b, e - 1, c].to(torch.int64)).any()):
        total = total + float("-inf")
    if x.label_mask is not None and not bool(x.label_mask[b, torch.arange(L), labels].all()):
        total = total + float("-inf")
    return total


def nll(
    emissions: Tensor,
    lengths: Tensor | None,
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    seg_start: Tensor | None = None,
    seg_end: Tensor | None = None,
    max_dur: Tensor | None = None,
    label_mask: Tensor | None = None,
    *,
    gold_segments: Sequence[Sequence[tuple[int, int, int]]],
    backend: str = "auto",
    checkpoint: int | None = None,
    return_log_z: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Negative log-likelihood of the gold segmentations, (B,) float64: log Z - score(gold)
    >= 0, the difference taken in float64 (both terms are ~1e7 on a chromosome).
    Differentiable (gradients in each input's dtype); +inf where the gold path is
    forbidden. ``return_log_z``: ``(nll, log Z)``, e.g. to add terms in log Z without a
    second forward-backward (:func:`expected_score`)."""
    x = check_inputs(
        emissions,
        lengths,
        transitions,
        durations,
        init,
        final,
        tail,
        seg_start,
        seg_end,
        max_dur,
        label_mask,
    )
    if len(gold_segments) != x.B:
        raise ValueError(f"gold_segments must have {x.B} entries, got {len(gold_segments)}")
    logz = log_partition(
        x.emissions, x.lengths, x.transitions, x.durations, x.init, x.final, x.tail,
        x.seg_start, x.seg_end, x.max_dur, x.label_mask, backend=backend, checkpoint=checkpoint,
    )  # fmt: skip
    gold = torch.stack([segmentation_score(x, b, gold_segments[b]) for b in range(x.B)])
    # log Z >= score(gold) exactly; clamp the last-bit rounding of a near-certain path
    out = (logz - gold).clamp_min(0.0)
    return (out, logz) if return_log_z else out


def chain_marginals(
    emissions: Tensor,
    lengths: Tensor | None,
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    seg_start: Tensor | None = None,
    seg_end: Tensor | None = None,
    max_dur: Tensor | None = None,
    label_mask: Tensor | None = None,
    *,
    chains: Sequence[Sequence[Sequence[tuple[int, int, int]]]],
    backend: str = "auto",
    checkpoint: int | None = None,
) -> list[Tensor]:
    """Exact marginals of chains of consecutive segments: P(every segment of the chain is a
    segment of the path).

    ``chains[b]``: the chains of batch element b, each a list of segments
    ``[(s1, e1, c1), (s2 = e1, e2, c2), ...]`` (0-based half-open, consecutive, inside
    [0, L_b)); a single segment is a chain of length 1. Returns, per batch element, a CPU
    float64 tensor (n_chains,); a chain forbidden by the model gets 0. Equivalently
    exp(alpha_in(s1, c1) + sum of segment scores + sum of A[c_k, c_k+1] + beta_out(en, cn)
    - log Z) (docs/crf.md). Cost: one forward with probes at the chain boundaries and one
    reverse sweep (about one :func:`marginals` call), plus O(number of chain segments);
    not O(T) per chain. ``backend``: the CPU engine ("auto", "cpu"; CUDA tensors are copied
    to the CPU) or "reference". Raises ValueError naming a malformed chain.
    """
    from genoseg.crf import chains as chainsmod

    x = check_inputs(
        emissions, lengths, transitions, durations, init, final, tail, seg_start, seg_end,
        max_dur, label_mask,
    )  # fmt: skip
    if len(chains) != x.B:
        raise ValueError(
            f"chains must have {x.B} entries (one list per sequence), got {len(chains)}"
        )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return ref.chain_marginals(x, chains=chains)
    if backend == "triton":
        raise ValueError("chain_marginals runs on backend 'cpu' (or 'auto') or 'reference'")
    flats = [
        chainsmod.flatten(chains[b], int(x.lengths[b]), x.C, f"chains[{b}]") for b in range(x.B)
    ]
    a = _Arrays(x)
    block = checkpoint or default_checkpoint(x.T, a.R)
    if block < 1:
        raise ValueError(f"checkpoint must be >= 1, got {block}")
    out = cpu._backward_batch(*a.common(), block, chainsmod.probe_rows(flats))
    _raise_forbidden(out[0])
    gse, pv = out[3], out[-1]
    result = []
    for b, fc in enumerate(flats):
        end = gse[b, fc.last_e - 1, fc.last_c]
        probes = chainsmod.ChainProbes.empty(fc)
        everywhere = (-np.inf, np.inf)  # one forward over the whole sequence: every probe
        chainsmod.gather(fc, probes, pv[b], 0, everywhere, everywhere, a.A)
        p = chainsmod.probabilities(fc, probes, end, a.D, a.Kc, a.tail)
        result.append(torch.from_numpy(p))
    return result


def partial_nll(
    emissions: Tensor,
    lengths: Tensor | None,
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    seg_start: Tensor | None = None,
    seg_end: Tensor | None = None,
    max_dur: Tensor | None = None,
    *,
    label_mask: Tensor,
    backend: str = "auto",
    checkpoint: int | None = None,
    return_log_z: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Negative log-likelihood of partially known labels, (B,) float64:
    ``log Z - log Z(label_mask)`` >= 0, the log-probability mass of all segmentations
    consistent with ``label_mask`` (B, T, C) bool -- one-hot where the gold label is known,
    all True where it is not (masked genes, unlabelled stretches). Differentiable. With
    one-hot rows everywhere it equals :func:`nll` of the
    gold segmentation when no label may follow itself (A[c, c] = -inf). Raises ValueError
    naming the batch elements where no segmentation is consistent with the mask.
    ``return_log_z``: ``(nll, log Z)`` as in :func:`nll`."""
    common = dict(backend=backend, checkpoint=checkpoint)
    args = (
        emissions,
        lengths,
        transitions,
        durations,
        init,
        final,
        tail,
        seg_start,
        seg_end,
        max_dur,
    )
    logz = log_partition(*args, **common)
    logz_known = log_partition(*args, label_mask, **common)
    out = (logz - logz_known).clamp_min(0.0)
    return (out, logz) if return_log_z else out


# the inputs a path's score is linear in (DESIGN.md §1's scoring rule)
SCORED_INPUTS = ("emissions", "transitions", "durations", "init", "final", "tail",
                 "seg_start", "seg_end")  # fmt: skip


def score_marginals(inputs: dict[str, Tensor | None]) -> dict[str, Tensor]:
    """The expected count of every score term over the paths of the distribution whose
    engine inputs are ``inputs`` (keyword arguments of :func:`log_partition`, ``lengths``
    None): ``d log Z / d input`` for each of :data:`SCORED_INPUTS` given, each of the
    input's shape, detached (the score is linear in the inputs, so these are its
    marginals)."""
    leaves = {k: inputs[k].detach().requires_grad_(True) for k in SCORED_INPUTS
              if inputs.get(k) is not None}  # fmt: skip
    with torch.enable_grad():
        logz = log_partition(**{**inputs, **leaves}, lengths=None)
        grads = torch.autograd.grad(logz.sum(), list(leaves.values()), allow_unused=True)
    return {k: g for k, g in zip(leaves, grads) if g is not None}


def expected_score(inputs: dict[str, Tensor | None], mu: dict[str, Tensor]) -> Tensor:
    """E_mu[score(path)] under the engine inputs ``inputs``, float64 scalar: the sum over
    inputs of ``mu * input``, with ``mu`` another distribution's :func:`score_marginals`.
    Terms ``mu`` never uses (mu = 0) count 0 even where the input is -inf. ``log Z(inputs)
    - expected_score(inputs, mu)`` is the cross-entropy from mu's path distribution to this
    one (differentiable in ``inputs``)."""
    total = torch.zeros((), dtype=torch.float64, device=mu["emissions"].device)
    for k, m in mu.items():
        x = inputs[k].to(torch.float64)
        total = total + torch.where(m != 0, m.to(torch.float64) * x, 0.0).sum()
    return total
