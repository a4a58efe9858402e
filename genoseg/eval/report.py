"""Text and JSON renderings of an evaluation (accuracy levels and calibration)."""

from __future__ import annotations

import json
from dataclasses import asdict

from genoseg.eval.calibration import Calibration
from genoseg.eval.compare import LEVELS, EvalResult

__all__ = ["format_table", "to_json"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


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
    seqid_text = ",".join(s["seqids"]) if s.get("seqids") else "all"
    isoform_text = "yes" if s.get("longest_isoform") else "no"
    lines.append(
        f"# mode: {result.mode}; longest isoform: {isoform_text}; seqids: {seqid_text}; "
        f"regions: {region_text}"
    )
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
            if c.ece is None:
                lines.append(f"{kind} posteriors: n={c.n}, {c.note or 'no data'}")
                continue
            lines.append(f"{kind} posteriors: n={c.n}, ECE={c.ece:.4f}")
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
