"""``genoseg predict`` command (light module: heavy imports happen inside the command)."""

from __future__ import annotations

import sys

import click


@click.command("predict")
@click.argument("genome", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, help="GFF3 of the gene models ('-' = stdout).")
@click.option("--bam", default=None, help="RNA-seq alignments (indexed BAM/CRAM) as evidence.")
@click.option(
    "--model",
    "model_path",
    default=None,
    help="Model checkpoint, or a shipped model's name: default (used without --model), "
    "evidence (used with --bam), accurate (an ensemble: more accurate, slower).",
)
@click.option(
    "-c",
    "--config",
    "config",
    default=None,
    type=click.Path(dir_okay=False),
    help="Predict config YAML (configs/predict.yaml documents every key).",
)
@click.option(
    "--region",
    "regions",
    multiple=True,
    help="Decode only chr:start-end (1-based inclusive; repeatable).",
)
@click.option("--regions-file", default=None, help="BED file of regions to decode.")
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Decode shard I of N (contiguous, bp-balanced); merge with genoseg merge.",
)
@click.option("--bed", default=None, help="BED12 of the transcripts.")
@click.option("--segments-bed", default=None, help="BED of every segment of the decoded path.")
@click.option(
    "--tracks",
    default=None,
    metavar="PREFIX",
    help="Posterior tracks, one file per track: PREFIX.<track>.bedgraph (or .bw).",
)
@click.option(
    "--tracks-format",
    type=click.Choice(["bedgraph", "bigwig"]),
    default="bedgraph",
    show_default=True,
    help="bigwig needs pyBigWig (pip install genoseg[bigwig]).",
)
@click.option("--cds-fasta", default=None, help="CDS sequences (FASTA).")
@click.option("--protein-fasta", default=None, help="Protein sequences (FASTA).")
@click.option("--no-posteriors", is_flag=True, help="Viterbi gene models only (much faster).")
@click.option(
    "--strand-average/--no-strand-average", default=None,
    help="Average the network over both strands (more accurate; twice the encoder's work). "
    "Default: the model's setting. A model that reads both strands by itself (the shipped "
    "default: RC-equivariant) ignores it.",
)  # fmt: skip
@click.option("--window", type=int, default=None, help="Chunk length in bases (default 100000).")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (default auto).")
@click.option("--threads", type=int, default=None, help="CPU threads (default: torch's).")
@click.option(
    "--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default=None,
    help="The network's arithmetic. auto (default): bfloat16 on GPUs and on CPUs with bf16 "
    "instructions (about 1.7x faster encoder), float32 elsewhere.",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def predict_command(genome, output, bam, model_path, config, regions, regions_file, shard, bed,
                    segments_bed, tracks, tracks_format, cds_fasta, protein_fasta, no_posteriors,
                    strand_average, window, device, threads, precision, quiet):  # fmt: skip
    """Annotate genes in GENOME (FASTA) with exact posteriors: GFF3, BED, tracks."""
    from genoseg.predict.run import PredictOptions, run_predict

    opts = PredictOptions(
        genome=genome, output=output, bam=bam, model=model_path, config=config,
        regions=list(regions), regions_file=regions_file, shard=shard, bed=bed,
        segments_bed=segments_bed, tracks=tracks, tracks_format=tracks_format,
        cds_fasta=cds_fasta, protein_fasta=protein_fasta, posteriors=not no_posteriors,
        strand_average=strand_average, window=window, device=device, threads=threads,
        precision=precision, quiet=quiet,
        command="genoseg " + " ".join(sys.argv[1:]),
    )  # fmt: skip
    run_predict(opts)
