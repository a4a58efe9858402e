"""Streaming semi-CRF: carry the forward state across chunks of a long contig.

A contig of any length is processed chunk by chunk as emissions arrive (window by window
from the encoder) and gives exactly -- bit for bit -- the result of one call on the whole
contig: the state carried between chunks is the engine's own loop state (ring buffer of
the last ``max K_c + 1`` start scores, running tail, last alpha, running prefix sums), all
float64, so nothing is re-normalised or approximated at chunk boundaries.

Chunks hold rows ``[position, position + n)`` of the contig (0-based half-open); every
batch element advances by the same ``n``.

Backends: CPU tensors run the numba engine (:mod:`genoseg.crf.cpu`); CUDA tensors run the
Triton chunk kernels (:func:`~genoseg.crf.triton_kernels.forward_chunk`,
:func:`~genoseg.crf.triton_kernels.viterbi_chunk`,
:func:`~genoseg.crf.triton_kernels.posterior_chunk`) with the same carry-over contract and
results (docs/kernels.md); ``backend=`` chooses as in :func:`genoseg.crf.api.log_partition`.
Results come back on the stream's device (that of the parameters and emissions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from genoseg.crf import chains as chainsmod
from genoseg.crf import cpu
from genoseg.crf.api import (
    Marginals,
    Segments,
    _Arrays,
    _raise_forbidden,
    _resolve_backend,
    allowed_runs,
    default_checkpoint,
    result_dtype,
)
from genoseg.crf.inputs import check_inputs, check_params

_NO_BP = np.zeros((1, 1, 1), dtype=np.int32)  # back-pointer placeholder outside MAX mode


def _continue_runs(a: _Arrays, x, carry: np.ndarray | None, start: int, R: int):
    """Give chunk ``a`` (rows from ``start``) the runs of allowed positions (label_mask)
    continuing ``carry`` (B, C), the run length at the end of the previous chunk (None: no
    mask given so far). A chunk without a mask still needs runs while a forbidden position
    lies within R of its start, or its segments could reach back over it. Returns the new
    carry (a new array; the old one is left unchanged)."""
    if not a.has_run:
        if carry is None:
            return None
        if (carry >= R).all():  # no segment of this chunk can reach a forbidden position
            return carry + x.T
        mask = np.ones((x.B, x.T, x.C), dtype=bool)
    else:
        mask = x.label_mask.cpu().numpy()
    if carry is None:  # every position before this chunk was allowed
        carry = np.full((x.B, x.C), start, dtype=np.int64)
    a.run, a.has_run = allowed_runs(mask, carry), True
    return a.run[:, -1, :].astype(np.int64)


def pack_rings(rings: np.ndarray) -> tuple:
    """A saved copy of the start-score rings (B, C, 2R) that keeps only their finite
    entries: the two halves of a ring are equal (every entry is written at s % R and
    s % R + R), and most starts are forbidden (-inf) in a gene grammar -- about 11 % are
    finite on A. thaliana, so a state saved per chunk takes ~1 MB instead of 11 MB.
    Exact: :func:`unpack_rings` gives the rings back bit for bit."""
    B, C, R2 = rings.shape
    half = rings[:, :, : R2 // 2].reshape(-1)
    idx = np.flatnonzero(np.isfinite(half))
    idx = idx.astype(np.int32) if half.size < 2**31 else idx
    return (rings.shape, idx, half[idx])


def unpack_rings(packed: tuple) -> np.ndarray:
    """The rings (B, C, 2R) saved by :func:`pack_rings`."""
    shape, idx, vals = packed
    B, C, R2 = shape
    half = np.full(B * C * (R2 // 2), -np.inf)
    half[idx] = vals
    half = half.reshape(B, C, R2 // 2)
    return np.concatenate([half, half], axis=2)


def _on(t: Tensor, device: torch.device) -> Tensor:
    return t if t.device == device else t.to(device)


class _Stream:
    mode = cpu.LOG

    def __init__(
        self,
        transitions: Tensor,
        durations: Tensor,
        init: Tensor,
        final: Tensor,
        tail: Tensor | None = None,
        *,
        batch: int = 1,
        backend: str = "auto",
    ):
        if not isinstance(transitions, Tensor) or transitions.dim() != 2:
            raise ValueError("transitions must be a (C, C) tensor")
        C = transitions.shape[0]
        dev = transitions.device
        self._params = check_params(transitions, durations, init, final, tail, C, dev)
        probe = check_inputs(
            torch.zeros(batch, 1, C, device=dev), None, *[None] * 5, params=self._params
        )
        if backend == "reference":
            raise ValueError("streams run on backend 'auto', 'cpu' or 'triton', not 'reference'")
        #: "cpu" (numba engine on host copies) or "triton" (chunk kernels on the device)
        self.backend = _resolve_backend(backend, probe)
        self.device = dev
        a = _Arrays(probe)
        self._arrays = a  # parameter arrays, converted once
        self.B, self.C, self.R = batch, C, a.R
        self._static = (a.A, a.preds, a.succs, a.D, a.dstep, a.Kc, a.tail, a.init)
        self._final = a.final
        self.rings = np.full((batch, C, 2 * a.R), -np.inf)
        self.G = np.full((batch, C), -np.inf)
        self.alpha = np.full((batch, C), -np.inf)
        self.P = np.zeros((batch, C))
        self.Gstart = np.zeros((batch, C), dtype=np.int64)
        self.run_carry: np.ndarray | None = None  # (B, C) once a label_mask was given
        self.position = 0
        # Triton backend: the carried ChunkState (None before the first chunk)
        self.ts = None
        # the numba forward also runs on the Triton backend only to record chain probes
        self._cpu_pass1 = self.backend == "cpu"
        # pass 1 records chain probes (PosteriorStream with chains on the Triton backend;
        # on the CPU pass 2's recomputation records them)
        self._pass1_probes = False
        # forward probes at chain boundaries (PosteriorStream chains; none by default)
        self._no_probes = (np.zeros((batch, 0), dtype=np.int64), np.zeros((batch, 0, 5, C)),
                           np.zeros((batch, 2), dtype=np.int64))  # fmt: skip

    @property
    def _tk(self):
        from genoseg.crf import triton_kernels

        return triton_kernels

    def _check_chunk(self, inputs: tuple, start: int):
        """Checked inputs (emissions, seg_start, seg_end, max_dur, label_mask) of the chunk
        whose row 0 is position ``start`` (CRFInputs with that ``position_offset``)."""
        emissions, seg_start, seg_end, max_dur, label_mask = inputs
        x = check_inputs(
            emissions, None, None, None, None, None, None, seg_start, seg_end, max_dur,
            label_mask, position_offset=start, params=self._params,
        )  # fmt: skip
        if x.B != self.B:
            raise ValueError(f"emissions chunk has batch size {x.B}, stream was made for {self.B}")
        return x

    def _cpu_arrays(self, x, start: int, run_carry):
        """Engine arrays of checked chunk ``x`` (rows from ``start``) and the label_mask run
        carry after it."""
        a = _Arrays(x, static=self._arrays)
        return a, _continue_runs(a, x, run_carry, start, self.R)

    def _state(self, n: int) -> tuple:
        """Everything needed to redo the chunk of n rows starting at the current position."""
        if self.backend == "triton":  # chunk functions never modify the states they get
            return (self.position, n, self.ts)
        return (self.position, n, pack_rings(self.rings), self.G.copy(), self.alpha.copy(),
                self.P.copy(), self.Gstart.copy(), self.run_carry)  # fmt: skip

    def _step(self, emissions, seg_start, seg_end, max_dur, label_mask) -> None:
        """Pass 1 over the next chunk (log-sum-exp, or max without back-pointers)."""
        x = self._check_chunk((emissions, seg_start, seg_end, max_dur, label_mask), self.position)
        if self.backend == "triton":
            tk = self._tk
            if self.mode == cpu.LOG:
                _, ts = tk.forward_chunk(x, self.ts, last=False)
            else:
                _, ts = tk.viterbi_chunk(x, self.ts, pointers=False)
        if self._cpu_pass1:  # (on the Triton backend: the chain probes, while the GPU runs)
            a, run_carry = self._cpu_arrays(x, self.position, self.run_carry)
            probes = self._probe_window(self.position, x.T) if self._pass1_probes else None
            cpu.advance_chunk(
                a.h, a.ss, a.se, a.md, a.run, a.has_ss, a.has_se, a.has_md, a.has_run,
                self.position, *self._static,
                self.R, self.rings, self.G, self.alpha, self.P, self.position, self.mode,
                _NO_BP, _NO_BP, self.Gstart, *(probes or self._no_probes)[:3],
            )  # fmt: skip
            if probes is not None:
                self._gather_probes(self.position, x.T, probes)
            self.run_carry = run_carry
        if self.backend == "triton":
            self.ts = ts
        self.position += x.T

    def _out(self, t: np.ndarray | Tensor) -> Tensor:
        """A result on the stream's device."""
        return _on(torch.from_numpy(t) if isinstance(t, np.ndarray) else t, self.device)


