"""``genoseg merge`` and ``genoseg index`` (light module: the work is imported inside)."""

from __future__ import annotations

import shlex
import sys

import click


@click.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    help="Merged GFF3 (- = stdout).",
)
@click.option("--bed", "bed", default=None, help="Merged BED12 of the BED12 inputs.")
@click.option(
    "--segments-bed", "segments", default=None, help="Merged segment BED of the segment inputs."
)
@click.option(
    "--tracks",
    "tracks",
    default=None,
    metavar="PREFIX",
    help="Merged bedGraph tracks: PREFIX.<track>.bedgraph, one per track name of the inputs.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def merge_command(inputs, output, bed, segments, tracks, quiet):
    """Merge the outputs of genoseg predict --shard i/n into one GFF3 (BED, tracks).

    INPUTS are the shard files, any order, recognised by content: GFF3 (required, one per
    shard), BED12 (.bed), segment BED and bedGraph tracks, e.g.

        genoseg merge shards/*.gff3 shards/*.bed -o genes.gff3 --bed genes.bed

    Refuses shards of different runs (genome, model, shard count, --no-posteriors, --bam)
    and names missing shards. Every gene is written once, sorted by contig (FASTA order)
    and start; nothing is written on an error.
    """
    from genoseg.workflow.merge import merge_outputs

    merge_outputs(
        inputs,
        output,
        bed_out=bed,
        segments_out=segments,
        tracks_prefix=tracks,
        command=shlex.join(
            ["genoseg", "merge", *inputs, "-o", output]
            + [
                x
                for opt, v in (("--bed", bed), ("--segments-bed", segments), ("--tracks", tracks))
                if v is not None
                for x in (opt, v)
            ]
        ),  # fmt: skip
        log=not quiet,
    )


@click.command("index")
@click.argument("fasta", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    default="-",
    show_default=True,
    help="Contig table (TSV: name, length; first line '# genome <sha256>').",
)
def index_command(fasta, output):
    """Validate and index a FASTA once (before many predict jobs); list its contigs.

    The .fai (and .gzi for bgzip) goes beside the FASTA, or into the cache directory
    ($GENOSEG_CACHE) when that folder is read-only: the same index genoseg predict uses.
    The table's '# genome' digest is the 'genome' of predict's genoseg-run GFF3 line.
    """
    from genoseg.data.fasta import Genome
    from genoseg.io.atomic import atomic_output
    from genoseg.workflow.merge import genome_digest

    genome = Genome.open(fasta)
    inputs = {"FASTA": fasta, "FASTA index": genome.fai, "bgzip index": genome.gzi}
    with atomic_output(output, inputs=inputs) as fh:
        fh.write(f"# genome {genome_digest(genome.contigs)}\n")
        for name, length in genome.contigs.items():
            fh.write(f"{name}\t{length}\n")
    print(
        f"genoseg index: {fasta}: {len(genome.contigs)} contigs, {genome.total_length:,} bp "
        f"(index {genome.fai})",
        file=sys.stderr,
    )
