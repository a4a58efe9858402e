"""Fast CPU semi-CRF engine: numba-compiled streaming forward, backward and Viterbi.

Algorithm (one sequence; positions 0-based, ``e`` is an exclusive segment end):

* ``P[e, c] = sum(h[:e, c])`` in float64, accumulated as the loop advances.
* Step ``e`` first closes start position ``s = e - 1``:
  ``S[s, c] = seg_start[s, c] + (init[c] if s == 0 else LSE_c' alpha[s, c'] + A[c', c])``
  and stores ``Q[s, c] = S[s, c] - P[s, c]`` in a ring buffer of ``R = max K_c + 1`` rows
  (written twice, at ``s % R`` and ``s % R + R``, so the last ``R`` rows are contiguous).
* The geometric tail is a running log-sum-exp over starts ``s <= e - K_c - 1``:
  ``G[e, c] = LSE(G[e-1, c] + tail[c], Q[e-K_c-1, c] + D[c, K_c-1] + tail[c])``.
* ``alpha[e, c] = P[e, c] + seg_end[e-1, c] + LSE(Q[e-d, c] + D[c, d-1] for d = 1..n, G[e, c])``
  with ``n = min(K_c, e, max_dur[e-1, c])``: the length loop stops at the bound, and the
  tail term is used only when ``max_dur`` admits every length.
* ``log Z = LSE_c alpha[L, c] + final[c]``.

Working memory per sequence is O(R·C). The gradient is the exact adjoint of this loop
(reverse sweep, adjoints are posterior probabilities in [0, 1]): forward states are
checkpointed every ``checkpoint`` positions and recomputed block by block. Viterbi runs the
same loop in the max semiring with int32 back-pointers per position (exact traceback).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

NEG = -np.inf
# semirings: LOG (log-sum-exp), MAX (max, writing back-pointers), SCORE (max without
# back-pointers: the first pass of a two-pass Viterbi needs only the states)
LOG, MAX, SCORE = 0, 1, 2
# Length terms more than 50 nats below the running maximum (weight < 2e-22) are skipped in
# the log-sum-exp and its adjoint: below float64 resolution even summed over thousands of
# lengths, and most of an exon label's long lengths are that far down once emissions are
# informative.
NEGLIGIBLE = -50.0
# The adjoint's counterpart: an end (start) whose posterior mass is below exp(NEGLIGIBLE)
# passes none of it on to its starts, lengths and predecessors (at most this mass is lost
# per skipped end, far below float64 resolution of any posterior). Posteriors are sparse --
# at most positions only a few labels can plausibly end -- so most length loops are skipped.
MASS_NEGLIGIBLE = math.exp(NEGLIGIBLE)
NO_PP = np.zeros(0, dtype=np.int64)  # no probe positions (see _advance)
PROBE_PAD = 2**62  # pads probe position rows: never reached


@nb.njit(cache=True, nogil=True)
def no_pv(C):
    """Probe values placeholder (0, 5, C) for calls without probes."""
    return np.zeros((0, 5, C))


@nb.njit(cache=True, nogil=True)
def _advance(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, off,
    A, preds, succs, D, dstep, Kc, tail, init, R,
    ring, G, alpha, P, e0, n_steps, mode,
    keep, k0, Qk, Ak, Ik, Gk, Mk, Ek,
    bp_len, bp_prev, Gstart, pp, pv, pptr,
):  # fmt: skip
    """Advance one sequence's forward state from end position e0 to e0 + n_steps.

    h, ss, se, md, run: (n_local, C) with local row = absolute position - off; run[t, c] =
    number of consecutive positions ending at t where label c is allowed (label_mask).
    preds (C, C+1) int64: preds[c, 0] = number of labels c' with finite A[c', c], listed
    ascending in preds[c, 1:] (sparse transitions: the gene grammar allows few); succs
    (C, C+1) the same for the labels c' with finite A[c, c']. dstep (C, 2) int64: the
    finite lengths of label c are among dstep[c, 0] + i * dstep[c, 1] (api.length_steps).
    Exact shortcuts (the skipped terms are -inf): a start s with seg_start = -inf gets
    Q = -inf without its entry sum, and an end e with seg_end = -inf, or (when row e is in
    this call) with no successor allowed to start at e, gets alpha = -inf without its
    length loop -- such a segment is in no path, its posterior is exactly 0.
    State (updated in place): ring (C, 2R) of Q, G (C,), alpha (C,), P (C,).
    keep: also store, for absolute e in (e0, e0+n_steps], rows e - k0 of Ak (alpha), Gk,
    and the length log-sum-exp split as Mk (its reference maximum m) and Ik (log of the sum
    of exp(term - m)), and for s = e-1 rows s - k0 + R of Qk and s - k0 of Ek (enter score
    without seg_start).
    mode MAX: fills bp_len/bp_prev rows (local position of the segment's last/first base).
    Probes (chain marginals): pp (n_p,) ascending absolute positions; at each, pv (n_p, 5, C)
    gets row 0 = Q (start score minus prefix sum, as in the ring), and, as an end position,
    rows 1 = alpha, 2 = m and 3 = log-sum of the length log-sum-exp (as Mk/Ik), 4 = the
    length bound min(max_dur, run) of a segment ending there (inf if none); pptr (2,) int64
    holds the next probe index as start and as end (carried across chunks).
    """
    C = alpha.shape[0]
    tmp = np.empty(C)
    npp = pp.shape[0]
    for step in range(n_steps):
        e = e0 + step + 1
        s = e - 1
        ls = s - off
        rec_q = False
        rec_a = False
        if npp > 0:
            while pptr[0] < npp and pp[pptr[0]] < s:
                pptr[0] += 1
            rec_q = pptr[0] < npp and pp[pptr[0]] == s
            while pptr[1] < npp and pp[pptr[1]] < e:
                pptr[1] += 1
            rec_a = pptr[1] < npp and pp[pptr[1]] == e
        # 1. close start position s
        for c in range(C):
            if has_ss and ss[ls, c] == NEG:
                v = NEG  # a forbidden start: its entry sum is not needed
                arg = -1
            elif s == 0:
                v = init[c]
                arg = -1
            else:
                m = NEG
                arg = -1
                npred = preds[c, 0]
                for i in range(npred):
                    cp = preds[c, i + 1]
                    x = alpha[cp] + A[cp, c]
                    tmp[i] = x
                    if x > m:
                        m = x
                        arg = cp
                if mode == LOG and m > NEG:
                    acc = 0.0
                    for i in range(npred):
                        acc += math.exp(tmp[i] - m)
                    v = m + math.log(acc)
                else:
                    v = m
            if keep:
                Ek[s - k0, c] = v
            if has_ss:
                v += ss[ls, c]
            q = v - P[c]
            i = s % R
            ring[c, i] = q
            ring[c, i + R] = q
            if keep:
                Qk[s - k0 + R, c] = q
            if rec_q:
                pv[pptr[0], 0, c] = q
            if mode == MAX:
                bp_prev[ls, c] = arg
        # 2. prefix sums
        for c in range(C):
            P[c] += h[ls, c]
        # 3. segments ending at e
        base = e % R + R
        look = has_ss and step + 1 < n_steps  # row e (the next start) is in this call
        for c in range(C):
            kc = Kc[c]
            n = min(kc, e)
            unbounded = True
            if has_md:
                mdv = md[ls, c]
                if mdv < n:
                    n = mdv
                unbounded = mdv >= e
            runv = e
            if has_run:
                runv = run[ls, c]
                if runv < n:
                    n = runv
            tl = tail[c]
            use_tail = False
            if tl > NEG and kc > 0:
                j = e - kc - 1
                if j >= 0:
                    # the tail holds starts s with [s, e) allowed: a start joins once
                    # K_c + 1 allowed positions follow it; a forbidden position empties it
                    x = ring[c, j % R] + D[c, kc - 1] + tl if runv > kc else NEG
                    g = G[c] + tl if runv > 0 else NEG
                    if mode == LOG:
                        if x > g:
                            G[c] = x + math.log1p(math.exp(g - x))
                        elif g > NEG:
                            G[c] = g + math.log1p(math.exp(x - g))
                        else:
                            G[c] = NEG
                    else:
                        if x >= g:
                            G[c] = x
                            Gstart[c] = j
                        else:
                            G[c] = g
                use_tail = unbounded and G[c] > NEG
            dead = has_se and se[ls, c] == NEG
            if look and not dead:
                dead = True
                for i in range(succs[c, 0]):
                    if ss[ls + 1, succs[c, i + 1]] > NEG:
                        dead = False
                        break
            if dead:
                n = 0
                use_tail = False
            d0 = dstep[c, 0]
            dg = dstep[c, 1]
            m = NEG
            best = 0
            for d in range(d0, n + 1, dg):
                x = ring[c, base - d] + D[c, d - 1]
                if x > m:
                    m = x
                    best = d
            if use_tail and G[c] > m:
                m = G[c]
                best = e - Gstart[c]
            lacc = 0.0
            if mode == LOG and m > NEG:
                acc = 0.0
                for d in range(d0, n + 1, dg):
                    y = ring[c, base - d] + D[c, d - 1] - m
                    if y > NEGLIGIBLE:
                        acc += math.exp(y)
                if use_tail:
                    acc += math.exp(G[c] - m)
                lacc = math.log(acc)
            if keep:
                Mk[e - k0, c] = m
                Ik[e - k0, c] = lacc
            if rec_a:
                pv[pptr[1], 2, c] = m
                pv[pptr[1], 3, c] = lacc
                bnd = np.inf
                if has_md:
                    bnd = min(bnd, md[ls, c])
                if has_run:
                    bnd = min(bnd, run[ls, c])
                pv[pptr[1], 4, c] = bnd
            m = m + lacc
            a = P[c] + m
            if has_se:
                a += se[ls, c]
            alpha[c] = a
            if rec_a:
                pv[pptr[1], 1, c] = a
            if keep:
                Ak[e - k0, c] = a
                Gk[e - k0, c] = G[c]
            if mode == MAX:
                bp_len[ls, c] = best if m > NEG else 0


@nb.njit(cache=True, nogil=True)
def optional_rows(b, has_ss, has_se, has_md, has_run):
    """Batch rows of seg_start, seg_end, max_dur and run for sequence b: b where the input
    is given, 0 where it is the (1, 1, 1) placeholder."""
    zero, bb = np.int64(0), np.int64(b)
    return (bb if has_ss else zero, bb if has_se else zero, bb if has_md else zero,
            bb if has_run else zero)  # fmt: skip


@nb.njit(cache=True, nogil=True)
def _finish(alpha, final):
    C = alpha.shape[0]
    m = NEG
    for c in range(C):
        m = max(m, alpha[c] + final[c])
    if m == NEG:
        return NEG
    acc = 0.0
    for c in range(C):
        acc += math.exp(alpha[c] + final[c] - m)
    return m + math.log(acc)


@nb.njit(cache=True, nogil=True)
def final_weights(alpha, final, logz):
    """(C,) P(the last segment has label c) = exp(alpha[c] + final[c] - logz), divided by
    its sum (exactly 1 in exact arithmetic; see the normalisation in :func:`_reverse`)."""
    C = alpha.shape[0]
    w = np.zeros(C)
    tot = 0.0
    for c in range(C):
        if alpha[c] + final[c] > NEG:
            w[c] = math.exp(alpha[c] + final[c] - logz)
            tot += w[c]
    if tot > 0.0:
        for c in range(C):
            w[c] /= tot
    return w


@nb.njit(cache=True, nogil=True)
def _checkpoints(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, off,
    A, preds, succs,
    D, dstep, Kc, tail, init, R, ring, G, alpha, P, a0, n_total, block, pp, pv, pptr,
    to_end=True,
):  # fmt: skip
    """Advance the state (ring, G, alpha, P; in place) over end positions (a0, a0+n_total],
    saving it at the start of every block of ``block`` positions, recording the probes
    pp/pv/pptr (see :func:`_advance`). Returns the saved states (cr (nb, C, 2R), cG, ca, cP
    (nb, C)). ``to_end=False``: stop at the last block's start (a reverse sweep needs only
    the block starts; the state is then not advanced to the end)."""
    C = alpha.shape[0]
    f2 = np.zeros((1, 1))
    i2 = np.zeros((1, 1), dtype=np.int32)
    i1 = np.zeros(1, dtype=np.int64)
    nblocks = (n_total + block - 1) // block
    cr = np.empty((nblocks, C, 2 * R))
    cG = np.empty((nblocks, C))
    ca = np.empty((nblocks, C))
    cP = np.empty((nblocks, C))
    for k in range(nblocks):
        cr[k] = ring
        cG[k] = G
        ca[k] = alpha
        cP[k] = P
        a = a0 + k * block
        n = min(block, a0 + n_total - a)
        if k == nblocks - 1 and not to_end:
            break
        _advance(
            h, ss, se, md, run, has_ss, has_se, has_md, has_run, off,
            A, preds, succs, D, dstep, Kc, tail, init, R,
            ring, G, alpha, P, a, n, LOG,
            False, 0, f2, f2, f2, f2, f2, f2,
            i2, i2, i1, pp, pv, pptr,
        )  # fmt: skip
    return cr, cG, ca, cP


@nb.njit(cache=True, nogil=True)
def _reverse(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, off,
    A, preds, succs, D, dstep, Kc, tail, init, R, block, cr, cG, ca, cP, a0, n_total,
    galpha, gG, gP, carry,
    gh, gss, gse, gA, gD, gtail, ginit, pp, pv,
):  # fmt: skip
    """Reverse sweep (exact adjoint) over end positions (a0, a0+n_total] from the block
    checkpoints of :func:`_checkpoints`, recomputing one block at a time (and recording
    the probes pp/pv of :func:`_advance` on the way: every position is recomputed once).

    Adjoint state, updated in place from the range end to its start: galpha (C,) of alpha
    at the current end, gG (C,) of the running tail, gP (C,) running prefix-sum adjoint,
    carry (R, C): start adjoints already accumulated for the R positions before the current
    end. Writes gh/gss/gse rows s - off for s in [a0, a0+n_total) and accumulates gA, gD,
    gtail, ginit (at s = 0).
    """
    C = galpha.shape[0]
    i2 = np.zeros((1, 1), dtype=np.int32)
    i1 = np.zeros(1, dtype=np.int64)
    ring = np.empty((C, 2 * R))
    G = np.empty(C)
    alpha = np.empty(C)
    P = np.empty(C)
    gnext = np.zeros(C)
    wbuf = np.zeros(max(R, C) + 1)  # one weight set (lengths 1..K_c, or predecessors)
    Qk = np.empty((block + R, C))
    gQ = np.zeros((block + R, C))
    Ak = np.empty((block + 1, C))
    Ik = np.empty((block + 1, C))
    Gk = np.empty((block + 1, C))
    Mk = np.empty((block + 1, C))
    Ek = np.empty((block, C))
    nblocks = (n_total + block - 1) // block
    for k in range(nblocks - 1, -1, -1):
        a = a0 + k * block
        n = min(block, a0 + n_total - a)
        gQ[:] = 0.0
        gQ[n : n + R] = carry  # start adjoints of positions [a+n-R, a+n)
        ring[:] = cr[k]
        G[:] = cG[k]
        alpha[:] = ca[k]
        P[:] = cP[k]
        # history Q[a-R .. a) from the checkpoint ring, then recompute the block
        for i in range(R):
            p = a - R + i
            for c in range(C):
                Qk[i, c] = ring[c, p % R] if p >= 0 else NEG
        for c in range(C):
            Ak[0, c] = alpha[c]
            Gk[0, c] = G[c]
        _advance(
            h, ss, se, md, run, has_ss, has_se, has_md, has_run, off,
            A, preds, succs, D, dstep, Kc, tail, init, R,
            ring, G, alpha, P, a, n, LOG,
            True, a, Qk, Ak, Ik, Gk, Mk, Ek,
            i2, i2, i1, pp, pv, np.zeros(2, dtype=np.int64),  # probe pointers from 0
        )  # fmt: skip
        for e in range(a + n, a, -1):
            s = e - 1
            r = e - a
            # adjoint of alpha[e]
            for c in range(C):
                g = galpha[c]
                gse[s - off, c] = g
                gP[c] += g
                if g < MASS_NEGLIGIBLE:
                    continue
                mx = Mk[r, c]
                lacc = Ik[r, c]
                kc = Kc[c]
                nd = min(kc, e)
                unbounded = True
                if has_md:
                    mdv = md[s - off, c]
                    if mdv < nd:
                        nd = mdv
                    unbounded = mdv >= e
                if has_run and run[s - off, c] < nd:
                    nd = run[s - off, c]
                # weights exp(term - m - lacc), with term - m rounded exactly as in the
                # forward: they sum to 1 to a few ulp(1). (exp(term - inner) with
                # inner = m + lacc rounded to ulp(|Q|) would be off by ~ulp(|Q|), 1e-7 when
                # prefix sums reach 1e9, and the error would accumulate along the sweep.)
                for d in range(dstep[c, 0], nd + 1, dstep[c, 1]):
                    y = Qk[e - d - a + R, c] + D[c, d - 1] - mx
                    if y > NEGLIGIBLE:
                        w = g * math.exp(y - lacc)
                        gQ[e - d - a + R, c] += w
                        gD[c, d - 1] += w
                tl = tail[c]
                if tl > NEG and kc > 0 and unbounded and Gk[r, c] > NEG:
                    gG[c] += g * math.exp(Gk[r, c] - mx - lacc)
            # adjoint of the tail recursion G[e] -> G[e-1], Q[e-K_c-1]
            for c in range(C):
                tl = tail[c]
                kc = Kc[c]
                if not (tl > NEG and kc > 0):
                    continue
                if gG[c] < MASS_NEGLIGIBLE:
                    gG[c] = 0.0  # negligible mass (MASS_NEGLIGIBLE): dropped, not carried
                    continue
                j = e - kc - 1
                Ge = Gk[r, c]
                if j < 0 or Ge == NEG:
                    gG[c] = 0.0
                    continue
                runv = run[s - off, c] if has_run else e
                x = Qk[j - a + R, c] + D[c, kc - 1] + tl
                w2 = math.exp(x - Ge) if runv > kc else 0.0
                w1 = math.exp(Gk[r - 1, c] + tl - Ge) if Gk[r - 1, c] > NEG and runv > 0 else 0.0
                tot = w1 + w2  # = 1 in exact arithmetic (see above)
                if tot > 0.0:
                    w1 /= tot
                    w2 /= tot
                gtail[c] += gG[c]
                gQ[j - a + R, c] += gG[c] * w2
                gD[c, kc - 1] += gG[c] * w2
                gG[c] *= w1
            # P[e] = P[e-1] + h[e-1]; then Q[s] = S[s] - P[s] is complete
            for c in range(C):
                gh[s - off, c] = gP[c]
                gq = gQ[s - a + R, c]
                gP[c] -= gq
                gss[s - off, c] = gq
                gnext[c] = 0.0
            for c in range(C):
                gq = gss[s - off, c]
                if gq < MASS_NEGLIGIBLE:
                    continue
                if s == 0:
                    ginit[c] += gq
                    continue
                enter = Ek[s - a, c]
                tot = 0.0
                for i in range(preds[c, 0]):
                    cp = preds[c, i + 1]
                    x = Ak[r - 1, cp] + A[cp, c]
                    w = math.exp(x - enter) if x > NEG else 0.0
                    wbuf[i] = w
                    tot += w
                if tot == 0.0:
                    continue
                scale = gq / tot  # normalised like the length weights
                for i in range(preds[c, 0]):
                    cp = preds[c, i + 1]
                    w = wbuf[i] * scale
                    gnext[cp] += w
                    gA[cp, c] += w
            for c in range(C):
                galpha[c] = gnext[c]
        carry[:] = gQ[:R]  # start adjoints of positions [a-R, a), for the block before


@nb.njit(cache=True, nogil=True)
def _backward_one(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, L,
    A, preds, succs, D, dstep, Kc, tail, init, final, R, block,
    gh, gss, gse, gA, gD, gtail, ginit, gfinal, pp, pv,
):  # fmt: skip
    """Gradient of log Z for one sequence (length L) by checkpointed recomputation.

    Writes gh/gss/gse (T, C) rows < L and accumulates gA (C, C), gD (C, K), gtail, ginit,
    gfinal (C,). Returns log Z. gh[t, c] = P(t has label c); gss/gse = start/end posteriors.
    Records the forward probes pp/pv (see :func:`_advance`) on the way.
    """
    C = h.shape[1]
    ring = np.full((C, 2 * R), NEG)
    G = np.full(C, NEG)
    alpha = np.full(C, NEG)
    P = np.zeros(C)
    cr, cG, ca, cP = _checkpoints(
        h, ss, se, md, run, has_ss, has_se, has_md, has_run, 0, A, preds, succs,
        D, dstep, Kc, tail, init, R,
        ring, G, alpha, P, 0, L, block, pp, pv, np.zeros(2, dtype=np.int64),
    )  # fmt: skip
    logz = _finish(alpha, final)
    if logz == NEG:
        return logz
    galpha = final_weights(alpha, final, logz)
    for c in range(C):
        gfinal[c] += galpha[c]
    _reverse(
        h, ss, se, md, run, has_ss, has_se, has_md, has_run, 0,
        A, preds, succs, D, dstep, Kc, tail, init, R, block, cr, cG, ca, cP, 0, L,
        galpha, np.zeros(C), np.zeros(C), np.zeros((R, C)),
        gh, gss, gse, gA, gD, gtail, ginit, NO_PP, no_pv(C),  # (probes: recorded above)
    )  # fmt: skip
    return logz


@nb.njit(cache=True, parallel=True)
def _backward_batch(
    h,
    ss,
    se,
    md,
    run,
    has_ss,
    has_se,
    has_md,
    has_run,
    lengths,
    A,
    preds,
    succs,
    D,
    dstep,
    Kc,
    tail,
    init,
    final,
    R,
    block,
    pp,
):
    """Gradients of log Z for a batch (see :func:`_backward_one`), batch elements in
    parallel. pp (B, n_p) int64: probe positions per sequence, ascending (pad with
    :data:`PROBE_PAD`; n_p = 0 for none); their values come back as pv (B, n_p, 5, C)."""
    B, T, C = h.shape
    K = D.shape[1]
    pv = np.full((B, pp.shape[1], 5, C), NEG)
    gh = np.zeros((B, T, C))
    gss = np.zeros((B, T, C))
    gse = np.zeros((B, T, C))
    gA = np.zeros((B, C, C))
    gD = np.zeros((B, C, K))
    gt = np.zeros((B, C))
    gi = np.zeros((B, C))
    gf = np.zeros((B, C))
    logz = np.empty(B)
    for b in nb.prange(B):
        bs, be, bm, br = optional_rows(b, has_ss, has_se, has_md, has_run)
        logz[b] = _backward_one(
            h[b], ss[bs], se[be], md[bm], run[br],
            has_ss, has_se, has_md, has_run, lengths[b],
            A, preds, succs, D, dstep, Kc, tail, init, final, R, block,
            gh[b], gss[b], gse[b], gA[b], gD[b], gt[b], gi[b], gf[b], pp[b], pv[b],
        )  # fmt: skip
    return logz, gh, gss, gse, gA, gD, gt, gi, gf, pv


@nb.njit(cache=True, parallel=True)
def _forward_batch(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, lengths,
    A, preds, succs, D, dstep, Kc, tail, init, final, R, mode,
):  # fmt: skip
    """Forward over whole sequences, batch elements in parallel. mode LOG: scores = log Z;
    mode MAX: scores = best score, last = its final label, and int32 back-pointers
    bp_len/bp_prev (B, T, C) for :func:`traceback` (shape (B, 1, 1) in LOG mode)."""
    B, T, C = h.shape
    f2 = np.zeros((1, 1))
    Tb = T if mode == MAX else 1
    Cb = C if mode == MAX else 1
    bp_len = np.zeros((B, Tb, Cb), dtype=np.int32)
    bp_prev = np.full((B, Tb, Cb), -1, dtype=np.int32)
    scores = np.empty(B)
    last = np.full(B, -1, dtype=np.int64)
    for b in nb.prange(B):
        bs, be, bm, br = optional_rows(b, has_ss, has_se, has_md, has_run)
        ring = np.full((C, 2 * R), NEG)
        G = np.full(C, NEG)
        alpha = np.full(C, NEG)
        P = np.zeros(C)
        Gstart = np.zeros(C, dtype=np.int64)
        _advance(
            h[b], ss[bs], se[be], md[bm], run[br],
            has_ss, has_se, has_md, has_run, 0, A, preds, succs, D, dstep, Kc, tail, init, R,
            ring, G, alpha, P, 0, lengths[b], mode,
            False, 0, f2, f2, f2, f2, f2, f2,
            bp_len[b], bp_prev[b], Gstart, NO_PP, no_pv(C), np.zeros(2, dtype=np.int64),
        )  # fmt: skip
        if mode == LOG:
            scores[b] = _finish(alpha, final)
            continue
        m = NEG
        for c in range(C):
            if alpha[c] + final[c] > m:
                m = alpha[c] + final[c]
                last[b] = c
        scores[b] = m
    return scores, last, bp_len, bp_prev


def traceback(
    bp_len: np.ndarray, bp_prev: np.ndarray, length: int, last: int
) -> list[tuple[int, int, int]]:
    """Segments [(start, end, label)] (0-based half-open) from back-pointers.

    bp_len[t, c]: length of the best label-c segment whose last position is t;
    bp_prev[s, c]: best label before a label-c segment starting at s (-1 at s = 0).
    """
    segs = []
    e, c = length, int(last)
    while e > 0:
        d = int(bp_len[e - 1, c])
        if d <= 0:
            raise RuntimeError(f"broken Viterbi back-pointer at position {e - 1}, label {c}")
        s = e - d
        segs.append((s, e, c))
        if s > 0:
            c = int(bp_prev[s, c])
        e = s
    return segs[::-1]


@nb.njit(cache=True, nogil=True)
def _advance_row(
    b, h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
    D, dstep, Kc, tail, init,
    R, rings, G, alpha, P, e0, mode, bp_len, bp_prev, Gstart, pp, pv, pptr,
):  # fmt: skip
    """Advance sequence b of a batch over one chunk (see :func:`_advance_batch`)."""
    f2 = np.zeros((1, 1))
    bs, be, bm, br = optional_rows(b, has_ss, has_se, has_md, has_run)
    bb = np.int64(b) if bp_len.shape[0] > 1 else np.int64(0)  # (prange index is unsigned)
    _advance(
        h[b], ss[bs], se[be], md[bm], run[br], has_ss, has_se, has_md, has_run, off,
        A, preds, succs, D, dstep, Kc, tail, init, R,
        rings[b], G[b], alpha[b], P[b], e0, h.shape[1], mode,
        False, 0, f2, f2, f2, f2, f2, f2,
        bp_len[bb], bp_prev[bb], Gstart[b], pp[b], pv[b], pptr[b],
    )  # fmt: skip


@nb.njit(cache=True, parallel=True)
def _advance_batch(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
    D, dstep, Kc, tail, init, R,
    rings, G, alpha, P, e0, mode, bp_len, bp_prev, Gstart, pp, pv, pptr,
):  # fmt: skip
    """Advance B sequences in lockstep over one chunk h (B, n, C) whose row 0 is absolute
    position off == e0 (streaming), batch elements in parallel threads. State arrays have
    a leading batch dimension; bp_len/bp_prev (B, n, C) in MAX mode, (1, 1, 1) otherwise;
    probes pp (B, n_p), pv (B, n_p, 5, C), pptr (B, 2) as in :func:`_advance`."""
    for b in nb.prange(h.shape[0]):
        _advance_row(
            b, h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
            D, dstep, Kc,
            tail, init, R, rings, G, alpha, P, e0, mode, bp_len, bp_prev, Gstart, pp, pv, pptr,
        )  # fmt: skip


@nb.njit(cache=True, nogil=True)
def _advance_serial(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
    D, dstep, Kc, tail, init, R,
    rings, G, alpha, P, e0, mode, bp_len, bp_prev, Gstart, pp, pv, pptr,
):  # fmt: skip
    """:func:`_advance_batch` in the calling thread: starting the thread pool costs about a
    millisecond, more than a small chunk of one sequence."""
    for b in range(h.shape[0]):
        _advance_row(
            b, h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
            D, dstep, Kc,
            tail, init, R, rings, G, alpha, P, e0, mode, bp_len, bp_prev, Gstart, pp, pv, pptr,
        )  # fmt: skip


def advance_chunk(*args) -> None:
    """:func:`_advance_batch` (threads) for several sequences, :func:`_advance_serial` for
    one."""
    (_advance_serial if args[0].shape[0] == 1 else _advance_batch)(*args)


@nb.njit(cache=True, nogil=True)
def _reverse_row(
    b, h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
    D, dstep, Kc, tail, init,
    R, block, rings, G, alpha, P, a0, galpha, gG, gP, carry, gh, gss, gse, pp, pv,
):  # fmt: skip
    """Reverse sweep of sequence b over one chunk (see :func:`_reverse_batch`)."""
    C = h.shape[2]
    n = h.shape[1]
    bs, be, bm, br = optional_rows(b, has_ss, has_se, has_md, has_run)
    hb, ssb, seb, mdb, runb = h[b], ss[bs], se[be], md[bm], run[br]
    cks = _checkpoints(
        hb, ssb, seb, mdb, runb, has_ss, has_se, has_md, has_run, off,
        A, preds, succs, D, dstep, Kc, tail, init, R,
        rings[b].copy(), G[b].copy(), alpha[b].copy(), P[b].copy(), a0, n, block,
        NO_PP, no_pv(C), np.zeros(2, dtype=np.int64), False,
    )  # fmt: skip
    gA = np.zeros((C, C))
    gD = np.zeros(D.shape)
    _reverse(
        hb, ssb, seb, mdb, runb, has_ss, has_se, has_md, has_run, off,
        A, preds, succs, D, dstep, Kc, tail, init, R, block, cks[0], cks[1], cks[2], cks[3], a0, n,
        galpha[b], gG[b], gP[b], carry[b], gh[b], gss[b], gse[b], gA, gD, np.zeros(C),
        np.zeros(C), pp[b], pv[b],
    )  # fmt: skip


@nb.njit(cache=True, parallel=True)
def _reverse_batch(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
    D, dstep, Kc, tail, init,
    R, block, rings, G, alpha, P, a0, galpha, gG, gP, carry, pp, pv,
):  # fmt: skip
    """Posteriors of one chunk h (B, n, C) of B sequences (row 0 = absolute position
    off == a0) from the forward states at its start (rings (B, C, 2R), G, alpha, P (B, C)),
    continuing the carried adjoint state (galpha, gG, gP (B, C), carry (B, R, C); updated
    in place), recording the forward probes pp (B, n_p) / pv (B, n_p, 5, C) of the chunk's
    positions (:func:`_advance`; n_p = 0 for none). Batch elements in parallel threads.
    Returns gh, gss, gse (B, n, C)."""
    B, n, C = h.shape
    gh = np.zeros((B, n, C))
    gss = np.zeros((B, n, C))
    gse = np.zeros((B, n, C))
    for b in nb.prange(B):
        _reverse_row(
            b, h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
            D, dstep, Kc,
            tail, init, R, block, rings, G, alpha, P, a0, galpha, gG, gP, carry, gh, gss, gse,
            pp, pv,
        )  # fmt: skip
    return gh, gss, gse


@nb.njit(cache=True, nogil=True)
def _reverse_serial(
    h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
    D, dstep, Kc, tail, init,
    R, block, rings, G, alpha, P, a0, galpha, gG, gP, carry, pp, pv,
):  # fmt: skip
    """:func:`_reverse_batch` in the calling thread."""
    B, n, C = h.shape
    gh = np.zeros((B, n, C))
    gss = np.zeros((B, n, C))
    gse = np.zeros((B, n, C))
    for b in range(B):
        _reverse_row(
            b, h, ss, se, md, run, has_ss, has_se, has_md, has_run, off, A, preds, succs,
            D, dstep, Kc,
            tail, init, R, block, rings, G, alpha, P, a0, galpha, gG, gP, carry, gh, gss, gse,
            pp, pv,
        )  # fmt: skip
    return gh, gss, gse


def reverse_chunk(*args):
    """:func:`_reverse_batch` (threads) for several sequences, :func:`_reverse_serial` for
    one."""
    return (_reverse_serial if args[0].shape[0] == 1 else _reverse_batch)(*args)
