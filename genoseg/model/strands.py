"""Strand averaging: a model's outputs on a sequence, averaged with its outputs on the
reverse complement mapped back (reverse-complement test-time augmentation).

The output channels are mirror images of each other (:data:`~genoseg.model.heads.CHANNELS`):
``X+`` at position t of the reverse complement of a window of N bases is ``X-`` at
position N - 1 - t of the window (boundary channels sit on the segment's first base on
``+`` and on its last base on ``-``, codon positions count in the transcript's sense), and
the evidence channels mirror the same way (:data:`genoseg.data.bam.RC_CHANNELS`). So

    averaged(x)[t] = (f(x)[t] + P f(rc(x))[N - 1 - t]) / 2        P: swap + and - channels

is the output of a model that scores both strands alike: averaged(rc(x)) is averaged(x)
mirrored (tested). Each pass depends only on bases within the encoder's halo, so the
average keeps window invariance (seam-free chunks). It costs a second encoder pass;
``genoseg predict`` uses it when the checkpoint's ``calibration`` says
``strand_average: true`` or with ``--strand-average`` (docs/predict.md). A model configured
with ``model.strand_average: true`` averages inside :meth:`GeneModel.outputs`, in training
too, so it is fitted to the averaged outputs themselves (docs/training.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from genoseg.data.bam import RC_CHANNELS
from genoseg.model.heads import AUX_CLASSES, CHANNELS

__all__ = [
    "AUX_MIRROR",
    "OUTPUT_MIRROR",
    "average_strands",
    "averages_strands",
    "reads_both_strands",
    "strand_averaged_outputs",
]


def _mirror(name: str) -> str:
    return name.translate(str.maketrans("+-", "-+"))


#: output channel k of a reverse-complemented window is channel OUTPUT_MIRROR[k] forward
OUTPUT_MIRROR = torch.tensor([CHANNELS.index(_mirror(n)) for n in CHANNELS])
#: the same for the aux head's content classes (:data:`~genoseg.model.heads.AUX_CLASSES`)
AUX_MIRROR = torch.tensor([AUX_CLASSES.index(_mirror(n)) for n in AUX_CLASSES])


def averages_strands(model) -> bool:
    """The checkpoint's prediction setting: ``calibration["strand_average"]`` (default off)."""
    return bool(getattr(model, "calibration", {}).get("strand_average", False))


def reads_both_strands(model) -> bool:
    """The model's own outputs are both strands' mean (``model.strand_average: true`` or
    ``model.rc_equivariant: true``; every member of an ensemble): averaging again changes
    nothing."""
    members = getattr(model, "members", [model])
    return all(m.cfg.strand_average or m.cfg.rc_equivariant for m in members)


def _complement(sequence: Tensor) -> Tensor:
    """(B, N) codes A=0 C=1 G=2 T=3, anything else N -> the complement (N = 4)."""
    acgt = (sequence >= 0) & (sequence < 4)
    return torch.where(acgt, 3 - sequence, torch.full_like(sequence, 4))


def _mirror_index(lengths: Tensor, n: int) -> Tensor:
    """(B, N) int64: column t of row b reads column L_b - 1 - t for t < L_b (the row's
    reverse), itself past it (padding stays in place)."""
    t = torch.arange(n, device=lengths.device).view(1, n)
    L = lengths.view(-1, 1).to(t.dtype)
    return torch.where(t < L, L - 1 - t, t)


def strand_averaged_outputs(
    model,
    sequence: Tensor,
    softmask: Tensor | None = None,
    evidence: Tensor | None = None,
    lengths: Tensor | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Mean of ``model.outputs`` on the window and (mirrored back) on its reverse
    complement, (B, N, N_OUTPUTS) float32, for any model (a GeneModel or an Ensemble):
    what ``genoseg predict --strand-average`` decodes. Arguments as
    :meth:`GeneModel.outputs`. A model (or ensemble member) that reads both strands by
    itself is not averaged a second time: the same outputs, half its encoder work."""
    args = (sequence, softmask, evidence, lengths)
    members = getattr(model, "members", None)
    if members is not None:  # an Ensemble: the mean of its members' outputs, each averaged
        return sum(strand_averaged_outputs(m, *args, dtype=dtype) for m in members) / len(members)
    if reads_both_strands(model):
        return model.outputs(*args, dtype=dtype)
    return average_strands(functools.partial(model.outputs, dtype=dtype), *args)


def average_strands(
    one_pass: Callable[..., Tensor | tuple[Tensor, Tensor]],
    sequence: Tensor,
    softmask: Tensor | None = None,
    evidence: Tensor | None = None,
    lengths: Tensor | None = None,
    *,
    with_aux: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mean of ``one_pass`` (the network's outputs, (B, N, N_OUTPUTS)) on the window and,
    mirrored back, on its reverse complement. ``sequence`` (B, N) codes, ``softmask`` (B, N)
    bool, ``evidence`` (B, 8, N) raw counts, ``lengths`` (B,) (columns past them are
    padding: each row is reversed within its length). ``with_aux``: ``one_pass`` also
    returns aux logits (B, N, 5); the forward pass's are returned, not averaged."""
    aux_kw = {"with_aux": True} if with_aux else {}  # (an Ensemble has no aux head)
    fwd = one_pass(sequence, softmask, evidence, lengths, **aux_kw)
    B, N = sequence.shape
    full = torch.full((B,), N, dtype=torch.int64, device=sequence.device)
    idx = _mirror_index(full if lengths is None else lengths, N)  # each row's reverse
    rc = one_pass(
        _complement(sequence).gather(1, idx),
        softmask.gather(1, idx) if softmask is not None else None,
        evidence[:, torch.as_tensor(RC_CHANNELS)].gather(
            2, idx.unsqueeze(1).expand(-1, evidence.shape[1], -1)
        )
        if evidence is not None
        else None,
        lengths,
    )
    back = rc.gather(1, idx.unsqueeze(-1).expand(-1, -1, rc.shape[-1]))
    aux = None
    if with_aux:
        fwd, aux = fwd
    out = 0.5 * (fwd + back[..., OUTPUT_MIRROR.to(back.device)])
    return (out, aux) if with_aux else out
