"""genoseg.data.regions: region strings, BED region files, shard plans."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genoseg.data.fasta import Genome
from genoseg.data.regions import (
    Region,
    merge_regions,
    parse_region,
    parse_shard,
    read_bed_regions,
    shard,
    shard_plan,
    whole_genome,
)
from genoseg.errors import GenosegError
from tests.shared_data import shared

REPO = Path(__file__).resolve().parents[1]
CONTIGS = {"Chr1": 304276, "Chr2": 196982, "HLA-A*01:01:01:01": 3503, "chrUn:KI270302v1": 2274}


# -- region strings -------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Chr1:1,000-2,000", Region("Chr1", 999, 2000)),
        ("Chr1:1-1", Region("Chr1", 0, 1)),
        (" Chr2:5-10 ", Region("Chr2", 4, 10)),
        ("Chr2", Region("Chr2", 0, 196982)),
        ("Chr2:196,000-", Region("Chr2", 195999, 196982)),
        ("HLA-A*01:01:01:01", Region("HLA-A*01:01:01:01", 0, 3503)),
        ("HLA-A*01:01:01:01:100-200", Region("HLA-A*01:01:01:01", 99, 200)),
        ("chrUn:KI270302v1:1-2274", Region("chrUn:KI270302v1", 0, 2274)),
    ],
)
def test_parse_region(text: str, expected: Region) -> None:
    assert parse_region(text, CONTIGS) == expected


def test_region_string_round_trip() -> None:
    r = Region("chrUn:KI270302v1", 10, 20)
    assert str(r) == "chrUn:KI270302v1:11-20"
    assert parse_region(str(r), CONTIGS) == r
    assert len(r) == r.length == 10


def test_longest_contig_name_wins() -> None:
    contigs = {"a": 100, "a:b": 50}
    assert parse_region("a:b:1-5", contigs) == Region("a:b", 0, 5)
    assert parse_region("a:1-5", contigs) == Region("a", 0, 5)
    # a contig literally named like a region is taken as that contig
    assert parse_region("a:1-5", {"a": 100, "a:1-5": 7}) == Region("a:1-5", 0, 7)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("chr1:1-10", r"contig 'chr1' is not in the genome .*did you mean 'Chr1'"),
        ("1:1-10", r"contig '1' is not in the genome .*did you mean 'Chr1'"),
        ("Chr9:1-10", r"contig 'Chr9' is not in the genome \(it has 4: Chr1, Chr2"),
        ("Chr9", r"contig 'Chr9' is not in the genome"),
        ("Chr1:0-10", r"need 1 <= start <= end"),
        ("Chr1:20-10", r"need 1 <= start <= end"),
        ("Chr1:5", r"expected Chr1:START-END"),
        ("Chr1:1-304277", r"end 304277 is beyond contig 'Chr1' of length 304276"),
        ("", r"empty region"),
    ],
)
def test_parse_region_errors(text: str, pattern: str) -> None:
    with pytest.raises(GenosegError, match=pattern):
        parse_region(text, CONTIGS)


# -- BED region files -----------------------------------------------------------------
def test_read_bed_regions(tmp_path: Path) -> None:
    bed = tmp_path / "r.bed"
    bed.write_text(
        "# comment\ntrack name=x\nbrowser position Chr1:1-100\n\n"
        "Chr1\t0\t100\tname\t0\t+\nChr2 10 20\nchrUn:KI270302v1\t5\t2274\n"
    )
    assert read_bed_regions(bed, CONTIGS) == [
        Region("Chr1", 0, 100),
        Region("Chr2", 10, 20),
        Region("chrUn:KI270302v1", 5, 2274),
    ]
    gz = tmp_path / "r.bed.gz"
    gz.write_bytes(gzip.compress(bed.read_bytes()))
    assert read_bed_regions(gz, CONTIGS) == read_bed_regions(bed, CONTIGS)


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("Chr1\t100", r"r\.bed:2: expected at least 3 columns"),
        ("Chr1\tx\t100", r"r\.bed:2: start and end must be integers"),
        ("chr1\t0\t100", r"r\.bed:2: contig 'chr1' is not in the genome.*'Chr1'"),
        ("Chr1\t100\t100", r"r\.bed:2: need 0 <= start < end"),
        ("Chr1\t-1\t100", r"r\.bed:2: need 0 <= start < end"),
        ("Chr1\t0\t304277", r"r\.bed:2: end 304277 is beyond contig 'Chr1' of length 304276"),
    ],
)
def test_bad_bed(tmp_path: Path, line: str, pattern: str) -> None:
    bed = tmp_path / "r.bed"
    bed.write_text("Chr2\t0\t10\n" + line + "\n")
    with pytest.raises(GenosegError, match=pattern):
        read_bed_regions(bed, CONTIGS)


def test_empty_or_missing_bed(tmp_path: Path) -> None:
    bed = tmp_path / "e.bed"
    bed.write_text("# nothing\n")
    with pytest.raises(GenosegError, match=r"e\.bed: BED file has no regions"):
        read_bed_regions(bed, CONTIGS)
    with pytest.raises(GenosegError, match=r"missing\.bed: cannot read BED file"):
        read_bed_regions(tmp_path / "missing.bed", CONTIGS)


def test_merge_regions_genome_order() -> None:
    regs = [Region("Chr2", 5, 10), Region("Chr1", 50, 60), Region("Chr1", 0, 10)]
    regs += [Region("Chr1", 10, 20), Region("Chr1", 55, 70), Region("Chr2", 0, 3)]
    assert merge_regions(regs, CONTIGS) == [
        Region("Chr1", 0, 20),
        Region("Chr1", 50, 70),
        Region("Chr2", 0, 3),
        Region("Chr2", 5, 10),
    ]


# -- shards ---------------------------------------------------------------------------
def test_parse_shard() -> None:
    assert parse_shard("3/10") == (3, 10)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ["0/3", "4/3", "3", "a/b", "1/0", "-1/3"]:
        with pytest.raises(GenosegError, match=rf"--shard '{bad}'"):
            parse_shard(bad)


def covered(plan: list[list[Region]]) -> list[tuple[str, int, int]]:
    """Pieces of a plan in order, adjacent pieces of a contig merged."""
    out: list[tuple[str, int, int]] = []
    for pieces in plan:
        for r in pieces:
            if out and out[-1][0] == r.contig and out[-1][2] == r.start:
                out[-1] = (r.contig, out[-1][1], r.end)
            else:
                out.append((r.contig, r.start, r.end))
    return out


genomes = st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=12).map(
    lambda lengths: {f"c{i}": n for i, n in enumerate(lengths)}
)


@settings(max_examples=300, deadline=None)
@given(
    contigs=genomes,
    n=st.integers(min_value=1, max_value=40),
    max_piece=st.one_of(st.none(), st.integers(min_value=1, max_value=3000)),
    snap=st.sampled_from([0.0, 0.05, 0.2]),
)
def test_shard_plan_properties(contigs, n, max_piece, snap) -> None:
    plan = shard_plan(contigs, n, max_piece=max_piece, snap=snap)
    assert len(plan) == n
    # every base exactly once, pieces in genome order
    assert covered(plan) == [(c, 0, length) for c, length in contigs.items()]
    total = sum(contigs.values())
    tol = int(snap * total / n) if total >= n else 0
    sizes = [sum(r.length for r in pieces) for pieces in plan]
    assert sum(sizes) == total
    assert max(sizes) <= -(-total // n) + 2 * tol
    if snap == 0.0:
        assert max(sizes) - min(sizes) <= 1
    if max_piece is not None:
        assert all(r.length <= max_piece for pieces in plan for r in pieces)
    # a pure function: same result again, and shard(i) agrees with the plan
    assert shard_plan(dict(contigs), n, max_piece=max_piece, snap=snap) == plan
    for i in range(1, n + 1):
        assert shard(contigs, i, n, max_piece=max_piece, snap=snap) == plan[i - 1]


def test_shards_prefer_contig_ends() -> None:
    # 4 contigs of 1000 bp in 4 shards: no contig needs splitting
    contigs = {f"c{i}": 1000 for i in range(4)}
    assert shard_plan(contigs, 4) == [[Region(f"c{i}", 0, 1000)] for i in range(4)]
    # a contig end within 5 % of the ideal cut is used instead of splitting
    plan = shard_plan({"a": 1020, "b": 980}, 2)
    assert plan == [[Region("a", 0, 1020)], [Region("b", 0, 980)]]
    # a long contig is split
    plan = shard_plan({"a": 3000, "b": 100}, 2)
    assert plan == [[Region("a", 0, 1550)], [Region("a", 1550, 3000), Region("b", 0, 100)]]


def test_shard_plan_over_region_list() -> None:
    regs = [Region("Chr1", 100, 600), Region("Chr2", 0, 500)]
    plan = shard_plan(regs, 4, snap=0.0)
    assert covered(plan) == [("Chr1", 100, 600), ("Chr2", 0, 500)]
    assert [sum(r.length for r in p) for p in plan] == [250, 250, 250, 250]


def test_more_shards_than_bases() -> None:
    plan = shard_plan({"a": 3}, 5)
    assert sum(len(p) for p in plan) == 3 and sum(1 for p in plan if not p) == 2
    with pytest.raises(GenosegError):
        shard({"a": 3}, 6, 5)


def test_shard_real_genome_balanced(tmp_path: Path) -> None:
    g = Genome.open(shared("athaliana_1pct", "genome.fa"), cache=tmp_path)
    plan = shard_plan(g.contigs, 8, max_piece=100_000)
    sizes = [sum(r.length for r in p) for p in plan]
    assert sum(sizes) == g.total_length
    assert max(sizes) <= g.total_length / 8 * 1.1 + 1
    assert covered(plan) == [(c, 0, n) for c, n in g.contigs.items()]
    assert covered([whole_genome(g.contigs)]) == covered(plan)
