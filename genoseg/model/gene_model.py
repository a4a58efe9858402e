"""The gene model: encoder + output heads + learned structure -> semi-CRF inputs.

Data flow for one stretch of a contig (0-based, half-open, forward strand)::

    codes/softmask/evidence of [a - left, b + right)   (left/right = context, >= halo
        |                                               where the contig allows)
    input_features -> Encoder -> head               (B, N, N_OUTPUTS) per position
        | crop to [a, b)
    map_scores (+ frame carry across chunks)        emissions, seg_start/seg_end additions
        + compile_window (grammar: motif rules,     seg_start/seg_end (-inf = forbidden),
          max_dur = open reading frames)            max_dur
        + Structure.tables()                        transitions, durations, init, final, tail
    -> genoseg.crf (log_partition / nll / streams / viterbi)

Training and prediction call the same :meth:`GeneModel.crf_inputs`, so a checkpoint decodes
exactly as it was trained.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from genoseg.grammar.compile import compile_window_np
from genoseg.grammar.spec import Grammar
from genoseg.model.encoder import Encoder, EncoderConfig, input_features
from genoseg.model.equivariance import tied_parameters
from genoseg.model.heads import AUX_CLASSES, N_OUTPUTS, LabelMap, map_scores
from genoseg.model.markov import MarkovPrior
from genoseg.model.strands import average_strands
from genoseg.model.structure import Structure

__all__ = ["CENTERINGS", "GeneModel", "ModelConfig"]

CENTERINGS = ("none", "position", "label_mean")


@dataclass
class ModelConfig:
    """``model:`` section of a training config."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    structure: str = "learned"  # learned | fixed
    length_knots: int = 12
    centering: str = "position"  # none | position | label_mean
    strand_average: bool = False  # outputs = mean of both strands' passes (genoseg.model.strands)
    rc_equivariant: bool = False  # weights tied so one pass scores both strands alike
    markov_order: int | None = None  # k: k-th order Markov content log-odds (None = off)
    markov_use: str = "outputs"  # outputs: added to the outputs | inputs: encoder channels

    def __post_init__(self) -> None:
        if self.structure not in ("learned", "fixed"):
            raise ValueError(f"model.structure must be learned or fixed, got {self.structure!r}")
        if self.centering not in CENTERINGS:
            raise ValueError(f"model.centering must be one of {CENTERINGS}, got {self.centering!r}")
        if self.length_knots < 2:
            raise ValueError(f"model.length_knots must be >= 2, got {self.length_knots}")
        if self.markov_order is not None and not 0 <= self.markov_order <= 8:
            raise ValueError(f"model.markov_order must be null or 0..8, got {self.markov_order}")
        if self.markov_use not in ("outputs", "inputs"):
            raise ValueError(f"model.markov_use must be outputs or inputs, got {self.markov_use!r}")
        if self.strand_average and self.rc_equivariant:
            raise ValueError(
                "model.strand_average and model.rc_equivariant: choose one (an RC-equivariant "
                "model is its own strand average already)"
            )

    @property
    def markov_inputs(self) -> bool:
        """The Markov log-odds are encoder input channels (else added to the outputs)."""
        return self.markov_order is not None and self.markov_use == "inputs"


