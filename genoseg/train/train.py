"""``genoseg train``: the training loop, top to bottom in one file.

    genoseg train --config configs/train.yaml [--set optim.lr=1e-3 ...] [--resume]
    torchrun --nproc-per-node 2 -m genoseg.cli train --config ...        # DDP, same command

What happens, in order:

1. config: YAML + ``--set key=value`` overrides, validated against the schema
   (:mod:`genoseg.train.config`); the resolved config goes into every checkpoint.
2. distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) a process group is made (``nccl`` on
   CUDA, ``gloo`` on CPU) and the loss module is wrapped in DistributedDataParallel; each
   rank draws its own windows; rank 0 alone logs, validates and writes checkpoints.
3. data: every prepared HDF5 file is a :class:`~genoseg.data.dataset.WindowDataset` (both
   strands by default); batch element k of step s on rank r is drawn from a generator
   seeded by (seed, s, r, k): the data order is a function of the step, so a resumed run
   sees exactly the windows the uninterrupted run would have seen.
4. loss per window: the encoder reads the whole row (core + halo), the core's outputs become
   engine inputs (:meth:`GeneModel.crf_inputs`) and the loss is the exact semi-CRF NLL of
   the gold segmentation -- ``partial_nll`` where the file's mask leaves positions unlabelled
   (masked genes, flanks), marginalising over them -- in nats per kb of core, plus the
   optional auxiliary cross-entropy and the length-table smoothness penalty. With
   ``distill`` a teacher (a checkpoint, e.g. an ensemble) reads the same rows and the NLL
   is mixed with the exact cross-entropy from the teacher's path distribution
   (``crf.score_marginals``, ``crf.expected_score``); ``init_from`` starts from a
   checkpoint's weights. ``margin`` makes the NLL a softmax-margin loss (:func:`add_margin`);
   ``mutate`` substitutes bases in intergenic and intron stretches of the drawn windows.
5. optimizer AdamW, linear warmup then cosine decay; gradient clipping. With ``ema`` > 0 an
   exponential moving average of the weights (decay ``min(ema, (1 + t) / (10 + t))`` after
   step t) is what validation scores and what ``best.pt`` holds; ``last.pt`` keeps the raw
   weights and the average in its training state.
6. every ``eval_every`` steps (and at the end): Viterbi on the validation windows, exon and
   gene F1 against the gold segments plus the NLL; a table on stderr, ``metrics.csv`` and
   TensorBoard events (when tensorboard is installed) in ``out_dir``.
7. checkpoints: ``out_dir/last.pt`` every ``checkpoint_every`` steps and at the end,
   ``out_dir/best.pt`` at the best validation exon F1; written atomically.
8. SIGTERM / SIGUSR1 (batch schedulers): finish the current step, write ``last.pt``, exit
   with status :data:`EXIT_REQUEUE` (75). ``--resume`` continues from ``last.pt`` bit for
   bit on CPU (model, optimizer, scheduler, RNG, data order).
"""

from __future__ import annotations

import csv
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from genoseg import crf
from genoseg.config import config_to_dict
from genoseg.data.dataset import WindowDataset
from genoseg.data.labels import IGNORE, gene_models_from_segments, segments_from_labels
from genoseg.devices import resolve_device
from genoseg.errors import GenosegError
from genoseg.grammar.spec import Grammar, grammar_from_yaml
from genoseg.io.atomic import atomic_output
from genoseg.model.checkpoint import (
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    save_checkpoint,
)
from genoseg.model.gene_model import GeneModel, compile_rows
from genoseg.model.markov import CLASSES as MARKOV_CLASSES
from genoseg.model.markov import markov_counts
from genoseg.model.strands import averages_strands, strand_averaged_outputs
from genoseg.train.config import DataSource, MarginConfig, TrainConfig

__all__ = ["EXIT_REQUEUE", "Trainer", "train"]

EXIT_REQUEUE = 75  # "interrupted; last.pt written; run again with --resume" (EX_TEMPFAIL)


