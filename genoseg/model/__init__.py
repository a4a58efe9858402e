"""The gene model shared by ``genoseg train`` and ``genoseg predict``: encoder
(:mod:`~genoseg.model.encoder`), output heads mapped onto the grammar's labels
(:mod:`~genoseg.model.heads`), learned structure (:mod:`~genoseg.model.structure`),
the full model (:mod:`~genoseg.model.gene_model`) and checkpoints
(:mod:`~genoseg.model.checkpoint`)."""

from genoseg.model.encoder import Encoder, EncoderConfig, input_features
from genoseg.model.gene_model import CENTERINGS, GeneModel, ModelConfig, compile_rows
from genoseg.model.heads import CHANNELS, N_OUTPUTS, LabelMap, frame_terms, map_scores

__all__ = [
    "CENTERINGS",
    "CHANNELS",
    "N_OUTPUTS",
    "Encoder",
    "EncoderConfig",
    "GeneModel",
    "LabelMap",
    "ModelConfig",
    "compile_rows",
    "frame_terms",
    "input_features",
    "map_scores",
]
