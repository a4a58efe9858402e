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

With ``gene_rule="gt"`` the last two levels follow ``gt eval`` instead: every transcript
counts (matched one to one), and a gene is found only when a gene on the other side has
exactly the same transcripts, all of them.

By default only the reference's sequences are scored (predictions elsewhere are left out
and counted); with regions, bases, parts and introns inside the regions are scored
whatever transcript they belong to, and chains, transcripts and genes only from
transcripts lying wholly inside one region.

Sensitivity = matched reference / reference, precision = matched prediction / prediction,
F1 = 2·S·P/(S+P). For set levels both matched counts are equal; for ``gene`` they can differ.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from genoseg.data.annotation import Annotation, Transcript

__all__ = [
    "GENE_RULES",
    "LEVELS",
    "EvalResult",
    "LevelStats",
    "Model",
    "compare",
    "models_of",
    "overlaps_regions",
    "within_regions",
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


GENE_RULES = ("any", "gt")


@dataclass
class EvalResult:
    """Result of :func:`compare`: one :class:`LevelStats` per level, in :data:`LEVELS` order.

    ``reference_models`` / ``prediction_models`` are the transcripts scored at the intron
    chain, transcript and gene levels (with ``regions``: those lying wholly inside one
    region). ``reference_scope`` / ``prediction_scope`` are every transcript on a scored
    seqid (with ``regions``: every one overlapping a region); their bases, parts and introns
    inside the regions are scored at the base, exon and intron levels.

    ``scored_seqids``: the sequences scored (sorted). ``left_out``: per side
    (``"reference"``, ``"prediction"``), seqid -> number of transcripts on sequences that
    were not scored. ``region_edges``: per side, ``{"transcripts": n, "genes": g}`` --
    transcripts overlapping a region but crossing its edge (left out of the chain,
    transcript and gene levels) and genes left out because all their transcripts do; None
    without regions. ``counts``: per side, the scored ``transcripts``, the ``distinct``
    transcripts (unique part chains, what the transcript level counts under gene rule
    ``"any"``) and ``genes``.
    """

    mode: str
    levels: dict[str, LevelStats]
    settings: dict[str, object]
    reference_models: list[Model] = field(repr=False, default_factory=list)
    prediction_models: list[Model] = field(repr=False, default_factory=list)
    reference_scope: list[Model] = field(repr=False, default_factory=list)
    prediction_scope: list[Model] = field(repr=False, default_factory=list)
    scored_seqids: list[str] = field(default_factory=list)
    left_out: dict[str, dict[str, int]] = field(default_factory=dict)
    region_edges: dict[str, dict[str, int]] | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    regions: dict[str, list[Interval]] | None = field(repr=False, default=None)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "settings": self.settings,
            "scored_seqids": self.scored_seqids,
            "left_out": self.left_out,
            "region_edges": self.region_edges,
            "counts": self.counts,
            "levels": {k: asdict(v) for k, v in self.levels.items()},
        }

    def calibration(self, n_bins: int = 10) -> dict:
        """Calibration of the prediction's posteriors over what this result scored.

        Equals :func:`genoseg.eval.calibration_report` on the scope models, restricted to
        features inside the regions when regions were given.
        """
        from genoseg.eval.calibration import calibration_report

        return calibration_report(
            self.reference_scope,
            self.prediction_scope,
            self.mode,
            n_bins=n_bins,
            regions=self.regions,
        )


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
                if regions is not None and not within_regions(
                    regions.get(seqid, []), m.start, m.end
                ):
                    continue
                out.append(m)
    return out


def within_regions(ivs: list[Interval], start: int, end: int) -> bool:
    """Whether [start, end) lies wholly inside one of the sorted, merged ``ivs``."""
    i = bisect.bisect_right(ivs, (start, float("inf"))) - 1
    return i >= 0 and ivs[i][0] <= start and end <= ivs[i][1]


def overlaps_regions(ivs: list[Interval], start: int, end: int) -> bool:
    """Whether [start, end) shares at least one base with the sorted, merged ``ivs``."""
    i = bisect.bisect_left(ivs, (end, end))  # intervals starting at or after ``end`` are out
    return i > 0 and ivs[i - 1][1] > start


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
    return sum(e - s for s, e in _clip(a, b))


