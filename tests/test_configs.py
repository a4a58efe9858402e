"""The shipped recipes in configs/: every config loads against its schema, every training set
is built by a prepare config in configs/data/, and no recipe ever sees the test sets
(A. thaliana chromosome 5; the held-out part of each generalisation species)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genoseg.config import load_config
from genoseg.data.fasta import Genome
from genoseg.data.prepare import PrepareConfig
from genoseg.data.regions import select_regions
from genoseg.train.config import TrainConfig
from tests.shared_data import shared

ROOT = Path(__file__).resolve().parents[1]
PREPARE = sorted((ROOT / "configs" / "data").glob("prepare_*.yaml"))
TRAIN = sorted((ROOT / "configs").glob("train*.yaml"))
# test contigs per shared folder (bench_accuracy.py scores these): never trained on
HELD_OUT = {
    "athaliana_1pct": {"Chr5"},
    "celegans_1pct": {"V"},
    "dmelanogaster_1pct": {"2L"},
}


def _prepared() -> dict[Path, PrepareConfig]:
    return {c.output.resolve(): c for c in (load_config(PrepareConfig, p) for p in PREPARE)}


@pytest.mark.parametrize("path", PREPARE, ids=lambda p: p.stem)
def test_prepare_configs_select_existing_regions(path):
    cfg = load_config(PrepareConfig, path)
    folder = cfg.fasta.parent.name
    fasta = shared(folder, cfg.fasta.name)
    assert shared(folder, cfg.gff3.name).is_file()
    contigs = Genome.open(fasta).contigs
    regions = select_regions(cfg.regions, cfg.exclude, contigs, str(fasta))
    assert regions
    assert not {r.contig for r in regions} & HELD_OUT.get(folder, set())
    if folder == "spombe_kog":  # chromosome III loci are the test part
        assert not [r for r in regions if r.contig.split("_", 1)[1].startswith("SPC")]


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.stem)
def test_train_recipes_use_prepared_sets_only(path):
    cfg = load_config(TrainConfig, path)
    prepared = _prepared()
    sources = [*cfg.data.train, *cfg.data.valid]
    assert cfg.data.train and cfg.data.valid
    for s in sources:
        assert Path(s.path).resolve() in prepared, f"{path.name}: {s.path} has no prepare config"
    train_sets = {prepared[Path(s.path).resolve()].output for s in cfg.data.train}
    valid_sets = {prepared[Path(s.path).resolve()].output for s in cfg.data.valid}
    assert not train_sets & valid_sets


def test_celegans_small_gene_loci_inside_the_test_slice_are_excluded():
    """celegans_smallgenes loci are named by WormBase coordinates: those overlapping the
    held-out slice (celegans_1pct V, the first 209,242 bp of V) must be excluded."""
    cfg = load_config(PrepareConfig, ROOT / "configs/data/prepare_celegans_smallgenes.yaml")
    fasta = shared("celegans_smallgenes", "genome.fa")
    held = Genome.open(shared("celegans_1pct", "genome.fa")).contigs["V"]
    inside = []
    for line in fasta.read_text().splitlines():
        if line.startswith(">"):
            name, where = line[1:].split()[:2]
            chrom, span = where.split(":")
            if chrom == "V" and int(span.split("-")[0]) <= held:
                inside.append(name)
    assert inside and set(inside) <= set(cfg.exclude or [])
