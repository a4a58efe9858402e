"""Ensembles: several trained :class:`GeneModel` s of one grammar that decode as one model.

The ensemble's engine inputs are the mean of its members' engine inputs: network outputs
(B, N, N_OUTPUTS) are averaged per position, and so are the structure tables (transitions,
length tables, tails). :func:`genoseg.model.heads.map_scores` is linear in the network
outputs, so this equals averaging every member's emissions and boundary scores: the
ensemble scores a segmentation by the mean of its members' scores, i.e. it decodes the
normalised geometric mean of the members' distributions (a product of experts), exactly,
with the same engine. The receptive field is the widest member's, so window invariance
(seam-free decoding) holds as for one model.

Members must share the grammar, the centering rule and whether they read RNA-seq evidence.
Checkpoints store members 2..n under ``ensemble`` (:mod:`genoseg.model.checkpoint`).
Build one with ``python -m genoseg.model.ensemble OUT.pt A.pt B.pt [...]``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import Tensor, nn

from genoseg.errors import GenosegError
from genoseg.model.gene_model import GeneModel

__all__ = ["Ensemble", "MeanStructure"]


class MeanStructure(nn.Module):
    """The members' structure tables, averaged entry by entry (-inf stays -inf: the
    grammar's forbidden entries are the same in every member)."""

    def __init__(self, members: list[GeneModel]):
        super().__init__()
        self._members = members  # plain list: the parameters belong to Ensemble.members

    def tables(self) -> dict[str, Tensor]:
        ts = [m.structure.tables() for m in self._members]
        return {k: sum(t[k] for t in ts) / len(ts) for k in ts[0]}


class Ensemble(nn.Module):
    """Members decoding as one model (module doc); presents :class:`GeneModel`'s
    inference interface: ``grammar``, ``cfg``, ``label_map``, ``halo``, ``uses_evidence``,
    ``outputs``, ``structure.tables()``, ``crf_inputs`` and ``calibration``."""

    crf_inputs = GeneModel.crf_inputs  # uses grammar, label_map, cfg and structure only

    def __init__(self, members: list[GeneModel]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        first = members[0]
        for i, m in enumerate(members[1:], start=2):
            if m.grammar.yaml_text != first.grammar.yaml_text:
                raise ValueError(f"member {i} has another grammar than member 1")
            if m.cfg.centering != first.cfg.centering:
                raise ValueError(f"member {i} centres its scores differently from member 1")
            if m.uses_evidence != first.uses_evidence:
                raise ValueError(f"member {i} and member 1 differ in reading RNA-seq evidence")
        self.members = nn.ModuleList(members)
        self.grammar = first.grammar
        self.cfg = first.cfg
        self.label_map = first.label_map
        self.structure = MeanStructure(members)
        self.calibration = {"temperature": 1.0}

    @property
    def halo(self) -> int:
        return max(m.halo for m in self.members)

    @property
    def uses_evidence(self) -> bool:
        return self.members[0].uses_evidence

    def outputs(
        self,
        sequence: Tensor,
        softmask: Tensor | None = None,
        evidence: Tensor | None = None,
        lengths: Tensor | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Mean of the members' :meth:`GeneModel.outputs` (B, N, N_OUTPUTS) float32
        (``dtype``: the members' arithmetic, as there)."""
        args = (sequence, softmask, evidence, lengths)
        out = self.members[0].outputs(*args, dtype=dtype)
        for m in self.members[1:]:
            out = out + m.outputs(*args, dtype=dtype)
        return out / len(self.members)


def main(argv: list[str] | None = None) -> None:
    """``python -m genoseg.model.ensemble OUT.pt A.pt B.pt [...]``: one checkpoint of the
    members' weights (their calibration is dropped: fit the ensemble's own temperature
    with ``python -m genoseg.train.calibrate OUT.pt ...``)."""
    from genoseg.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    ap = argparse.ArgumentParser(description="Combine checkpoints into one ensemble model.")
    ap.add_argument("output")
    ap.add_argument("members", nargs="+")
    a = ap.parse_args(argv)
    try:
        if a.output in a.members:
            raise GenosegError(f"{a.output}: output is also a member: refusing to overwrite it")
        ckpts = [load_checkpoint(p) for p in a.members]
        models = [model_from_checkpoint(c, p) for c, p in zip(ckpts, a.members)]
        if any(isinstance(m, Ensemble) for m in models):
            raise GenosegError("members must be single models, not ensembles")
        try:
            ens = Ensemble(models)
        except ValueError as exc:
            raise GenosegError(f"{' '.join(a.members)}: {exc}") from None
        config = {"ensemble_of": [str(p) for p in a.members],
                  "member_configs": [c.get("config") or {} for c in ckpts]}  # fmt: skip
        with torch.no_grad():
            save_checkpoint(a.output, ens, config=config)
    except GenosegError as exc:
        sys.exit(f"genoseg ensemble: {exc}")
    print(f"wrote {a.output} ({len(models)} members)", file=sys.stderr)


if __name__ == "__main__":  # run as the imported module, so that its Ensemble class is the
    from genoseg.model.ensemble import main as _main  # one genoseg.model.checkpoint knows

    _main()
