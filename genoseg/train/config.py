"""The training config schema (``genoseg train --config train.yaml [--set key=value ...]``).

Every section is a dataclass (types and defaults are the schema; unknown keys, wrong types
and missing files are one-line errors naming the YAML file and the dotted key). Relative
paths in the YAML are relative to the YAML file; paths given with ``--set`` are relative to
the current directory. See configs/train.yaml for a documented example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genoseg.config import load_config
from genoseg.errors import GenosegError
from genoseg.model.gene_model import ModelConfig

__all__ = ["DataConfig", "DataSource", "OptimConfig", "TrainConfig", "load_train_config",
           "parse_overrides"]  # fmt: skip


@dataclass
class DataSource:
    """One ``genoseg prepare`` HDF5 file.

    ``weight``: relative sampling weight of the file (a batch element comes from file f
    with probability weight_f / sum of weights, then a uniform window and strand).
    ``flank_mask``: for loci sets whose flanks may hold unannotated genes: intergenic
    positions farther than this many bases from every annotated gene base of the window
    are left unlabelled (marginalised by ``partial_nll``, never trained as intergenic).
    ``null`` = trust every intergenic label.
    """

    path: Path
    weight: float = 1.0
    flank_mask: int | None = None

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"data source {self.path}: weight must be > 0, got {self.weight}")
        if self.flank_mask is not None and self.flank_mask < 0:
            raise ValueError(f"data source {self.path}: flank_mask must be >= 0")


@dataclass
class DataConfig:
    train: list[DataSource] = field(default_factory=list)
    valid: list[DataSource] = field(default_factory=list)
    strands: list[str] = field(default_factory=lambda: ["+", "-"])
    valid_max_windows: int = 0  # 0 = every validation window

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("data.train needs at least one prepared HDF5 file")
        if not self.strands or set(self.strands) - {"+", "-"}:
            raise ValueError(
                f"data.strands must be a non-empty subset of [+, -], got {self.strands}"
            )


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05  # cosine decay to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0  # 0 = off
    structure_lr_scale: float = 1.0  # lr multiplier of transitions / length tables

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError("optim.warmup_steps must be >= 0")


@dataclass
class DistillConfig:
    """Distillation (docs/training.md): the loss becomes (1 - weight) x the gold NLL + weight
    x the cross-entropy from the teacher's path distribution to the student's, exact for
    the semi-CRF (the teacher's marginals, dotted with the student's engine inputs)."""

    teacher: Path | None = None  # checkpoint: a model or an ensemble of the same grammar
    weight: float = 0.0  # 0 = off

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"distill.weight must be in [0, 1], got {self.weight}")
        if self.weight > 0 and self.teacher is None:
            raise ValueError("distill.weight > 0 needs distill.teacher (a checkpoint)")


@dataclass
class MarginConfig:
    """Softmax-margin training (Gimpel & Smith 2010; docs/training.md): log Z is taken over
    scores raised by a cost that each path pays for disagreeing with the gold one, so the
    gold path must win by a margin that grows with its errors. The cost is exact in the
    engine's terms (it adds to seg_start / seg_end / emissions) and only counts labelled
    positions. 0 = off (the plain NLL)."""

    boundary: float = 0.0  # nats per segment start or end in one path, not the other (gold)
    position: float = 0.0  # nats per base of the wrong content class (strand-aware)

    def __post_init__(self) -> None:
        if self.boundary < 0 or self.position < 0:
            raise ValueError("margin.boundary and margin.position must be >= 0")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1000
    batch_size: int = 2
    max_window: int = 0  # crop training cores to at most this many bases (0 = whole core)
    aux_weight: float = 0.0  # weight of the per-position cross-entropy of content classes
    smoothness: float = 1.0  # weight of the length-table smoothness penalty
    margin: MarginConfig = field(default_factory=MarginConfig)
    mutate: float = 0.0  # augmentation: rate of base substitutions in intergenic and intron bases
    eval_every: int = 100
    checkpoint_every: int = 50
    log_every: int = 10
    out_dir: Path = Path("runs/train")
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0 = torch's default)
    ema: float = 0.0  # decay of the weights' exponential moving average (0 = off)
    init_from: Path | None = None  # start from this checkpoint's weights (same model config)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"'ema' must be in [0, 1), got {self.ema}")
        for key in ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"'{key}' must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.mutate < 1.0:
            raise ValueError(f"'mutate' must be in [0, 1), got {self.mutate}")
        if self.max_window < 0 or self.threads < 0:
            raise ValueError("'max_window' and 'threads' must be >= 0")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"'device' must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "data.strands=[+]"]`` -> nested dict; values are YAML scalars or
    flow collections. Raises GenosegError naming the bad item."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise GenosegError(f"--set {item!r}: expected key=value (e.g. optim.lr=1e-3)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise GenosegError(f"--set {item!r}: value is not valid YAML") from None
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value) if any(ch.isdigit() for ch in value) else value
            except ValueError:
                pass
        d = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = d.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise GenosegError(f"--set {item!r}: {p} is set twice")
            d = nxt
        d[parts[-1]] = value
    return out


def load_train_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Validated config from ``path`` plus ``--set`` overrides; checks that data files exist."""
    cfg = load_config(TrainConfig, path, parse_overrides(overrides))
    src = str(path) if path is not None else "command line"
    for kind, sources in (("train", cfg.data.train), ("valid", cfg.data.valid)):
        for i, s in enumerate(sources):
            if not Path(s.path).is_file():
                raise GenosegError(f"{src}: data.{kind}[{i}].path: file not found: {s.path}")
    if cfg.init_from is not None and not Path(cfg.init_from).is_file():
        what = "is a folder" if Path(cfg.init_from).is_dir() else "file not found"
        raise GenosegError(f"{src}: init_from: {what}: {cfg.init_from}")
    # checked now, not at the first checkpoint after minutes (or hours) of training
    d = Path(cfg.out_dir)
    while not d.exists() and d != d.parent:
        d = d.parent
    if not d.is_dir():
        raise GenosegError(f"{src}: out_dir {cfg.out_dir}: {d} exists and is not a folder")
    return cfg
