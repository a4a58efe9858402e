"""Learned structural scores: transitions, length tables and tails, starting from the
grammar's YAML priors.

* ``transitions`` (C, C): the grammar's allowed entries (0 in the prior) plus a learned
  score each; forbidden entries stay -inf.
* ``durations`` (C, K): the prior log-probability table plus a learned correction that is
  smooth in log-length by construction: per label, ``n_knots`` values at log-spaced
  lengths 1..K_c, linearly interpolated in log d. A penalty on the knots' second
  differences (``smoothness``) keeps it smooth; -inf entries (modulo-3 rule, minimum
  lengths) stay -inf.
* ``tail`` (C,): the prior slope plus a learned correction, kept < 0 (a geometric tail
  must decay); labels without a tail keep -inf.
* ``init`` / ``final``: fixed (they encode "complete genes only").

``mode="fixed"`` keeps the priors (no parameters are trained).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from genoseg.grammar.spec import Grammar

__all__ = ["Structure"]


def _knot_matrix(kc: int, K: int, n_knots: int) -> np.ndarray:
    """(K, n_knots) linear interpolation weights in log-length for lengths 1..kc (rows past
    kc are zero)."""
    W = np.zeros((K, n_knots))
    if kc <= 0:
        return W
    knots = np.linspace(0.0, math.log(max(kc, 2)), n_knots)
    x = np.log(np.arange(1, kc + 1))
    j = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, n_knots - 2)
    w = (x - knots[j]) / (knots[j + 1] - knots[j])
    W[np.arange(kc), j] = 1 - w
    W[np.arange(kc), j + 1] = w
    return W


class Structure(nn.Module):
    """Transitions, durations, init, final, tail for the engine (float32 tensors)."""

    def __init__(self, grammar: Grammar, *, mode: str = "learned", n_knots: int = 12):
        super().__init__()
        if mode not in ("learned", "fixed"):
            raise ValueError(f"model.structure must be 'learned' or 'fixed', got {mode!r}")
        self.mode = mode
        tabs = grammar.static_tables
        A = torch.from_numpy(tabs["transitions"])
        D = torch.from_numpy(tabs["durations"])
        self.register_buffer("A0", A, persistent=False)
        self.register_buffer("D0", D, persistent=False)
        self.register_buffer("init", torch.from_numpy(tabs["init"]), persistent=False)
        self.register_buffer("final", torch.from_numpy(tabs["final"]), persistent=False)
        self.register_buffer("tail0", torch.from_numpy(tabs["tail"]), persistent=False)
        C, K = D.shape
        finite = np.isfinite(tabs["durations"])
        kc = np.array([int(np.flatnonzero(f)[-1]) + 1 if f.any() else 0 for f in finite])
        W = np.stack([_knot_matrix(int(k), K, n_knots) for k in kc])  # (C, K, n_knots)
        self.register_buffer("W", torch.from_numpy(W).float(), persistent=False)
        self.A_delta = nn.Parameter(torch.zeros(C, C), requires_grad=mode == "learned")
        self.knots = nn.Parameter(torch.zeros(C, n_knots), requires_grad=mode == "learned")
        self.tail_delta = nn.Parameter(torch.zeros(C), requires_grad=mode == "learned")

    def tables(self) -> dict[str, Tensor]:
        """``transitions`` (C, C), ``durations`` (C, K), ``init``, ``final``, ``tail`` (C,)."""
        A = torch.where(torch.isfinite(self.A0), self.A0 + self.A_delta, self.A0)
        delta = torch.einsum("ckn,cn->ck", self.W, self.knots)
        D = torch.where(torch.isfinite(self.D0), self.D0 + delta, self.D0)
        has_tail = torch.isfinite(self.tail0)
        # slope = prior * exp(delta): stays negative, starts at the prior
        finite_tail = torch.where(has_tail, self.tail0, -1.0).clamp(max=-1e-6)
        tail = torch.where(has_tail, finite_tail * torch.exp(self.tail_delta), self.tail0)
        return {"transitions": A, "durations": D, "init": self.init, "final": self.final,
                "tail": tail}  # fmt: skip

    def smoothness_penalty(self) -> Tensor:
        """Sum of squared second differences of the length-correction knots."""
        k = self.knots
        return ((k[:, 2:] - 2 * k[:, 1:-1] + k[:, :-2]) ** 2).sum()