class GeneModel(nn.Module):
    """CNN encoder + heads + structure for one grammar."""

    def __init__(self, grammar: Grammar, cfg: ModelConfig):
        super().__init__()
        self.grammar = grammar
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder, extra_inputs=8 if cfg.markov_inputs else 0)
        self.head = nn.Conv1d(cfg.encoder.width, N_OUTPUTS, 1)
        self.aux_head = nn.Conv1d(cfg.encoder.width, len(AUX_CLASSES), 1)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.structure = Structure(grammar, mode=cfg.structure, n_knots=cfg.length_knots)
        self.label_map = LabelMap.from_grammar(grammar)
        self.markov = MarkovPrior(cfg.markov_order) if cfg.markov_order is not None else None

    @property
    def halo(self) -> int:
        """Context (bases) needed on each side of a position for window-invariant scores."""
        return max(self.encoder.halo, self.cfg.markov_order or 0)

    @property
    def uses_evidence(self) -> bool:
        return self.cfg.encoder.evidence

    def outputs(
        self,
        sequence: Tensor,
        softmask: Tensor | None = None,
        evidence: Tensor | None = None,
        lengths: Tensor | None = None,
        *,
        with_aux: bool = False,
        dtype: torch.dtype | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Per-position outputs (B, N, N_OUTPUTS) float32 (and aux logits (B, N, 5)).

        ``sequence`` (B, N) codes; ``softmask`` (B, N) bool; ``evidence`` (B, 8, N) raw
        counts; ``lengths`` (B,): columns past them are padding (zero features).
        ``dtype``: the network's arithmetic. None: bf16 autocast on CUDA, float32 on the
        CPU; ``torch.float32``: float32 everywhere; ``torch.bfloat16``: bf16 on CUDA
        (autocast) and, for inference only, on the CPU (bf16 copies of the layers, oneDNN's
        fused calls: about 1.7x faster where the CPU has bf16 instructions; docs/predict.md).
        Outputs are float32 in every case. With
        ``cfg.strand_average`` the mean of this window's pass and its reverse complement's,
        mirrored back (:func:`genoseg.model.strands.average_strands`; the aux logits are
        the forward pass's). With ``cfg.rc_equivariant`` one pass of weights tied so that
        it equals that average (:mod:`genoseg.model.equivariance`). With
        ``cfg.markov_order`` the Markov content log-odds are added
        (:mod:`genoseg.model.markov`; the same on both strands, so after any averaging).
        """
        if self.cfg.strand_average:
            res = average_strands(
                functools.partial(self.one_pass, dtype=dtype), sequence, softmask, evidence,
                lengths, with_aux=with_aux,
            )  # fmt: skip
        else:
            res = self.one_pass(
                sequence, softmask, evidence, lengths, with_aux=with_aux, dtype=dtype
            )
        if self.markov is None or self.cfg.markov_inputs:
            return res
        prior = self.markov(sequence, lengths)
        return (res[0] + prior, res[1]) if with_aux else res + prior

    def one_pass(
        self,
        sequence: Tensor,
        softmask: Tensor | None = None,
        evidence: Tensor | None = None,
        lengths: Tensor | None = None,
        *,
        with_aux: bool = False,
        dtype: torch.dtype | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The network's outputs reading the window in its own direction (see
        :meth:`outputs`, the same arguments)."""
        x = input_features(sequence, softmask, evidence, lengths, use_evidence=self.uses_evidence)
        if self.cfg.markov_inputs:
            x = torch.cat([x, self.markov.features(sequence, lengths)], dim=1)
        cpu_bf16 = dtype == torch.bfloat16 and not x.is_cuda
        if cpu_bf16 and torch.is_grad_enabled():
            raise ValueError("bfloat16 on the CPU is for inference (torch.no_grad()) only")
        mask = None
        if lengths is not None:
            N = sequence.shape[1]
            mask = (torch.arange(N, device=x.device).view(1, 1, N) < lengths.view(-1, 1, 1)).to(
                x.dtype
            )
        tied = None
        if self.cfg.rc_equivariant and torch.is_grad_enabled():
            tied = tied_parameters(self)  # training: the gradient flows through the tie
        modules = None
        if tied is None and (self.cfg.rc_equivariant or cpu_bf16):
            modules = self._inference_modules(torch.bfloat16 if cpu_bf16 else torch.float32)
        if cpu_bf16:
            x = x.to(torch.bfloat16)
            mask = None if mask is None else mask.to(torch.bfloat16)

        def run(name: str, *args: Tensor) -> Tensor:  # with tied weights: the same layers
            if modules is not None:  # inference: copies holding the tied weights
                return modules[name](*args)
            module = getattr(self, name)
            return module(*args) if tied is None else functional_call(module, tied[name], args)

        with torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=x.is_cuda and dtype != torch.float32
        ):
            emb = run("encoder", x, mask)
            out = run("head", emb)
            aux = run("aux_head", emb) if with_aux else None
        out = out.float().transpose(1, 2)
        if with_aux:
            return out, aux.float().transpose(1, 2)
        return out

    def _inference_modules(self, dtype: torch.dtype) -> dict[str, nn.Module]:
        """Inference copies of ``encoder``, ``head`` and ``aux_head`` in ``dtype``, holding
        the tied weights of an RC-equivariant model, rebuilt when a parameter changes (its
        storage or version). predict calls the encoder from several threads at once, so
        inference must not swap the shared modules' parameters as
        :func:`torch.func.functional_call` does (a race: tested)."""
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        caches = self.__dict__.setdefault("_inference_cache", {})  # not registered submodules
        cached = caches.get(dtype)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                tied = tied_parameters(self) if self.cfg.rc_equivariant else None
                mods = {}
                for name in ("encoder", "head", "aux_head"):
                    mods[name] = copy.deepcopy(getattr(self, name)).requires_grad_(False)
                    if tied is not None:
                        mods[name].load_state_dict(tied[name])
                    mods[name].to(dtype)
            cached = (key, mods)
            caches[dtype] = cached
        for name, m in cached[1].items():
            m.train(getattr(self, name).training)
        return cached[1]

    def crf_inputs(
        self,
        out: Tensor,
        structural: dict[str, Tensor],
        *,
        offset: int = 0,
        carry: Tensor | None = None,
        tables: dict[str, Tensor] | None = None,
        temperature: float = 1.0,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Engine inputs of rows whose network outputs are ``out`` (B, T, N_OUTPUTS).

        ``structural``: ``seg_start``, ``seg_end`` (B, T, C) and ``max_dur`` (B, T, C) from
        :func:`compile_rows` (the grammar's hard rules). ``offset``/``carry``: the
        absolute position of row 0 and the frame prefix sums carried from the previous
        chunk (:func:`genoseg.model.heads.frame_terms`). ``tables``: a precomputed
        ``self.structure.tables()`` to share between calls. ``temperature``: every score
        is divided by it (posterior calibration: the distribution becomes p^(1/T)/Z; the
        Viterbi path does not change). Returns (kwargs for genoseg.crf:
        emissions, transitions, durations, init, final, tail, seg_start, seg_end, max_dur;
        the carry after the last row).
        """
        C = self.grammar.num_labels
        h, ss_add, se_add, carry = map_scores(
            out, self.label_map, C, centering=self.cfg.centering, offset=offset, carry=carry
        )
        ss = structural["seg_start"].to(torch.float64) + ss_add
        se = structural["seg_end"].to(torch.float64) + se_add
        kw = dict(tables if tables is not None else self.structure.tables())
        kw.update(emissions=h, seg_start=ss, seg_end=se)
        if temperature != 1.0:
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
            kw = {k: v / temperature for k, v in kw.items()}
        kw["max_dur"] = structural["max_dur"]
        return kw, carry


def compile_rows(
    grammar: Grammar,
    codes: np.ndarray,
    left: int,
    right: int,
    valid: np.ndarray | None = None,
    *,
    open_start: bool = False,
    open_end: bool = False,
) -> dict[str, np.ndarray]:
    """Grammar rules for ``codes[left : len(codes) - right]`` (the context on either side
    is read by the motif rules): ``seg_start``, ``seg_end`` (T, C) float32, ``max_dur``
    (T, C) int32. ``open_start`` / ``open_end``: the rows do not start / end at a contig
    end or an intergenic cut (genoseg.grammar.compile_window)."""
    arr = compile_window_np(
        grammar, codes, valid, left_context=left, right_context=right,
        open_start=open_start, open_end=open_end,
    )  # fmt: skip
    return {k: arr[k] for k in ("seg_start", "seg_end", "max_dur")}
