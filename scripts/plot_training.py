"""Learning curves of one or more `genoseg train` runs (their metrics.csv) as a PNG.

    .venv/bin/python scripts/plot_training.py OUT.png RUN_DIR[=label] [RUN_DIR[=label] ...]

Top: training NLL per kb (running mean over 10 steps) and validation NLL per kb; bottom:
validation exon and gene F1 (Viterbi on held-out windows).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    out, runs = Path(argv[0]), argv[1:]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for spec in runs:
        path, _, label = spec.partition("=")
        rows = read(Path(path))
        label = label or Path(path).name
        steps = [int(r["step"]) for r in rows]
        nll = [float(r["train_nll_per_kb"]) for r in rows]
        smooth = [sum(nll[max(0, i - 9) : i + 1]) / len(nll[max(0, i - 9) : i + 1])
                  for i in range(len(nll))]  # fmt: skip
        (line,) = ax1.plot(steps, smooth, lw=1, label=f"{label} train")
        v = [(int(r["step"]), r) for r in rows if r.get("exon_f1")]
        if v:
            vs = [s for s, _ in v]
            ax1.plot(vs, [float(r["valid_nll_per_kb"]) for _, r in v], "o--",
                     color=line.get_color(), label=f"{label} valid")  # fmt: skip
            ax2.plot(vs, [100 * float(r["exon_f1"]) for _, r in v], "o-",
                     color=line.get_color(), label=f"{label} exon F1")  # fmt: skip
            ax2.plot(vs, [100 * float(r["gene_f1"]) for _, r in v], "s:",
                     color=line.get_color(), label=f"{label} gene F1")  # fmt: skip
    ax1.set_ylabel("NLL (nats / kb)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=7)
    ax2.set_ylabel("validation F1 (%)")
    ax2.set_xlabel("step")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
