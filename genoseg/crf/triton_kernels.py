"""Triton kernels of the semi-CRF engine for CUDA (DESIGN.md §1; design in docs/kernels.md).

Same algorithm and conventions as :mod:`genoseg.crf.cpu` (positions 0-based, ``e`` an
exclusive segment end, ``Q[s, c] = S[s, c] - P[s, c]`` in a doubled ring buffer, running
geometric tail ``G``, length loop cut at ``min(K_c, e, max_dur[e-1, c], run[e-1, c])`` where
``run`` counts the positions allowed by ``label_mask``), mapped to the GPU:

* grid ``(B,)``: one program per sequence walks its positions in order; inside the program
  the labels (``BC`` lanes, ``C`` padded to a power of two) and the durations (tiles of
  ``BD`` lengths) are processed in parallel, so one long contig still fills a block;
* the ring (``2R x BC`` fp64, ``R = max K_c + 2``) lives in a per-program global scratch
  (L1/L2 resident), published to the block by one barrier per position;
* numerics: prefix sums, ring values, maxima and normalisers in fp64, one fp32 ``exp`` per
  (position, label, duration) cell on a non-positive fp64 difference; per-label ``log``
  and the tail recursion in fp64;
* the gradient is the exact adjoint of this loop (reverse sweep between checkpoints, with
  recomputation of each block); every weight is normalised by a sum computed from the very
  same fp32 exponentials, so position posteriors (running sums over ends minus starts)
  telescope exactly at any length;
* deterministic: no atomics; each program owns its scratch and parameter-gradient rows,
  which the host sums over the batch.

Public functions take checked :class:`genoseg.crf.inputs.CRFInputs`:
:func:`log_partition` (differentiable), :func:`marginals`, :func:`viterbi`, and for one
contig chunk by chunk (state carried across chunks, exactly equal to one call):
:func:`forward_chunk`, :func:`viterbi_chunk` and :func:`posterior_chunk` with their
:class:`ChunkState` / :class:`AdjointState` (the CUDA side of ``genoseg.crf.stream``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

# Pin fp fusion (FMA contraction) on, the behaviour the numerics were tested with; Triton
# 3.10 changes the default. Only a default: a user's explicit setting wins.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from torch import Tensor  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from genoseg.crf.inputs import CRFInputs, check_position  # noqa: E402

_INT_ARGS = {
    "_forward_kernel": ("e0", "T", "C", "K", "R", "n_ss", "n_se", "n_md", "n_run",
                        "do_final", "ck_every", "n_ck"),
    "_viterbi_kernel": ("e0", "T", "C", "K", "R", "n_ss", "n_se", "n_md", "n_run", "n_bp"),
    "_backward_kernel": ("e0", "T", "C", "K", "R", "n_ss", "n_se", "n_md", "n_run", "ck_every",
                         "n_ck", "seed"),
}  # fmt: skip

NEG: tl.constexpr = tl.constexpr(float("-inf"))
BIGI: tl.constexpr = tl.constexpr(2147483647)

#: Largest label count the kernels handle (BC = next power of two >= C).
MAX_LABELS = 64
#: Cells per (duration x label) tile.
TILE = 512
#: Arrays kept per position while a backward block is recomputed (see ``_KEEP_*``).
N_KEEP = 6
# rows of the keep scratch: alpha[e], max M[e], sum S[e], G[e] (index e - a), and the
# transition-side max/sum of start s (index s - a)
_K_ALPHA, _K_M, _K_S, _K_G, _K_MP, _K_SP = range(N_KEEP)


@triton.jit
def _rowptr(q_ptr, p, kbase, R, BC: tl.constexpr, LINEAR: tl.constexpr):
    """Pointer to the buffer row of position p: ring row p mod R, or linear block row
    p - kbase + R (int64: a block may hold more than 2^31 / BC elements)."""
    if LINEAR:
        return q_ptr + (p - kbase + R).to(tl.int64) * BC
    else:
        return q_ptr + (p % R) * BC


@triton.jit
def _advance(
    h_ptr, ss_ptr, se_ptr, md_ptr, run_ptr, row0, n_ss, n_se, n_md, n_run,
    A_ptr, D_ptr, C, K, Kc, tailv, Dlast, has_tail, init,
    q_ptr, R, alpha, G, P, Gst, ebeg, nsteps,
    keep_ptr, kst, kbase, bpl_ptr, bpp_ptr, n_bp,
    BC: tl.constexpr, BD: tl.constexpr, MODE: tl.constexpr, LINEAR: tl.constexpr,
    KEEP: tl.constexpr,
):  # fmt: skip
    """Advance one sequence's forward state from end position ``ebeg`` by ``nsteps``.

    Per-position inputs (and Viterbi back-pointers) of absolute position s are at
    ``row0 + s * C`` (row0 int64: the sequence's first row minus the chunk start e0).
    State vectors (BC,) fp64: alpha, G, P; Gst (BC,) int32 (Viterbi: absolute start of the
    best tail segment). n_bp: C to store back-pointers (MODE 1), 0 not to.
    n_ss, n_se, n_md, n_run: C when the optional input is given, else 0 (its loads are
    masked off). run[s, c] (label_mask): consecutive allowed positions ending at s; it cuts
    the length loop, a tail start j joins only if run > K_c, the carried tail only if run > 0.
    MODE 0 = log semiring (two-pass LSE: fp64 max, fp64 sum of fp32 exps), 1 = max semiring
    with back-pointers. KEEP: store per-position values for the backward sweep.
    """
    offs_c = tl.arange(0, BC)
    cmask = offs_c < C
    ar = offs_c[:, None]
    ac = offs_c[None, :]
    amask = (ar < C) & (ac < C)
    dl = tl.arange(0, BD)
    for step in range(nsteps):
        e = ebeg + step + 1
        s = e - 1
        rowoff = row0 + s.to(tl.int64) * C
        # 1. close start position s: S[s, c] = ss + (init | LSE_c' alpha[c'] + A[c', c])
        At = tl.load(A_ptr + ar * C + ac, mask=amask, other=NEG)
        x = alpha[:, None] + At
        mp = tl.max(x, axis=0)
        if MODE == 0:
            mps = tl.where(mp == NEG, 0.0, mp)
            sp = tl.sum(tl.exp((x - mps[None, :]).to(tl.float32)).to(tl.float64), axis=0)
            v = tl.where(mp == NEG, NEG, mps + tl.log(sp))
            if KEEP:
                ks = keep_ptr + (s - kbase).to(tl.int64) * BC + offs_c
                tl.store(ks + 4 * kst, mp)
                tl.store(ks + 5 * kst, sp)
        else:
            v = mp
            arg = tl.argmax(x, axis=0)
            tl.store(bpp_ptr + rowoff + offs_c, tl.where(s == 0, -1, arg), mask=offs_c < n_bp)
        v = tl.where(s == 0, init, v)
        ssv = tl.load(ss_ptr + rowoff + offs_c, mask=offs_c < n_ss, other=0.0)
        q = v + ssv.to(tl.float64) - P
        qs = _rowptr(q_ptr, s, kbase, R, BC, LINEAR) + offs_c
        tl.store(qs, q)
        if not LINEAR:  # the ring's second copy (a linear block needs none)
            tl.store(qs + R * BC, q)
        tl.debug_barrier()
        # 2. prefix sums (fp64)
        hv = tl.load(h_ptr + rowoff + offs_c, mask=cmask, other=0.0)
        P = P + hv.to(tl.float64)
        # 3. segments ending at e
        mdv = tl.load(md_ptr + rowoff + offs_c, mask=offs_c < n_md, other=BIGI)
        runv = tl.load(run_ptr + rowoff + offs_c, mask=offs_c < n_run, other=BIGI)
        nc = tl.minimum(tl.minimum(tl.minimum(Kc, e), mdv), runv)
        nc = tl.where(cmask, nc, 0)
        unbounded = mdv >= e
        j = e - Kc - 1
        upd = has_tail & (j >= 0)
        xq = tl.load(_rowptr(q_ptr, j, kbase, R, BC, LINEAR) + offs_c, mask=upd & (runv > Kc),
                     other=NEG)  # fmt: skip
        xq = xq + Dlast + tailv
        g = tl.where(runv > 0, G + tailv, NEG)
        if MODE == 0:
            mx = tl.maximum(xq, g)
            mxs = tl.where(mx == NEG, 0.0, mx)
            gn = tl.where(mx == NEG, NEG, mxs + tl.log(tl.exp(xq - mxs) + tl.exp(g - mxs)))
        else:
            gn = tl.maximum(xq, g)
            Gst = tl.where(upd & (xq >= g), j, Gst)
        G = tl.where(upd, gn, G)
        Gt = tl.where(unbounded & has_tail & (G > NEG), G, NEG)
        nmax = tl.max(nc, axis=0)
        # row of position e - d is qe - d * BC (ring: the second copy keeps it contiguous)
        qe = _rowptr(q_ptr, e, kbase, R, BC, LINEAR)
        if not LINEAR:
            qe += R * BC
        m = tl.full([BC], NEG, tl.float64)
        best = tl.zeros([BC], tl.int32)
        for d0 in range(0, nmax, BD):
            dd = d0 + 1 + dl
            valid = dd[:, None] <= nc[None, :]
            xt = tl.load(qe + (ac - dd[:, None] * BC), mask=valid, other=NEG)
            xt += tl.load(D_ptr + ac * K + dd[:, None] - 1, mask=valid, other=NEG)
            bm = tl.max(xt, axis=0)
            if MODE == 1:
                ba = tl.argmax(xt, axis=0) + d0 + 1
                best = tl.where(bm > m, ba, best)
            m = tl.maximum(m, bm)
        if MODE == 0:
            m = tl.maximum(m, Gt)
            ms = tl.where(m == NEG, 0.0, m)
            acc = tl.exp((Gt - ms).to(tl.float32)).to(tl.float64)
            for d0 in range(0, nmax, BD):
                dd = d0 + 1 + dl
                valid = dd[:, None] <= nc[None, :]
                xt = tl.load(qe + (ac - dd[:, None] * BC), mask=valid, other=NEG)
                xt += tl.load(D_ptr + ac * K + dd[:, None] - 1, mask=valid, other=NEG)
                acc += tl.sum(tl.exp((xt - ms[None, :]).to(tl.float32)).to(tl.float64), axis=0)
            inner = tl.where(m == NEG, NEG, ms + tl.log(acc))
            if KEEP:
                ke = keep_ptr + (e - kbase).to(tl.int64) * BC + offs_c
                tl.store(ke + 1 * kst, m)
                tl.store(ke + 2 * kst, acc)
                tl.store(ke + 3 * kst, G)
        else:
            best = tl.where(Gt > m, e - Gst, best)
            m = tl.maximum(m, Gt)
            inner = m
            tl.store(bpl_ptr + rowoff + offs_c, tl.where(m > NEG, best, 0), mask=offs_c < n_bp)
        sev = tl.load(se_ptr + rowoff + offs_c, mask=offs_c < n_se, other=0.0)
        alpha = tl.where(cmask, P + sev.to(tl.float64) + inner, NEG)
        if KEEP:
            tl.store(keep_ptr + (e - kbase).to(tl.int64) * BC + offs_c, alpha)
    return alpha, G, P, Gst


@triton.jit
def _label_params(Kc_ptr, tail_ptr, D_ptr, init_ptr, C, K, BC: tl.constexpr):
    offs_c = tl.arange(0, BC)
    cmask = offs_c < C
    Kc = tl.load(Kc_ptr + offs_c, mask=cmask, other=0)
    tailv = tl.load(tail_ptr + offs_c, mask=cmask, other=NEG)
    has_tail = cmask & (tailv > NEG) & (Kc > 0)
    Dlast = tl.load(D_ptr + offs_c * K + Kc - 1, mask=has_tail, other=NEG)
    init = tl.load(init_ptr + offs_c, mask=cmask, other=NEG)
    return Kc, tailv, Dlast, has_tail, init


@triton.jit
def _copy_rows(src, dst, nrows, BC: tl.constexpr, BD: tl.constexpr):
    offs_c = tl.arange(0, BC)
    for r0 in range(0, nrows, BD):
        rows = r0 + tl.arange(0, BD)
        o = rows[:, None] * BC + offs_c[None, :]
        mk = rows[:, None] < nrows
        tl.store(dst + o, tl.load(src + o, mask=mk), mask=mk)


@triton.jit(do_not_specialize=_INT_ARGS["_forward_kernel"])
def _forward_kernel(
    h_ptr, ss_ptr, se_ptr, md_ptr, run_ptr, len_ptr, e0, T, C, K, R,
    A_ptr, D_ptr, Kc_ptr, tail_ptr, init_ptr, final_ptr, n_ss, n_se, n_md, n_run, do_final,
    ring_ptr, st_ptr, ck_ring_ptr, ck_vec_ptr, ck_every, n_ck, logz_ptr,
    BC: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """Log-semiring forward of one sequence per program (grid (B,)).

    ring (B, 2R, BC) fp64 and st (B, 3, BC) fp64 (alpha, G, P) hold the carried state in and
    out. n_ck > 0: save (ring rows [0, R), alpha, G, P) before every ck_every positions into
    ck_ring (B, n_ck, R, BC) / ck_vec (B, n_ck, 3, BC). do_final: logz[b] = LSE(alpha+final).
    """
    b = tl.program_id(0)
    offs_c = tl.arange(0, BC)
    cmask = offs_c < C
    n = tl.load(len_ptr + b).to(tl.int32)
    row0 = (b.to(tl.int64) * T - e0) * C  # row of absolute position s: row0 + s * C
    Kc, tailv, Dlast, has_tail, init = _label_params(Kc_ptr, tail_ptr, D_ptr, init_ptr, C, K, BC)
    q_ptr = ring_ptr + b.to(tl.int64) * (2 * R * BC)
    sb = st_ptr + b * 3 * BC
    alpha = tl.load(sb + offs_c)
    G = tl.load(sb + BC + offs_c)
    P = tl.load(sb + 2 * BC + offs_c)
    Gst = tl.zeros([BC], tl.int32)
    nblk = (n - 1) // ck_every + 1  # n >= 1; no overflow of n + ck_every
    for k in range(0, nblk):
        a = k * ck_every
        if n_ck > 0:
            tl.debug_barrier()
            ck = b.to(tl.int64) * n_ck + k
            _copy_rows(q_ptr, ck_ring_ptr + ck * R * BC, R, BC, BD)
            vb = ck_vec_ptr + ck * 3 * BC
            tl.store(vb + offs_c, alpha)
            tl.store(vb + BC + offs_c, G)
            tl.store(vb + 2 * BC + offs_c, P)
            tl.debug_barrier()
        alpha, G, P, Gst = _advance(
            h_ptr, ss_ptr, se_ptr, md_ptr, run_ptr, row0, n_ss, n_se, n_md, n_run,
            A_ptr, D_ptr, C, K, Kc, tailv, Dlast, has_tail, init,
            q_ptr, R, alpha, G, P, Gst, e0 + a, tl.minimum(ck_every, n - a),
            q_ptr, 0, 0, md_ptr, md_ptr, 0,
            BC, BD, 0, False, False,
        )  # fmt: skip
    # the state row was loaded above by every replica thread: order before overwriting
    tl.debug_barrier()
    tl.store(sb + offs_c, alpha)
    tl.store(sb + BC + offs_c, G)
    tl.store(sb + 2 * BC + offs_c, P)
    if do_final != 0:
        fin = tl.load(final_ptr + offs_c, mask=cmask, other=NEG)
        z = alpha + fin
        mz = tl.max(z, axis=0)
        mzs = tl.where(mz == NEG, 0.0, mz)
        lz = tl.where(mz == NEG, NEG, mzs + tl.log(tl.sum(tl.exp(z - mzs), axis=0)))
        tl.store(logz_ptr + b, lz)


@triton.jit(do_not_specialize=_INT_ARGS["_viterbi_kernel"])
def _viterbi_kernel(
    h_ptr, ss_ptr, se_ptr, md_ptr, run_ptr, len_ptr, e0, T, C, K, R,
    A_ptr, D_ptr, Kc_ptr, tail_ptr, init_ptr, final_ptr, n_ss, n_se, n_md, n_run, n_bp,
    ring_ptr, st_ptr, gst_ptr, bpl_ptr, bpp_ptr, score_ptr, last_ptr,
    BC: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """Max-semiring forward with back-pointers over positions [e0, e0 + lengths[b]) (grid
    (B,)). Carried state in and out: ring (B, 2R, BC) fp64, st (B, 3, BC) fp64 (alpha, G,
    P), gst (B, BC) int32 (absolute start of each label's best tail segment). n_bp = C:
    bpl/bpp (B, T, C) int32, rows local to e0: best length of the label-c segment whose last
    position is t / best label before a label-c segment starting at t (-1 at t = 0);
    n_bp = 0: none stored. score (B,) fp64 = max_c alpha + final, last (B,) int32 = argmax."""
    b = tl.program_id(0)
    offs_c = tl.arange(0, BC)
    cmask = offs_c < C
    n = tl.load(len_ptr + b).to(tl.int32)
    row0 = (b.to(tl.int64) * T - e0) * C  # row of absolute position s: row0 + s * C
    Kc, tailv, Dlast, has_tail, init = _label_params(Kc_ptr, tail_ptr, D_ptr, init_ptr, C, K, BC)
    q_ptr = ring_ptr + b.to(tl.int64) * (2 * R * BC)
    sb = st_ptr + b * 3 * BC
    gb = gst_ptr + b * BC
    alpha = tl.load(sb + offs_c)
    G = tl.load(sb + BC + offs_c)
    P = tl.load(sb + 2 * BC + offs_c)
    Gst = tl.load(gb + offs_c)
    alpha, G, P, Gst = _advance(
        h_ptr, ss_ptr, se_ptr, md_ptr, run_ptr, row0, n_ss, n_se, n_md, n_run,
        A_ptr, D_ptr, C, K, Kc, tailv, Dlast, has_tail, init,
        q_ptr, R, alpha, G, P, Gst, e0, n,
        q_ptr, 0, 0, bpl_ptr, bpp_ptr, n_bp,
        BC, BD, 1, False, False,
    )  # fmt: skip
    # the state rows were loaded above by every replica thread: order before overwriting
    tl.debug_barrier()
    tl.store(sb + offs_c, alpha)
    tl.store(sb + BC + offs_c, G)
    tl.store(sb + 2 * BC + offs_c, P)
    tl.store(gb + offs_c, Gst)
    fin = tl.load(final_ptr + offs_c, mask=cmask, other=NEG)
    z = tl.where(cmask, alpha + fin, NEG)
    tl.store(score_ptr + b, tl.max(z, axis=0))
    tl.store(last_ptr + b, tl.argmax(z, axis=0))


@triton.jit(do_not_specialize=_INT_ARGS["_backward_kernel"])
def _backward_kernel(
    h_ptr, ss_ptr, se_ptr, md_ptr, run_ptr, len_ptr, e0, T, C, K, R,
    A_ptr, D_ptr, Kc_ptr, tail_ptr, init_ptr, final_ptr, n_ss, n_se, n_md, n_run,
    ck_ring_ptr, ck_vec_ptr, ck_every, n_ck, seed,
    qk_ptr, keep_ptr, gq_ptr, adj_ptr, gh_ptr, gss_ptr, gse_ptr, gA_ptr, gD_ptr, gv_ptr,
    logz_ptr, BC: tl.constexpr, BD: tl.constexpr, CB: tl.constexpr,
):  # fmt: skip
    """Exact adjoint of log Z over positions [e0, e0 + lengths[b]), one sequence per
    program (grid (B,)).

    Blocks of ck_every positions are processed last to first: restore the checkpoint
    (ck_ring (B, n_ck, R, BC), ck_vec (B, n_ck, 3, BC): the forward state at e0 + k ck_every),
    recompute the block into qk (ck_every + 2R, BC) and keep (6, ck_every + 1, BC) (fp64),
    then sweep ends e = a+n .. a+1 backwards. Carried adjoint state (in and out, so a contig
    can be swept chunk by chunk from its end): gq (B, R, BC) fp64, the start adjoints
    accumulated so far, row p mod R for absolute position p (0 where nothing is pending);
    adj (B, 3, BC) fp64: the adjoint of alpha at the sweep's current end, of the running
    tail G there, and the running prefix-sum adjoint gP. seed != 0: the range ends the
    sequence; the sweep starts from galpha = P(last label) of the recomputed alpha and
    final (adj's galpha is ignored) and writes logz. gD (B, C, K) fp64 is accumulated per
    program. Outputs (rows local to e0): gh/gss/gse (B, T, C) position/start/end posteriors;
    gA (B, BC, BC);
    gv (B, 5, BC) = d/d tail, init, final, transition scratch, tail-entry accumulator (the
    accumulators live in this row rather than in registers: the kernel is at the register
    limit); logz (B,).
    """
    b = tl.program_id(0)
    offs_c = tl.arange(0, BC)
    cmask = offs_c < C
    ac = offs_c[None, :]
    dl = tl.arange(0, BD)
    n_all = tl.load(len_ptr + b).to(tl.int32)
    row0 = (b.to(tl.int64) * T - e0) * C  # row of absolute position s: row0 + s * C
    Kc, tailv, Dlast, has_tail, init = _label_params(Kc_ptr, tail_ptr, D_ptr, init_ptr, C, K, BC)
    # scratch strides grow with the checkpoint interval: int64 (a block of a few million
    # positions overflows int32 offsets)
    ck64 = ck_every.to(tl.int64)
    kst = (ck64 + 1) * BC
    qk = qk_ptr + b.to(tl.int64) * ((ck64 + 2 * R) * BC)
    kp = keep_ptr + b.to(tl.int64) * (6 * kst)
    gq = gq_ptr + b.to(tl.int64) * (R * BC)
    gD = gD_ptr + b.to(tl.int64) * C * K
    nblk = (n_all - 1) // ck_every + 1  # n_all >= 1; no overflow of n_all + ck_every
    adj = adj_ptr + b * 3 * BC
    galpha = tl.load(adj + offs_c)
    gGc = tl.load(adj + BC + offs_c)
    gP = tl.load(adj + 2 * BC + offs_c)
    gv = gv_ptr + b * 5 * BC
    ga = gv + 3 * BC
    for kk in range(0, nblk):
        k = nblk - 1 - kk
        n = tl.minimum(ck_every, n_all - k * ck_every)
        a = e0 + k * ck_every
        ck = b.to(tl.int64) * n_ck + k
        vb = ck_vec_ptr + ck * 3 * BC
        alpha = tl.load(vb + offs_c)
        G = tl.load(vb + BC + offs_c)
        P = tl.load(vb + 2 * BC + offs_c)
        # history rows [a - R, a) of Q from the checkpoint ring, then recompute the block
        tl.debug_barrier()
        cr = ck_ring_ptr + ck * R * BC
        for r0 in range(0, R, BD):
            rows = r0 + dl
            p = a - R + rows
            v = tl.load(
                cr + (p % R)[:, None] * BC + ac,
                mask=(rows[:, None] < R) & (p[:, None] >= 0),
                other=NEG,
            )
            tl.store(qk + rows[:, None] * BC + ac, v, mask=rows[:, None] < R)
        tl.store(kp + offs_c, alpha)
        tl.store(kp + 3 * kst + offs_c, G)
        tl.debug_barrier()
        alpha, G, P, Gst = _advance(
            h_ptr, ss_ptr, se_ptr, md_ptr, run_ptr, row0, n_ss, n_se, n_md, n_run,
            A_ptr, D_ptr, C, K, Kc, tailv, Dlast, has_tail, init,
            qk, R, alpha, G, P, tl.zeros([BC], tl.int32), a, n,
            kp, kst, a, md_ptr, md_ptr, 0,
            BC, BD, 0, True, True,
        )  # fmt: skip
        tl.debug_barrier()
        if (kk == 0) & (seed != 0):
            # seed the adjoint at the sequence end: galpha[L, c] = P(last segment has
            # label c), normalised to sum to 1
            fin = tl.load(final_ptr + offs_c, mask=cmask, other=NEG)
            z = alpha + fin
            mz = tl.max(z, axis=0)
            mzs = tl.where(mz == NEG, 0.0, mz)
            lz = tl.where(mz == NEG, NEG, mzs + tl.log(tl.sum(tl.exp(z - mzs), axis=0)))
            galpha = tl.where(z > NEG, tl.exp(z - lz), 0.0)
            galpha = galpha / tl.maximum(tl.sum(galpha, axis=0), 1e-300)
            tl.store(logz_ptr + b, lz)
            tl.store(gv + 2 * BC + offs_c, galpha)  # d/d final
        for i in range(0, n):
            e = a + n - i
            s = e - 1
            r = e - a
            rowoff = row0 + s.to(tl.int64) * C
            g = galpha
            tl.store(gse_ptr + rowoff + offs_c, g.to(gse_ptr.dtype.element_ty), mask=cmask)
            gP += g
            kr = kp + r.to(tl.int64) * BC  # keep row of end e (int64 offsets)
            M = tl.load(kr + kst + offs_c)
            S = tl.load(kr + 2 * kst + offs_c)
            Ge = tl.load(kr + 3 * kst + offs_c)
            Gp = tl.load(kr + (3 * kst - BC) + offs_c)
            mdv = tl.load(md_ptr + rowoff + offs_c, mask=offs_c < n_md, other=BIGI)
            runv = tl.load(run_ptr + rowoff + offs_c, mask=offs_c < n_run, other=BIGI)
            nc = tl.where(cmask, tl.minimum(tl.minimum(tl.minimum(Kc, e), mdv), runv), 0)
            Gt = tl.where((mdv >= e) & has_tail & (Ge > NEG), Ge, NEG)
            ms = tl.where(M == NEG, 0.0, M)
            coef = tl.where(g > 0, g / S, 0.0)
            nmax = tl.max(tl.where(g > 0, nc, 0), axis=0)
            qe = qk + (e - a + R).to(tl.int64) * BC  # row of position e - d: qe - d * BC
            # segments (e - d, e, c): normalised weights, scattered to the start ring
            for d0 in range(0, nmax, BD):
                dd = d0 + 1 + dl
                valid = (dd[:, None] <= nc[None, :]) & (g[None, :] > 0)
                xt = tl.load(qe + (ac - dd[:, None] * BC), mask=valid, other=NEG)
                xt += tl.load(D_ptr + ac * K + dd[:, None] - 1, mask=valid, other=NEG)
                w = coef[None, :] * tl.exp((xt - ms[None, :]).to(tl.float32)).to(tl.float64)
                go = ((e - dd) % R)[:, None] * BC + ac
                tl.store(gq + go, tl.load(gq + go, mask=valid, other=0.0) + w, mask=valid)
                do = ac * K + dd[:, None] - 1
                tl.store(gD + do, tl.load(gD + do, mask=valid, other=0.0) + w, mask=valid)
            # geometric tail: G[e] = LSE(G[e-1] + tail, Q[j] + D[K_c-1] + tail), j = e-K_c-1
            gG = gGc + coef * tl.exp((Gt - ms).to(tl.float32)).to(tl.float64)
            j = e - Kc - 1
            upd = has_tail & (j >= 0) & (Ge > NEG)
            # label_mask: the new start joins only if run > K_c (run reloaded: keeping it
            # live through the length loop spills at BC = 64 on sm_90); the carried tail
            # needs run > 0, implied by G[e] > -inf (run = 0 empties the tail)
            runv = tl.load(run_ptr + rowoff + offs_c, mask=offs_c < n_run, other=BIGI)
            xq = tl.load(qk + (j - a + R).to(tl.int64) * BC + offs_c, mask=upd & (runv > Kc),
                         other=NEG)  # fmt: skip
            xq = xq + Dlast + tailv
            w2 = tl.where(upd, tl.exp(xq - tl.where(upd, Ge, 0.0)), 0.0)
            w1 = tl.where(upd & (Gp > NEG), tl.exp(Gp + tailv - tl.where(upd, Ge, 0.0)), 0.0)
            # w1 + w2 = 1 only up to the rounding of G (ulp(|G|): 1e-7 when prefix sums
            # reach 1e9), so split gG by the normalised w2 and carry the rest: the tail
            # adjoint neither gains nor loses mass along a long segment
            wt = w1 + w2
            t2 = gG * tl.where(wt > 0, w2 / tl.where(wt > 0, wt, 1.0), 0.0)
            jo = (j % R) * BC + offs_c
            um = upd & (t2 > 0)
            tl.store(gq + jo, tl.load(gq + jo, mask=um, other=0.0) + t2, mask=um)
            # d/d tail and the tail's share of d/d D[c, K_c-1]: owner read-modify-writes
            gvt = gv + offs_c
            tl.store(gvt, tl.load(gvt) + tl.where(upd, gG, 0.0))
            gvd = gv + 4 * BC + offs_c
            tl.store(gvd, tl.load(gvd) + t2)
            gGc = tl.where(upd, tl.maximum(gG - t2, 0.0), 0.0)
            tl.debug_barrier()
            # start position s: its adjoint is complete. Every replica thread loads the row;
            # it is reset for start s - R only after the next barrier (below)
            so = (s % R) * BC + offs_c
            gqs = tl.load(gq + so)
            dt = gh_ptr.dtype.element_ty
            tl.store(gh_ptr + rowoff + offs_c, gP.to(dt), mask=cmask)
            tl.store(gss_ptr + rowoff + offs_c, gqs.to(dt), mask=cmask)
            gP -= gqs
            if s == 0:
                tl.store(gv + BC + offs_c, gqs)  # d/d init
                galpha = tl.zeros([BC], tl.float64)
                tl.debug_barrier()
            else:
                Mp = tl.load(kr + (4 * kst - BC) + offs_c)
                Sp = tl.load(kr + (5 * kst - BC) + offs_c)
                mps = tl.where(Mp == NEG, 0.0, Mp)
                cf = tl.where(gqs > 0, gqs / Sp, 0.0)
                # source labels in chunks of CB rows (bounded registers for large C);
                # galpha is assembled in the program's scratch row
                for c0 in tl.static_range(0, BC, CB):
                    rows = c0 + tl.arange(0, CB)
                    al = tl.load(kp + (r - 1).to(tl.int64) * BC + rows)
                    At = tl.load(A_ptr + rows[:, None] * C + ac,
                                 mask=(rows[:, None] < C) & (ac < C), other=NEG)  # fmt: skip
                    x = al[:, None] + At
                    w = cf[None, :] * tl.exp((x - mps[None, :]).to(tl.float32)).to(tl.float64)
                    tl.store(ga + rows, tl.sum(w, axis=1))
                    gAc = gA_ptr + b.to(tl.int64) * BC * BC + rows[:, None] * BC + ac
                    tl.store(gAc, tl.load(gAc) + w)
                tl.debug_barrier()
                galpha = tl.load(ga + offs_c)
            # both branches passed a barrier since every thread loaded gq[s]
            tl.store(gq + so, tl.zeros([BC], tl.float64))
        tl.debug_barrier()
    tl.debug_barrier()  # adj was loaded at the top by every replica thread
    do = offs_c * K + Kc - 1
    gDt = tl.load(gv + 4 * BC + offs_c)
    tl.store(gD + do, tl.load(gD + do, mask=has_tail, other=0.0) + gDt, mask=has_tail)
    tl.store(adj + offs_c, galpha)
    tl.store(adj + BC + offs_c, gGc)
    tl.store(adj + 2 * BC + offs_c, gP)


# ----------------------------------------------------------------------------------------
# host side


def block_labels(C: int) -> int:
    """BC: labels padded to a power of two (>= 4)."""
    if C > MAX_LABELS:
        raise ValueError(f"the Triton kernels handle at most {MAX_LABELS} labels, got C={C}")
    return max(4, triton.next_power_of_2(C))


def block_durations(BC: int) -> int:
    """BD: durations per tile, so that a (BD, BC) tile holds TILE cells."""
    return max(8, TILE // BC)


def block_sources(BC: int) -> int:
    """CB: source labels per chunk of the backward's transition step (CB x BC <= TILE)."""
    return max(1, min(BC, TILE // BC))


NUM_WARPS = 8
#: Register cap (ptx .maxnreg) per kernel; None = ptxas's choice. Without one, ptxas holds
#: the Viterbi kernel to 128 registers (two CTAs per SM) and spills 24-52 bytes at
#: BC = 8 and 16; with the full 255 it takes 136-176 and spills nothing.
MAXNREG = {"forward": None, "backward": None, "viterbi": 255}


def interpreted() -> bool:
    """Whether the kernels run in the Triton interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_forward_kernel, InterpretedFunction)


def supports(x: CRFInputs) -> bool:
    """Whether the kernels can run these inputs (C <= MAX_LABELS)."""
    return x.C <= MAX_LABELS


def default_checkpoint(T: int, R: int) -> int:
    """Checkpoint interval Δ balancing checkpoint memory (T/Δ · R · BC) against the
    recomputed block (≈ 7 Δ · BC): Δ ≈ sqrt(T·R/7), clamped to [64, 65536]."""
    return int(min(65536, max(64, math.isqrt(T * R // 7 + 1))))


@dataclass
class _Prepared:
    h: Tensor
    ss: Tensor
    se: Tensor
    md: Tensor
    run: Tensor
    lengths: Tensor
    A: Tensor
    D: Tensor
    Kc: Tensor
    tail: Tensor
    init: Tensor
    final: Tensor
    flags: tuple[int, int, int, int]
    B: int
    T: int
    C: int
    K: int
    R: int
    BC: int
    BD: int


def allowed_runs(mask: Tensor, carry: Tensor | None = None) -> Tensor:
    """(B, T, C) int32 on mask's device: number of consecutive True entries of ``mask``
    (B, T, C) bool ending at t, counting ``carry`` (B, C) int64 True entries just before
    row 0 (chunks). Same as :func:`genoseg.crf.api.allowed_runs`, capped at 2^31 - 1."""
    B, T, C = mask.shape
    dev = mask.device
    idx = torch.arange(1, T + 1, dtype=torch.int64, device=dev).view(1, T, 1)
    before = (
        torch.zeros((B, 1, C), dtype=torch.int64, device=dev)
        if carry is None
        else -carry.to(device=dev, dtype=torch.int64).view(B, 1, C)
    )
    last_false = torch.cummax(torch.where(mask, before, idx), dim=1).values  # 1-based
    return (idx - last_false).clamp_max(2**31 - 1).to(torch.int32).contiguous()


def _prepare(x: CRFInputs, run_carry: Tensor | None = None) -> _Prepared:
    """Kernel arguments of ``x``; ``run_carry`` (B, C) int64: allowed positions of each
    label just before row 0 (chunked label_mask). A chunk without a mask still honours a
    carried run shorter than ``K_c``: segments reaching back into the previous chunk must
    not cover its forbidden positions."""
    if not supports(x):
        block_labels(x.C)
    dev = x.emissions.device
    for name in ("seg_start", "seg_end", "max_dur", "label_mask"):
        t = getattr(x, name)
        if t is not None and t.device != dev:
            raise ValueError(
                f"{name} is on {t.device} but emissions are on {dev}: give the per-position "
                "inputs on the emissions' device"
            )
    # per-position scores in float64 if any of them is (a float64 seg_start is not rounded
    # to float32 emissions), else float32: the rule of the CPU engine (api.position_dtype)
    wide = any(t is not None and t.dtype == torch.float64 for t in (x.seg_start, x.seg_end))
    dt = torch.float64 if wide or x.emissions.dtype == torch.float64 else torch.float32

    def aligned(t: Tensor) -> Tensor:
        # the kernels are specialised for 16-byte aligned pointers (see specialisations())
        t = t.contiguous()
        return t if t.data_ptr() % 16 == 0 else t.clone()

    def pos(t: Tensor | None, dtype) -> Tensor:
        if t is None:
            return torch.zeros(1, dtype=dtype, device=dev)
        return aligned(t.detach().to(dtype))

    def par(t: Tensor) -> Tensor:
        return aligned(t.detach().to(device=dev, dtype=torch.float64))

    Kc = x.label_k.to(device=dev, dtype=torch.int32).contiguous()
    tail = par(x.tail) if x.tail is not None else torch.full((x.C,), -math.inf, device=dev,
                                                             dtype=torch.float64)  # fmt: skip
    R = int(x.label_k.max()) + 2
    BC = block_labels(x.C)
    mask = x.label_mask
    if mask is None and run_carry is not None and bool((run_carry < x.label_k.to(dev)).any()):
        mask = torch.ones((x.B, x.T, x.C), dtype=torch.bool, device=dev)
    run = pos(None if mask is None else allowed_runs(mask.to(dev), run_carry), torch.int32)
    return _Prepared(
        pos(x.emissions, dt), pos(x.seg_start, dt), pos(x.seg_end, dt),
        pos(x.max_dur, torch.int32), run, x.lengths.to(device=dev, dtype=torch.int64).contiguous(),
        par(x.transitions), par(x.durations), Kc, tail, par(x.init), par(x.final),
        tuple(x.C if t is not None else 0 for t in (x.seg_start, x.seg_end, x.max_dur, mask)),
        x.B, x.T, x.C, x.K, R, BC, block_durations(BC),
    )  # fmt: skip


def _params(p: _Prepared):
    return (p.A, p.D, p.Kc, p.tail, p.init, p.final, *p.flags)


def _new_state(p: _Prepared) -> tuple[Tensor, Tensor]:
    dev = p.h.device
    ring = torch.full((p.B, 2 * p.R, p.BC), -math.inf, dtype=torch.float64, device=dev)
    st = torch.full((p.B, 3, p.BC), -math.inf, dtype=torch.float64, device=dev)
    st[:, 2] = 0.0
    return ring, st


def _run_forward(p: _Prepared, ring, st, e0: int, do_final: bool, ck_every: int, n_ck: int):
    dev = p.h.device
    logz = torch.full((p.B,), -math.inf, dtype=torch.float64, device=dev)
    if n_ck > 0:
        ck_ring = torch.empty((p.B, n_ck, p.R, p.BC), dtype=torch.float64, device=dev)
        ck_vec = torch.empty((p.B, n_ck, 3, p.BC), dtype=torch.float64, device=dev)
    else:
        ck_ring = ck_vec = torch.empty(1, dtype=torch.float64, device=dev)
        ck_every = max(1, p.T)
    _forward_kernel[(p.B,)](
        p.h, p.ss, p.se, p.md, p.run, p.lengths, e0, p.T, p.C, p.K, p.R, *_params(p), int(do_final),
        ring, st, ck_ring, ck_vec, ck_every, n_ck, logz,
        BC=p.BC, BD=p.BD, num_warps=NUM_WARPS,
    )  # fmt: skip
    return logz, ck_ring, ck_vec


def _raise_forbidden(logz: Tensor) -> None:
    bad = [i for i, v in enumerate(logz.tolist()) if v == -math.inf]
    if bad:
        raise ValueError(
            f"no segmentation has a finite score for batch element(s) {bad}: every path is "
            "forbidden by transitions/durations/init/final/seg_start/seg_end/max_dur/label_mask"
        )


def _checkpointed_forward(x: CRFInputs, checkpoint: int | None):
    """Forward that saves a state every Δ positions. Returns (prepared inputs, log Z (B,)
    fp64, checkpoint ring (B, n, R, BC), checkpoint vectors (B, n, 3, BC), Δ, n)."""
    p = _prepare(x)
    ck = int(checkpoint) if checkpoint is not None else default_checkpoint(p.T, p.R)
    if ck < 1:
        raise ValueError(f"checkpoint must be >= 1, got {ck}")
    ck = min(ck, p.T)
    n_ck = -(-p.T // ck)
    ring, st = _new_state(p)
    logz, ck_ring, ck_vec = _run_forward(p, ring, st, 0, True, ck, n_ck)
    _raise_forbidden(logz)
    return p, logz, ck_ring, ck_vec, ck, n_ck


def _launch_backward(p: _Prepared, e0: int, ck_ring, ck_vec, ck: int, n_ck: int, seed: bool,
                     gq: Tensor, adj: Tensor, empty=torch.empty):  # fmt: skip
    """Backward kernel over rows [e0, e0 + lengths) of ``p`` from the forward checkpoints;
    gq (B, R, BC) and adj (B, 3, BC) are the carried adjoint state, updated in place.
    Returns log Z (B,) fp64 (valid when ``seed``) and the gradients (see _gradients)."""
    dev = p.h.device
    f64 = torch.float64
    qk = empty((p.B, ck + 2 * p.R, p.BC), dtype=f64, device=dev)
    keep = empty((p.B, N_KEEP, ck + 1, p.BC), dtype=f64, device=dev)
    gh = torch.zeros_like(p.h)
    gss = torch.zeros_like(p.h)
    gse = torch.zeros_like(p.h)
    gA = torch.zeros((p.B, p.BC, p.BC), dtype=f64, device=dev)
    gD = torch.zeros((p.B, p.C, p.K), dtype=f64, device=dev)
    gv = torch.zeros((p.B, 5, p.BC), dtype=f64, device=dev)
    logz = torch.full((p.B,), -math.inf, dtype=f64, device=dev)
    _backward_kernel[(p.B,)](
        p.h, p.ss, p.se, p.md, p.run, p.lengths, e0, p.T, p.C, p.K, p.R, *_params(p),
        ck_ring, ck_vec, ck, n_ck, int(seed), qk, keep, gq, adj, gh, gss, gse, gA, gD, gv,
        logz, BC=p.BC, BD=p.BD, CB=block_sources(p.BC), num_warps=NUM_WARPS,
    )  # fmt: skip
    C = p.C
    return (
        logz, gh, gss, gse, gA[:, :C, :C], gD,
        gv[:, 0, :C], gv[:, 1, :C], gv[:, 2, :C],
    )  # fmt: skip


def _gradients(x: CRFInputs, checkpoint: int | None, saved=None, empty=torch.empty):
    """Forward with checkpoints (or ``saved``, the result of :func:`_checkpointed_forward`),
    then the backward kernel. Returns the log Z (B,) fp64 and gradients: gh, gss, gse
    (B, T, C) in the emission dtype; gA (B, C, C), gD (B, C, K), gtail, ginit, gfinal (B, C)
    fp64. ``empty(shape, dtype=, device=)`` allocates the two block buffers, whose size
    grows with the checkpoint interval (tests map them to sparse files)."""
    p, logz, ck_ring, ck_vec, ck, n_ck = saved or _checkpointed_forward(x, checkpoint)
    dev = p.h.device
    gq = torch.zeros((p.B, p.R, p.BC), dtype=torch.float64, device=dev)
    adj = torch.zeros((p.B, 3, p.BC), dtype=torch.float64, device=dev)
    out = _launch_backward(p, 0, ck_ring, ck_vec, ck, n_ck, True, gq, adj, empty)
    return (logz, *out[1:])


class _TritonLogPartition(torch.autograd.Function):
    """log Z (B,) whose forward keeps the checkpoints and whose backward launches the
    adjoint kernel (grad_output[b] weights batch element b)."""

    @staticmethod
    def forward(ctx, x: CRFInputs, checkpoint, *tensors):
        ctx.x = x
        ctx.checkpoint = checkpoint
        ctx.meta = [(t is not None, t.dtype if t is not None else None,
                     t.device if t is not None else None) for t in tensors]  # fmt: skip
        ctx.saved = _checkpointed_forward(x, checkpoint)
        return ctx.saved[1]  # float64: |log Z| ~ 1e7 on a chromosome

    @staticmethod
    def backward(ctx, g: Tensor):
        saved, ctx.saved = ctx.saved, None
        logz, gh, gss, gse, gA, gD, gt, gi, gf = _gradients(ctx.x, ctx.checkpoint, saved)
        g64 = g.detach().to(torch.float64)
        grads = (gh, gA, gD, gi, gf, gt, gss, gse)
        per_pos = (True, False, False, False, False, False, True, True)
        out = []
        for grad, pp, (present, dtype, device) in zip(grads, per_pos, ctx.meta):
            if not present:
                out.append(None)
                continue
            t = grad.to(torch.float64) * g64.view(-1, *([1] * (grad.dim() - 1)))
            if not pp:
                t = t.sum(0)
            out.append(t.to(device=device, dtype=dtype))  # parameters may live elsewhere
        return (None, None, *out)


def log_partition(x: CRFInputs, checkpoint: int | None = None) -> Tensor:
    """log Z (B,) float64 whatever the input dtypes (the kernels accumulate in float64; a
    chromosome's |log Z| ~ 1e7 is beyond float32 resolution), differentiable w.r.t. every
    float input (gradients in each input's dtype).
    Raises ValueError when some batch element has no finite-score segmentation."""
    tensors = (
        x.emissions, x.transitions, x.durations, x.init, x.final, x.tail,
        x.seg_start, x.seg_end,
    )  # fmt: skip
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _TritonLogPartition.apply(x, checkpoint, *tensors)
    p = _prepare(x)
    ring, st = _new_state(p)
    logz, _, _ = _run_forward(p, ring, st, 0, True, 0, 0)
    _raise_forbidden(logz)
    return logz


def marginals(x: CRFInputs, checkpoint: int | None = None):
    """Exact posteriors as :class:`genoseg.crf.api.Marginals`: float32 unless the emissions
    are float64 (:func:`genoseg.crf.api.result_dtype`), log Z float64."""
    logz, gh, gss, gse, *_ = _gradients(x, checkpoint)
    return _marginals(x, logz, gh, gss, gse)


def _marginals(x: CRFInputs, logz: Tensor, gh: Tensor, gss: Tensor, gse: Tensor):
    from genoseg.crf.api import Marginals, result_dtype

    dt = result_dtype(x)
    gh, gss, gse = (t.to(dt) for t in (gh, gss, gse))
    return Marginals(gh, gss, gse, gss.sum(-1), gse.sum(-1), logz.to(torch.float64))


def _launch_viterbi(p: _Prepared, ring, st, gst, e0: int, pointers: bool):
    """Viterbi kernel over rows [e0, e0 + lengths) of ``p``; ring/st/gst (carried state)
    are updated in place. Returns (bp_len, bp_prev (B, T, C) int32 or None, score (B,)
    fp64, last (B,) int32)."""
    dev = p.h.device
    if pointers:
        bpl = torch.zeros((p.B, p.T, p.C), dtype=torch.int32, device=dev)
        bpp = torch.full((p.B, p.T, p.C), -1, dtype=torch.int32, device=dev)
    else:
        bpl = bpp = torch.zeros(1, dtype=torch.int32, device=dev)
    scores = torch.empty((p.B,), dtype=torch.float64, device=dev)
    last = torch.empty((p.B,), dtype=torch.int32, device=dev)
    _viterbi_kernel[(p.B,)](
        p.h, p.ss, p.se, p.md, p.run, p.lengths, e0, p.T, p.C, p.K, p.R, *_params(p),
        p.C if pointers else 0, ring, st, gst, bpl, bpp, scores, last,
        BC=p.BC, BD=p.BD, num_warps=NUM_WARPS, maxnreg=MAXNREG["viterbi"],
    )  # fmt: skip
    return (bpl, bpp) if pointers else (None, None), scores, last


def viterbi(x: CRFInputs) -> tuple[Tensor, list[list[tuple[int, int, int]]]]:
    """Best score (B,) fp64 and segments [(start, end, label)] (0-based half-open) per
    batch element; back-pointers are traced on the host (exact at any length). Ties go to
    the shortest last segment and the lowest label, as in the CPU engine."""
    from genoseg.crf.cpu import traceback

    p = _prepare(x)
    ring, st = _new_state(p)
    gst = torch.zeros((p.B, p.BC), dtype=torch.int32, device=p.h.device)
    (bpl, bpp), scores, last = _launch_viterbi(p, ring, st, gst, 0, True)
    scores = scores.cpu()
    _raise_forbidden(scores)
    bl, bp, ln, la = (t.cpu().numpy() for t in (bpl, bpp, p.lengths, last))
    paths = [traceback(bl[b], bp[b], int(ln[b]), int(la[b])) for b in range(p.B)]
    return scores, paths


# ----------------------------------------------------------------------------------------
# streaming: one contig chunk by chunk (state carried across chunks)


@dataclass
class ChunkState:
    """Engine state at absolute position ``position`` of a contig (after the chunks before
    it), on the emissions' device. The chunk functions never modify a state they are given;
    they return a new one, so keeping a state is enough to redo a chunk later.

    ring (B, 2R, BC) fp64: ``Q = S - P`` of the last R start positions, row p mod R
    (and p mod R + R) for absolute position p; R = max K_c + 2, BC = labels padded to a
    power of two. vec (B, 3, BC) fp64: alpha, running tail G, prefix sums P at
    ``position``. run (B, C) int64: positions allowed by ``label_mask`` in a row ending at
    ``position - 1`` (a chunk without a mask allows every label). semiring: ``"log"``
    (:func:`forward_chunk`, :func:`posterior_chunk`) or ``"max"`` (:func:`viterbi_chunk`);
    gst (B, BC) int32, max semiring only: absolute start of each label's best tail segment.
    """

    ring: Tensor
    vec: Tensor
    position: int
    run: Tensor
    gst: Tensor | None = None
    semiring: str = "log"

    def clone(self) -> ChunkState:
        """A copy whose tensors share nothing with this state."""
        return ChunkState(self.ring.clone(), self.vec.clone(), self.position,
                          self.run.clone(), None if self.gst is None else self.gst.clone(),
                          self.semiring)  # fmt: skip

    def log_z(self, final: Tensor) -> Tensor:
        """log Z (B,) fp64 of the sequences taken as ending at ``position`` (log semiring):
        LSE_c alpha[c] + final[c]; -inf where every path is forbidden."""
        if self.semiring != "log":
            raise ValueError("log_z() needs a log-semiring state (forward_chunk)")
        C = self.run.shape[1]
        return torch.logsumexp(self.vec[:, 0, :C] + _final_on(final, self.vec), dim=-1)

    def best(self, final: Tensor) -> tuple[Tensor, Tensor]:
        """(best score (B,) fp64, its last label (B,) int64; lowest label on ties) of the
        sequences taken as ending at ``position`` (max semiring)."""
        if self.semiring != "max":
            raise ValueError("best() needs a max-semiring state (viterbi_chunk)")
        C = self.run.shape[1]
        score, last = (self.vec[:, 0, :C] + _final_on(final, self.vec)).max(dim=-1)
        return score, last


def _final_on(final: Tensor, like: Tensor) -> Tensor:
    return final.detach().to(device=like.device, dtype=torch.float64).view(1, -1)


def _chunk_start(p: _Prepared, x: CRFInputs, state: ChunkState | None, semiring: str):
    """Copies of the carried tensors (ring, st, gst) and the chunk's start position."""
    dev = p.h.device
    # the chunk must have been checked (check_inputs) for the position the state is at:
    # the tail/max_dur rule depends on it
    check_position(x, 0 if state is None else state.position)
    if state is None:
        ring, st = _new_state(p)
        gst = torch.zeros((p.B, p.BC), dtype=torch.int32, device=dev)
        return ring, st, gst, 0
    if state.semiring != semiring:
        raise ValueError(
            f"a {state.semiring}-semiring state cannot continue a {semiring}-semiring chunk "
            "(forward_chunk/posterior_chunk states are 'log', viterbi_chunk states 'max')"
        )
    if tuple(state.ring.shape) != (p.B, 2 * p.R, p.BC) or tuple(state.run.shape) != (p.B, p.C):
        raise ValueError("state does not match these inputs (batch, labels or K changed)")
    gst = state.gst.clone() if state.gst is not None else None
    if gst is None:
        gst = torch.zeros((p.B, p.BC), dtype=torch.int32, device=dev)
    return state.ring.clone(), state.vec.clone(), gst, state.position


def _next_state(p, ring, st, gst, e0: int, carry: Tensor | None, semiring: str) -> ChunkState:
    if p.flags[3]:
        run = p.run[:, -1, :].to(torch.int64)
    else:
        before = carry if carry is not None else torch.zeros((p.B, p.C), dtype=torch.int64,
                                                             device=p.h.device)  # fmt: skip
        run = before + p.T
    return ChunkState(ring, st, e0 + p.T, run, gst if semiring == "max" else None, semiring)


def _whole_chunks(x: CRFInputs, T: int, what: str) -> None:
    if bool((x.lengths != T).any()):
        raise ValueError(f"{what}: only the contig's last chunk may have lengths below T={T}")


def forward_chunk(
    x: CRFInputs, state: ChunkState | None = None, last: bool = True
) -> tuple[Tensor | None, ChunkState]:
    """Advance the forward (log semiring) over one chunk of a contig.

    ``x`` holds the chunk's rows, absolute positions [state.position, state.position + T)
    (``state=None``: the contig's first chunk), checked with that ``position_offset``;
    every batch element has the full chunk (lengths all equal T) except in the contig's
    last chunk. ``init`` applies at absolute position 0 only; ``label_mask`` may be given in
    any chunks (runs of allowed positions continue across chunk boundaries). Returns
    (log Z (B,) fp64 if ``last`` else None, the state after the chunk); ``state`` itself is
    not modified. The log Z of the last chunk equals one call on the whole contig (and
    ``new_state.log_z(final)`` gives it at any chunk end)."""
    carry = None if state is None else state.run
    if carry is not None and tuple(carry.shape) != (x.B, x.C):
        raise ValueError("state does not match these inputs (batch, labels or K changed)")
    p = _prepare(x, carry)
    ring, st, _, e0 = _chunk_start(p, x, state, "log")
    if not last:
        _whole_chunks(x, p.T, "forward_chunk(last=False)")
    logz, _, _ = _run_forward(p, ring, st, e0, last, 0, 0)
    if last:
        _raise_forbidden(logz)
    return (logz if last else None), _next_state(p, ring, st, None, e0, carry, "log")


@dataclass
class ViterbiChunk:
    """Result of :func:`viterbi_chunk`, on the emissions' device.

    bp_len, bp_prev (B, T, C) int32, or None without ``pointers``: row t is absolute
    position ``start + t``. bp_len[b, t, c] = length of the best label-c segment whose last
    position is start + t (it may begin in an earlier chunk: a tail segment);
    bp_prev[b, t, c] = best label before a label-c segment starting at start + t (-1 at
    absolute position 0). score (B,) fp64, last (B,) int32: best score max_c alpha + final
    of the sequences taken as ending at this chunk's end, and its last label."""

    start: int
    bp_len: Tensor | None
    bp_prev: Tensor | None
    score: Tensor
    last: Tensor


def viterbi_chunk(
    x: CRFInputs, state: ChunkState | None = None, pointers: bool = True
) -> tuple[ViterbiChunk, ChunkState]:
    """Advance the max-semiring forward over one chunk of a contig (same chunk rules as
    :func:`forward_chunk`), with the chunk's back-pointers when ``pointers``.

    A two-pass Viterbi over a contig: pass 1 calls this for every chunk in order with
    ``pointers=False`` and keeps the state given to each call; ``state.best(final)`` after
    the last chunk is the best score and last label. Pass 2 calls it again for the chunks
    in reverse order, from the kept states, with ``pointers=True``, and traces back through
    the chunk's back-pointers from the cursor (position, label) where the later chunk left
    off (as ``genoseg.crf.stream.ViterbiStream`` does on the CPU). The back-pointers equal
    the rows of one whole-contig call. Returns (ViterbiChunk, state after the chunk);
    ``state`` itself is not modified."""
    carry = None if state is None else state.run
    if carry is not None and tuple(carry.shape) != (x.B, x.C):
        raise ValueError("state does not match these inputs (batch, labels or K changed)")
    p = _prepare(x, carry)
    ring, st, gst, e0 = _chunk_start(p, x, state, "max")
    (bpl, bpp), score, last = _launch_viterbi(p, ring, st, gst, e0, pointers)
    return ViterbiChunk(e0, bpl, bpp, score, last), _next_state(p, ring, st, gst, e0, carry,
                                                                 "max")  # fmt: skip


@dataclass
class AdjointState:
    """Reverse-sweep state carried from one chunk of a contig to the chunk before it
    (:func:`posterior_chunk`), on the emissions' device. Every position >= ``position``
    has its posteriors; the sweep continues below ``position``.

    gq (B, R, BC) fp64: start adjoints (start posteriors) accumulated so far for the
    positions p in [position - R + 1, position), row p mod R (the other rows are 0).
    vec (B, 3, BC) fp64: adjoint of alpha at ``position`` (P(a segment ends at
    position - 1 with label c) flowing back through the transitions), adjoint of the
    running tail G there, and the running prefix-sum adjoint gP (= P(label c covers
    position - 1) plus the starts still open). log_z (B,) fp64: log Z of the whole
    sequences."""

    gq: Tensor
    vec: Tensor
    position: int
    log_z: Tensor

    def clone(self) -> AdjointState:
        return AdjointState(self.gq.clone(), self.vec.clone(), self.position, self.log_z.clone())


def posterior_chunk(
    x: CRFInputs,
    state: ChunkState | None,
    adjoint: AdjointState | None,
    checkpoint: int | None = None,
):
    """Exact posteriors of one chunk of a contig (pass 2 of a two-pass posterior stream).

    Pass 1: :func:`forward_chunk` over the chunks in order (``last=False``), keeping the
    state given to each call (None for the first). Pass 2: this function over the same
    chunks in reverse order, with the same inputs ``x``, the chunk's kept start ``state``
    and the ``adjoint`` returned for the chunk after it (None for the contig's last chunk,
    which may have lengths below T: the sweep then starts at each sequence's end). It
    recomputes the chunk from ``state`` with checkpoints every ``checkpoint`` positions
    (default sqrt(T·R/7)) and continues the reverse sweep. Returns
    (:class:`genoseg.crf.api.Marginals` of the chunk's rows (float32 unless the emissions
    are float64; log_z float64, of the whole sequences), the adjoint state before the
    chunk). Equal to the rows of one
    :func:`marginals` call on the whole contig; neither ``state`` nor ``adjoint`` is
    modified."""
    carry = None if state is None else state.run
    if carry is not None and tuple(carry.shape) != (x.B, x.C):
        raise ValueError("state does not match these inputs (batch, labels or K changed)")
    p = _prepare(x, carry)
    ring, st, _, e0 = _chunk_start(p, x, state, "log")
    dev = p.h.device
    if adjoint is None:
        seed = True
        gq = torch.zeros((p.B, p.R, p.BC), dtype=torch.float64, device=dev)
        adj = torch.zeros((p.B, 3, p.BC), dtype=torch.float64, device=dev)
    else:
        seed = False
        if adjoint.position != e0 + p.T:
            raise ValueError(
                f"posterior_chunk: this chunk covers [{e0}, {e0 + p.T}) but the reverse sweep "
                f"is at position {adjoint.position}: give the chunks of pass 1 in reverse order"
            )
        if tuple(adjoint.gq.shape) != (p.B, p.R, p.BC):
            raise ValueError("adjoint does not match these inputs (batch, labels or K changed)")
        _whole_chunks(x, p.T, "posterior_chunk")
        gq, adj = adjoint.gq.clone(), adjoint.vec.clone()
    ck = int(checkpoint) if checkpoint is not None else default_checkpoint(p.T, p.R)
    if ck < 1:
        raise ValueError(f"checkpoint must be >= 1, got {ck}")
    ck = min(ck, p.T)
    n_ck = -(-p.T // ck)
    _, ck_ring, ck_vec = _run_forward(p, ring, st, e0, False, ck, n_ck)
    logz, gh, gss, gse, *_ = _launch_backward(p, e0, ck_ring, ck_vec, ck, n_ck, seed, gq, adj)
    if seed:
        _raise_forbidden(logz)
    else:
        logz = adjoint.log_z
    return _marginals(x, logz, gh, gss, gse), AdjointState(gq, adj, e0, logz)


# ----------------------------------------------------------------------------------------
# ahead-of-time compilation (no GPU needed): the specialisations the dispatcher launches

KERNELS = {
    "forward": _forward_kernel,
    "backward": _backward_kernel,
    "viterbi": _viterbi_kernel,
}


def _arg_type(name: str, kernel: str, dtype: str) -> str:
    if name in _INT_ARGS[f"_{kernel}_kernel"]:
        return "i32"
    if name in ("h_ptr", "ss_ptr", "se_ptr", "gh_ptr", "gss_ptr", "gse_ptr"):
        return f"*{dtype}"
    if name in ("md_ptr", "run_ptr", "Kc_ptr", "bpl_ptr", "bpp_ptr", "last_ptr", "gst_ptr"):
        return "*i32"
    if name == "len_ptr":
        return "*i64"
    return "*fp64"


def specialisations() -> list[dict]:
    """Every (kernel, BC, emission dtype) the dispatcher can launch, as dicts with the
    ``triton.compile`` signature, constexprs and attrs (all pointers 16-byte aligned,
    integer arguments unspecialised), ``num_warps``, ``maxnreg`` and a ``name``."""
    out = []
    BCs = [4 << i for i in range(int(math.log2(MAX_LABELS)) - 1)]
    for kname, fn in KERNELS.items():
        names = fn.arg_names
        for dtype in ("fp32", "fp64"):
            for BC in BCs:
                sig, attrs = {}, {}
                constexprs = {"BC": BC, "BD": block_durations(BC)}
                if kname == "backward":
                    constexprs["CB"] = block_sources(BC)
                for i, nm in enumerate(names):
                    if nm in constexprs:
                        sig[nm] = "constexpr"
                        continue
                    t = _arg_type(nm, kname, dtype)
                    sig[nm] = t
                    if t.startswith("*"):
                        attrs[(i,)] = [["tt.divisibility", 16]]
                out.append({
                    "name": f"{kname}[BC={BC},{dtype}]",
                    "kernel": kname,
                    "fn": fn,
                    "signature": sig,
                    "constexprs": constexprs,
                    "attrs": attrs,
                    "num_warps": NUM_WARPS,
                    "maxnreg": MAXNREG[kname],
                })  # fmt: skip
    return out


def compile_specialisation(spec: dict, arch: int):
    """Compile one specialisation for ``sm_<arch>`` (e.g. 80, 90) with the ptxas shipped
    in the triton wheel; returns the CompiledKernel (``asm['cubin']``)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"],
                    attrs=spec["attrs"])  # fmt: skip
    options = {"num_warps": spec["num_warps"], "maxnreg": spec["maxnreg"]}
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def resource_usage(kernel) -> dict[str, int]:
    """Registers per thread, spill stores/loads (bytes), stack frame and static shared
    memory of a compiled kernel, from ``ptxas -v`` (the ptxas in the triton wheel) run on
    its PTX for the same target."""
    import re
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    ptx = kernel.asm["ptx"]
    target = re.search(r"^\.target\s+(\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as d:
        src = f"{d}/k.ptx"
        with open(src, "w") as f:
            f.write(ptx)
        arch = int(re.search(r"sm_(\d+)", target).group(1))
        cmd = [get_ptxas(arch).path, "-v", "--regAllocOptLevel=2", f"--gpu-name={target}",
               src, "-o", f"{d}/k.cubin"]  # fmt: skip
        log = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr

    def grab(pat: str) -> int:
        mm = re.search(pat, log)
        return int(mm.group(1)) if mm else 0

    return {
        "registers": grab(r"Used (\d+) registers"),
        "spill_stores": grab(r"(\d+) bytes spill stores"),
        "spill_loads": grab(r"(\d+) bytes spill loads"),
        "stack": grab(r"(\d+) bytes stack frame"),
        "shared": kernel.metadata.shared,
    }


__all__ = [
    "AdjointState", "ChunkState", "MAX_LABELS", "ViterbiChunk", "compile_specialisation",
    "forward_chunk", "log_partition", "marginals", "posterior_chunk", "resource_usage",
    "specialisations", "supports", "viterbi", "viterbi_chunk",
]  # fmt: skip
