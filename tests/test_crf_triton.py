"""Triton kernels of the semi-CRF engine, checked without a GPU.

1. Numerics: the kernels run in the Triton interpreter (TRITON_INTERPRET=1, CPU tensors)
   against the float64 reference. The interpreter must be enabled before triton is
   imported, so the cases run in one subprocess (this file with ``--worker``) that prints a
   JSON report; each pytest test below asserts on its part of that report.
2. Compilation: every specialisation the dispatcher can launch is compiled for sm_80 and
   sm_90 with ``triton.compile`` (ptxas from the triton wheel) and must yield a cubin, and
   its TTGIR must order every load/store pair of one scratch address by a barrier
   (:mod:`genoseg.crf.barrier_check`; the interpreter, which is sequential, cannot see
   such races).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS_PY = ROOT / "genoseg" / "crf" / "triton_kernels.py"

# ----------------------------------------------------------------------------------------
# worker (runs in the subprocess, TRITON_INTERPRET=1)


def _make(torch, B, T, C, K, *, seed, tail=False, bnd=False, md=False, mask=False, dtype=None,
          scale=1.0, shift=0.0, lengths=None):  # fmt: skip
    """Random §1 inputs with per-label K (label 0 has K_c = K - 1 when K > 1). ``mask``: a
    random label_mask, 80% True (runs both shorter and longer than K_c), the last label
    always allowed so that a path stays open."""
    from genoseg.crf.inputs import check_inputs

    g = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.float64
    h = (torch.randn(B, T, C, generator=g, dtype=torch.float64) * scale + shift).to(dtype)
    A = torch.randn(C, C, generator=g, dtype=torch.float64)
    D = torch.randn(C, K, generator=g, dtype=torch.float64)
    if K > 1:
        D[0, K - 1] = -math.inf
    init = torch.randn(C, generator=g, dtype=torch.float64)
    fin = torch.randn(C, generator=g, dtype=torch.float64)
    tl_ = None
    if tail:
        tl_ = -0.2 - torch.rand(C, generator=g, dtype=torch.float64)
        if C > 1:
            tl_[-1] = -math.inf
    ss = torch.randn(B, T, C, generator=g, dtype=torch.float64).to(dtype) if bnd else None
    se = torch.randn(B, T, C, generator=g, dtype=torch.float64).to(dtype) if bnd else None
    mdv = None
    if md:
        kc = torch.tensor([K - 1 if (c == 0 and K > 1) else K for c in range(C)])
        mdv = torch.randint(0, K + 1, (B, T, C), generator=g).to(torch.int32)
        if tail:  # tailed labels: either unbounded or cut at K_c (see inputs.py)
            cut = torch.minimum(mdv, kc.view(1, 1, C).to(torch.int32))
            free = torch.rand(B, T, C, generator=g) < 0.5
            mdv = torch.where(free, torch.full_like(mdv, 1 << 30), cut)
        mdv[:, :, -1] = 1 << 30  # keep a path open
    lm = None
    if mask:
        lm = torch.rand(B, T, C, generator=g) < 0.8
        lm[:, :, -1] = True
    if lengths is None:
        lengths = [T] + [max(1, T - 2 - i) for i in range(B - 1)]
    L = torch.tensor(lengths)
    return check_inputs(h, L, A, D, init, fin, tl_, ss, se, mdv, lm)


def _case_compare(torch, x, checkpoint=None):
    """Max errors of the kernels against the float64 reference on one input."""
    from genoseg.crf import reference as ref
    from genoseg.crf import triton_kernels as tk

    out = {}
    lz = tk.log_partition(x).double()
    lr = ref.log_partition(x).detach()
    out["logz_rel"] = float(((lz - lr).abs() / lr.abs().clamp(min=1.0)).max())
    m = tk.marginals(x, checkpoint=checkpoint)
    mr = ref.marginals(x)
    for k in ("position", "start", "end", "start_any", "end_any"):
        out[k] = float((getattr(m, k).double() - mr[k]).abs().max())
    # position posteriors of valid rows sum to one
    valid = torch.arange(x.T).view(1, -1) < x.lengths.view(-1, 1)
    rows = m.position.double().sum(-1)[valid]
    out["rowsum"] = float((rows - 1).abs().max())
    s, paths = tk.viterbi(x)
    sr, _ = ref.viterbi(x)
    out["viterbi_score"] = float((s - sr).abs().max())
    # the returned path must tile [0, L) and score exactly the best score
    worst = 0.0
    for b, segs in enumerate(paths):
        ref.check_tiling(segs, int(x.lengths[b]), x.C)
        worst = max(worst, abs(float(ref._score(x, b, segs)) - float(sr[b])))
    out["viterbi_path"] = worst
    return out


def _worker() -> dict:
    import torch

    from genoseg.crf import api
    from genoseg.crf import reference as ref
    from genoseg.crf import triton_kernels as tk

    assert tk.interpreted(), "TRITON_INTERPRET=1 was not honoured"
    report: dict = {}

    def run(name, fn):
        try:
            report[name] = fn()
        except Exception:  # reported, asserted by the parent
            report[name] = {"error": traceback.format_exc()}

    # odd label counts, per-label K, tails, boundary scores, max_dur, mixed lengths
    shapes = {
        "C1": dict(B=2, T=7, C=1, K=3, seed=1, tail=True),
        "C3": dict(B=3, T=9, C=3, K=4, seed=2, tail=True, bnd=True),
        "C5": dict(B=2, T=10, C=5, K=3, seed=3, tail=True, bnd=True, md=True),
        "C33": dict(B=1, T=6, C=33, K=3, seed=4, bnd=True, md=True),
        "C3_md_notail": dict(B=2, T=9, C=3, K=5, seed=5, md=True, lengths=[9, 1]),
        "T_lt_K": dict(B=1, T=3, C=2, K=6, seed=6, tail=True),
        # label_mask: with tails and max_dur, odd C, mixed lengths including L = 1
        "mask_C3": dict(
            B=3,
            T=12,
            C=3,
            K=3,
            seed=13,
            tail=True,
            bnd=True,
            md=True,
            mask=True,
            lengths=[12, 7, 1],
        ),
        "mask_C5": dict(B=2, T=10, C=5, K=2, seed=14, tail=True, mask=True),
    }
    for name, kw in shapes.items():
        run(name, lambda kw=kw: _case_compare(torch, _make(torch, **kw), checkpoint=3))

    # fp32 uncentred emissions of magnitude ~10 (relative log Z error)
    def uncentred():
        x = _make(torch, 1, 40, 3, 4, seed=7, tail=True, dtype=torch.float32, scale=3.0,
                  shift=10.0)  # fmt: skip
        lz = tk.log_partition(x).double()
        lr = ref.log_partition(x).detach()
        m = tk.marginals(x)
        mr = ref.marginals(x)
        return {
            "logz_rel": float(((lz - lr).abs() / lr.abs()).max()),
            "position": float((m.position.double() - mr["position"]).abs().max()),
            "dtype": str(m.position.dtype),
        }

    run("uncentred_fp32", uncentred)

    # a longer sequence (many ring wraps and checkpoint blocks) against the CPU engine
    def longer():
        x = _make(torch, 1, 300, 2, 3, seed=12, tail=True, dtype=torch.float32, scale=3.0,
                  shift=10.0)  # fmt: skip
        args = (x.emissions, x.lengths, x.transitions, x.durations, x.init, x.final, x.tail)
        lz = tk.log_partition(x).double()
        args64 = [a.double() if a.is_floating_point() else a for a in args]
        lc = api.log_partition(*args64, backend="cpu")
        m = tk.marginals(x, checkpoint=37)
        mc = api.marginals(*args, backend="cpu")
        return {
            "logz_rel": float(((lz - lc).abs() / lc.abs()).max()),
            "position": float((m.position - mc.position).abs().max()),
        }

    run("longer", longer)

    # gradients of log Z w.r.t. every float input, against reference autograd
    def gradients(mask=False):
        if mask:
            x = _make(torch, 2, 10, 3, 2, seed=15, tail=True, bnd=True, md=True, mask=True)
        else:
            x = _make(torch, 2, 8, 3, 3, seed=8, tail=True, bnd=True)
        names = ("emissions", "transitions", "durations", "init", "final", "tail",
                 "seg_start", "seg_end")  # fmt: skip
        errs = {}
        w = torch.tensor([0.7, -1.3], dtype=torch.float64)
        grads = []
        for engine in ("triton", "reference"):
            leaves = {n: getattr(x, n).detach().clone().requires_grad_(True) for n in names}
            y = api.check_inputs(leaves["emissions"], x.lengths, leaves["transitions"],
                                 leaves["durations"], leaves["init"], leaves["final"],
                                 leaves["tail"], leaves["seg_start"], leaves["seg_end"],
                                 x.max_dur, x.label_mask)  # fmt: skip
            lz = tk.log_partition(y, checkpoint=2) if engine == "triton" else ref.log_partition(y)
            (lz * w).sum().backward()
            grads.append({n: leaves[n].grad for n in names})
        for n in names:
            a, b = grads[0][n], grads[1][n]
            fin = torch.isfinite(b)
            errs[n] = float((a[fin] - b[fin]).abs().max())
        return errs

    run("gradients", gradients)
    run("gradients_mask", lambda: gradients(mask=True))

    # checkpoint interval below K, equal to 1, above T: same posteriors; same bits twice
    def checkpoints():
        x = _make(torch, 2, 11, 3, 5, seed=9, tail=True, md=True)
        ms = [tk.marginals(x, checkpoint=c) for c in (1, 4, 50)]
        again = tk.marginals(x, checkpoint=4)
        diff = max(float((ms[0].position - m.position).abs().max()) for m in ms[1:])
        same = all(
            torch.equal(getattr(again, k), getattr(ms[1], k))
            for k in ("position", "start", "end", "log_z")
        )
        return {"diff": diff, "bitwise": same}

    run("checkpoints", checkpoints)

    # chunked carry-over: three chunks give the whole-contig log Z
    def chunks():
        x = _make(torch, 2, 14, 3, 4, seed=10, tail=True, bnd=True, md=True, lengths=[14, 14])
        whole = tk.log_partition(x)
        state, pieces = None, [(0, 5), (5, 9), (9, 14)]
        for i, (a, b) in enumerate(pieces):

            def cut(t, a=a, b=b):
                return None if t is None else t[:, a:b]

            xc = api.check_inputs(cut(x.emissions), torch.full((2,), b - a), x.transitions,
                                  x.durations, x.init, x.final, x.tail, cut(x.seg_start),
                                  cut(x.seg_end), cut(x.max_dur), position_offset=a)  # fmt: skip
            lz, state = tk.forward_chunk(xc, state, last=i == len(pieces) - 1)
        return {"diff": float((lz - whole.double()).abs().max()), "position": state.position}

    run("chunks", chunks)

    # chunked carry-over with label_mask: runs of allowed positions (longer than K_c, so
    # through the tail) continue across chunk boundaries; the middle chunk has no mask
    def chunks_mask():
        x = _make(torch, 2, 16, 3, 3, seed=16, tail=True, md=True, mask=True, lengths=[16, 16])
        lm = x.label_mask.clone()
        lm[:, 6:10] = True
        x = api.check_inputs(x.emissions, x.lengths, x.transitions, x.durations, x.init,
                             x.final, x.tail, None, None, x.max_dur, lm)  # fmt: skip
        whole = ref.log_partition(x).detach()
        whole_tk = tk.log_partition(x)
        state, pieces = None, [(0, 6), (6, 10), (10, 16)]
        for i, (a, b) in enumerate(pieces):

            def cut(t, a=a, b=b):
                return None if t is None or (t is lm and a == 6) else t[:, a:b]

            xc = api.check_inputs(cut(x.emissions), torch.full((2,), b - a), x.transitions,
                                  x.durations, x.init, x.final, x.tail, None, None,
                                  cut(x.max_dur), cut(lm), position_offset=a)  # fmt: skip
            lz, state = tk.forward_chunk(xc, state, last=i == len(pieces) - 1)
        runs = api.allowed_runs(lm.numpy())[:, -1, :]
        return {
            "diff": float(((lz - whole) / whole.abs()).abs().max()),
            "diff_one_call": float((lz - whole_tk).abs().max()),
            "run_carry": state.run.tolist() == runs.tolist(),
            "longest_run": int(api.allowed_runs(lm[:, :, :2].numpy()).max()),
        }

    run("chunks_mask", chunks_mask)

    # partial_nll on the triton backend: value and gradients equal the reference
    def partial():
        x = _make(torch, 2, 12, 3, 3, seed=17, tail=True, bnd=True, lengths=[12, 9])
        _, paths = ref.viterbi(x)
        lm = torch.ones(2, 12, 3, dtype=torch.bool)
        for b, segs in enumerate(paths):  # one-hot labels on [3, 9), unknown elsewhere
            for s, e, c in segs:
                for t in range(max(s, 3), min(e, 9)):
                    lm[b, t] = False
                    lm[b, t, c] = True
        names = ("emissions", "transitions", "durations", "tail", "seg_end")
        out = []
        for be in ("triton", "reference"):
            leaves = {n: getattr(x, n).detach().clone().requires_grad_(True) for n in names}
            v = api.partial_nll(leaves["emissions"], x.lengths, leaves["transitions"],
                                leaves["durations"], x.init, x.final, leaves["tail"],
                                x.seg_start, leaves["seg_end"], label_mask=lm,
                                backend=be)  # fmt: skip
            v.sum().backward()
            out.append((v.detach(), {n: leaves[n].grad for n in names}))
        (v, gt), (vr, gr) = out
        errs = {n: float((gt[n] - gr[n])[torch.isfinite(gr[n])].abs().max()) for n in names}
        return {"value": float((v - vr).abs().max()), "min": float(vr.min()), **errs}

    run("partial_nll", partial)

    # public API: backend="triton" on CPU tensors under the interpreter; all-forbidden error
    def dispatch():
        x = _make(torch, 1, 6, 2, 3, seed=11)
        args = (x.emissions, x.lengths, x.transitions, x.durations, x.init, x.final)
        a = api.log_partition(*args, backend="triton")
        b = api.log_partition(*args, backend="cpu")
        bad = x.init.clone().fill_(-math.inf)
        try:
            api.log_partition(*args[:4], bad, x.final, backend="triton")
            msg = ""
        except ValueError as exc:
            msg = str(exc)
        # label_mask runs in the kernels (no CPU fallback, no warning)
        import warnings

        lm = torch.ones(1, 6, 2, dtype=torch.bool)
        lm[0, 2, 0] = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mt = api.marginals(*args, label_mask=lm, backend="triton")
            vt = api.viterbi(*args, label_mask=lm, backend="triton")
        mr = api.marginals(*args, label_mask=lm, backend="reference")
        vr = api.viterbi(*args, label_mask=lm, backend="reference")
        try:
            api.log_partition(*args, label_mask=lm & False, backend="triton")
            mask_msg = ""
        except ValueError as exc:
            mask_msg = str(exc)
        return {
            "diff": float((a - b).abs().max()),
            "forbidden_msg": msg,
            "mask_warnings": [str(w.message) for w in caught if "genoseg" in str(w.message)],
            "mask_diff": float((mt.position - mr.position).abs().max()),
            "mask_masked": float(mt.position[0, 2, 0]),
            "mask_viterbi": [vt[1] == vr[1], float((vt[0] - vr[0]).abs().max())],
            "mask_forbidden_msg": mask_msg,
        }

    run("dispatch", dispatch)

    # property-based: a few random shapes and options (the interpreter is slow)
    def properties():
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        worst: dict = {}

        @settings(max_examples=6, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(
            T=st.integers(1, 8), C=st.integers(1, 4), K=st.integers(1, 4),
            tail=st.booleans(), bnd=st.booleans(), md=st.booleans(), mask=st.booleans(),
            seed=st.integers(0, 99),
        )  # fmt: skip
        def check(T, C, K, tail, bnd, md, mask, seed):
            x = _make(torch, 2, T, C, K, seed=seed, tail=tail, bnd=bnd, md=md, mask=mask)
            for k, v in _case_compare(torch, x, checkpoint=2).items():
                worst[k] = max(worst.get(k, 0.0), v)

        check()
        return worst

    run("properties", properties)
    return report


def _sparse_empty(shape, dtype, device):
    """An uninitialised tensor backed by a sparse file mapping: only the pages the kernel
    touches take memory or disk, so a buffer of more than 2^31 elements costs nothing."""
    import tempfile

    import torch

    n = math.prod(shape)
    fd, path = tempfile.mkstemp(prefix="genoseg-sparse-")
    try:
        os.ftruncate(fd, n * torch.empty((), dtype=dtype).element_size())
        return torch.from_file(path, shared=True, size=n, dtype=dtype).view(shape)
    finally:
        os.close(fd)
        os.unlink(path)  # the mapping stays valid


def _worker_int64() -> dict:
    """The backward kernel with a checkpoint block of 120 million positions: scratch
    offsets beyond 2^31 elements (int32 products of the interval wrap and crash or corrupt
    the second sequence). The block buffers are sparse file mappings; only a few rows are
    touched. Results must equal the default interval bit for bit."""
    import torch

    from genoseg.crf import triton_kernels as tk

    assert tk.interpreted(), "TRITON_INTERPRET=1 was not honoured"
    x = _make(torch, 2, 7, 3, 3, seed=21, tail=True, bnd=True, md=True, lengths=[7, 5])
    ref = tk._gradients(x, None)
    p, logz, ck_ring, ck_vec, ck, n_ck = tk._checkpointed_forward(x, None)
    assert n_ck == 1  # one block: the saved state at position 0 serves any longer interval
    big = 120_000_000
    out = tk._gradients(x, None, (p, logz, ck_ring, ck_vec, big, 1), empty=_sparse_empty)
    return {
        "BC": p.BC,
        "interval": big,
        "diff": [float((a.double() - b.double()).abs().max()) for a, b in zip(ref, out)],
    }


# streaming on CUDA: the chunk entry points against the CPU streams (genoseg.crf.stream)

# chunkings of a 20-position contig: boundaries inside long (tail) segments, a one-row
# chunk, one chunk given without label_mask (None: its rows are all True in the contig's
# mask), and the whole contig as one chunk
_CHUNKINGS = {
    "three": ([(0, 6), (6, 12), (12, 20)], {(6, 12)}),
    "one_row": ([(0, 10), (10, 11), (11, 20)], set()),
    "whole": ([(0, 20)], set()),
}


def _stream_case(torch):
    """B = 2 sequences of 20 positions, C = 3, per-label K (2, 3, 3), tails on labels 0 and
    1, seg_start/seg_end, max_dur and a random label_mask (runs shorter and longer than
    K_c), plus one long favoured stretch per sequence (label 0 on [3, 17), label 1 on
    [2, 19); no self-transitions for them) so that the best path has tail segments crossing
    chunk boundaries."""
    from genoseg.crf.inputs import check_inputs

    x = _make(torch, 2, 20, 3, 3, seed=31, tail=True, bnd=True, md=True, mask=True,
              lengths=[20, 20])  # fmt: skip
    h, lm, md = x.emissions.clone(), x.label_mask.clone(), x.max_dur.clone()
    A = x.transitions.clone()
    for b, c, a, e in ((0, 0, 3, 17), (1, 1, 2, 19)):
        h[b, a:e, c] += 4.0
        lm[b, a:e, c] = True
        md[b, a:e, c] = 1 << 30
        A[c, c] = -math.inf
    lm[:, 6:12] = True
    return check_inputs(h, x.lengths, A, x.durations, x.init, x.final, x.tail, x.seg_start,
                        x.seg_end, md, lm)  # fmt: skip


def _chunk_args(x, a, b, no_mask):
    def cut(t):
        return None if t is None else t[:, a:b]

    return (cut(x.emissions), cut(x.seg_start), cut(x.seg_end), cut(x.max_dur),
            None if (a, b) in no_mask else cut(x.label_mask))  # fmt: skip


def _chunk_inputs(x, a, b, no_mask):
    from genoseg.crf.inputs import check_inputs

    em, ss, se, md, lm = _chunk_args(x, a, b, no_mask)
    return check_inputs(em, None, x.transitions, x.durations, x.init, x.final, x.tail, ss, se,
                        md, lm, position_offset=a)  # fmt: skip


def _trace(cursor: list, vc) -> list:
    """Segments of the best path ending in one chunk, from its back-pointers (the traceback
    of genoseg.crf.stream.ViterbiStream.backward); ``cursor`` per sequence
    [end, label, label resolved] is updated."""
    start = vc.start
    bl, bp = vc.bp_len.cpu().numpy(), vc.bp_prev.cpu().numpy()
    out = []
    for b, (e, c, resolved) in enumerate(cursor):
        segs = []
        while e > 0:
            if not resolved:
                if e < start:
                    break
                c, resolved = int(bp[b, e - start, c]), True
            if e - 1 < start:
                break
            d = int(bl[b, e - 1 - start, c])
            assert d > 0, ("broken back-pointer", b, e - 1, c)
            segs.append((e - d, e, c))
            e, resolved = e - d, False
        cursor[b] = [e, c, resolved]
        out.append(segs[::-1])
    return out


def _worker_stream_viterbi() -> dict:
    """forward_chunk (log Z) and two-pass viterbi_chunk against ForwardStream and
    ViterbiStream on the CPU, for every chunking."""
    import torch

    from genoseg.crf import triton_kernels as tk
    from genoseg.crf.stream import ForwardStream, ViterbiStream

    assert tk.interpreted(), "TRITON_INTERPRET=1 was not honoured"
    x = _stream_case(torch)
    params = (x.transitions, x.durations, x.init, x.final, x.tail)
    _, whole_path = tk.viterbi(x)
    whole_logz = tk.log_partition(x)
    out = {}
    for name, (pieces, no_mask) in _CHUNKINGS.items():
        r: dict = {}
        # log Z: forward_chunk over the chunks, the last with last=True
        fs = ForwardStream(*params, batch=2)
        state, kept = None, []
        for i, (a, b) in enumerate(pieces):
            kept.append(state)
            lz, state = tk.forward_chunk(_chunk_inputs(x, a, b, no_mask), state,
                                         last=i == len(pieces) - 1)  # fmt: skip
            fs.update(*_chunk_args(x, a, b, no_mask))
        cpu_lz = fs.log_z()
        r["logz_vs_cpu"] = float(((lz - cpu_lz) / cpu_lz.abs()).abs().max())
        r["logz_vs_one_call"] = float((lz - whole_logz).abs().max())
        r["state_logz"] = float((state.log_z(x.final) - lz).abs().max())
        # Viterbi, pass 1 without back-pointers, pass 2 in reverse from the kept states
        vs = ViterbiStream(*params, batch=2)
        state, kept = None, []
        for a, b in pieces:
            kept.append(state)
            _, state = tk.viterbi_chunk(_chunk_inputs(x, a, b, no_mask), state, pointers=False)
            vs.forward(*_chunk_args(x, a, b, no_mask))
        score, last = state.best(x.final)
        r["score_vs_cpu"] = float((score - vs.score()).abs().max())
        snapshots = [None if s is None else s.clone() for s in kept]
        cursor = [[pieces[-1][1], int(c), True] for c in last]
        same, ours = True, [[] for _ in range(2)]
        for (a, b), s0 in zip(reversed(pieces), reversed(kept)):
            vc, _ = tk.viterbi_chunk(_chunk_inputs(x, a, b, no_mask), s0, pointers=True)
            segs = _trace(cursor, vc)
            same &= segs == vs.backward(*_chunk_args(x, a, b, no_mask))
            for k in range(2):
                ours[k] = segs[k] + ours[k]
        r["segments_equal_cpu_stream"] = bool(same)
        r["states_untouched"] = all(
            s is None
            or all(torch.equal(getattr(s, k), getattr(c, k)) for k in ("ring", "vec", "gst", "run"))
            for s, c in zip(kept, snapshots)
        )
        r["path_equals_one_call"] = ours == [list(p) for p in whole_path]
        cuts = {a for a, _ in pieces[1:]}
        r["long_segment_across_boundary"] = any(
            e - s > 3 and any(s < c < e for c in cuts) for segs in ours for s, e, _ in segs
        )
        out[name] = r
    return out


def _worker_stream_posterior() -> dict:
    """Two-pass posterior_chunk against PosteriorStream on the CPU and against one
    whole-contig marginals call, for two chunkings."""
    import torch

    from genoseg.crf import triton_kernels as tk
    from genoseg.crf.stream import PosteriorStream

    assert tk.interpreted(), "TRITON_INTERPRET=1 was not honoured"
    x = _stream_case(torch)
    whole = tk.marginals(x)
    out = {}
    for name in ("three", "one_row"):
        pieces, no_mask = _CHUNKINGS[name]
        r = {"vs_cpu": 0.0, "vs_one_call": 0.0}
        ps = PosteriorStream(x.transitions, x.durations, x.init, x.final, x.tail, batch=2)
        state, kept = None, []
        for a, b in pieces:
            kept.append(state)
            _, state = tk.forward_chunk(_chunk_inputs(x, a, b, no_mask), state, last=False)
            ps.forward(*_chunk_args(x, a, b, no_mask))
        adjoint = None
        for (a, b), s0 in zip(reversed(pieces), reversed(kept)):
            m, adjoint = tk.posterior_chunk(_chunk_inputs(x, a, b, no_mask), s0, adjoint,
                                            checkpoint=4)  # fmt: skip
            mc = ps.backward(*_chunk_args(x, a, b, no_mask))
            for k in ("position", "start", "end", "start_any", "end_any"):
                mine = getattr(m, k).double()
                r["vs_cpu"] = max(r["vs_cpu"], float((mine - getattr(mc, k)).abs().max()))
                one = getattr(whole, k)[:, a:b].double()
                r["vs_one_call"] = max(r["vs_one_call"], float((mine - one).abs().max()))
        r["log_z"] = float((m.log_z - whole.log_z).abs().max())
        r["done"] = adjoint.position == 0
        out[name] = r
    # the sweep refuses a chunk given out of order
    try:
        tk.posterior_chunk(_chunk_inputs(x, 0, 7, set()), None, adjoint)
        out["order_msg"] = ""
    except ValueError as exc:
        out["order_msg"] = str(exc)
    return out


# ----------------------------------------------------------------------------------------
# pytest side


def _run_worker(name: str, timeout: int) -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", name], env=env, capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report() -> dict:
    return _run_worker("main", 600)


@pytest.fixture(scope="module")
def stream_viterbi() -> dict:
    return _run_worker("stream_viterbi", 300)


@pytest.fixture(scope="module")
def stream_posterior() -> dict:
    return _run_worker("stream_posterior", 300)


def _ok(report: dict, name: str) -> dict:
    r = report[name]
    assert "error" not in r, r.get("error")
    return r


@pytest.mark.parametrize(
    "name", ["C1", "C3", "C5", "C33", "C3_md_notail", "T_lt_K", "mask_C3", "mask_C5"]
)
def test_kernels_match_reference(report, name):
    r = _ok(report, name)
    assert r["logz_rel"] < 1e-6
    for k in ("position", "start", "end", "start_any", "end_any"):
        assert r[k] < 1e-5, (k, r[k])
    assert r["rowsum"] < 1e-5
    assert r["viterbi_score"] < 1e-9
    assert r["viterbi_path"] < 1e-9


def test_uncentred_fp32(report):
    r = _ok(report, "uncentred_fp32")
    assert r["logz_rel"] < 1e-6
    assert r["position"] < 1e-4
    assert r["dtype"] == "torch.float32"


def test_longer_sequence_matches_cpu_engine(report):
    r = _ok(report, "longer")
    assert r["logz_rel"] < 1e-6
    assert r["position"] < 1e-4


@pytest.mark.parametrize("name", ["gradients", "gradients_mask"])
def test_gradients_of_every_input(report, name):
    r = _ok(report, name)
    assert set(r) == {"emissions", "transitions", "durations", "init", "final", "tail",
                      "seg_start", "seg_end"}  # fmt: skip
    for k, v in r.items():
        assert v < 1e-5, (k, v)


def test_checkpoint_interval_and_determinism(report):
    r = _ok(report, "checkpoints")
    assert r["diff"] < 1e-6
    assert r["bitwise"]


def test_chunked_carry_over(report):
    r = _ok(report, "chunks")
    assert r["diff"] < 1e-9
    assert r["position"] == 14


def test_chunked_carry_over_with_label_mask(report):
    r = _ok(report, "chunks_mask")
    assert r["diff"] < 1e-6  # against the float64 reference
    assert r["diff_one_call"] < 1e-12  # against one kernel call on the whole contig
    assert r["run_carry"]
    assert r["longest_run"] > 4  # some run crosses a chunk boundary and exceeds K_c + 1


def test_partial_nll_matches_reference(report):
    r = _ok(report, "partial_nll")
    assert r["min"] > 0.01  # the mask really excludes mass
    for k in ("value", "emissions", "transitions", "durations", "tail", "seg_end"):
        assert r[k] < 1e-6, (k, r[k])


def test_dispatch(report):
    r = _ok(report, "dispatch")
    assert r["diff"] < 1e-6
    assert "no segmentation has a finite score" in r["forbidden_msg"]
    assert r["mask_warnings"] == []
    assert r["mask_diff"] < 1e-5
    assert abs(r["mask_masked"]) < 1e-12  # a forbidden label has no posterior mass
    assert r["mask_viterbi"][0] and r["mask_viterbi"][1] < 1e-9
    assert "label_mask" in r["mask_forbidden_msg"]


def test_hypothesis_cases(report):
    r = _ok(report, "properties")
    assert r["logz_rel"] < 1e-6
    assert max(r[k] for k in ("position", "start", "end")) < 1e-5
    assert r["viterbi_path"] < 1e-9


@pytest.mark.parametrize("name", sorted(_CHUNKINGS))
def test_forward_and_viterbi_chunks_match_cpu_streams(stream_viterbi, name):
    r = stream_viterbi[name]
    assert r["logz_vs_cpu"] < 1e-7
    assert r["logz_vs_one_call"] < 1e-12  # bit for bit with one whole-contig call
    assert r["state_logz"] < 1e-9  # ChunkState.log_z == the kernel's final log-sum-exp
    assert r["states_untouched"]
    assert r["score_vs_cpu"] < 1e-9
    assert r["segments_equal_cpu_stream"]
    assert r["path_equals_one_call"]
    if name != "whole":
        assert r["long_segment_across_boundary"]


@pytest.mark.parametrize("name", ["three", "one_row"])
def test_posterior_chunks_match_cpu_stream(stream_posterior, name):
    r = stream_posterior[name]
    assert r["vs_cpu"] < 1e-6
    assert r["vs_one_call"] < 1e-12
    assert r["log_z"] < 1e-12
    assert r["done"]


def test_posterior_chunk_out_of_order_is_an_error(stream_posterior):
    assert "give the chunks of pass 1 in reverse order" in stream_posterior["order_msg"]


def test_checkpoint_offsets_beyond_int32():
    """Item: index products with the checkpoint interval are int64 (a block of 120 M
    positions at BC = 4 puts keep-buffer offsets at 2.9e9 > 2^31)."""
    r = _run_worker("int64", 120)
    assert 6 * (r["interval"] + 1) * r["BC"] > 2**31  # the case really overflows int32
    assert r["diff"] == [0.0] * 9, r["diff"]


def test_per_position_inputs_on_another_device_are_a_clear_error():
    """seg_start / seg_end / max_dur / label_mask on another device than the emissions:
    ValueError naming the input before any launch (the "meta" device stands in for CPU vs
    CUDA here; the check runs before the kernel, so no GPU is needed)."""
    torch = pytest.importorskip("torch")
    import dataclasses

    from genoseg.crf import triton_kernels as tk
    from genoseg.crf.inputs import check_inputs

    B, T, C, K = 1, 5, 2, 3
    z = torch.zeros(C)
    x = check_inputs(torch.zeros(B, T, C), None, torch.zeros(C, C), torch.zeros(C, K), z, z,
                     None, torch.zeros(B, T, C), torch.zeros(B, T, C),
                     torch.full((B, T, C), K, dtype=torch.int32),
                     torch.ones(B, T, C, dtype=torch.bool))  # fmt: skip
    for name in ("seg_start", "seg_end", "max_dur", "label_mask"):
        y = dataclasses.replace(x, **{name: getattr(x, name).to("meta")})
        for call in (tk.log_partition, tk.marginals, tk.viterbi, tk.forward_chunk):
            with pytest.raises(ValueError, match=f"{name} is on meta but emissions are on cpu"):
                call(y)


def test_triton_on_cpu_tensors_without_interpreter_is_a_clear_error():
    torch = pytest.importorskip("torch")
    from genoseg.crf import api

    h = torch.zeros(1, 4, 2)
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        api.log_partition(h, None, torch.zeros(2, 2), torch.zeros(2, 3), z, z, backend="triton")


def test_dispatcher_launches_only_compiled_specialisations(monkeypatch):
    """Bind the arguments of every launch the host code makes (each kernel, label counts
    1..64, fp32/fp64 emissions, every optional input on or off, misaligned views, the chunk
    entry points)
    with triton's own binder for a CUDA target: each launch's signature, constexprs and
    alignment attributes must be one of ``specialisations()``, which the compile test
    builds; none may add a specialisation."""
    torch = pytest.importorskip("torch")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from genoseg.crf import triton_kernels as tk
    from genoseg.crf.inputs import check_inputs

    backend = make_backend(GPUTarget("cuda", 90, 32))
    known = {}
    for spec in tk.specialisations():
        const = tuple(sorted(spec["constexprs"].items()))
        attrs = tuple(sorted((k, str(v)) for k, v in spec["attrs"].items()))
        known[(spec["kernel"], tuple(spec["signature"].items()), const, attrs)] = spec["name"]

    class Launched(Exception):
        pass

    launched = []

    def capture(kname, fn, stop):
        binder = create_function_from_signature(fn.signature, fn.params, backend)

        def run(*args, grid, warmup, **kwargs):
            bound, spec, opts = binder(*args, **kwargs)
            _, sig, const, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
            names = list(sig)
            const = tuple(sorted((names[k[0]], v) for k, v in const.items()))
            attrs = tuple(sorted((k, str(v)) for k, v in attrs.items() if v))
            launched.append((kname, tuple(sig.items()), const, attrs))
            if stop:
                raise Launched

        monkeypatch.setattr(fn, "run", run)

    capture("forward", tk._forward_kernel, True)
    capture("viterbi", tk._viterbi_kernel, True)
    capture("backward", tk._backward_kernel, False)

    def launch_all(x):
        calls = (
            tk.log_partition, tk.viterbi, tk.forward_chunk, tk.viterbi_chunk,
            lambda x: tk.viterbi_chunk(x, None, pointers=False),
            lambda x: tk.posterior_chunk(x, None, None),  # stops at its forward
        )  # fmt: skip
        for call in calls:
            with pytest.raises(Launched):
                call(x)
        p = tk._prepare(x)
        f64 = torch.float64
        ck_ring = torch.zeros((p.B, 2, p.R, p.BC), dtype=f64)
        ck_vec = torch.zeros((p.B, 2, 3, p.BC), dtype=f64)
        tk._gradients(x, None, (p, torch.zeros(p.B, dtype=f64), ck_ring, ck_vec, 3, 2))

    g = torch.Generator().manual_seed(0)
    for i, (C, dtype) in enumerate(
        [(c, dt) for c in (1, 3, 4, 5, 9, 16, 17, 33, 64) for dt in (torch.float32, torch.float64)]
    ):
        B, T, K = 2, 5, 3
        opt = [bool(i >> k & 1) for k in range(4)]  # seg_start/end, max_dur, mask, view
        big = torch.randn(B + 1, T, C, generator=g).to(dtype)
        h = big[1:] if opt[3] else big[:B]  # a view at an offset of T*C elements
        bnd = torch.randn(B, T, C, generator=g).to(dtype) if opt[0] else None
        md = torch.full((B, T, C), K, dtype=torch.int32) if opt[1] else None
        lm = torch.rand(B, T, C, generator=g) < 0.8 if opt[2] else None
        z = torch.zeros(C)
        x = check_inputs(h, None, torch.zeros(C, C), torch.zeros(C, K), z, z, z - 1, bnd, bnd,
                         md, lm)  # fmt: skip
        launch_all(x)
    assert len(launched) == 18 * 7
    for entry in launched:
        assert entry in known, entry
    # every BC and both dtypes were reached, so the compile test's set is the launched set
    assert {known[e] for e in launched} == set(known.values())


def _source_line(text: str) -> int:
    """1-based line of the unique line of triton_kernels.py containing ``text``."""
    hits = [i for i, ln in enumerate(KERNELS_PY.read_text().splitlines(), 1) if text in ln]
    assert len(hits) == 1, (text, hits)
    return hits[0]


def _compile_one(args):
    index, arch = args
    from genoseg.crf import triton_kernels as tk
    from genoseg.crf.barrier_check import scratch_hazards

    spec = tk.specialisations()[index]
    k = tk.compile_specialisation(spec, arch)
    ttgir = k.asm["ttgir"]
    hazards = [str(h) for h in scratch_hazards(ttgir)]
    pairs = [(h.first_source, h.second_source) for h in scratch_hazards(ttgir, barriers=False)]
    return spec["name"], arch, len(k.asm["cubin"]), k.asm["cubin"][:4] == b"\x7fELF", hazards, pairs


def test_every_specialisation_compiles_for_sm80_and_sm90():
    """Each build yields a cubin and its TTGIR has no unordered load/store pair of one
    scratch address. In the backward, the start-adjoint row gq[s] is loaded by every
    replica thread and then reset: the checker must see that pair and find a barrier
    between the two (issue 8, item 1: the reset used to follow the load directly)."""
    from genoseg.crf import triton_kernels as tk

    jobs = [(i, arch) for i in range(len(tk.specialisations())) for arch in (80, 90)]
    with ProcessPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as ex:
        results = list(ex.map(_compile_one, jobs))
    assert len(results) == 2 * len(tk.specialisations())
    load = f"triton_kernels.py:{_source_line('gqs = tl.load(gq + so)')}"
    reset = f"triton_kernels.py:{_source_line('tl.store(gq + so, tl.zeros(')}"
    for name, arch, size, is_elf, hazards, pairs in results:
        assert is_elf and size > 1000, (name, arch)
        assert hazards == [], (name, arch, hazards)
        if name.startswith("backward"):
            assert (load, reset) in pairs, (name, arch, pairs)


# small kernels with known answers: the barrier check must flag exactly the racy ones
try:
    import triton
    import triton.language as tl

    @triton.jit
    def _racy(scratch, out, BC: tl.constexpr):
        offs = tl.arange(0, BC)
        v = tl.load(scratch + offs)
        tl.store(scratch + offs, tl.zeros([BC], tl.float64))  # a replica may load 0 later
        tl.store(out + offs, v * 2.0)

    @triton.jit
    def _ordered(scratch, out, BC: tl.constexpr):
        offs = tl.arange(0, BC)
        v = tl.load(scratch + offs)
        tl.debug_barrier()
        tl.store(scratch + offs, tl.zeros([BC], tl.float64))
        tl.store(out + offs, v * 2.0)

    @triton.jit
    def _owner_rmw(scratch, out, BC: tl.constexpr):
        offs = tl.arange(0, BC)
        tl.store(scratch + offs, tl.load(scratch + offs) + 1.0)  # only the owner's copy

    @triton.jit
    def _read_after_write(scratch, out, BC: tl.constexpr):
        offs = tl.arange(0, BC)
        tl.store(scratch + offs, tl.load(out + offs))
        tl.store(out + BC + offs, tl.load(scratch + offs))  # may run before the owner's store

    @triton.jit
    def _loop_carried(scratch, out, n, BC: tl.constexpr):
        offs = tl.arange(0, BC)
        for i in range(n):
            v = tl.load(scratch + offs)  # reads the previous iteration's store
            tl.store(out + i * BC + offs, v)
            tl.debug_barrier()
            tl.store(scratch + offs, v + 1.0)

    @triton.jit
    def _loop_ordered(scratch, out, n, BC: tl.constexpr):
        offs = tl.arange(0, BC)
        for i in range(n):
            tl.debug_barrier()
            v = tl.load(scratch + offs)
            tl.store(out + i * BC + offs, v)
            tl.debug_barrier()
            tl.store(scratch + offs, v + 1.0)

    _CONTROLS = {
        "racy": (_racy, ["store after load"]),
        "ordered": (_ordered, []),
        "owner_rmw": (_owner_rmw, []),
        "read_after_write": (_read_after_write, ["load after store"]),
        "loop_carried": (_loop_carried, ["load after store"]),
        "loop_ordered": (_loop_ordered, []),
    }
except ImportError:  # pragma: no cover - triton is a dependency
    _CONTROLS = {}


def _compile_control(name: str) -> list[str]:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from genoseg.crf.barrier_check import scratch_hazards

    fn, _ = _CONTROLS[name]
    sig = {"scratch": "*fp64", "out": "*fp64", "BC": "constexpr"}
    if "n" in fn.arg_names:
        sig = {"scratch": "*fp64", "out": "*fp64", "n": "i32", "BC": "constexpr"}
    src = ASTSource(fn=fn, signature=sig, constexprs={"BC": 64})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
    return sorted({h.kind for h in scratch_hazards(k.asm["ttgir"])})


@pytest.mark.parametrize("name", sorted(_CONTROLS))
def test_barrier_check_on_known_kernels(name):
    assert _compile_control(name) == _CONTROLS[name][1]


if __name__ == "__main__" and "--worker" in sys.argv:
    _which = sys.argv[sys.argv.index("--worker") + 1]
    _workers = {
        "main": _worker,
        "int64": _worker_int64,
        "stream_viterbi": _worker_stream_viterbi,
        "stream_posterior": _worker_stream_posterior,
    }
    print(json.dumps(_workers[_which]()))
