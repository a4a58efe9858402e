"""Regenerate data_samples/ from ../shared/data (see PROVENANCE.md).

Cuts A. thaliana (TAIR10) Chr5 1..60170 (1-based inclusive; the region ends between genes
AT5G01170 and AT5G01175) out of the athaliana_1pct slice:

* athaliana_chr5_60k.fa (+ .fai): the sequence, 50 bp lines as in the source;
* athaliana_chr5_60k.gff3: every gene lying wholly inside the region with all its
  descendants (mRNA, exon, CDS, UTRs, protein), and the RNASeq_splice introns inside it,
  in source order, under ``##gff-version 3`` and ``##sequence-region`` headers;
* athaliana_chr5_60k.bam (+ .bai): the split reads wholly inside the region.

Coordinates are unchanged (the slice starts at base 1 of Chr5). Run:
``.venv/bin/python data_samples/make_samples.py [SOURCE_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pysam

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1] / "shared" / "data" / "athaliana_1pct"
CONTIG, END = "Chr5", 60170  # [0, END) 0-based half-open = Chr5:1-60170
STEM = "athaliana_chr5_60k"


def _attrs(col9: str) -> dict[str, str]:
    out = {}
    for item in col9.strip().split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
    return out


def cut_fasta(src: Path, dst: Path) -> None:
    with pysam.FastaFile(str(src)) as fa:
        seq = fa.fetch(CONTIG, 0, END)
    assert len(seq) == END
    with open(dst, "w") as out:
        out.write(f">{CONTIG}\n")
        for i in range(0, END, 50):
            out.write(seq[i : i + 50] + "\n")
    pysam.faidx(str(dst))


def cut_gff3(src: Path, dst: Path) -> tuple[int, int]:
    rows = []
    with open(src) as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            f = line.rstrip("\n").split("\t")
            if len(f) == 9 and f[0] == CONTIG:
                rows.append(f)
    # root gene of every feature, through Parent / Derives_from links
    parent: dict[str, str] = {}
    for f in rows:
        a = _attrs(f[8])
        link = a.get("Parent") or a.get("Derives_from")
        if "ID" in a and link:
            parent[a["ID"]] = link.split(",")[0]

    def root(fid: str) -> str:
        seen = set()
        while fid in parent and fid not in seen:
            seen.add(fid)
            fid = parent[fid]
        return fid

    kept_genes = {
        _attrs(f[8])["ID"]
        for f in rows
        if f[2] in ("gene", "pseudogene", "transposable_element_gene") and int(f[4]) <= END
    }
    out_rows = []
    n_introns = 0
    for f in rows:
        a = _attrs(f[8])
        if f[1] == "RNASeq_splice":
            if int(f[4]) <= END:
                out_rows.append(f)
                n_introns += 1
            continue
        fid = a.get("ID") or (a.get("Parent") or a.get("Derives_from") or "").split(",")[0]
        if root(fid) in kept_genes:
            out_rows.append(f)
    with open(dst, "w") as out:
        out.write(f"##gff-version 3\n##sequence-region {CONTIG} 1 {END}\n")
        for f in out_rows:
            out.write("\t".join(f) + "\n")
    return len(kept_genes), n_introns


def cut_bam(src: Path, dst: Path) -> int:
    n = 0
    with pysam.AlignmentFile(str(src)) as bam:
        header = bam.header.to_dict()
        header["SQ"] = [{"SN": CONTIG, "LN": END}]
        with pysam.AlignmentFile(str(dst), "wb", header=header) as out:
            for read in bam.fetch(CONTIG, 0, END):
                if read.reference_end is None or read.reference_end > END:
                    continue
                a = pysam.AlignedSegment.from_dict(read.to_dict(), out.header)
                out.write(a)
                n += 1
    pysam.index(str(dst))
    return n


def main(argv: list[str]) -> None:
    src = Path(argv[0]) if argv else DEFAULT_SOURCE
    cut_fasta(src / "genome.fa", HERE / f"{STEM}.fa")
    genes, introns = cut_gff3(src / "annotation_with_rnaseq_splice.gff3", HERE / f"{STEM}.gff3")
    reads = cut_bam(src / "synthetic_junction_reads.bam", HERE / f"{STEM}.bam")
    print(
        f"{STEM}: {END} bp, {genes} genes, {introns} RNASeq_splice introns, {reads} reads",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
