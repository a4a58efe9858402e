"""Batch and workflow use of genoseg: ``genoseg merge`` (the gather step of a sharded
``genoseg predict``) and ``genoseg index``; the Snakemake workflow and SLURM scripts that
drive them live in ``workflows/`` (see workflows/README.md)."""
