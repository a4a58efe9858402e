"""Reverse-complement equivariance by weight tying (``model.rc_equivariant: true``).

A network ``f`` from a window to per-position outputs is *RC-equivariant* when

    f(rc(x))[t] = P f(x)[N - 1 - t]        P: the output mirror (swap + and - channels)

for every window x of N bases: it scores both strands alike by construction, so it *is*
its own strand average (:mod:`genoseg.model.strands`) and predict needs one encoder pass
per window instead of two. The usual way (reverse-complement parameter sharing, Shrikumar
et al. 2017) is a layer-by-layer one. Every hidden layer gets an involution of its
channels (here channel c <-> W - 1 - c) and every layer's weights are tied so that the
layer commutes with "reverse positions, permute channels":

    conv  (O, I, K):  w[o, i, k] = w[P_out o, P_in i, K - 1 - k],   b[o] = b[P_out o]
    LayerNorm (W,):   g[c] = g[P c], beta[c] = beta[P c]   (its mean and variance are
                      invariant under any permutation of the channels)

GELU, the residual adds and zero padding (symmetric: ``pad = d (K - 1) / 2`` on both
sides; columns past a row's length are zeros, exactly as before its start) commute with it
already. The input involution is the complement (A<->T, C<->G, N and the soft-mask bit
fixed; the evidence channels' + and - blocks swapped, :data:`genoseg.data.bam.RC_CHANNELS`);
the output head's is :data:`genoseg.model.strands.OUTPUT_MIRROR`, the aux head's swaps its
+ and - classes.

The tie is a projection applied in the forward pass, ``w_tied = (w + T w) / 2`` with
``T w[o, i, k] = w[P_out o, P_in i, K - 1 - k]`` (T is an involution, so ``T w_tied =
w_tied``): the stored parameters stay free, the function is equivariant whatever they are
(an initialisation, an EMA average, a fine-tuned checkpoint), and the gradient flows through
the projection. Cost: a few hundred kilobytes of arithmetic per call, nothing against the
convolutions. Tested against the explicit strand average (``tests/test_model.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genoseg.data.bam import RC_CHANNELS
from genoseg.model.strands import AUX_MIRROR, OUTPUT_MIRROR

__all__ = ["INPUT_COMPLEMENT", "tied_parameters"]

#: input feature k of a reverse-complemented window is feature INPUT_COMPLEMENT[k] forward
#: (:func:`genoseg.model.encoder.input_features`: A C G T N soft-mask, then 8 evidence)
INPUT_COMPLEMENT = torch.tensor([3, 2, 1, 0, 4, 5, *(6 + RC_CHANNELS).tolist()])


def input_complement(evidence: bool, markov: bool) -> Tensor:
    """The stem's input involution: :data:`INPUT_COMPLEMENT`'s first 6 features (14 with
    the evidence channels), then, for the Markov prior's 8 input channels
    (``model.markov_use: inputs``), its + and - blocks of 4 swapped."""
    base = 14 if evidence else 6
    perm = INPUT_COMPLEMENT[:base].tolist()
    if markov:
        perm += [base + 4 + j for j in range(4)] + [base + j for j in range(4)]
    return torch.tensor(perm)


def _reversal(n: int) -> Tensor:
    return torch.arange(n - 1, -1, -1)


def _tie(w: Tensor, p_out: Tensor, p_in: Tensor | None) -> Tensor:
    """(w + T w) / 2 for a weight (O, I, K) (``p_in`` given) or a vector (O,) (``p_in``
    None): the projection onto the tensors with T w = w."""
    t = w[p_out.to(w.device)]
    if p_in is not None:
        t = t[:, p_in.to(w.device)].flip(-1)
    return 0.5 * (w + t)


def tied_parameters(model: nn.Module) -> dict[str, dict[str, Tensor]]:
    """The parameters of a :class:`~genoseg.model.gene_model.GeneModel`'s ``encoder``,
    ``head`` and ``aux_head``, tied for RC-equivariance: ``{submodule: {name: tensor}}``,
    ready for :func:`torch.func.functional_call` on each submodule. Raises on a layer it
    does not know how to tie, so that a new layer cannot silently break the equivariance."""
    cfg = model.cfg
    p_in = input_complement(cfg.encoder.evidence, cfg.markov_inputs)
    if len(p_in) != model.encoder.stem.in_channels:
        raise ValueError("stem: no reverse-complement map for its input features")
    return {
        "encoder": _tied(model.encoder, p_in),
        "head": _tied(model.head, p_in, p_out=OUTPUT_MIRROR),
        "aux_head": _tied(model.aux_head, p_in, p_out=AUX_MIRROR),
    }


def _tied(module: nn.Module, p_in: Tensor, p_out: Tensor | None = None) -> dict[str, Tensor]:
    """``module``'s parameters tied; ``p_out``: the output involution of a lone head
    convolution (hidden layers: channel reversal; the stem reads the input features)."""
    out: dict[str, Tensor] = {}
    for mname, m in module.named_modules():
        own = dict(m.named_parameters(recurse=False))
        if not own:
            continue
        prefix = f"{mname}." if mname else ""
        if isinstance(m, nn.Conv1d):
            k, d, pad = m.kernel_size[0], m.dilation[0], m.padding[0]
            if k % 2 == 0 or 2 * pad != d * (k - 1):
                raise ValueError(f"{prefix}weight: not a centred convolution")
            po = p_out if p_out is not None else _reversal(m.out_channels)
            pi = p_in if mname == "stem" else _reversal(m.in_channels)
            out[prefix + "weight"] = _tie(m.weight, po, pi)
            if m.bias is not None:
                out[prefix + "bias"] = _tie(m.bias, po, None)
        elif isinstance(m, nn.LayerNorm):
            p = _reversal(m.normalized_shape[0])
            for name, prm in own.items():
                out[prefix + name] = _tie(prm, p, None)
        else:
            raise ValueError(f"{prefix}: no RC-equivariant tie for {type(m).__name__}")
    return out
