"""Accuracy of a model on a held-out part of a shared genome, beside AUGUSTUS 3.5.0 with its
bundled model for the species on the same sequence, scored by `genoseg eval` (CDS mode, all
six levels) with the exon-posterior calibration (ECE).

    .venv/bin/python benchmarks/bench_accuracy.py [--species athaliana] [--model CKPT] [--bam]
        [--strand-average model|on|off] [--out build/accuracy] [--reliability docs/img]

``--species athaliana`` (the default) is the test set of the shipped model: athaliana_1pct
Chr5. The other species are the generalisation runs of docs/accuracy.md, each trained with
configs/train_<species>.yaml on the rest of its data: celegans_1pct V, dmelanogaster_1pct 2L,
the spombe_kog loci of chromosome III. AUGUSTUS's prediction is read from benchmarks/peers/
when stored there, else run (``apt-get install augustus augustus-data``) and stored.

Prints a markdown table (benchmarks/README.md, docs/accuracy.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from genoseg.data.fasta import Genome
from genoseg.data.regions import select_regions

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PEERS = REPO / "benchmarks" / "peers"
GENOSEG = [sys.executable, "-m", "genoseg.cli"]
LEVELS = ("base", "exon", "intron", "intron_chain", "transcript", "gene")


@dataclass(frozen=True)
class Target:
    """A held-out test part: ``test`` holds contig names or shell patterns of them."""

    folder: str
    annotation: str
    test: tuple[str, ...]
    augustus: str
    peer: str

    def contigs(self) -> list[str]:
        fasta = DATA / self.folder / "genome.fa"
        names = Genome.open(fasta).contigs
        return [r.contig for r in select_regions(list(self.test), None, names, str(fasta))]


TARGETS = {
    "athaliana": Target("athaliana_1pct", "annotation_with_rnaseq_splice.gff3", ("Chr5",),
                        "arabidopsis", "augustus_athaliana_chr5.gff3"),
    "celegans": Target("celegans_1pct", "annotation_with_rnaseq.gff3", ("V",),
                       "caenorhabditis", "augustus_celegans_V.gff3"),
    "dmelanogaster": Target("dmelanogaster_1pct", "annotation_with_rnaseq_splice.gff3", ("2L",),
                            "fly", "augustus_dmelanogaster_2L.gff3"),
    "spombe": Target("spombe_kog", "annotation.gff3", ("KOG*_SPC*",),
                     "schizosaccharomyces_pombe", "augustus_spombe_kog_chrIII.gff3"),
}  # fmt: skip


def test_genome(t: Target, contigs: list[str], out: Path) -> Path:
    """FASTA of the test contigs only (what AUGUSTUS is run on)."""
    genome = Genome.open(DATA / t.folder / "genome.fa")
    path = out / f"test_{t.folder}.fa"
    with open(path, "w") as fh:
        for name in contigs:
            seq = genome.fetch(name, 0, genome.length(name))
            fh.write(
                f">{name}\n" + "\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + "\n"
            )
    return path


def augustus(t: Target, contigs: list[str], out: Path) -> Path:
    """AUGUSTUS 3.5.0's GFF3 of the test contigs (stored in benchmarks/peers/)."""
    peer = PEERS / t.peer
    if peer.exists():
        return peer
    if shutil.which("augustus") is None:
        raise SystemExit(f"{peer} is absent and augustus is not installed "
                         "(apt-get install augustus augustus-data)")  # fmt: skip
    genome = test_genome(t, contigs, out)
    res = subprocess.run(["augustus", f"--species={t.augustus}", "--gff3=on", str(genome)],
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"augustus failed: {res.stderr[-2000:]}")
    peer.write_text(res.stdout)
    return peer


def evaluate(pred: Path, ref: Path, seqids: list[str], png: Path | None = None) -> dict:
    """`genoseg eval` JSON of ``pred`` on ``seqids`` (and its reliability diagram at ``png``)."""
    extra = ["--reliability", str(png)] if png is not None else []
    r = subprocess.run(
        [*GENOSEG, "eval", str(ref), str(pred), "--seqids", ",".join(seqids),
         "--skip-missing-parents", "--json", *extra],
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
    ap.add_argument("--species", choices=sorted(TARGETS), default="athaliana")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--bam", action="store_true", help="also run with the junction BAM")
    ap.add_argument(
        "--strand-average",
        choices=("model", "on", "off"),
        default="model",
        help="both strands averaged: the model's setting (default), on or off",
    )
    ap.add_argument("--out", default=str(REPO / "build" / "accuracy"))
    ap.add_argument("--reliability", default=None,
                    help="folder for reliability diagrams (reliability_<run>.png)")  # fmt: skip
    a = ap.parse_args()
    t = TARGETS[a.species]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = DATA / t.folder / t.annotation
    contigs = t.contigs()
    runs = [("genoseg", [])]
    if a.bam:
        runs.append(
            ("genoseg + BAM", ["--bam", str(DATA / t.folder / "synthetic_junction_reads.bam")])
        )
    lines = ["| prediction | " + " | ".join(LEVELS) + " | exon ECE |",
             "|---" * (len(LEVELS) + 2) + "|"]  # fmt: skip
    for name, extra in runs:
        stem = name.replace(" + ", "_").replace(" ", "_")
        gff = out / (stem + ("" if a.species == "athaliana" else f"_{a.species}") + ".gff3")
        where = [a for c in contigs for a in ("--region", c)]
        cmd = [*GENOSEG, "predict", str(DATA / t.folder / "genome.fa"), *where,
               "-o", str(gff), "-q", *extra]  # fmt: skip
        if a.model:
            cmd += ["--model", a.model]
        if a.strand_average != "model":
            cmd.append("--strand-average" if a.strand_average == "on" else "--no-strand-average")
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, cwd=REPO)
        el = time.monotonic() - t0
        png = None
        if a.reliability:
            Path(a.reliability).mkdir(parents=True, exist_ok=True)
            png = Path(a.reliability) / f"reliability_{gff.stem}.png"
        lines.append(row(f"{name} ({el:.0f} s)", evaluate(gff, ref, contigs, png)))
    aug = augustus(t, contigs, out)
    lines.append(row(f"AUGUSTUS 3.5.0 ({t.augustus})", evaluate(aug, ref, contigs)))
    what = ", ".join(t.test)
    print(f"F1 (%) on {t.folder} {what} ({len(contigs)} contigs), CDS mode (genoseg eval):\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
