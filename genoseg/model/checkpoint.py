"""Checkpoints: a versioned dict of tensors and plain types (``torch.load(weights_only=True)``).

Layout (``format = "genoseg-checkpoint"``, ``format_version`` 1, or 2 for an ensemble):

===================  =====================================================================
``genoseg_version``  version that wrote it
``grammar``          the grammar YAML text (the model's label set and hard rules)
``label_names``      list of label names (index = label)
``model_config``     the ``model:`` section as a plain dict
``config``           the whole resolved training config (plain dict), or ``{}``
``model``            ``state_dict`` of :class:`~genoseg.model.gene_model.GeneModel`
``calibration``      ``{"temperature": float}`` applied to posteriors (1.0 = none)
``train_state``      optional: optimizer, scheduler, RNG states, step, data order, metrics
``ensemble``         only in an ensemble (format version 2, :mod:`genoseg.model.ensemble`):
                     members 2..n as ``{"model_config", "model"}``; member 1 is the
                     top-level ``model_config`` / ``model``
===================  =====================================================================

Files are written through :func:`genoseg.io.atomic.atomic_path` (temporary name + rename),
so an interrupted save never leaves a truncated checkpoint.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from genoseg import __version__
from genoseg.config import config_to_dict
from genoseg.errors import GenosegError
from genoseg.grammar.spec import grammar_from_yaml
from genoseg.model.encoder import EncoderConfig
from genoseg.model.ensemble import Ensemble
from genoseg.model.gene_model import GeneModel, ModelConfig

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SHIPPED_MODELS",
    "default_model_path",
    "load_checkpoint",
    "load_model",
    "model_config_from_dict",
    "resolve_model_path",
    "save_checkpoint",
    "shipped_model_path",
]

FORMAT = "genoseg-checkpoint"
FORMAT_VERSION = 2  # 2: ensembles; single models are still written as version 1


SHIPPED_MODELS = {
    "default": "sequence only; used by `genoseg predict` without --model",
    "evidence": "reads the RNA-seq BAM as well; used with --bam without --model",
    "accurate": "an ensemble of three sequence-only models: more accurate, 1.2-1.7x the time",
}  # docs/accuracy.md says how each was trained and what it scores


def shipped_model_path(name: str) -> Path:
    """genoseg/models/NAME.pt, a model shipped in the package (:data:`SHIPPED_MODELS`)."""
    from importlib import resources

    if name not in SHIPPED_MODELS:
        raise GenosegError(
            f"no shipped model named {name!r} (shipped: {', '.join(SHIPPED_MODELS)})"
        )
    return Path(str(resources.files("genoseg") / "models" / f"{name}.pt"))


def default_model_path(evidence: bool = False) -> Path:
    """The shipped model used without --model: ``default`` (sequence only), or with
    ``evidence`` the ``evidence`` model (trained to read RNA-seq evidence as well)."""
    return shipped_model_path("evidence" if evidence else "default")


def resolve_model_path(spec: str | os.PathLike) -> Path:
    """``--model SPEC``: a checkpoint file, else the name of a shipped model (a file of that
    name wins)."""
    p = Path(spec)
    if p.exists() or str(spec) not in SHIPPED_MODELS:
        return p
    return shipped_model_path(str(spec))


def model_config_from_dict(d: dict) -> ModelConfig:
    d = dict(d)
    enc = EncoderConfig(**d.pop("encoder", {}))
    return ModelConfig(encoder=enc, **d)


def save_checkpoint(
    path: str | os.PathLike,
    model: GeneModel | Ensemble,
    *,
    config: dict | None = None,
    train_state: dict | None = None,
    calibration: dict | None = None,
) -> None:
    """Write ``model`` (+ training state) to ``path`` atomically."""
    from genoseg.io.atomic import atomic_path

    members = list(model.members) if isinstance(model, Ensemble) else [model]

    def weights(m: GeneModel) -> dict:
        return {k: v.detach().cpu() for k, v in m.state_dict().items()}

    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": 2 if len(members) > 1 else 1,
        "genoseg_version": __version__,
        "grammar": model.grammar.yaml_text,
        "label_names": list(model.grammar.names),
        "model_config": config_to_dict(members[0].cfg),
        "config": config or {},
        "model": weights(members[0]),
        "calibration": calibration or {"temperature": 1.0},
    }
    if len(members) > 1:
        ckpt["ensemble"] = [{"model_config": config_to_dict(m.cfg), "model": weights(m)}
                            for m in members[1:]]  # fmt: skip
    if train_state is not None:
        ckpt["train_state"] = train_state
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and check a checkpoint dict; GenosegError naming the file otherwise."""
    p = Path(path)
    if p.is_dir():
        raise GenosegError(f"{p}: is a folder, not a model checkpoint (a .pt file)")
    if not p.is_file():
        raise GenosegError(f"{p}: model checkpoint not found")
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive
        raise GenosegError(f"{p}: not a genoseg checkpoint (not a file written by torch.save)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's weights-only unpickler raises KeyError,
        # IndexError, struct.error, ... on arbitrary bytes: all mean "not a checkpoint"
        plain = str(exc) and not isinstance(exc, LookupError)  # KeyError: 101 says nothing
        msg = str(exc).splitlines()[0] if plain else "unreadable pickle data"
        raise GenosegError(f"{p}: not a genoseg checkpoint ({msg[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise GenosegError(f"{p}: not a genoseg checkpoint")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GenosegError(
            f"{p}: checkpoint format version {version} is newer than this genoseg reads "
            f"({FORMAT_VERSION}); upgrade genoseg"
        )
    for key in ("grammar", "model_config", "model"):
        if key not in ckpt:
            raise GenosegError(f"{p}: checkpoint lacks '{key}'")
    return ckpt


def load_model(
    path: str | os.PathLike | None = None, *, device: str = "cpu"
) -> GeneModel | Ensemble:
    """The model of a checkpoint (default: the shipped model), in eval mode."""
    p = Path(path) if path is not None else default_model_path()
    ckpt = load_checkpoint(p)
    return model_from_checkpoint(ckpt, source=str(p)).to(device).eval()


def model_from_checkpoint(ckpt: dict, source: str = "<checkpoint>") -> GeneModel | Ensemble:
    """A :class:`GeneModel` (or an :class:`Ensemble` of them) from a checked checkpoint."""
    grammar = grammar_from_yaml(ckpt["grammar"], source=f"{source} (grammar)")
    parts = [ckpt] + list(ckpt.get("ensemble") or [])
    try:
        models = []
        for part in parts:
            model = GeneModel(grammar, model_config_from_dict(part["model_config"]))
            model.load_state_dict(part["model"])
            models.append(model)
        model = Ensemble(models) if len(models) > 1 else models[0]
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise GenosegError(f"{source}: checkpoint does not match this genoseg's model: "
                           f"{str(exc).splitlines()[0][:160]}") from None  # fmt: skip
    model.calibration = dict(ckpt.get("calibration") or {"temperature": 1.0})
    return model
