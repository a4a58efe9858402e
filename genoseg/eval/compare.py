"""Accuracy of a predicted annotation against a reference, at six levels.

Each transcript is reduced to its *parts*: the CDS pieces (mode ``"CDS"``, the default;
non-coding transcripts are ignored) or the exons (mode ``"exon"``; every transcript).
All coordinates are 0-based half-open; every key includes the seqid and the strand, so a
feature on the wrong strand never matches.

Levels (definitions and their origin are in docs/eval.md):

* ``base``: nucleotides covered by any part, per strand (gffcompare "Base level").
* ``exon``: unique parts, both ends exact (BRAKER/GeneMark ``compare_intervals_exact``).
* ``intron``: unique gaps between consecutive parts, exact (gffcompare "Intron level").
* ``intron_chain``: unique chains of all introns of a multi-part transcript, exact
  (gffcompare "Intron chain level"; single-part transcripts are not counted).
* ``transcript``: unique transcripts whose parts are all identical (BRAKER/GeneMark).
* ``gene``: a reference gene is found when at least one of its transcripts is matched
  exactly by a predicted transcript; a predicted gene is correct when at least one of its
  transcripts matches a reference transcript (BRAKER/GeneMark gene level).

Sensitivity = matched reference / reference, precision = matched prediction / prediction,
F1 = 2·S·P/(S+P). For set levels both matched counts are equal; for ``gene`` they can differ.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from genoseg.data.annotation import Annotation, Transcript

__all__ = [
    "LEVELS",
    "EvalResult",
    "LevelStats",
    "Model",
    "compare",
    "models_of",
]

LEVELS = ("base", "exon", "intron", "intron_chain", "transcript", "gene")

Interval = tuple[int, int]


@dataclass(frozen=True)
class Model:
    """A transcript reduced to what is scored: ``parts`` are 0-based half-open, ascending."""

    seqid: str
    strand: str
    gene: str
    transcript: Transcript
    parts: tuple[Interval, ...]

    @property
    def start(self) -> int:
        return self.parts[0][0]

    @property
    def end(self) -> int:
        return self.parts[-1][1]

    @property
    def introns(self) -> tuple[Interval, ...]:
        p = self.parts
        return tuple((p[i][1], p[i + 1][0]) for i in range(len(p) - 1))

    @property
    def key(self) -> tuple:
        return (self.seqid, self.strand, self.parts)


@dataclass
class LevelStats:
    """Counts and rates of one level; rates are fractions in [0, 1] or None (0/0)."""

    level: str
    reference: int
    prediction: int
    matched_reference: int
    matched_prediction: int
    sensitivity: float | None = field(init=False)
    precision: float | None = field(init=False)
    f1: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.sensitivity = self.matched_reference / self.reference if self.reference else None
        self.precision = self.matched_prediction / self.prediction if self.prediction else None
        s, p = self.sensitivity, self.precision
        if s is None or p is None:
            self.f1 = None
        else:
            self.f1 = 2 * s * p / (s + p) if s + p > 0 else 0.0


@dataclass
class EvalResult:
    """Result of :func:`compare`: one :class:`LevelStats` per level, in :data:`LEVELS` order."""

    mode: str
    levels: dict[str, LevelStats]
    settings: dict[str, object]
    reference_models: list[Model] = field(repr=False, default_factory=list)
    prediction_models: list[Model] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "settings": self.settings,
            "levels": {k: asdict(v) for k, v in self.levels.items()},
        }


def _longest(ts: Sequence[Transcript], mode: str) -> Transcript:
    def size(t: Transcript) -> int:
        return t.cds_length if mode == "CDS" else sum(e - s for s, e in t.exons)

    return min(ts, key=lambda t: (-size(t), t.id))


def models_of(
    ann: Annotation,
    *,
    mode: str = "CDS",
    longest_isoform: bool = False,
    seqids: Iterable[str] | None = None,
    regions: dict[str, list[Interval]] | None = None,
) -> list[Model]:
    """Scored transcripts of ``ann``.

    ``regions`` maps seqid -> sorted, merged 0-based half-open intervals; a transcript is
    kept only when its whole scored span lies inside one of them. ``longest_isoform`` keeps,
    per gene, the transcript with the longest CDS (mode CDS) or exonic length (mode exon);
    ties go to the smallest transcript ID.
    """
    if mode not in ("CDS", "exon"):
        raise ValueError(f"mode must be 'CDS' or 'exon', not {mode!r}")
    keep = set(seqids) if seqids is not None else None
    out: list[Model] = []
    for seqid, genes in ann.genes.items():
        if keep is not None and seqid not in keep:
            continue
        for gene in genes:
            ts = [t for t in gene.transcripts if mode == "exon" or t.is_coding]
            if not ts:
                continue
            if longest_isoform:
                ts = [_longest(ts, mode)]
            for t in ts:
                parts = t.cds if mode == "CDS" else t.exons
                m = Model(seqid, t.strand, f"{seqid}\t{gene.id}", t, parts)
                if regions is not None and not _inside(regions.get(seqid, []), m.start, m.end):
                    continue
                out.append(m)
    return out


def _inside(ivs: list[Interval], start: int, end: int) -> bool:
    i = bisect.bisect_right(ivs, (start, float("inf"))) - 1
    return i >= 0 and ivs[i][0] <= start and end <= ivs[i][1]


def _merge(ivs: Iterable[Interval]) -> list[Interval]:
    out: list[list[int]] = []
    for s, e in sorted(ivs):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _intersect_len(a: list[Interval], b: list[Interval]) -> int:
    """Total overlap of two sorted, merged interval lists."""
    i = j = total = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo < hi:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def _coverage(
    models: list[Model], regions: dict[str, list[Interval]] | None
) -> dict[tuple[str, str], list[Interval]]:
    cov: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    for m in models:
        cov[(m.seqid, m.strand)].extend(m.parts)
    out = {}
    for key, ivs in cov.items():
        merged = _merge(ivs)
        if regions is not None:
            # keep only bases inside the regions (kept models already are, but be exact)
            reg = regions.get(key[0], [])
            merged = _clip(merged, reg)
        out[key] = merged
    return out


def _clip(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _set_stats(level: str, ref: set, pred: set) -> LevelStats:
    tp = len(ref & pred)
    return LevelStats(level, len(ref), len(pred), tp, tp)


def level_sets(models: list[Model]) -> dict[str, set]:
    """The exon, intron, intron-chain and transcript key sets of ``models``."""
    exons, introns, chains, txs = set(), set(), set(), set()
    for m in models:
        for s, e in m.parts:
            exons.add((m.seqid, m.strand, s, e))
        ins = m.introns
        for s, e in ins:
            introns.add((m.seqid, m.strand, s, e))
        if ins:
            chains.add((m.seqid, m.strand, ins))
        txs.add(m.key)
    return {"exon": exons, "intron": introns, "intron_chain": chains, "transcript": txs}


def compare(
    reference: Annotation,
    prediction: Annotation,
    *,
    mode: str = "CDS",
    longest_isoform: bool = False,
    seqids: Iterable[str] | None = None,
    regions: dict[str, list[Interval]] | None = None,
) -> EvalResult:
    """Compare ``prediction`` with ``reference`` at every level of :data:`LEVELS`.

    ``regions``: seqid -> 0-based half-open intervals (merged here); only transcripts lying
    wholly inside a region and only bases inside regions are scored. ``seqids`` restricts
    both sides to those sequences.
    """
    if regions is not None:
        regions = {k: _merge(v) for k, v in regions.items()}
    seqids = list(seqids) if seqids is not None else None
    opts = {"mode": mode, "longest_isoform": longest_isoform, "seqids": seqids, "regions": regions}
    ref_models = models_of(reference, **opts)
    pred_models = models_of(prediction, **opts)

    levels: dict[str, LevelStats] = {}
    rc = _coverage(ref_models, regions)
    pc = _coverage(pred_models, regions)
    ref_bases = sum(e - s for ivs in rc.values() for s, e in ivs)
    pred_bases = sum(e - s for ivs in pc.values() for s, e in ivs)
    tp_bases = sum(_intersect_len(ivs, pc.get(key, [])) for key, ivs in rc.items())
    levels["base"] = LevelStats("base", ref_bases, pred_bases, tp_bases, tp_bases)

    rs, ps = level_sets(ref_models), level_sets(pred_models)
    for level in ("exon", "intron", "intron_chain", "transcript"):
        levels[level] = _set_stats(level, rs[level], ps[level])

    ref_genes: dict[str, bool] = {}
    for m in ref_models:
        ref_genes[m.gene] = ref_genes.get(m.gene, False) or m.key in ps["transcript"]
    pred_genes: dict[str, bool] = {}
    for m in pred_models:
        pred_genes[m.gene] = pred_genes.get(m.gene, False) or m.key in rs["transcript"]
    levels["gene"] = LevelStats(
        "gene",
        len(ref_genes),
        len(pred_genes),
        sum(ref_genes.values()),
        sum(pred_genes.values()),
    )
    settings = {
        "mode": mode,
        "longest_isoform": longest_isoform,
        "seqids": seqids,
        "regions": None
        if regions is None
        else {
            "count": sum(len(v) for v in regions.values()),
            "bases": sum(e - s for v in regions.values() for s, e in v),
        },
    }
    return EvalResult(mode, levels, settings, ref_models, pred_models)