def log(msg: str) -> None:
    print(f"genoseg train: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


@dataclass
class Window:
    """One training window, ready for the loss (all numpy; core coordinates are offsets
    into the row, 0-based half-open)."""

    sequence: np.ndarray  # (n,) int64 codes
    softmask: np.ndarray  # (n,) bool
    evidence: np.ndarray | None  # (8, n) float32
    labels: np.ndarray  # (n,) int64 label, IGNORE where unknown
    core: tuple[int, int]


def flank_unlabel(labels: np.ndarray, ig: int, distance: int) -> np.ndarray:
    """Copy of ``labels`` with intergenic positions farther than ``distance`` from every
    gene position (label not intergenic and not IGNORE) set to IGNORE."""
    n = len(labels)
    gene = (labels != ig) & (labels != IGNORE)
    idx = np.arange(n)
    big = 1 << 40
    last = np.maximum.accumulate(np.where(gene, idx, -big))
    nxt = np.minimum.accumulate(np.where(gene, idx, big)[::-1])[::-1]
    dist = np.minimum(idx - last, nxt - idx)
    out = labels.copy()
    out[(labels == ig) & (dist > distance)] = IGNORE
    return out


class Sources:
    """The training (or validation) files and the per-step window draw."""

    def __init__(self, sources: list[DataSource], strands: tuple[str, ...], grammar: Grammar):
        self.sources = sources
        self.sets = [WindowDataset(s.path, strands=strands) for s in sources]
        for s, ds in zip(sources, self.sets):
            if ds.label_names != grammar.names:
                raise GenosegError(f"{s.path}: prepared with another grammar than the model's")
        w = np.array([s.weight for s in sources], dtype=np.float64)
        self.p = w / w.sum()
        self.ig = grammar.intergenic

    def window(self, f: int, i: int) -> Window:
        item = self.sets[f][i]
        labels = item["labels"].numpy().copy()
        labels[~item["mask"].numpy()] = IGNORE
        fm = self.sources[f].flank_mask
        if fm is not None:
            labels = flank_unlabel(labels, self.ig, fm)
        ev = item.get("evidence")
        return Window(
            item["sequence"].numpy(), item["softmask"].numpy(),
            ev.numpy() if ev is not None else None, labels, tuple(int(x) for x in item["core"]),
        )  # fmt: skip

    def draw(self, seed: int, step: int, rank: int, k: int) -> tuple[int, int]:
        """(file, item) of batch element k at ``step`` on ``rank``: a pure function of its
        arguments (bit-for-bit resume)."""
        rng = np.random.default_rng([seed, step, rank, k])
        f = int(rng.choice(len(self.sets), p=self.p))
        return f, int(rng.integers(len(self.sets[f])))

    def all_items(self) -> list[tuple[int, int]]:
        return [(f, i) for f, ds in enumerate(self.sets) for i in range(len(ds))]


def crop(w: Window, max_core: int, rng: np.random.Generator, halo: int) -> Window:
    """A random sub-core of at most ``max_core`` bases (cut at intergenic or unlabelled
    positions so init/final = intergenic still hold), with ``halo`` context kept."""
    cs, ce = w.core
    if max_core <= 0 or ce - cs <= max_core:
        return w
    lab = w.labels
    ok = (lab == 0) | (lab == IGNORE)  # label 0 is intergenic in every genoseg grammar
    # a cut point p (start or end) is fine where both neighbours are intergenic/unknown
    cut = np.zeros(len(lab) + 1, dtype=bool)
    cut[1:-1] = ok[:-1] & ok[1:]
    cut[cs] = cut[ce] = True
    starts = np.flatnonzero(cut[cs : ce - 1]) + cs
    a = int(rng.choice(starts))
    ends = np.flatnonzero(cut[a + 1 : min(ce, a + max_core) + 1]) + a + 1
    b = int(ends[-1]) if len(ends) else min(ce, a + max_core)
    lo, hi = max(0, a - halo), min(len(lab), b + halo)
    return Window(
        w.sequence[lo:hi], w.softmask[lo:hi],
        w.evidence[:, lo:hi] if w.evidence is not None else None,
        lab[lo:hi], (a - lo, b - lo),
    )  # fmt: skip


def mutate(w: Window, rate: float, rng: np.random.Generator, noncoding: np.ndarray) -> Window:
    """Augmentation: each base of ``w`` whose label is in ``noncoding`` (intergenic,
    introns), with the same label on the 3 bases either side, is substituted by another
    base with probability ``rate``. Exons, splice dinucleotides, start and stop codons are
    never touched, so the gold segmentation keeps a finite score (no motif or frame rule
    can forbid it); N stays N."""
    if rate <= 0:
        return w
    lab, seq = w.labels, w.sequence
    n, m = len(lab), 3
    if n <= 2 * m:
        return w
    ok = np.isin(lab, noncoding) & (seq < 4)
    same = np.zeros(n, dtype=bool)  # the label is the same m bases left and right
    same[m:-m] = True
    for k in range(1, m + 1):
        same[k:] &= lab[k:] == lab[:-k]
        same[:-k] &= lab[:-k] == lab[k:]
    hit = np.flatnonzero(ok & same & (rng.random(n) < rate))
    if len(hit) == 0:
        return w
    out = seq.copy()
    out[hit] = (seq[hit] + rng.integers(1, 4, size=len(hit))) % 4
    return Window(out, w.softmask, w.evidence, lab, w.core)


# --------------------------------------------------------------------------- loss


def add_margin(
    kw: dict[str, Tensor], labels: Tensor, aux_class: np.ndarray, margin: MarginConfig
) -> dict[str, Tensor]:
    """Engine inputs (batch of one row, T positions, C labels) with the softmax-margin cost
    of :class:`MarginConfig` added. A path's boundary cost is ``margin.boundary`` x (its
    segment starts and ends that the gold path lacks + the gold path's that it lacks), a
    start being (position, label) with ``labels[t] == c != labels[t-1]`` for the gold path,
    an end likewise at the segment's last base. Up to the constant ``margin.boundary`` x
    (number of gold boundaries), that is ``+margin.boundary`` on ``seg_start[t, c]`` /
    ``seg_end[t, c]`` for a boundary not in the gold path and ``-margin.boundary`` for one
    in it. ``margin.position`` goes to ``emissions[t, c]`` when c's content class differs
    from ``labels[t]``'s. Unlabelled positions (IGNORE) cost nothing, nor does a boundary
    beside one (which side of it the gold boundary lies is unknown). The constant cancels
    between log Z and the gold score, so ``nll`` on these inputs is exactly
    log sum_y exp(score(y) + cost(y)) - score(gold). ``labels``: (T,) int64, 0-based
    positions of the row."""
    if margin.boundary <= 0 and margin.position <= 0:
        return kw
    out = dict(kw)
    T = labels.shape[0]
    C = kw["emissions"].shape[-1]
    known = labels != IGNORE
    lab = labels.clamp(0, C - 1)
    if margin.boundary > 0:
        # a boundary is known where its base and the base across it are (or the row ends)
        first, last = known.clone(), known.clone()
        first[1:] &= known[:-1]
        last[:-1] &= known[1:]
        g_first, g_last = first.clone(), last.clone()
        g_first[1:] &= labels[1:] != labels[:-1]
        g_last[:-1] &= labels[:-1] != labels[1:]
        for key, scored, gold in (("seg_start", first, g_first), ("seg_end", last, g_last)):
            cost = scored.to(kw[key].dtype).unsqueeze(1).expand(T, C).clone()
            rows = torch.nonzero(gold).squeeze(1)
            cost[rows, lab[rows]] = -1.0
            out[key] = kw[key] + margin.boundary * cost.unsqueeze(0)
    if margin.position > 0:
        cls = torch.as_tensor(aux_class, device=labels.device)
        wrong = (cls.unsqueeze(0) != cls[lab].unsqueeze(1)) & known.unsqueeze(1)
        out["emissions"] = kw["emissions"] + margin.position * wrong.to(kw["emissions"].dtype)
    return out


class WindowLoss(nn.Module):
    """The per-window loss as a module (so DistributedDataParallel sees every parameter
    used in ``forward``). ``forward(windows) -> (loss, stats)``: mean over windows of the
    NLL in nats per kb of core (+ aux + smoothness). With a ``teacher`` (distillation) the
    NLL term is ``(1 - w) * NLL + w * (log Z - E_teacher[score])``: the cross-entropy from
    the teacher's path distribution to the model's (its KL divergence plus the teacher's
    entropy), in nats per kb as well."""

    def __init__(
        self, model: GeneModel, aux_weight: float, smoothness: float, temperature: float = 1.0,
        teacher: nn.Module | None = None, distill_weight: float = 0.0,
        margin: MarginConfig | None = None,
    ):  # fmt: skip
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.aux_weight = aux_weight
        self.smoothness = smoothness
        self._teacher = [teacher] if teacher is not None else []  # not a submodule: frozen
        self.distill_weight = distill_weight if teacher is not None else 0.0
        self.margin = margin if margin is not None else MarginConfig()

    def forward(self, windows: list[Window]) -> tuple[Tensor, dict]:
        model = self.model
        dev = next(model.parameters()).device
        n = max(len(w.sequence) for w in windows)
        B = len(windows)
        seq = torch.full((B, n), 4, dtype=torch.int64)
        soft = torch.zeros((B, n), dtype=torch.bool)
        lengths = torch.tensor([len(w.sequence) for w in windows])
        ev = torch.zeros((B, 8, n)) if model.uses_evidence else None
        for b, w in enumerate(windows):
            seq[b, : len(w.sequence)] = torch.from_numpy(w.sequence)
            soft[b, : len(w.sequence)] = torch.from_numpy(w.softmask)
            if ev is not None and w.evidence is not None:
                ev[b, :, : len(w.sequence)] = torch.from_numpy(w.evidence)
        inputs = (seq.to(dev), soft.to(dev), ev.to(dev) if ev is not None else None,
                  lengths.to(dev))  # fmt: skip
        out, aux = model.outputs(*inputs, with_aux=True)
        tables = model.structure.tables()
        wd = self.distill_weight
        if wd > 0:
            teacher = self._teacher[0]
            with torch.no_grad():
                if averages_strands(teacher):  # the teacher as predict would run it
                    t_out = strand_averaged_outputs(teacher, *inputs)
                else:
                    t_out = teacher.outputs(*inputs)
                t_tables = teacher.structure.tables()
        total = out.new_zeros((), dtype=torch.float64)
        nll_sum, ce_sum, bases = 0.0, 0.0, 0
        for b, w in enumerate(windows):
            cs, ce = w.core
            L = len(w.sequence)
            st = compile_rows(model.grammar, w.sequence.astype(np.uint8), cs, L - ce)
            structural = {k: torch.from_numpy(v).unsqueeze(0).to(dev) for k, v in st.items()}
            kw, _ = model.crf_inputs(
                out[b : b + 1, cs:ce], structural, tables=tables, temperature=self.temperature
            )
            lab = torch.from_numpy(w.labels[cs:ce]).to(dev)
            known = lab != IGNORE
            kw = add_margin(kw, lab, model.label_map.aux_class, self.margin)
            # the NLL, with log Z for the distillation term (one forward-backward)
            if bool(known.all()):
                gold = [segments_from_labels(w.labels[cs:ce])]
                nll, logz = crf.nll(**kw, lengths=None, gold_segments=gold, return_log_z=True)
            else:  # unlabelled positions: the paths that agree with every known label
                C = model.grammar.num_labels
                mask = torch.ones(1, ce - cs, C, dtype=torch.bool, device=dev)
                onehot = torch.nn.functional.one_hot(lab.clamp(0, C - 1), C).bool()
                mask[0, known] = onehot[known]
                nll, logz = crf.partial_nll(**kw, lengths=None, label_mask=mask,
                                            return_log_z=True)  # fmt: skip
            nll, logz = nll[0], logz[0]
            term = nll
            if wd > 0:
                t_kw, _ = teacher.crf_inputs(t_out[b : b + 1, cs:ce], structural, tables=t_tables)
                cross = logz - crf.expected_score(kw, crf.score_marginals(t_kw))
                term = (1.0 - wd) * nll + wd * cross
                ce_sum += float(cross.detach())
            total = total + term.double() * (1000.0 / (ce - cs))
            nll_sum += float(nll.detach())
            bases += ce - cs
            if self.aux_weight > 0 and bool(known.any()):
                cls = torch.as_tensor(model.label_map.aux_class, device=dev)[lab[known]]
                ce_loss = nn.functional.cross_entropy(aux[b, cs:ce][known], cls)
                total = total + self.aux_weight * ce_loss.double()
        loss = total / B
        if self.smoothness > 0 and model.cfg.structure == "learned":
            loss = loss + self.smoothness * model.structure.smoothness_penalty().double()
        else:  # keep every parameter in the graph (DDP)
            loss = loss + 0.0 * model.structure.knots.sum()
        if self.aux_weight <= 0:
            loss = loss + 0.0 * aux.sum()
        stats = {"nll_per_kb": 1000.0 * nll_sum / max(bases, 1), "bases": bases}
        if wd > 0:
            stats["cross_entropy_per_kb"] = 1000.0 * ce_sum / max(bases, 1)
        return loss, stats


# --------------------------------------------------------------------------- validation


def _exon_sets(segments, grammar: Grammar, masked: np.ndarray):
    """(exons, genes) of a segmentation, leaving out anything touching a masked base.
    exons: {(start, end, strand)}; genes: {tuple of exons}."""
    exons, genes = set(), set()
    cum = np.concatenate([[0], np.cumsum(masked)])
    for gm in gene_models_from_segments(segments, grammar):
        lo, hi = gm.cds[0][0], gm.cds[-1][1]
        if cum[hi] - cum[lo] > 0:
            continue
        ex = tuple((s, e, gm.strand) for s, e in gm.cds)
        exons.update(ex)
        genes.add(ex)
    return exons, genes


def f1(ref: set, pred: set) -> tuple[float, float, float]:
    tp = len(ref & pred)
    sn = tp / len(ref) if ref else 0.0
    pr = tp / len(pred) if pred else 0.0
    return sn, pr, (2 * sn * pr / (sn + pr) if sn + pr > 0 else 0.0)


@torch.no_grad()
def validate(model: GeneModel, sources: Sources, max_windows: int = 0) -> dict:
    """Viterbi on every validation window's core: exon and gene sensitivity, precision and
    F1 (exact coordinates, strand-aware; predictions touching masked bases are left out, as
    are masked gold genes), and the NLL per kb. Windows are scored together (micro F1)."""
    model.eval()
    items = sources.all_items()
    if max_windows:
        items = items[:max_windows]
    ref_ex, pred_ex, ref_g, pred_g = set(), set(), set(), set()
    nll_sum, bases = 0.0, 0
    lossmod = WindowLoss(model, 0.0, 0.0)
    dev = next(model.parameters()).device
    for j, (f, i) in enumerate(items):
        w = sources.window(f, i)
        cs, ce = w.core
        _, stats = lossmod([w])
        nll_sum += stats["nll_per_kb"] * stats["bases"] / 1000.0
        bases += stats["bases"]
        L = len(w.sequence)
        seq = torch.from_numpy(w.sequence).unsqueeze(0).to(dev)
        soft = torch.from_numpy(w.softmask).unsqueeze(0).to(dev)
        ev = torch.from_numpy(w.evidence).unsqueeze(0).to(dev) if w.evidence is not None else None
        out = model.outputs(seq, soft, ev)
        st = compile_rows(model.grammar, w.sequence.astype(np.uint8), cs, L - ce)
        structural = {k: torch.from_numpy(v).unsqueeze(0).to(dev) for k, v in st.items()}
        kw, _ = model.crf_inputs(out[:, cs:ce], structural)
        _, paths = crf.viterbi(**kw, lengths=None)
        lab = w.labels[cs:ce]
        masked = lab == IGNORE
        tag = j  # keep windows apart in the sets
        r_ex, r_g = _exon_sets(segments_from_labels(lab), model.grammar, masked)
        p_ex, p_g = _exon_sets(paths[0], model.grammar, masked)
        ref_ex |= {(tag, *x) for x in r_ex}
        pred_ex |= {(tag, *x) for x in p_ex}
        ref_g |= {(tag, g) for g in r_g}
        pred_g |= {(tag, g) for g in p_g}
    model.train()
    esn, epr, ef1 = f1(ref_ex, pred_ex)
    gsn, gpr, gf1 = f1(ref_g, pred_g)
    return {
        "valid_nll_per_kb": nll_sum * 1000.0 / max(bases, 1),
        "exon_sn": esn, "exon_pr": epr, "exon_f1": ef1,
        "gene_sn": gsn, "gene_pr": gpr, "gene_f1": gf1,
        "windows": len(items), "ref_exons": len(ref_ex), "pred_exons": len(pred_ex),
    }  # fmt: skip


# --------------------------------------------------------------------------- the loop


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class _Progress:
    """A one-line progress bar on a terminal; plain periodic lines otherwise (stderr)."""

    def __init__(self, total: int, start: int, every: int):
        self.total, self.start, self.every = total, start, every
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, loss: float, extra: str = "") -> None:
        done = step + 1 - self.start
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        eta = (self.total - step - 1) / max(rate, 1e-9)
        line = (f"step {step + 1}/{self.total} loss {loss:.3f} {rate:.2f} step/s "
                f"ETA {eta / 60:.1f} min {extra}")  # fmt: skip
        if self.tty:
            print("\r" + line.ljust(100), end="", file=sys.stderr, flush=True)
        elif (step + 1) % self.every == 0 or step + 1 == self.total:
            log(line)

    def newline(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


class Trainer:
    """State of one training run (see the module doc for the order of events)."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, grammar: Grammar | None = None):
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(cfg.device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if not torch.distributed.is_initialized():
                torch.distributed.init_process_group(backend)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out_dir = Path(cfg.out_dir)
        self.last = self.out_dir / "last.pt"
        self.best = self.out_dir / "best.pt"
        ckpt = None
        if resume:
            if not self.last.is_file():
                raise GenosegError(f"--resume: {self.last} not found (nothing to resume)")
            ckpt = load_checkpoint(self.last)
            if "train_state" not in ckpt:
                raise GenosegError(f"{self.last}: checkpoint holds no training state")
        torch.manual_seed(cfg.seed)
        if ckpt is not None:
            self.model = model_from_checkpoint(ckpt, str(self.last))
        else:
            if grammar is None:
                first = WindowDataset(cfg.data.train[0].path)
                grammar = grammar_from_yaml(first.grammar_yaml, f"{cfg.data.train[0].path}")
            self.model = GeneModel(grammar, cfg.model)
            if cfg.init_from is not None:  # fine-tuning: the checkpoint's weights
                try:
                    init_ckpt = load_checkpoint(cfg.init_from)
                except GenosegError as exc:
                    raise GenosegError(f"init_from: {exc}") from None
                init = model_from_checkpoint(init_ckpt, str(cfg.init_from))
                try:
                    self.model.load_state_dict(init.state_dict())
                except RuntimeError as exc:
                    raise GenosegError(
                        f"init_from {cfg.init_from}: not a model of this config's shape "
                        f"(model.*): {str(exc).splitlines()[0][:160]}"
                    ) from None
        self.model.to(self.device)
        # distillation: a frozen teacher reads the same rows (checked to share the grammar)
        self.teacher = None
        if cfg.distill.weight > 0:
            self.teacher = load_model(cfg.distill.teacher, device=str(self.device))
            self.teacher.requires_grad_(False)
            if self.teacher.grammar.yaml_text != self.model.grammar.yaml_text:
                raise GenosegError(f"distill.teacher {cfg.distill.teacher}: another grammar")
            if self.teacher.uses_evidence and not self.model.uses_evidence:
                raise GenosegError(f"distill.teacher {cfg.distill.teacher} reads RNA-seq "
                                   "evidence; the model does not")  # fmt: skip
        self.halo = max(self.model.halo, self.teacher.halo if self.teacher else 0)
        g = self.model.grammar
        self.noncoding = np.array(  # labels ``mutate`` may substitute bases in
            [c for c, lab in enumerate(g.labels) if lab.kind in ("intergenic", "intron")]
        )
        strands = tuple(cfg.data.strands)
        self.train_data = Sources(cfg.data.train, strands, self.model.grammar)
        self.valid_data = (
            Sources(cfg.data.valid, ("+",), self.model.grammar) if cfg.data.valid else None
        )
        for s in self.train_data.sets:
            if self.model.uses_evidence and not s.has_evidence:
                log(f"{s.path}: no evidence channels; the model sees zeros there")
        if self.model.markov is not None and ckpt is None and cfg.init_from is None:
            self._fit_markov()
        self.loss_module: nn.Module = WindowLoss(
            self.model, cfg.aux_weight, cfg.smoothness,
            teacher=self.teacher, distill_weight=cfg.distill.weight, margin=cfg.margin,
        )  # fmt: skip
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_module = nn.parallel.DistributedDataParallel(self.loss_module, device_ids=ids)
        # no weight decay: the structure tables and the Markov chains' scales
        plain = ("structure.", "markov.")
        struct = [p for n, p in self.model.named_parameters() if n.startswith(plain)]
        other = [p for n, p in self.model.named_parameters() if not n.startswith(plain)]
        o = cfg.optim
        self.opt = torch.optim.AdamW(
            [{"params": other, "weight_decay": o.weight_decay},
             {"params": struct, "weight_decay": 0.0, "lr": o.lr * o.structure_lr_scale}],
            lr=o.lr,
        )  # fmt: skip
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, o.warmup_steps, cfg.steps, o.min_lr_ratio)
        )
        self.step = 0
        self.best_score = -1.0
        self.history: list[dict] = []
        # the weights' moving average (cfg.ema > 0): float64 copies of the model's state
        self.ema: dict[str, Tensor] | None = None
        if cfg.ema > 0:
            self.ema = {k: v.detach().double().clone() for k, v in self.model.state_dict().items()}
        if ckpt is not None:
            ts = ckpt["train_state"]
            if self.ema is not None:
                if "ema" not in ts:
                    raise GenosegError(f"{self.last}: no weight average to resume with ema > 0")
                self.ema = {k: v.to(self.device) for k, v in ts["ema"].items()}
            self.opt.load_state_dict(ts["optimizer"])
            self.sched.load_state_dict(ts["scheduler"])
            torch.set_rng_state(ts["rng_torch"])
            self.step = int(ts["step"])
            self.best_score = float(ts["best_score"])
            self.history = list(ts.get("history", []))
            log(f"resumed from {self.last} at step {self.step}")
        self._stop: list[int] = []
        self._tb = None

    def _fit_markov(self) -> None:
        """The Markov content chains (``model.markov_order``) counted on the training
        windows' labelled cores, forward strand (the counts cover both strands' genes)."""
        order = self.model.cfg.markov_order
        fwd = Sources(self.cfg.data.train, ("+",), self.model.grammar)

        def rows():
            for f, i in fwd.all_items():
                w = fwd.window(f, i)
                labels = np.full_like(w.labels, IGNORE)
                a, b = w.core
                labels[a:b] = w.labels[a:b]
                yield w.sequence, labels

        counts = markov_counts(rows(), self.model.grammar, order)
        self.model.markov.fit(counts)
        n = counts.sum(axis=1)
        log(f"Markov content chains (order {order}) from "
            + ", ".join(f"{int(k):,} {c} bases" for c, k in zip(MARKOV_CLASSES, n)))  # fmt: skip

    # -- checkpoints ------------------------------------------------------------------

    def _train_state(self) -> dict:
        return {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "step": self.step,
            "best_score": self.best_score,
            "history": self.history,
            "world_size": self.world,
            **({"ema": self.ema} if self.ema is not None else {}),
        }

    def _update_average(self) -> None:
        """ema <- d * ema + (1 - d) * weights, d = min(cfg.ema, (1 + t) / (10 + t))."""
        if self.ema is None:
            return
        d = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                self.ema[k].mul_(d).add_(v.double(), alpha=1 - d)

    @contextmanager
    def _averaged(self):
        """The model holds the weights' moving average inside the block (if any)."""
        if self.ema is None:
            yield
            return
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict({k: v.to(raw[k].dtype) for k, v in self.ema.items()})
        try:
            yield
        finally:
            self.model.load_state_dict(raw)

    def save(self, path: Path, *, with_state: bool = True) -> None:
        if self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            path, self.model, config=config_to_dict(self.cfg),
            train_state=self._train_state() if with_state else None,
        )  # fmt: skip

    # -- logging ----------------------------------------------------------------------

    def _record(self, row: dict) -> None:
        self.history.append(row)
        if self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "metrics.csv"
        keys = sorted({k for r in self.history for k in r})
        # rewritten whole (consistent on resume), through a temporary: a kill mid-write
        # leaves the previous file, never a truncated one
        with atomic_output(path, option="metrics.csv") as fh:
            wr = csv.DictWriter(fh, fieldnames=keys)
            wr.writeheader()
            wr.writerows(self.history)
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    def evaluate(self) -> dict | None:
        if self.valid_data is None or self.rank != 0:
            return None
        t0 = time.monotonic()
        m = validate(self.model, self.valid_data, self.cfg.data.valid_max_windows)
        m["valid_seconds"] = time.monotonic() - t0
        log(
            f"valid step {self.step}: nll {m['valid_nll_per_kb']:.2f}/kb | exon Sn "
            f"{100 * m['exon_sn']:.1f} Pr {100 * m['exon_pr']:.1f} F1 {100 * m['exon_f1']:.1f}"
            f" | gene Sn {100 * m['gene_sn']:.1f} Pr {100 * m['gene_pr']:.1f} F1 "
            f"{100 * m['gene_f1']:.1f} ({m['windows']} windows, {m['valid_seconds']:.0f} s)"
        )
        return m

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Train until ``cfg.steps``; returns the exit status (0, or EXIT_REQUEUE)."""
        handlers = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            handlers[sig] = signal.signal(sig, lambda s, f: self._stop.append(s))
        try:
            return self._loop()
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if self._tb:
                self._tb.close()
            if self.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def _check_replicas(self) -> None:
        """All ranks must hold the same parameters (DDP averages gradients)."""
        flat = torch.cat([p.detach().double().flatten().cpu() for p in self.model.parameters()])
        mine = torch.tensor([float(flat.sum()), float((flat * flat).sum())], dtype=torch.float64)
        mine = mine.to(self.device)
        allv = [torch.zeros_like(mine) for _ in range(self.world)]
        torch.distributed.all_gather(allv, mine)
        if any(not torch.equal(v, allv[0]) for v in allv):
            raise GenosegError("DDP replicas diverged: parameters differ between ranks")
        if self.rank == 0:
            log(f"parameters identical on all {self.world} ranks")

    def _loop(self) -> int:
        cfg = self.cfg
        model = self.model
        model.train()
        if self.rank == 0:
            n_par = sum(p.numel() for p in model.parameters())
            log(
                f"{n_par:,} parameters, receptive field {model.encoder.receptive_field} bp "
                f"(halo {model.halo}), {sum(len(s) for s in self.train_data.sets)} training "
                f"windows, device {self.device}, world size {self.world}"
            )
        prog = _Progress(cfg.steps, self.step, cfg.log_every)
        t_enc = time.monotonic()
        while self.step < cfg.steps:
            windows = []
            for k in range(cfg.batch_size):
                f, i = self.train_data.draw(cfg.seed, self.step, self.rank, k)
                w = self.train_data.window(f, i)
                rng = np.random.default_rng([cfg.seed, self.step, self.rank, k, 1])
                w = crop(w, cfg.max_window, rng, self.halo)
                windows.append(mutate(w, cfg.mutate, rng, self.noncoding))
            loss, stats = self.loss_module(windows)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                gn = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
            else:
                gn = float("nan")
            self.opt.step()
            self.sched.step()
            self.step += 1
            self._update_average()
            row = {
                "step": self.step,
                "loss": float(loss.detach()),
                "train_nll_per_kb": stats["nll_per_kb"],
                "lr": self.sched.get_last_lr()[0],
                "grad_norm": gn,
                "seconds": time.monotonic() - t_enc,
            }
            if "cross_entropy_per_kb" in stats:  # distillation: to the teacher's paths
                row["train_cross_entropy_per_kb"] = stats["cross_entropy_per_kb"]
            prog.update(self.step - 1, row["loss"], f"nll {stats['nll_per_kb']:.2f}/kb")
            last = self.step == cfg.steps
            if self.step % cfg.eval_every == 0 or last:
                prog.newline()
                with self._averaged():
                    m = self.evaluate()
                    if m is not None:
                        row.update(m)
                        if m["exon_f1"] > self.best_score:
                            self.best_score = m["exon_f1"]
                            self.save(self.best, with_state=False)
            self._record(row)
            if self.world > 1:  # a signal to any rank stops every rank at the same step
                flag = torch.tensor([float(bool(self._stop))], device=self.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                if flag.item() and not self._stop:
                    self._stop.append(signal.SIGTERM)
            if self.step % cfg.checkpoint_every == 0 or last or self._stop:
                self.save(self.last)
            if self._stop:
                prog.newline()
                log(f"signal {self._stop[0]}: wrote {self.last} at step {self.step}; "
                    f"exit {EXIT_REQUEUE} (run again with --resume)")  # fmt: skip
                return EXIT_REQUEUE
        prog.newline()
        if self.world > 1:
            self._check_replicas()
        if self.rank == 0 and self.valid_data is None:
            with self._averaged():
                self.save(self.best, with_state=False)
        log(f"done: {self.step} steps; checkpoints in {self.out_dir}")
        return 0


def train(cfg: TrainConfig, *, resume: bool = False) -> int:
    """Run training; returns the process exit status."""
    return Trainer(cfg, resume=resume).run()
