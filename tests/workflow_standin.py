"""A stand-in for ``genoseg predict`` in the workflow tests (tests only).

It honours the predict contract the workflow and ``genoseg merge`` rely on -- the same
options, ``--shard i/n`` cut by :func:`genoseg.data.regions.shard` (the genome laid end to
end, shard i keeps the genes and segments whose 0-based start lies in its range and the
track bases of its range), the GFF3 header with ``##sequence-region`` lines and the
``# genoseg-run`` line, atomic writers -- but its "decoded path" is the gold path of the
annotation beside the FASTA (``X.fa`` -> ``X.gff3``) with deterministic posteriors, so the
workflow's scatter/gather is tested on its own, in seconds, whatever the model does.

Every call appends its arguments (one line) to ``$GENOSEG_STANDIN_LOG`` when set, so a
test can count which shards ran.

    python -m tests.workflow_standin GENOME.fa -o OUT.gff3 [--shard i/n] [--bed B]
        [--segments-bed S] [--tracks PREFIX] [--no-posteriors] [--model M] [--bam B]
        [--threads N] [--device D]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from genoseg.data.regions import parse_shard, shard
from genoseg.decode.genes import Segment, genes_from_path
from genoseg.io.bed import write_bed12, write_segments_bed
from genoseg.io.bedgraph import BedGraphWriter, track_file_name
from genoseg.io.gff3 import write_gff3
from genoseg.workflow.merge import genome_digest, run_comment
from tests.gold_paths import gold_genome

MODEL_BYTES = b"genoseg workflow stand-in model"


def _posterior(*key: int) -> float:
    """A deterministic posterior in [0.5, 1) of a segment (same in every run)."""
    h = hashlib.sha256(repr(key).encode()).digest()
    return round(0.5 + int.from_bytes(h[:4], "little") / 2**33, 4)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="genoseg predict (stand-in)")
    ap.add_argument("genome")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--shard", default="1/1")
    ap.add_argument("--bed")
    ap.add_argument("--segments-bed")
    ap.add_argument("--tracks")
    ap.add_argument("--no-posteriors", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--bam")
    ap.add_argument("--threads")
    ap.add_argument("--device")
    args = ap.parse_args(argv)
    if os.environ.get("GENOSEG_STANDIN_LOG"):
        with open(os.environ["GENOSEG_STANDIN_LOG"], "a") as fh:
            fh.write(" ".join(["predict", *argv]) + "\n")
    i, n = parse_shard(args.shard)
    fasta = Path(args.genome)
    gold = gold_genome(fasta, fasta.with_suffix(".gff3"))
    contigs = dict(gold.genome.contigs)
    pieces = shard(contigs, i, n)
    post = not args.no_posteriors

    def inside(contig: str, pos: int) -> bool:
        return any(r.contig == contig and r.start <= pos < r.end for r in pieces)

    genes, segments, coding = [], {}, {}
    for contig, path in gold.paths.items():
        segs = [
            Segment(s, e, c, *((_posterior(s, e, c, k) for k in range(3)) if post else ()))
            for s, e, c in path
        ]
        for g in genes_from_path(gold.grammar, contig, segs):
            if inside(contig, g.start):
                g.transcripts[0].posterior = _posterior(g.start, g.end) if post else None
                genes.append(g)
        segments[contig] = [s for s in segs if inside(contig, s.start)]
        track = np.zeros(contigs[contig])
        for s in segs:
            if gold.grammar.labels[s.label].is_exon:
                track[s.start : s.end] = s.posterior if post else 1.0
        coding[contig] = track
    model = Path(args.model).read_bytes() if args.model else MODEL_BYTES
    run = run_comment(
        genome_digest(contigs),
        hashlib.sha256(model).hexdigest(),
        (i, n),
        posteriors=post,
        bam=args.bam is not None,
    )
    inputs = {"GENOME": str(fasta)}
    if args.tracks:
        with BedGraphWriter(track_file_name(args.tracks, "coding+"), "coding+", inputs=inputs) as w:
            for r in pieces:
                w.add(r.contig, r.start, coding[r.contig][r.start : r.end])
    if args.segments_bed:
        write_segments_bed(args.segments_bed, gold.grammar, list(contigs), segments, inputs=inputs)
    if args.bed:
        write_bed12(args.bed, list(contigs), genes, inputs=inputs)
    write_gff3(
        args.output,
        contigs,
        genes,
        model="stand-in",
        command="genoseg predict " + " ".join(argv),
        comments=[run],
        inputs=inputs,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
