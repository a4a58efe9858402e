"""Accuracy of a model on the held-out A. thaliana chromosome 5 (athaliana_1pct Chr5), beside
AUGUSTUS 3.5.0's prediction of the same sequence (benchmarks/peers/), with `genoseg eval`
(CDS mode, all six levels) and the exon-posterior calibration (ECE).

    .venv/bin/python benchmarks/bench_accuracy.py [--model CKPT] [--bam] [--out build/accuracy]
        [--reliability docs/img]

Prints a markdown table (benchmarks/README.md, README.md's model section).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "athaliana_1pct"
GENOSEG = [sys.executable, "-m", "genoseg.cli"]
LEVELS = ("base", "exon", "intron", "intron_chain", "transcript", "gene")


def evaluate(pred: Path, ref: Path, png: Path | None = None) -> dict:
    """`genoseg eval` JSON of ``pred`` on Chr5 (and its reliability diagram at ``png``)."""
    extra = ["--reliability", str(png)] if png is not None else []
    r = subprocess.run(
        [*GENOSEG, "eval", str(ref), str(pred), "--seqids", "Chr5", "--skip-missing-parents",
         "--json", *extra],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return json.loads(r.stdout)


def row(name: str, res: dict) -> str:
    cells = []
    for lv in LEVELS:
        f1 = res["levels"][lv]["f1"]
        cells.append("-" if f1 is None else f"{100 * f1:.1f}")
    cal = res.get("calibration", {}).get("exon", {})
    ece = cal.get("ece")
    return f"| {name} | " + " | ".join(cells) + f" | {'-' if ece is None else f'{ece:.3f}'} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--bam", action="store_true", help="also run with the junction BAM")
    ap.add_argument("--out", default=str(REPO / "build" / "accuracy"))
    ap.add_argument("--reliability", default=None,
                    help="folder for reliability diagrams (reliability_<run>.png)")  # fmt: skip
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = SHARED / "annotation_with_rnaseq_splice.gff3"
    runs = [("genoseg", [])]
    if a.bam:
        runs.append(("genoseg + BAM", ["--bam", str(SHARED / "synthetic_junction_reads.bam")]))
    lines = ["| prediction | " + " | ".join(LEVELS) + " | exon ECE |",
             "|---" * (len(LEVELS) + 2) + "|"]  # fmt: skip
    for name, extra in runs:
        gff = out / f"{name.replace(' + ', '_').replace(' ', '_')}.gff3"
        cmd = [*GENOSEG, "predict", str(SHARED / "genome.fa"), "--region", "Chr5",
               "-o", str(gff), "-q", *extra]  # fmt: skip
        if a.model:
            cmd += ["--model", a.model]
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, cwd=REPO)
        el = time.monotonic() - t0
        png = None
        if a.reliability:
            Path(a.reliability).mkdir(parents=True, exist_ok=True)
            png = Path(a.reliability) / f"reliability_{gff.stem}.png"
        lines.append(row(f"{name} ({el:.0f} s)", evaluate(gff, ref, png)))
    aug = REPO / "benchmarks" / "peers" / "augustus_athaliana_chr5.gff3"
    lines.append(row("AUGUSTUS 3.5.0 (arabidopsis)", evaluate(aug, ref)))
    print("F1 (%) on athaliana_1pct Chr5, CDS mode (genoseg eval):\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