class ForwardStream(_Stream):
    """log Z of long sequences fed chunk by chunk.

    ``backend``: "auto" (numba engine for CPU tensors, Triton kernels for CUDA tensors;
    CUDA falls back to the numba engine with one warning when Triton cannot run), "cpu" or
    "triton" (on CPU tensors only under TRITON_INTERPRET=1). ``batch``: sequences per chunk.

    >>> s = ForwardStream(A, D, init, final, tail)        # doctest: +SKIP
    >>> for chunk in chunks: s.update(chunk)              # chunk (n, C) or (B, n, C)
    >>> s.log_z()                                         # (B,) float64, == log_partition
    """

    def update(
        self,
        emissions: Tensor,
        seg_start: Tensor | None = None,
        seg_end: Tensor | None = None,
        max_dur: Tensor | None = None,
        label_mask: Tensor | None = None,
    ) -> None:
        """Consume the next chunk: emissions (B, n, C) or (n, C); optional boundary scores
        and max_dur for the same rows."""
        self._step(emissions, seg_start, seg_end, max_dur, label_mask)

    def log_z(self) -> Tensor:
        """log Z (B,) float64 of everything consumed so far, taken as complete sequences
        (on the stream's device)."""
        if self.position == 0:
            raise ValueError("no emissions consumed yet")
        if self.backend == "triton":
            out = self.ts.log_z(self._params.final)
            _raise_forbidden(out.cpu())
            return out
        out = np.array([cpu._finish(self.alpha[b], self._final) for b in range(self.B)])
        _raise_forbidden(out)
        return self._out(out)


