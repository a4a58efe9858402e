"""Calibration of predicted posteriors: reliability bins and expected calibration error.

Where the posteriors come from (see docs/eval.md, "Posteriors in GFF3"):

* exon: the score column of a predicted CDS line (mode CDS) or exon line (mode exon);
  correct when the part (after GTF stop-codon merging) is a reference part, both ends exact;
* intron: the score column of a predicted ``intron`` line; correct when it is a reference
  intron (gap between consecutive reference parts);
* boundary: the ``start_posterior`` / ``end_posterior`` attributes of a CDS/exon line, the
  posterior of the boundary at its lower / upper genomic coordinate; correct when some
  reference part on the same strand has that lower / upper coordinate.

A feature shared by several predicted transcripts is counted once (with its highest
posterior). Scores outside [0, 1] are not probabilities: such a kind is reported as
unavailable rather than binned.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from genoseg.errors import GenosegError
from genoseg.eval.compare import Model, level_sets, within_regions

__all__ = [
    "Calibration",
    "CalibrationBin",
    "calibrate",
    "calibration_report",
    "collect_posteriors",
    "plot_reliability",
    "usable",
]

KINDS = ("exon", "intron", "boundary")


@dataclass
class CalibrationBin:
    """Predictions with posterior in [lo, hi) (the last bin includes 1.0)."""

    lo: float
    hi: float
    count: int
    mean_posterior: float | None
    observed: float | None  # fraction correct (observed precision)


@dataclass
class Calibration:
    """Reliability bins of one kind. ``ece`` = Σ_b (n_b / N)·|mean_posterior_b − observed_b|."""

    kind: str
    n: int
    bins: list[CalibrationBin] = field(default_factory=list)
    ece: float | None = None
    note: str | None = None  # why unavailable, if so
    unscored: int = 0  # distinct predicted items of this kind without a score (left out)


def calibrate(
    posteriors: Sequence[float], correct: Sequence[bool], *, n_bins: int = 10, kind: str = ""
) -> Calibration:
    """Bin ``posteriors`` (each in [0, 1]) into ``n_bins`` equal-width bins.

    Returns the per-bin count, mean posterior and observed fraction correct, and the
    expected calibration error (count-weighted mean absolute gap; None when N = 0).
    """
    if len(posteriors) != len(correct):
        raise ValueError("posteriors and correct must have the same length")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    sums = [0.0] * n_bins
    hits = [0] * n_bins
    counts = [0] * n_bins
    for p, c in zip(posteriors, correct, strict=True):
        if not (0.0 <= p <= 1.0) or math.isnan(p):
            raise ValueError(f"posterior {p} is outside [0, 1]")
        b = min(int(p * n_bins), n_bins - 1)
        sums[b] += p
        hits[b] += bool(c)
        counts[b] += 1
    n = len(posteriors)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        if counts[b]:
            mean_p = sums[b] / counts[b]
            obs = hits[b] / counts[b]
            ece += counts[b] / n * abs(mean_p - obs)
        else:
            mean_p = obs = None
        bins.append(CalibrationBin(b / n_bins, (b + 1) / n_bins, counts[b], mean_p, obs))
    return Calibration(kind, n, bins, ece if n else None)


def _containing_part(parts: tuple[tuple[int, int], ...], s: int, e: int) -> tuple[int, int] | None:
    for ps, pe in parts:
        if ps <= s and e <= pe:
            return (ps, pe)
    return None


def collect_posteriors(
    reference: list[Model],
    prediction: list[Model],
    mode: str,
    *,
    regions: dict[str, list[tuple[int, int]]] | None = None,
) -> dict[str, tuple[list[float], list[bool], int]]:
    """(posteriors, correct, unscored) per kind from the predicted models' line scores.

    ``unscored`` counts the distinct predicted items of the kind (exons, introns of the
    scored parts, part ends) for which no transcript gives a score; they are left out.
    With ``regions`` (seqid -> sorted, merged 0-based half-open intervals) only items
    inside a region count, on both sides.
    """
    ref = level_sets(reference, regions)
    ref_lo = {(seqid, strand, s) for seqid, strand, s, _ in ref["exon"]}
    ref_hi = {(seqid, strand, e) for seqid, strand, _, e in ref["exon"]}
    part_kind = "CDS" if mode == "CDS" else "exon"
    best: dict[str, dict[tuple, tuple[float, bool]]] = {k: {} for k in KINDS}
    seen: dict[str, set[tuple]] = {k: set() for k in KINDS}

    def put(kind: str, key: tuple, p: float | None, ok: bool) -> None:
        if p is None:
            return
        old = best[kind].get(key)
        if old is None or p > old[0]:
            best[kind][key] = (p, ok)

    for m in prediction:
        ivs = regions.get(m.seqid, []) if regions is not None else None

        def inside(s: int, e: int, ivs=ivs) -> bool:
            return ivs is None or within_regions(ivs, s, e)

        for s, e in m.parts:
            if inside(s, e):
                seen["exon"].add((m.seqid, m.strand, s, e))
                seen["boundary"].add(("lo", m.seqid, m.strand, s))
                seen["boundary"].add(("hi", m.seqid, m.strand, e))
        for s, e in m.introns:
            if inside(s, e):
                seen["intron"].add((m.seqid, m.strand, s, e))
        for f in m.transcript.scores:
            if f.kind == "intron":
                if (f.start, f.end) not in m.introns or not inside(f.start, f.end):
                    continue  # e.g. a UTR intron when scoring CDS
                key = (m.seqid, m.strand, f.start, f.end)
                put("intron", key, f.score, key in ref["intron"])
                continue
            if f.kind != part_kind:
                continue
            part = _containing_part(m.parts, f.start, f.end)
            if part is None or not inside(*part):
                continue
            key = (m.seqid, m.strand, *part)
            put("exon", key, f.score, key in ref["exon"])
            lo = (m.seqid, m.strand, part[0])
            hi = (m.seqid, m.strand, part[1])
            put("boundary", ("lo", *lo), f.start_posterior, lo in ref_lo)
            put("boundary", ("hi", *hi), f.end_posterior, hi in ref_hi)
    return {
        kind: (
            [p for p, _ in d.values()],
            [ok for _, ok in d.values()],
            len(seen[kind] - d.keys()),
        )
        for kind, d in best.items()
    }


def calibration_report(
    reference: list[Model],
    prediction: list[Model],
    mode: str,
    *,
    n_bins: int = 10,
    regions: dict[str, list[tuple[int, int]]] | None = None,
) -> dict[str, Calibration]:
    """One :class:`Calibration` per kind (exon, intron, boundary).

    ``regions``: only items inside them count (see :func:`collect_posteriors`);
    :meth:`genoseg.eval.EvalResult.calibration` passes the right models and regions.
    """
    out = {}
    for kind, (ps, oks, unscored) in collect_posteriors(
        reference, prediction, mode, regions=regions
    ).items():
        if not ps:
            out[kind] = Calibration(kind, 0, note="no posteriors in the prediction")
        elif any(not (0.0 <= p <= 1.0) for p in ps):
            out[kind] = Calibration(kind, len(ps), note="scores are outside [0, 1], not posteriors")
        else:
            out[kind] = calibrate(ps, oks, n_bins=n_bins, kind=kind)
        out[kind].unscored = unscored
    return out


def usable(calibs: dict[str, Calibration]) -> dict[str, Calibration]:
    """The kinds that have binned posteriors (what a reliability diagram can draw)."""
    return {k: c for k, c in calibs.items() if c.ece is not None}


def plot_reliability(calibs: dict[str, Calibration], path: str | os.PathLike, title: str) -> None:
    """Reliability diagram (observed vs mean posterior per bin, with counts) as a PNG.

    Written to a temporary file beside ``path`` and renamed on success.
    """
    plt = _pyplot()
    drawn = usable(calibs)
    if not drawn:
        raise GenosegError(
            f"{path}: no posteriors to draw a reliability diagram from (the prediction has no "
            "scores in [0, 1] on its exon/CDS/intron lines)"
        )
    fig, (ax, axn) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), height_ratios=[3, 1], sharex=True, constrained_layout=True
    )
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    colors = {"exon": "C0", "intron": "C1", "boundary": "C2"}
    for kind, c in drawn.items():
        pts = [(b.mean_posterior, b.observed) for b in c.bins if b.count]
        ax.plot(
            [p for p, _ in pts],
            [o for _, o in pts],
            marker="o",
            color=colors.get(kind),
            label=f"{kind} (n={c.n}, ECE={c.ece:.3f})",
        )
        centers = [(b.lo + b.hi) / 2 for b in c.bins]
        axn.plot(centers, [b.count for b in c.bins], marker=".", color=colors.get(kind))
    ax.set_ylabel("observed precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    axn.set_xlabel("predicted posterior")
    axn.set_ylabel("count")
    axn.set_yscale("symlog")
    axn.set_ylim(bottom=0)
    save_figure(fig, path, option="--reliability")
    plt.close(fig)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GenosegError(
            "drawing a PNG needs matplotlib, which is not installed (pip install 'genoseg[plot]')"
        ) from None
    return plt


def save_figure(fig, path: str | os.PathLike, option: str = "-o") -> None:
    """Save ``fig`` as PNG atomically (:func:`genoseg.io.atomic.atomic_path`: a temporary
    beside ``path`` renamed on success, removed on errors and signals)."""
    from genoseg.io.atomic import atomic_path

    path = os.fspath(path)
    try:  # atomic_path also refuses a missing folder, "-" and devices, naming the option
        with atomic_path(path, option=option) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    except OSError as exc:
        raise GenosegError(f"{path}: cannot write PNG: {exc.strerror or exc}") from None
