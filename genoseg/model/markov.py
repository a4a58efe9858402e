"""Markov content priors: k-th order Markov chains of coding, intron and intergenic bases,
fitted by counting on the training annotation and added to the network's outputs as
log-likelihood ratios (``model.markov_order``, docs/training.md).

This is the content sensor of the classical gene finders (GeneMark's and AUGUSTUS's
three-periodic inhomogeneous Markov chains): a few thousand counts per table, so it is
estimated well from a few hundred genes, where a network from scratch memorises its
training windows. The network learns what the chains miss on top of them.

For a base x_t with context c = x_{t-k} .. x_{t-1} (transcript sense), class m among
``intron``, ``codon/0``, ``codon/1``, ``codon/2`` (the codon position of x_t):

    LLR_m[t] = log P(x_t | c, m) - log P(x_t | c, intergenic)

goes to output channel ``intron+`` / ``codon+/k`` at t, times a learned scale per class
(starts at 1); the ``-`` channels get the same computed on the reverse complement and
mirrored back (:data:`genoseg.model.strands.OUTPUT_MIRROR`), so the prior scores both
strands alike and keeps an RC-equivariant model equivariant. ``intergenic`` gets 0 (it is
the reference). Since the emission of a label is its channel's score summed over the
segment (codon channels through :func:`genoseg.model.heads.frame_terms`), an exon's prior
is exactly the chain's log-odds of its bases in its reading frame.

Coordinates: positions 0-based; x_t's context is the k bases before it in the window (on
the reverse complement: the k bases after it, forward). A base whose context leaves the
row or holds an N scores 0, so the prior at t depends on bases t-k .. t+k only (window
invariant for any halo >= k; the encoder's is far larger). Columns past a row's length
score 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from genoseg.data.fasta import reverse_complement_codes
from genoseg.model.heads import CHANNELS, N_OUTPUTS

__all__ = ["CLASSES", "MarkovPrior", "class_track", "kmer_index", "markov_counts"]

#: content classes of a base (transcript sense); the chains' rows, intergenic first
CLASSES = ("intergenic", "intron", "codon/0", "codon/1", "codon/2")
_PLUS = [CHANNELS.index(n) for n in ("intron+", "codon+/0", "codon+/1", "codon+/2")]
_MINUS = [CHANNELS.index(n) for n in ("intron-", "codon-/0", "codon-/1", "codon-/2")]


def kmer_index(codes: np.ndarray | Tensor, order: int) -> np.ndarray | Tensor:
    """Index of the (order + 1)-mer ending at each position, base 4, oldest base first:
    (..., N) int64, -1 where the k-mer leaves the row or holds a code outside A=0 C=1 G=2
    T=3. Works on numpy arrays and torch tensors alike."""
    is_np = isinstance(codes, np.ndarray)
    x = torch.as_tensor(codes).long()
    n = x.shape[-1]
    ok = (x >= 0) & (x < 4)
    idx = torch.zeros_like(x)
    good = torch.ones_like(ok)
    for j in range(order + 1):  # base at t - (order - j)
        lag = order - j
        if lag >= n:
            good = torch.zeros_like(ok)
            break
        xs = torch.nn.functional.pad(x[..., : n - lag], (lag, 0), value=0) if lag else x
        oks = torch.nn.functional.pad(ok[..., : n - lag], (lag, 0), value=False) if lag else ok
        idx = idx * 4 + xs.clamp(0, 3)
        good = good & oks
    out = torch.where(good, idx, torch.full_like(idx, -1))
    return out.numpy() if is_np else out


def class_track(labels: np.ndarray, grammar) -> tuple[np.ndarray, np.ndarray]:
    """Per-base content classes of a labelled row (0-based, forward strand), for each
    strand's genes in transcript sense: ``(plus, minus)`` (N,) int8 arrays of indices into
    :data:`CLASSES`, -1 where the base is unlabelled (IGNORE) or belongs to the other
    strand's gene. ``minus`` is in the row's forward coordinates (reverse it together
    with the reverse complement of the sequence). Intergenic bases count for both."""
    from genoseg.data.labels import segments_from_labels

    n = len(labels)
    plus = np.full(n, -1, dtype=np.int8)
    minus = np.full(n, -1, dtype=np.int8)
    for s, e, c in segments_from_labels(labels):
        lab = grammar.labels[c]
        if lab.kind == "intergenic":
            plus[s:e] = 0
            minus[s:e] = 0
            continue
        track = plus if lab.strand > 0 else minus
        if lab.kind == "intron":
            track[s:e] = 1
            continue
        u = np.arange(s, e)
        i = int(lab.phase_in)
        pos = (u - s + i) % 3 if lab.strand > 0 else (e - 1 - u + i) % 3
        track[s:e] = 2 + pos
    return plus, minus


def markov_counts(rows: Iterable[tuple[np.ndarray, np.ndarray]], grammar, order: int) -> np.ndarray:
    """Counts (len(CLASSES), 4 ** (order + 1)) float64 of (order + 1)-mers by the class of
    their last base, over ``rows`` of (codes (N,), labels (N,)); minus-strand genes are
    counted on the reverse complement (transcript sense)."""
    K = 4 ** (order + 1)
    counts = np.zeros((len(CLASSES), K))
    for codes, labels in rows:
        plus, minus = class_track(labels, grammar)
        rc = reverse_complement_codes(codes)
        for seq, cls in ((codes, plus), (rc, minus[::-1])):
            idx = kmer_index(seq, order)
            ok = (idx >= 0) & (cls >= 0)
            np.add.at(counts, (cls[ok].astype(np.int64), idx[ok]), 1.0)
    return counts


class MarkovPrior(nn.Module):
    """The chains' log-likelihood ratios as network-output additions (module doc).

    Buffers: ``llr`` (4, 4 ** (order + 1)) float32, rows intron, codon/0..2 (saved with the
    model; zeros until :meth:`fit`). Parameter: ``scale`` (4,), one per class, shared by
    both strands."""

    def __init__(self, order: int):
        super().__init__()
        if order < 0:
            raise ValueError(f"model.markov_order must be >= 0 or null, got {order}")
        self.order = order
        self.register_buffer("llr", torch.zeros(4, 4 ** (order + 1)))
        self.scale = nn.Parameter(torch.ones(4))

    @torch.no_grad()
    def fit(self, counts: np.ndarray, pseudocount: float = 1.0) -> None:
        """Set ``llr`` from :func:`markov_counts`: P(x | context, class) with
        ``pseudocount`` added to every (order + 1)-mer."""
        K = 4 ** (self.order + 1)
        c = np.asarray(counts, dtype=np.float64).reshape(len(CLASSES), K // 4, 4) + pseudocount
        logp = np.log(c / c.sum(-1, keepdims=True)).reshape(len(CLASSES), K)
        self.llr.copy_(torch.from_numpy(logp[1:] - logp[0:1]).float())

    def strand_scores(
        self, sequence: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(B, N) codes -> scaled log-odds (B, N, 4) of classes intron, codon/0..2 on the
        ``+`` strand and on the ``-`` strand (computed on the reverse complement, mirrored
        back); 0 where the k-mer leaves the row or holds an N, and past ``lengths``."""
        from genoseg.model.strands import _complement, _mirror_index

        B, N = sequence.shape
        full = torch.full((B,), N, dtype=torch.int64, device=sequence.device)
        L = full if lengths is None else lengths.to(sequence.device)
        valid = torch.arange(N, device=sequence.device).view(1, N) < L.view(-1, 1)
        seq = torch.where(valid, sequence.long(), torch.full_like(sequence.long(), 4))
        table = (self.llr * self.scale.view(4, 1)).t()  # (K, 4)

        def score(codes: Tensor) -> Tensor:  # (B, N) -> (B, N, 4)
            idx = kmer_index(codes, self.order)
            s = table[idx.clamp_min(0)]
            return torch.where((idx >= 0).unsqueeze(-1), s, torch.zeros((), device=s.device))

        fwd = score(seq)
        mi = _mirror_index(L, N)
        rc = score(_complement(seq).gather(1, mi))
        back = rc.gather(1, mi.unsqueeze(-1).expand(-1, -1, 4))
        back = torch.where(valid.unsqueeze(-1), back, torch.zeros((), device=back.device))
        return fwd, back

    def features(self, sequence: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Encoder input channels (B, 8, N): the ``+`` strand's 4 log-odds, then the ``-``
        strand's (``model.markov_use: inputs``; the reverse complement swaps the blocks)."""
        fwd, back = self.strand_scores(sequence, lengths)
        return torch.cat([fwd, back], dim=-1).transpose(1, 2)

    def forward(self, sequence: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, N) codes -> (B, N, N_OUTPUTS) float32 additions (zero outside the intron and
        codon channels, and past ``lengths``)."""
        fwd, back = self.strand_scores(sequence, lengths)
        B, N = sequence.shape
        out = torch.zeros(B, N, N_OUTPUTS, device=sequence.device)
        out[..., _PLUS] = fwd
        out[..., _MINUS] = back
        return out