class _TwoPass(_Stream):
    """Pass 1 ``forward`` keeps the engine state at every chunk start; pass 2 ``backward``
    takes the chunks again in reverse order and redoes each from its state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._saved: list[tuple] = []
        self._backward_started = False

    def forward(
        self,
        emissions: Tensor,
        seg_start: Tensor | None = None,
        seg_end: Tensor | None = None,
        max_dur: Tensor | None = None,
        label_mask: Tensor | None = None,
    ) -> None:
        """Pass 1: consume the next chunk: emissions (B, n, C) or (n, C) and the optional
        inputs for the same rows."""
        if self._backward_started:
            raise ValueError(f"forward() after backward(): start a new {type(self).__name__}")
        inputs = (emissions, seg_start, seg_end, max_dur, label_mask)
        self._saved.append(self._pass1(inputs))  # only once the chunk was accepted

    update = forward

    def _pass1(self, inputs: tuple) -> tuple:
        """Advance over the chunk ``inputs``; returns what pass 2 keeps of it: the engine
        state at its start (:meth:`_state`)."""
        emissions = inputs[0]
        n = emissions.shape[-2] if isinstance(emissions, Tensor) and emissions.dim() >= 2 else 0
        state = self._state(n)
        self._step(*inputs)
        return state

    def _next_chunk(self, inputs: tuple):
        """Pass 2: (saved state, CRFInputs) of the last chunk not yet redone, checking that
        ``inputs`` are that chunk's. The caller removes the state (:meth:`_done`) once the
        chunk is computed, so a refused chunk can be given again."""
        if not self._saved:
            raise ValueError("backward() called more times than forward()")
        saved = self._saved[-1]
        start, n = saved[0], saved[1]
        rows = inputs[0].shape[-2] if isinstance(inputs[0], Tensor) else None
        if rows != n:
            raise ValueError(
                f"backward() chunk has {rows} rows, but the chunk at position "
                f"{start} had {n}: give the chunks of forward() again in reverse order"
            )
        return saved, self._check_chunk(inputs, start)

    def _done(self) -> None:
        self._backward_started = True
        self._saved.pop()


class ViterbiStream(_TwoPass):
    """Best segmentation of long sequences fed chunk by chunk, in two passes, with memory
    for one chunk's back-pointers only.

    Pass 1: :meth:`forward` for every chunk in order (max semiring; keeps one engine state
    per chunk, 2·R·C float64). :meth:`score` is then the best score. Pass 2:
    :meth:`backward` for the same chunks in reverse order, with the same inputs again:
    it recomputes the chunk's int32 back-pointers from its state and returns, per sequence,
    the segments [(start, end, label)] whose end lies in the chunk. Concatenated in genome
    order they are exactly the path of one :func:`~genoseg.crf.api.viterbi` call.
    ``backend`` as for :class:`ForwardStream` (on CUDA the back-pointers are computed on
    the device and one chunk's worth is copied to the host for the traceback).

    ``keep_pointers=True``: pass 1 writes every chunk's back-pointers and keeps them on the
    host (compacted: lengths as uint16 where they fit, labels as int8, 3·C bytes per
    position and sequence; int32 lengths 5·C) instead of a state, and pass 2 only traces
    back: :meth:`backward` needs no inputs then. Faster by one forward per chunk, for
    memory that grows with the sequence -- for sequences short enough to afford it.
    """

    mode = cpu.SCORE  # pass 1 keeps states only; pass 2 writes back-pointers (MAX)

    def __init__(self, *args, keep_pointers: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_pointers = keep_pointers
        self._cursor: list[list] | None = None  # per sequence: [end, label, label resolved]

    def _pass1(self, inputs: tuple) -> tuple:
        """With ``keep_pointers``: the chunk's compacted back-pointers instead of a state."""
        if not self.keep_pointers:
            return super()._pass1(inputs)
        x = self._check_chunk(inputs, self.position)
        start = self.position
        bp_len, bp_prev = self._pointers(x, (start, x.T, *self._live_state()), advance=True)
        self.position += x.T
        return (start, x.T, _compact(bp_len, np.uint16), _compact(bp_prev, np.int8))

    def _live_state(self) -> tuple:
        if self.backend == "triton":
            return (self.ts,)
        return (self.rings, self.G, self.alpha, self.P, self.Gstart, self.run_carry)

    def _pointers(self, x, saved: tuple, advance: bool) -> tuple[np.ndarray, np.ndarray]:
        """Back-pointers (bp_len, bp_prev) (B, n, C) int32 of checked chunk ``x`` from the
        state in ``saved`` (as :meth:`_state` keeps it, or live with ``advance``: then the
        stream's state moves past the chunk)."""
        start, n = saved[0], saved[1]
        if self.backend == "triton":
            vc, ts = self._tk.viterbi_chunk(x, saved[2], pointers=True)
            if advance:
                self.ts = ts
            return vc.bp_len.cpu().numpy(), vc.bp_prev.cpu().numpy()
        rings, G, alpha, P, Gstart, run_carry = saved[2:]
        if not advance:
            rings = unpack_rings(rings)
        a, run_next = self._cpu_arrays(x, start, run_carry)
        bp_len = np.zeros((self.B, n, self.C), dtype=np.int32)
        bp_prev = np.full((self.B, n, self.C), -1, dtype=np.int32)
        cpu.advance_chunk(
            a.h, a.ss, a.se, a.md, a.run, a.has_ss, a.has_se, a.has_md, a.has_run, start,
            *self._static, self.R, rings, G, alpha, P, start, cpu.MAX, bp_len, bp_prev,
            Gstart, *self._no_probes,  # (no probes in a ViterbiStream)
        )  # fmt: skip
        if advance:
            self.run_carry = run_next
        return bp_len, bp_prev

    def _best(self) -> tuple[np.ndarray, np.ndarray]:
        """(best score (B,) float64, last label (B,)) after pass 1, on the host."""
        if self.position == 0:
            raise ValueError("no emissions consumed yet")
        if self.backend == "triton":
            score, last = self.ts.best(self._params.final)
            return score.cpu().numpy(), last.cpu().numpy()
        z = self.alpha + self._final[None, :]
        return z.max(axis=1), np.argmax(z, axis=1)

    def score(self) -> Tensor:
        """Best score (B,) float64 of the whole sequences (after pass 1), on the stream's
        device."""
        scores, _ = self._best()
        _raise_forbidden(scores)
        return self._out(scores.copy())

    def backward(
        self,
        emissions: Tensor | None = None,
        seg_start: Tensor | None = None,
        seg_end: Tensor | None = None,
        max_dur: Tensor | None = None,
        label_mask: Tensor | None = None,
    ) -> list[Segments]:
        """Pass 2: per sequence, the best path's segments ending in the last chunk not yet
        traced (give the chunks of pass 1 again, last first, in order; with
        ``keep_pointers`` no inputs are needed)."""
        if self._cursor is None:
            scores, last = self._best()
            _raise_forbidden(scores)  # everything forbidden
            self._cursor = [[self.position, int(c), True] for c in last]
        if self.keep_pointers:
            if not self._saved:
                raise ValueError("backward() called more times than forward()")
            start, n, bp_len, bp_prev = self._saved[-1]
            if emissions is not None:  # given anyway: they must be the chunk's
                self._next_chunk((emissions, seg_start, seg_end, max_dur, label_mask))
        else:
            if emissions is None:
                raise ValueError("backward() needs the chunk's inputs (keep_pointers=False)")
            saved, x = self._next_chunk((emissions, seg_start, seg_end, max_dur, label_mask))
            start = saved[0]
            bp_len, bp_prev = self._pointers(x, saved, advance=False)
        self._done()
        out = []
        for b in range(self.B):
            e, c, resolved = self._cursor[b]
            segs = []
            while e > 0:
                if not resolved:  # the label before a segment starting at e
                    if e < start:
                        break
                    c, resolved = int(bp_prev[b, e - start, c]), True
                if e - 1 < start:
                    break
                d = int(bp_len[b, e - 1 - start, c])
                if d <= 0:
                    raise RuntimeError(
                        f"broken Viterbi back-pointer at position {e - 1}, label {c}"
                    )
                segs.append((e - d, e, c))
                e, resolved = e - d, False
            self._cursor[b] = [e, c, resolved]
            out.append(segs[::-1])
        return out


def _compact(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` as the smaller integer ``dtype`` when every value fits, else unchanged."""
    info = np.iinfo(dtype)
    if a.size == 0 or (int(a.min()) >= info.min and int(a.max()) <= info.max):
        return a.astype(dtype)
    return a


class PosteriorStream(_TwoPass, ForwardStream):
    """Exact posteriors of long sequences fed chunk by chunk, in two passes.

    Pass 1: :meth:`forward` for every chunk in order (keeps one engine state per chunk:
    the finite entries of its R·C start scores, R = max K_c + 1; :func:`pack_rings`).
    Pass 2: :meth:`backward` for the same chunks in reverse order, with the same inputs
    again; each call returns the chunk's
    :class:`~genoseg.crf.api.Marginals` (rows of that chunk only, on the stream's device),
    equal to what one :func:`~genoseg.crf.api.marginals` call on the whole sequence gives
    for those rows. Only one chunk's emissions are needed at a time, so a chromosome's
    posteriors never need its whole (T, C) score matrix in memory. ``backend`` as for
    :class:`ForwardStream`; ``checkpoint``: positions between the saved states of the
    recomputation inside a chunk (default: the engine's choice; results do not depend on it).

    ``chains``: optional, per sequence a list of chains of consecutive segments
    ``[(s1, e1, c1), (s2 = e1, e2, c2), ...]`` in whole-sequence coordinates (0-based
    half-open; a chain may span many chunks); after the last :meth:`backward`,
    :meth:`chain_marginals` gives their exact marginals, equal to
    :func:`~genoseg.crf.api.chain_marginals` on the whole sequence. The engine's
    quantities at the chain boundaries are recorded where the forward is computed (one
    chunk's probes at a time, kept as a few floats per chain segment:
    :class:`~genoseg.crf.chains.ChainProbes`), the end posteriors of the chains' last
    segments in pass 2. On the CPU backend pass 2's recomputation of each chunk's forward
    records them, so the chains can also be given after pass 1 (:meth:`set_chains`, e.g.
    once a Viterbi pass over the same chunks found them). On the Triton backend the kernels
    compute the posteriors and the end posteriors, while pass 1 also runs the numba forward
    on host copies of the chunks to record the boundary quantities (the kernels do not
    record them; chains at construction); it runs while the GPU works on the same chunk
    (docs/crf.md).

    >>> ps = PosteriorStream(A, D, init, final, tail)   # doctest: +SKIP
    >>> for ch in chunks: ps.forward(ch)
    >>> for ch in reversed(chunks): post = ps.backward(ch)
    """

    def __init__(
        self,
        *args,
        checkpoint: int | None = None,
        chains: Sequence[Sequence[Sequence[tuple[int, int, int]]]] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.checkpoint = checkpoint
        self._adjoint: tuple | None = None  # CPU backend: the carried reverse-sweep state
        self.tadj = None  # Triton backend: the carried AdjointState
        self._chains: list[chainsmod.FlatChains] | None = None
        if chains is not None:
            self._set_chains(chains)
            if self.backend == "triton":  # the probes come from a numba forward in pass 1
                self._cpu_pass1 = self._pass1_probes = True

    def set_chains(self, chains: Sequence[Sequence[Sequence[tuple[int, int, int]]]]) -> None:
        """Give the ``chains`` (as for the constructor) after pass 1, before pass 2 (CPU
        backend: pass 2 records what they need)."""
        if self.backend == "triton":
            raise ValueError("on the Triton backend give chains= to the constructor")
        if self._backward_started:
            raise ValueError("set_chains() after backward(): give them before pass 2")
        if self._chains is not None:
            raise ValueError("this PosteriorStream has chains already")
        self._set_chains(chains)
        for b, fc in enumerate(self._chains):
            chainsmod.check_ends(fc, self.position, f"chains[{b}]")

    def _set_chains(self, chains) -> None:
        if len(chains) != self.B:
            raise ValueError(
                f"chains must have {self.B} entries (one list per sequence), got {len(chains)}"
            )
        self._chains = [
            chainsmod.flatten(chains[b], None, self.C, f"chains[{b}]") for b in range(self.B)
        ]
        self._probes = [chainsmod.ChainProbes.empty(fc) for fc in self._chains]
        self._chain_end = [np.zeros(fc.n_chains) for fc in self._chains]

    def chain_marginals(self) -> list[Tensor]:
        """Per sequence, the (n_chains,) float64 marginals of the chains given to the
        constructor: P(every segment of the chain is a segment of the path). Call after
        the last :meth:`backward` chunk. CPU tensors on every backend (as
        :func:`~genoseg.crf.api.chain_marginals`)."""
        if self._chains is None:
            raise ValueError("this PosteriorStream has no chains (chains= or set_chains())")
        if not self._backward_started or self._saved:
            raise ValueError("chain_marginals() needs every chunk of pass 2 (backward) first")
        _, _, _, D, _, Kc, tail, _ = self._static
        return [
            torch.from_numpy(
                chainsmod.probabilities(fc, self._probes[b], self._chain_end[b], D, Kc, tail)
            )
            for b, fc in enumerate(self._chains)
        ]

    def _probe_window(self, e0: int, n: int) -> tuple:
        """(pp, pv, pptr, window starts) for a forward over ends (e0, e0 + n]
        (cpu._advance): the chains' probe points in [e0, e0 + n] only (one chunk's probes
        at a time, 5·C floats each), per sequence padded with PROBE_PAD."""
        wins = [chainsmod.window(fc, e0, e0 + n) for fc in self._chains]
        w = max(i1 - i0 for i0, i1 in wins)
        pp = np.full((self.B, w), cpu.PROBE_PAD, dtype=np.int64)
        for b, (fc, (i0, i1)) in enumerate(zip(self._chains, wins)):
            pp[b, : i1 - i0] = fc.points[i0:i1]
        pv = np.full((self.B, w, 5, self.C), -np.inf)
        return pp, pv, np.zeros((self.B, 2), dtype=np.int64), [i0 for i0, _ in wins]

    def _gather_probes(self, e0: int, n: int, probes: tuple) -> None:
        """Keep what the chains need of the probes of :meth:`_probe_window`."""
        _, pv, _, starts = probes
        A = self._static[0]
        for b, fc in enumerate(self._chains):  # starts e0..e0+n-1, ends e0+1..e0+n
            chainsmod.gather(fc, self._probes[b], pv[b], starts[b], (e0, e0 + n),
                             (e0 + 1, e0 + n + 1), A)  # fmt: skip

    def backward(
        self,
        emissions: Tensor,
        seg_start: Tensor | None = None,
        seg_end: Tensor | None = None,
        max_dur: Tensor | None = None,
        label_mask: Tensor | None = None,
    ) -> Marginals:
        """Pass 2: the posteriors of the last chunk not yet returned; give the chunks of
        pass 1 again, last first."""
        inputs = (emissions, seg_start, seg_end, max_dur, label_mask)
        if not self._backward_started and self._chains is not None:
            for b, fc in enumerate(self._chains):
                chainsmod.check_ends(fc, self.position, f"chains[{b}]")
        saved, x = self._next_chunk(inputs)
        start, n = saved[0], saved[1]
        if self.backend == "triton":
            marg, self.tadj = self._tk.posterior_chunk(
                x, saved[2], self.tadj, checkpoint=self.checkpoint
            )
            self._done()
            if self._chains is not None:
                self._record_chain_ends(start, n, marg.end)
            return marg
        rings, G, alpha, P, _, run_carry = saved[2:]
        rings = unpack_rings(rings)
        a, _ = self._cpu_arrays(x, start, run_carry)
        if self._adjoint is None:
            log_z = self.log_z().cpu().numpy()
            galpha = np.stack(
                [cpu.final_weights(self.alpha[b], self._final, log_z[b]) for b in range(self.B)]
            )
            self._adjoint = (galpha, np.zeros((self.B, self.C)), np.zeros((self.B, self.C)),
                             np.zeros((self.B, self.R, self.C)), log_z)  # fmt: skip
        galpha, gG, gP, carry, log_z = self._adjoint
        block = self.checkpoint or default_checkpoint(n, self.R)
        probes = self._probe_window(start, n) if self._chains is not None else self._no_probes
        gh, gss, gse = cpu.reverse_chunk(
            a.h, a.ss, a.se, a.md, a.run, a.has_ss, a.has_se, a.has_md, a.has_run, start,
            *self._static, self.R, block, rings, G, alpha, P, start, galpha, gG, gP, carry,
            probes[0], probes[1],
        )  # fmt: skip
        self._done()
        if self._chains is not None:
            self._gather_probes(start, n, probes)
            self._record_chain_ends(start, n, gse)
        dt = result_dtype(x)
        pos, st, en = (self._out(v).to(dt) for v in (gh, gss, gse))
        return Marginals(pos, st, en, st.sum(-1), en.sum(-1), self._out(log_z.copy()))

    def _record_chain_ends(self, start: int, n: int, gse: np.ndarray | Tensor) -> None:
        """Keep the end posteriors of the chains whose last segment ends in rows
        [start, start + n) (``gse`` (B, n, C), host array or device tensor)."""
        for b, fc in enumerate(self._chains):
            last = fc.last_e - 1
            sel = np.flatnonzero((last >= start) & (last < start + n))
            if not len(sel):
                continue
            rows, labels = last[sel] - start, fc.last_c[sel]
            if isinstance(gse, Tensor):
                idx = [torch.from_numpy(v).to(gse.device) for v in (rows, labels)]
                vals = gse[b][idx[0], idx[1]].to(torch.float64).cpu().numpy()
            else:
                vals = gse[b, rows, labels]
            self._chain_end[b][sel] = vals
