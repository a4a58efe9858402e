"""Streaming semi-CRF: carry the forward state across chunks of a long contig.

A contig of any length is processed chunk by chunk as emissions arrive (window by window
from the encoder) and gives exactly -- bit for bit -- the result of one call on the whole
contig: the state carried between chunks is the engine's own loop state (ring buffer of
the last ``max K_c + 1`` start scores, running tail, last alpha, running prefix sums), all
float64, so nothing is re-normalised or approximated at chunk boundaries.

Chunks hold rows ``[position, position + n)`` of the contig (0-based half-open); every
batch element advances by the same ``n``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from genoseg.crf import cpu
from genoseg.crf.api import Segments, _Arrays, _raise_forbidden, allowed_runs
from genoseg.crf.inputs import check_inputs


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
    ):
        C = transitions.shape[0]
        probe = check_inputs(
            torch.zeros(batch, 1, C), None, transitions, durations, init, final, tail
        )
        self._params = (transitions, durations, init, final, tail)
        a = _Arrays(probe)
        self.B, self.C, self.R = batch, C, a.R
        self._static = (a.A, a.preds, a.D, a.Kc, a.tail, a.init)
        self._final = a.final
        self.rings = np.full((batch, C, 2 * a.R), -np.inf)
        self.G = np.full((batch, C), -np.inf)
        self.alpha = np.full((batch, C), -np.inf)
        self.P = np.zeros((batch, C))
        self.Gstart = np.zeros((batch, C), dtype=np.int64)
        self.run_carry = np.zeros((batch, C), dtype=np.int64)
        self.position = 0

    def _step(self, emissions, seg_start, seg_end, max_dur, label_mask, bp_len, bp_prev) -> None:
        x = check_inputs(
            emissions, None, *self._params[:4], self._params[4], seg_start, seg_end, max_dur,
            label_mask, position_offset=self.position,
        )  # fmt: skip
        if x.B != self.B:
            raise ValueError(f"emissions chunk has batch size {x.B}, stream was made for {self.B}")
        a = _Arrays(x)
        if a.has_run:  # runs of allowed positions continue across chunks
            a.run = allowed_runs(x.label_mask.cpu().numpy(), self.run_carry)
            self.run_carry = a.run[:, -1, :].astype(np.int64)
        else:  # no mask: every label allowed, runs grow by the whole chunk
            self.run_carry += x.T
        cpu._advance_batch(
            a.h, a.ss, a.se, a.md, a.run, a.has_ss, a.has_se, a.has_md, a.has_run, self.position,
            *self._static,
            self.R, self.rings, self.G, self.alpha, self.P, self.position, self.mode,
            bp_len, bp_prev, self.Gstart,
        )  # fmt: skip
        self.position += x.T


class ForwardStream(_Stream):
    """log Z of long sequences fed chunk by chunk.

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
        dummy = np.zeros((self.B, 1, 1), dtype=np.int32)
        self._step(emissions, seg_start, seg_end, max_dur, label_mask, dummy, dummy)

    def log_z(self) -> Tensor:
        """log Z (B,) float64 of everything consumed so far, taken as complete sequences."""
        if self.position == 0:
            raise ValueError("no emissions consumed yet")
        out = np.array([cpu._finish(self.alpha[b], self._final) for b in range(self.B)])
        _raise_forbidden(out)
        return torch.from_numpy(out)


class ViterbiStream(_Stream):
    """Best segmentation of long sequences fed chunk by chunk; back-pointers are kept as
    int32 (2 x 4 bytes per position and label), traced back exactly in :meth:`finish`."""

    mode = cpu.MAX

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bp_len: list[np.ndarray] = []
        self._bp_prev: list[np.ndarray] = []

    def update(
        self,
        emissions: Tensor,
        seg_start: Tensor | None = None,
        seg_end: Tensor | None = None,
        max_dur: Tensor | None = None,
        label_mask: Tensor | None = None,
    ) -> None:
        """Consume the next chunk (see :meth:`ForwardStream.update`)."""
        n = emissions.shape[-2]
        bp_len = np.zeros((self.B, n, self.C), dtype=np.int32)
        bp_prev = np.full((self.B, n, self.C), -1, dtype=np.int32)
        self._step(emissions, seg_start, seg_end, max_dur, label_mask, bp_len, bp_prev)
        self._bp_len.append(bp_len)
        self._bp_prev.append(bp_prev)

    def finish(self) -> tuple[Tensor, list[Segments]]:
        """Scores (B,) float64 and segments [(start, end, label)] per sequence."""
        if self.position == 0:
            raise ValueError("no emissions consumed yet")
        totals = self.alpha + self._final[None, :]
        scores = totals.max(axis=1)
        _raise_forbidden(scores)
        bp_len = np.concatenate(self._bp_len, axis=1)
        bp_prev = np.concatenate(self._bp_prev, axis=1)
        paths = [
            cpu.traceback(bp_len[b], bp_prev[b], self.position, int(np.argmax(totals[b])))
            for b in range(self.B)
        ]
        return torch.from_numpy(scores), paths
