"""``genoseg prepare`` command line (light module: the library is imported inside the
command, see genoseg/cli.py)."""

from __future__ import annotations

import click

__all__ = ["prepare_command"]


@click.command("prepare")
@click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML config (configs/prepare.yaml); options below override it.",
)
@click.option("--fasta", type=click.Path(dir_okay=False), help="Genome FASTA (plain/bgzip).")
@click.option("--gff3", type=click.Path(dir_okay=False), help="Reference annotation GFF3/GTF.")
@click.option("--bam", type=click.Path(dir_okay=False), help="RNA-seq BAM/CRAM (indexed).")
@click.option("--grammar", type=click.Path(dir_okay=False), help="Grammar YAML.")
@click.option(
    "--region",
    "regions",
    multiple=True,
    help="Region chr or chr:start-end (1-based inclusive); repeatable. Default: all contigs.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output HDF5 file.")
def prepare_command(config, fasta, gff3, bam, grammar, regions, output):
    """Label a genome from its annotation and write training windows to HDF5."""
    from genoseg.data.prepare import load_prepare_config, prepare

    overrides = {
        "fasta": fasta, "gff3": gff3, "bam": bam, "grammar": grammar,
        "output": output, "regions": list(regions) or None,
    }  # fmt: skip
    prepare(load_prepare_config(config, overrides), config_path=config)
