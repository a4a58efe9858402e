"""Gold label paths of real annotations, built the way training builds them (tests only).

annotation (GFF3) -> genoseg.data.labels.label_contig (per-position labels, masked genes)
-> runs of equal labels = segments. The decode tests turn these paths back into genes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from genoseg.data.annotation import Annotation, read_annotation
from genoseg.data.fasta import Genome
from genoseg.data.labels import ContigLabels, label_contig, segments_from_labels
from genoseg.grammar import Grammar, load_grammar

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FA = REPO / "data_samples" / "athaliana_chr5_60k.fa"
SAMPLE_GFF = REPO / "data_samples" / "athaliana_chr5_60k.gff3"


@dataclass
class GoldGenome:
    grammar: Grammar
    genome: Genome
    annotation: Annotation
    labels: dict[str, ContigLabels]
    paths: dict[str, list[tuple[int, int, int]]]  # contig -> gold segments (masks skipped)

    def used(self) -> dict[str, str]:
        """gene ID -> the transcript ID labels.py chose, for every used gene."""
        return {
            st.gene_id: st.transcript
            for cl in self.labels.values()
            for st in cl.genes
            if st.status == "used"
        }


def gold_genome(fasta: str | Path, gff3: str | Path, *, missing_parents: str = "error"):
    grammar = load_grammar()
    genome = Genome.open(fasta)
    ann = read_annotation(gff3, missing_parents=missing_parents)
    labels, paths = {}, {}
    for contig in genome.contigs:
        codes, _ = genome.encode(contig)
        cl = label_contig(grammar, contig, codes, ann.genes.get(contig, []))
        labels[contig] = cl
        paths[contig] = segments_from_labels(cl.labels, cl.mask)
    return GoldGenome(grammar, genome, ann, labels, paths)


@lru_cache(maxsize=1)
def sample_gold() -> GoldGenome:
    """The data_samples A. thaliana Chr5 slice (19 genes, none masked)."""
    return gold_genome(SAMPLE_FA, SAMPLE_GFF)


def filtered_reference(gff3: str | Path, used: dict[str, str], out: Path) -> Path:
    """Write the lines of ``gff3`` that belong to the used genes' chosen transcripts (their
    gene line, the transcript line and its children) to ``out``: the reference that a
    path -> GFF3 round trip must reproduce exactly."""
    keep_tx = set(used.values())
    keep_genes = set(used)
    lines = ["##gff-version 3\n"]
    for raw in Path(gff3).read_text().splitlines(keepends=True):
        if raw.startswith("#") or not raw.strip():
            if raw.startswith("##sequence-region"):
                lines.append(raw)
            continue
        cols = raw.rstrip("\n").split("\t")
        attrs = dict(kv.split("=", 1) for kv in cols[8].split(";") if "=" in kv)
        parents = set(attrs.get("Parent", "").split(","))
        if (cols[2] == "gene" and attrs.get("ID") in keep_genes) or attrs.get("ID") in keep_tx:
            lines.append(raw)
        elif cols[2] != "gene" and parents & keep_tx:
            # drop other parents (TAIR10 CDS lines also name the protein feature)
            attrs["Parent"] = ",".join(sorted(parents & keep_tx))
            cols[8] = ";".join(f"{k}={v}" for k, v in attrs.items())
            lines.append("\t".join(cols) + "\n")
    out.write_text("".join(lines))
    return out
