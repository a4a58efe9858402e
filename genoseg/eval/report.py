"""Text and JSON renderings of an evaluation (accuracy levels and calibration)."""

from __future__ import annotations

import json
from dataclasses import asdict

from genoseg.eval.calibration import Calibration
from genoseg.eval.compare import LEVELS, EvalResult

__all__ = ["counts_text", "format_table", "left_out_text", "region_edges_text", "to_json"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def left_out_text(result: EvalResult) -> str | None:
    """What the seqid restriction left out, per side, or None when nothing was."""
    parts = []
    for side in ("reference", "prediction"):
        left = result.left_out.get(side) or {}
        if left:
            items = ", ".join(f"{sid} ({_plural(n, 'transcript')})" for sid, n in left.items())
            parts.append(f"{side} {items}")
    return "; ".join(parts) if parts else None


def region_edges_text(result: EvalResult) -> str | None:
    """Transcripts crossing a region edge, per side, or None without regions."""
    if result.region_edges is None:
        return None
    ref, pred = result.region_edges["reference"], result.region_edges["prediction"]
    return (
        f"reference {_plural(ref['transcripts'], 'transcript')} "
        f"({_plural(ref['genes'], 'gene')} left out), "
        f"prediction {_plural(pred['transcripts'], 'transcript')} "
        f"({_plural(pred['genes'], 'gene')} left out) cross a region edge: not scored at the "
        "intron_chain, transcript and gene levels (their bases, exons and introns inside "
        "the regions are)"
    )


def counts_text(result: EvalResult) -> str:
    """Scored transcripts and genes per side, in the units of the table's rows.

    The first number of each side is the transcript row's count: distinct part chains under
    gene rule ``any`` (with the number of transcripts before merging identical chains when
    it differs), every transcript under gene rule ``gt``.
    """
    out = []
    chain = "CDS" if result.mode == "CDS" else "exon"
    for side in ("reference", "prediction"):
        c = result.counts[side]
        if result.settings.get("gene_rule", "any") == "gt":
            text = f"{side} {_plural(c['transcripts'], 'transcript')}"
        else:
            text = f"{side} {_plural(c['distinct'], 'distinct transcript')}"
            if c["distinct"] != c["transcripts"]:
                text += f" ({c['transcripts']} before merging identical {chain} chains)"
        out.append(f"{text} in {_plural(c['genes'], 'gene')}")
    return "; ".join(out)


def format_table(
    result: EvalResult,
    calibration: dict[str, Calibration] | None = None,
    *,
    reference: str = "",
    prediction: str = "",
) -> str:
    """A fixed-width table: one row per level (percentages), then calibration bins."""
    s = result.settings
    lines = []
    if reference:
        lines.append(f"# reference:  {reference}")
    if prediction:
        lines.append(f"# prediction: {prediction}")
    regions = s.get("regions")
    region_text = "all" if not regions else f"{regions['count']} ({regions['bases']} bp)"
    if s.get("seqids"):
        seqid_text = ",".join(s["seqids"])
    elif s.get("all_seqids"):
        seqid_text = "all"
    else:
        seqid_text = "the reference's"
    isoform_text = "yes" if s.get("longest_isoform") else "no"
    lines.append(
        f"# mode: {result.mode}; longest isoform: {isoform_text}; seqids: {seqid_text}; "
        f"regions: {region_text}; gene rule: {s.get('gene_rule', 'any')}"
    )
    lines.append(f"# scored seqids: {','.join(result.scored_seqids) or 'none'}")
    left = left_out_text(result)
    if left and not s.get("seqids"):  # with --seqids, what is left out was asked for
        lines.append(f"# left out (not on a scored seqid): {left}")
    edges = region_edges_text(result)
    if edges:
        lines.append(f"# {edges}")
    lines.append(f"# scored: {counts_text(result)}")
    header = (
        f"{'level':<13}{'reference':>10}{'prediction':>11}{'match_ref':>10}{'match_pred':>11}"
        f"{'sens':>8}{'prec':>8}{'F1':>8}"
    )
    lines.append(header)
    for name in LEVELS:
        st = result.levels[name]
        lines.append(
            f"{name:<13}{st.reference:>10}{st.prediction:>11}{st.matched_reference:>10}"
            f"{st.matched_prediction:>11}{_pct(st.sensitivity):>8}{_pct(st.precision):>8}"
            f"{_pct(st.f1):>8}"
        )
    if calibration:
        lines.append("")
        lines.append("calibration: predictions binned by posterior (observed = fraction correct)")
        for kind, c in calibration.items():
            unscored = ""
            if c.unscored:
                unscored = f" ({_plural(c.unscored, kind)} without a score left out)"
            if c.ece is None:
                lines.append(f"{kind} posteriors: n={c.n}, {c.note or 'no data'}{unscored}")
                continue
            lines.append(f"{kind} posteriors: n={c.n}, ECE={c.ece:.4f}{unscored}")
            lines.append(f"  {'posterior':<11}{'n':>7}{'mean':>8}{'observed':>10}")
            for b in c.bins:
                if not b.count:
                    continue
                lines.append(
                    f"  {b.lo:.2f}-{b.hi:.2f}  {b.count:>7}{b.mean_posterior:>8.3f}"
                    f"{b.observed:>10.3f}"
                )
    return "\n".join(lines) + "\n"


def to_json(
    result: EvalResult,
    calibration: dict[str, Calibration] | None = None,
    *,
    reference: str = "",
    prediction: str = "",
    summaries: dict | None = None,
) -> str:
    """JSON document: inputs, settings, levels (fractions, not percent), calibration."""
    doc = {"reference": reference, "prediction": prediction, **result.to_dict()}
    if summaries:
        doc["inputs"] = summaries
    if calibration is not None:
        doc["calibration"] = {k: asdict(c) for k, c in calibration.items()}
    return json.dumps(doc, indent=2) + "\n"