def _coverage(
    models: list[Model], regions: dict[str, list[Interval]] | None
) -> dict[tuple[str, str], list[Interval]]:
    """(seqid, strand) -> merged parts of ``models``, clipped to ``regions`` when given."""
    cov: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    for m in models:
        cov[(m.seqid, m.strand)].extend(m.parts)
    out = {}
    for key, ivs in cov.items():
        merged = _merge(ivs)
        if regions is not None:
            merged = _clip(merged, regions.get(key[0], []))
        out[key] = merged
    return out


def _clip(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Intersection of two sorted, merged interval lists (sorted, merged)."""
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


def _multiset_stats(level: str, ref: Counter, pred: Counter) -> LevelStats:
    """One-to-one matching of identical items: each copy matches at most one copy."""
    tp = sum(min(n, pred[k]) for k, n in ref.items())
    return LevelStats(level, sum(ref.values()), sum(pred.values()), tp, tp)


def level_sets(
    models: list[Model], regions: dict[str, list[Interval]] | None = None
) -> dict[str, set]:
    """The exon, intron, intron-chain and transcript key sets of ``models``.

    With ``regions`` (seqid -> sorted, merged intervals) only exons and introns lying wholly
    inside a region are kept, and chains and transcripts only of models lying wholly inside
    one region.
    """
    exons, introns, chains, txs = set(), set(), set(), set()
    for m in models:
        ivs = regions.get(m.seqid, []) if regions is not None else None
        for s, e in m.parts:
            if ivs is None or within_regions(ivs, s, e):
                exons.add((m.seqid, m.strand, s, e))
        ins = m.introns
        for s, e in ins:
            if ivs is None or within_regions(ivs, s, e):
                introns.add((m.seqid, m.strand, s, e))
        if ivs is not None and not within_regions(ivs, m.start, m.end):
            continue
        if ins:
            chains.add((m.seqid, m.strand, ins))
        txs.add(m.key)
    return {"exon": exons, "intron": introns, "intron_chain": chains, "transcript": txs}


def _gene_signatures(models: list[Model]) -> Counter:
    """Per gene: (seqid, strand, sorted part chains of all its transcripts), counted."""
    by_gene: dict[str, list[Model]] = defaultdict(list)
    for m in models:
        by_gene[m.gene].append(m)
    return Counter(
        (ms[0].seqid, ms[0].strand, tuple(sorted(m.parts for m in ms))) for ms in by_gene.values()
    )


def compare(
    reference: Annotation,
    prediction: Annotation,
    *,
    mode: str = "CDS",
    longest_isoform: bool = False,
    seqids: Iterable[str] | None = None,
    regions: dict[str, list[Interval]] | None = None,
    all_seqids: bool = False,
    gene_rule: str = "any",
) -> EvalResult:
    """Compare ``prediction`` with ``reference`` at every level of :data:`LEVELS`.

    Which sequences are scored: ``seqids`` when given (both sides, exactly those);
    otherwise, by default, the reference's sequences, those with at least one scored
    reference transcript (as ``gt eval`` does), so predictions on sequences the reference
    does not annotate are left out (counted in :attr:`EvalResult.left_out`);
    ``all_seqids=True`` scores every sequence of either side (such predictions are then
    false positives).

    ``regions``: seqid -> 0-based half-open intervals (merged here). Bases, parts and
    introns are scored when they lie inside a region, whatever transcript they belong to;
    intron chains, transcripts and genes only from transcripts lying wholly inside one
    region (those crossing a region edge are counted in :attr:`EvalResult.region_edges`).

    ``gene_rule``: ``"any"`` (default) -- the transcript level counts distinct part chains,
    and a gene is found when any of its transcripts is matched; ``"gt"`` -- the definitions
    of ``gt eval``: the transcript level counts every transcript (duplicates too, matched
    one to one), and a gene is found only when a gene on the other side has the same
    transcripts, all of them (docs/eval.md compares the two).
    """
    if gene_rule not in GENE_RULES:
        raise ValueError(f"gene_rule must be one of {GENE_RULES}, not {gene_rule!r}")
    if regions is not None:
        regions = {k: _merge(v) for k, v in regions.items()}
    seqids = list(seqids) if seqids is not None else None
    ref_all = models_of(reference, mode=mode, longest_isoform=longest_isoform)
    pred_all = models_of(prediction, mode=mode, longest_isoform=longest_isoform)
    if seqids is not None:
        scope: set[str] | None = set(seqids)
    elif all_seqids:
        scope = None
    else:
        scope = {m.seqid for m in ref_all}

    sides: dict[str, dict] = {}
    for side, models in (("reference", ref_all), ("prediction", pred_all)):
        kept = [m for m in models if scope is None or m.seqid in scope]
        left = Counter(m.seqid for m in models if scope is not None and m.seqid not in scope)
        if regions is None:
            in_scope = inside = kept
            edges = None
        else:
            in_scope = [
                m for m in kept if overlaps_regions(regions.get(m.seqid, []), m.start, m.end)
            ]
            inside = [
                m for m in in_scope if within_regions(regions.get(m.seqid, []), m.start, m.end)
            ]
            genes_kept = {m.gene for m in inside}
            edges = {
                "transcripts": len(in_scope) - len(inside),
                "genes": len({m.gene for m in in_scope} - genes_kept),
            }
        sides[side] = {
            "scope": in_scope,
            "models": inside,
            "left_out": dict(sorted(left.items())),
            "edges": edges,
            "counts": {
                "transcripts": len(inside),
                "distinct": len({m.key for m in inside}),
                "genes": len({m.gene for m in inside}),
            },
        }
    ref, pred = sides["reference"], sides["prediction"]

    levels: dict[str, LevelStats] = {}
    rc = _coverage(ref["scope"], regions)
    pc = _coverage(pred["scope"], regions)
    ref_bases = sum(e - s for ivs in rc.values() for s, e in ivs)
    pred_bases = sum(e - s for ivs in pc.values() for s, e in ivs)
    tp_bases = sum(_intersect_len(ivs, pc.get(key, [])) for key, ivs in rc.items())
    levels["base"] = LevelStats("base", ref_bases, pred_bases, tp_bases, tp_bases)

    rs, ps = level_sets(ref["scope"], regions), level_sets(pred["scope"], regions)
    for level in ("exon", "intron", "intron_chain"):
        levels[level] = _set_stats(level, rs[level], ps[level])

    ref_models, pred_models = ref["models"], pred["models"]
    if gene_rule == "gt":
        levels["transcript"] = _multiset_stats(
            "transcript",
            Counter(m.key for m in ref_models),
            Counter(m.key for m in pred_models),
        )
        gene = _multiset_stats("gene", _gene_signatures(ref_models), _gene_signatures(pred_models))
        levels["gene"] = gene
    else:
        levels["transcript"] = _set_stats("transcript", rs["transcript"], ps["transcript"])
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
    scored = (
        sorted(scope)
        if scope is not None
        else sorted({m.seqid for m in ref["scope"]} | {m.seqid for m in pred["scope"]})
    )
    settings = {
        "mode": mode,
        "longest_isoform": longest_isoform,
        "seqids": seqids,
        "all_seqids": all_seqids,
        "gene_rule": gene_rule,
        "regions": None
        if regions is None
        else {
            "count": sum(len(v) for v in regions.values()),
            "bases": sum(e - s for v in regions.values() for s, e in v),
        },
    }
    return EvalResult(
        mode,
        levels,
        settings,
        reference_models=ref_models,
        prediction_models=pred_models,
        reference_scope=ref["scope"],
        prediction_scope=pred["scope"],
        scored_seqids=scored,
        left_out={"reference": ref["left_out"], "prediction": pred["left_out"]},
        region_edges=None
        if regions is None
        else {"reference": ref["edges"], "prediction": pred["edges"]},
        counts={"reference": ref["counts"], "prediction": pred["counts"]},
        regions=regions,
    )
