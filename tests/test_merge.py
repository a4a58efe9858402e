"""genoseg merge: shard outputs -> one run (genoseg/workflow/merge.py).

Shard files are made the way predict makes them: gene models from a decoded path
(genoseg.decode.genes, the gold path of the data_samples slice with synthetic posteriors)
written by genoseg.io's writers with the run line of the predict contract. A shard keeps the
genes and segments whose 0-based start lies in its range and the track bases of its range.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from genoseg.cli import cli
from genoseg.decode.genes import Segment, genes_from_path
from genoseg.errors import GenosegError
from genoseg.io.bed import write_bed12, write_segments_bed
from genoseg.io.bedgraph import BedGraphWriter, track_file_name
from genoseg.io.gff3 import write_gff3
from genoseg.workflow.merge import (
    RUN_PREFIX,
    genome_digest,
    merge_outputs,
    run_comment,
    track_path,
)
from tests.gold_paths import sample_gold
from tests.test_writers import gt_validate

MODEL = hashlib.sha256(b"a model").hexdigest()
TRACKS = ("coding+", "donor-")


@dataclass
class Decoded:
    """A two-contig genome decoded once: contigs, path segments, genes, tracks."""

    grammar: object
    contigs: dict[str, int]
    segments: dict[str, list[Segment]]
    genes: list
    tracks: dict[str, dict[str, np.ndarray]]  # track -> contig -> per-base values


@pytest.fixture(scope="module")
def decoded() -> Decoded:
    gold = sample_gold()
    ((name, length),) = gold.genome.contigs.items()
    # a second contig with a name GFF3 must escape; same path, other posteriors
    contigs = {name: length, "chr;2": length}
    rng = np.random.default_rng(7)
    segments, genes, tracks = {}, [], {t: {} for t in TRACKS}
    for contig in contigs:
        segs = []
        for s, e, c in gold.paths[name]:
            p = rng.uniform(0.5, 1.0, size=3).round(4)
            segs.append(Segment(s, e, c, float(p[0]), float(p[1]), float(p[2])))
        segments[contig] = segs
        for g in genes_from_path(gold.grammar, contig, segs):
            g.transcripts[0].posterior = float(rng.uniform(0.2, 1.0))
            genes.append(g)
        coding = np.zeros(length)
        donor = np.zeros(length)
        for seg in segs:
            if gold.grammar.labels[seg.label].is_exon:
                coding[seg.start : seg.end] = seg.posterior
            donor[seg.start] = seg.start_posterior
        tracks["coding+"][contig] = coding
        tracks["donor-"][contig] = donor
    return Decoded(gold.grammar, contigs, segments, genes, tracks)


def ranges(contigs: dict[str, int], cuts: list[int]) -> list[list[tuple[str, int, int]]]:
    """Shard ranges of the genome laid end to end and cut at ``cuts`` (line positions)."""
    total = sum(contigs.values())
    bounds = [0, *cuts, total]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        pieces, off = [], 0
        for name, n in contigs.items():
            lo, hi = max(a, off), min(b, off + n)
            if lo < hi:
                pieces.append((name, lo - off, hi - off))
            off += n
        out.append(pieces)
    return out


def write_run(
    d: Decoded,
    out: Path,
    pieces: list[tuple[str, int, int]] | None,
    shard: tuple[int, int] = (1, 1),
    *,
    model: str = MODEL,
    genome: str | None = None,
    extra_genes: list | None = None,
    posteriors: bool = True,
    bam: bool = False,
    strand_average: bool = False,
) -> dict[str, Path]:
    """Write what ``genoseg predict [--shard i/n]`` writes for ``pieces`` (None = all)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"shard{shard[0]}"

    def inside(contig: str, pos: int) -> bool:
        return pieces is None or any(c == contig and a <= pos < b for c, a, b in pieces)

    genes = [g for g in d.genes if inside(g.contig, g.start)] + list(extra_genes or [])
    segs = {c: [s for s in ss if inside(c, s.start)] for c, ss in d.segments.items()}
    run = run_comment(
        genome or genome_digest(d.contigs), model, shard, posteriors=posteriors, bam=bam,
        strand_average=strand_average,
    )  # fmt: skip
    files = {"gff3": stem.with_suffix(".gff3"), "bed": stem.with_suffix(".bed")}
    write_gff3(files["gff3"], d.contigs, genes, model="m.pt", command="predict", comments=[run])
    write_bed12(files["bed"], list(d.contigs), genes)
    files["segments"] = out / f"shard{shard[0]}.segments.bed"
    write_segments_bed(files["segments"], d.grammar, list(d.contigs), segs)
    for t in TRACKS:
        files[t] = track_file_name(stem, t)
        with BedGraphWriter(files[t], t, description=f"genoseg posterior: {t}") as w:
            for contig, vals in d.tracks[t].items():
                for c, a, b in pieces or [(contig, 0, len(vals))]:
                    if c == contig:
                        w.add(contig, a, vals[a:b])
    return files


def feature_lines(path: Path) -> list[str]:
    return [x for x in path.read_text().splitlines() if x and not x.startswith("#")]


def header(path: Path) -> list[str]:
    return [x for x in path.read_text().splitlines() if x.startswith("#")]


@pytest.fixture(scope="module")
def single(decoded, tmp_path_factory) -> dict[str, Path]:
    return write_run(decoded, tmp_path_factory.mktemp("single"), None)


# cut 1 falls inside Chr5's gene 10638-13003, cut 2 inside chr;2's gene 25094-25799
CUTS = [12000, 60170 + 25500]


def test_shards_merge_to_the_single_run_exactly(decoded, single, tmp_path):
    plan = ranges(decoded.contigs, CUTS)
    shards = [write_run(decoded, tmp_path / "s", p, (i + 1, 3)) for i, p in enumerate(plan)]
    # the border genes really cross a cut and live in exactly one shard
    border = [g for g in decoded.genes if (g.contig, g.start, g.end) in
              {("Chr5", 10637, 13003), ("chr;2", 25093, 25799)}]  # fmt: skip
    assert len(border) == 2
    inputs = [f for s in shards for f in s.values()]
    out = tmp_path / "merged"
    rep = merge_outputs(
        inputs[::-1],  # any order
        out.with_suffix(".gff3"),
        bed_out=out.with_suffix(".bed"),
        segments_out=tmp_path / "merged.segments.bed",
        tracks_prefix=out,
        command="genoseg merge ...",
        log=False,
    )
    merged = out.with_suffix(".gff3")
    assert rep.genes == len(decoded.genes) == 38 and rep.duplicate_genes == 0
    assert feature_lines(merged) == feature_lines(single["gff3"])
    text = merged.read_text()
    for g in border:
        seqid = g.contig.replace(";", "%3B")
        assert text.count(f"\n{seqid}\tgenoseg\tgene\t{g.start + 1}\t{g.end}\t") == 1
    head = header(merged)
    assert head.count("##gff-version 3") == 1 and head[0] == "##gff-version 3"
    assert [x for x in head if x.startswith("##sequence-region")] == [
        "##sequence-region Chr5 1 60170",
        "##sequence-region chr%3B2 1 60170",
    ]
    runs = [x for x in head if x.startswith(RUN_PREFIX)]
    assert len(runs) == 1 and '"shard": [1, 1]' in runs[0] and '"merged": 3' in runs[0]
    assert "# model: m.pt" in head and "# command: genoseg merge ..." in head
    assert out.with_suffix(".bed").read_text() == single["bed"].read_text()
    assert (tmp_path / "merged.segments.bed").read_text() == single["segments"].read_text()
    for t in TRACKS:
        assert rep.tracks[t] == track_path(out, t) == track_file_name(out, t)
        assert rep.tracks[t].read_text() == single[t].read_text(), t
    gt_validate(merged)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_merged_file_merges_again_and_with_the_single_run(decoded, single, tmp_path):
    """A merged file is one whole run ([1, 1]); with the single run every gene is a
    duplicate and comes out once."""
    plan = ranges(decoded.contigs, CUTS)
    shards = [write_run(decoded, tmp_path / "s", p, (i + 1, 3)) for i, p in enumerate(plan)]
    first = tmp_path / "first.gff3"
    merge_outputs([s["gff3"] for s in shards], first, log=False)
    again = tmp_path / "again.gff3"
    rep = merge_outputs([first, single["gff3"]], again, log=False)
    assert rep.duplicate_genes == 38 and rep.genes == 38
    assert feature_lines(again) == feature_lines(single["gff3"])
    gt_validate(again)


def test_gene_in_two_shards_is_written_once(decoded, single, tmp_path):
    """Overlapping ranges (a border gene written by both neighbours) still give it once."""
    plan = ranges(decoded.contigs, CUTS)
    border = next(g for g in decoded.genes if (g.contig, g.start) == ("Chr5", 10637))
    shards = [
        write_run(decoded, tmp_path, p, (i + 1, 3), extra_genes=[border] if i == 1 else None)
        for i, p in enumerate(plan)
    ]
    assert f"\t{border.start + 1}\t{border.end}\t" in shards[1]["gff3"].read_text()
    out = tmp_path / "m.gff3"
    res = CliRunner().invoke(
        cli, ["merge", *(str(s[k]) for s in shards for k in ("gff3", "bed")), "-o", str(out),
              "--bed", str(tmp_path / "m.bed")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "38 genes, 1 duplicates dropped" in res.stderr
    assert feature_lines(out) == feature_lines(single["gff3"])
    assert (tmp_path / "m.bed").read_text() == single["bed"].read_text()


def _cli_error(args: list[str]) -> str:
    res = CliRunner().invoke(cli, ["merge", *args])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genoseg: error: "), res.output
    return lines[0]


def test_missing_shards_are_named(decoded, tmp_path):
    plan = ranges(decoded.contigs, [20000, 40000, 60000, 80000, 100000])
    shards = [write_run(decoded, tmp_path, p, (i + 1, 6)) for i, p in enumerate(plan)]
    given = [str(shards[i]["gff3"]) for i in (0, 2, 3, 5)]
    out = tmp_path / "m.gff3"
    msg = _cli_error([*given, "-o", str(out)])
    assert "missing shards 2, 5 of 6" in msg
    assert not out.exists()


@pytest.mark.parametrize(
    "change, what",
    [
        ({"model": hashlib.sha256(b"other").hexdigest()}, "model"),
        ({"shard": (2, 4)}, "shard count"),
        ({"posteriors": False}, "posteriors"),
        ({"bam": True}, "bam"),
        ({"strand_average": True}, "strand averaging"),
    ],
)
def test_mixed_runs_are_refused(decoded, tmp_path, change, what):
    plan = ranges(decoded.contigs, [60170])
    a = write_run(decoded, tmp_path / "a", plan[0], (1, 2))
    kw = dict(change)
    shard = kw.pop("shard", (2, 2))
    b = write_run(decoded, tmp_path / "b", plan[1], shard, **kw)
    out = tmp_path / "m.gff3"
    msg = _cli_error([str(a["gff3"]), str(b["gff3"]), "-o", str(out)])
    assert f"mixed runs: {a['gff3']} and {b['gff3']} differ in {what}" in msg
    assert not out.exists()


def test_other_genome_is_refused(decoded, tmp_path):
    a = write_run(decoded, tmp_path / "a", None)
    other = Decoded(decoded.grammar, {"Chr5": 60170}, {"Chr5": decoded.segments["Chr5"]},
                    [g for g in decoded.genes if g.contig == "Chr5"],
                    {t: {"Chr5": v["Chr5"]} for t, v in decoded.tracks.items()})  # fmt: skip
    b = write_run(other, tmp_path / "b", None)
    msg = _cli_error([str(a["gff3"]), str(b["gff3"]), "-o", str(tmp_path / "m.gff3")])
    assert "mixed runs:" in msg and "differ in genome" in msg
    # a header whose contigs do not hash to its genome is not trusted either
    c = write_run(other, tmp_path / "c", None, genome=genome_digest(decoded.contigs))
    msg = _cli_error([str(c["gff3"]), "-o", str(tmp_path / "m.gff3")])
    assert "do not match the genome of its genoseg-run line" in msg


def test_two_different_genes_under_one_id_are_an_error(decoded, tmp_path):
    a = write_run(decoded, tmp_path / "a", None)
    b = write_run(decoded, tmp_path / "b", None)
    text = b["gff3"].read_text().splitlines(keepends=True)
    # change one CDS phase of one gene: same ID, another gene model
    i = next(k for k, x in enumerate(text) if "\tCDS\t" in x and "\t-\t0\t" in x)
    text[i] = text[i].replace("\t-\t0\t", "\t-\t2\t")
    b["gff3"].write_text("".join(text))
    msg = _cli_error([str(a["gff3"]), str(b["gff3"]), "-o", str(tmp_path / "m.gff3")])
    assert "differs between" in msg and "two different gene models under one ID" in msg


def test_posterior_only_differences_keep_the_first(decoded, tmp_path):
    a = write_run(decoded, tmp_path / "a", None)
    b = write_run(decoded, tmp_path / "b", None)
    text = b["gff3"].read_text()
    line = next(x for x in text.splitlines() if "\tmRNA\t" in x)
    cols = line.split("\t")
    cols[5] = "0.0001"
    b["gff3"].write_text(text.replace(line, "\t".join(cols)))
    out = tmp_path / "m.gff3"
    res = CliRunner().invoke(cli, ["merge", str(b["gff3"]), str(a["gff3"]), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "warning: 1 genes came with different posteriors" in res.stderr
    # sorted by shard then path: a/ comes first and wins
    assert feature_lines(out) == feature_lines(a["gff3"])


def test_outputs_refused_and_nothing_written_on_errors(decoded, tmp_path, monkeypatch):
    plan = ranges(decoded.contigs, CUTS)
    shards = [write_run(decoded, tmp_path, p, (i + 1, 3)) for i, p in enumerate(plan)]
    gffs = [str(s["gff3"]) for s in shards]
    msg = _cli_error([*gffs, "-o", gffs[1]])
    assert "refusing to overwrite an input" in msg
    # a shard's BED left out: counted, nothing written
    out = tmp_path / "m.gff3"
    beds = [str(s["bed"]) for s in shards[:2]]
    msg = _cli_error([*gffs, *beds, "-o", str(out), "--bed", str(tmp_path / "m.bed")])
    assert "3 GFF3 inputs but 2 bed12 inputs" in msg
    msg = _cli_error([*gffs, str(shards[0]["bed"]), "-o", str(out)])
    assert "bed12 inputs given" in msg and "no --bed output" in msg
    # conflicting tracks are found while streaming: no output at all, no temporaries
    bad = tmp_path / "bad.coding_plus.bedgraph"
    lines = shards[1]["coding+"].read_text().splitlines(keepends=True)
    bad.write_text(lines[0] + "Chr5\t0\t30000\t0.123\n")
    tracks = [str(shards[0]["coding+"]), str(bad), str(shards[2]["coding+"])]
    msg = _cli_error([*gffs, *tracks, "-o", str(out), "--tracks", str(tmp_path / "m")])
    assert "tracks disagree on Chr5:" in msg
    assert not out.exists() and not list(tmp_path.glob("m.*"))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # tracks are files: '-' is not a prefix (it made files named '-.coding_plus.bedgraph')
    good = [str(s["coding+"]) for s in shards]
    monkeypatch.chdir(tmp_path)
    msg = _cli_error([*gffs, *good, "-o", str(out), "--tracks", "-"])
    assert "--tracks -: tracks are written one file per track" in msg
    assert not out.exists() and not list(tmp_path.glob("-.*"))


def test_inputs_that_are_not_predict_outputs(tmp_path):
    plain = tmp_path / "plain.gff3"
    plain.write_text(
        "##gff-version 3\n##sequence-region c 1 100\nc\tx\tgene\t1\t9\t.\t+\t.\tID=g\n"
    )
    msg = _cli_error([str(plain), "-o", str(tmp_path / "m.gff3")])
    assert "no '# genoseg-run:' header line" in msg
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    msg = _cli_error([str(other), "-o", str(tmp_path / "m.gff3")])
    assert "not a genoseg predict output" in msg
    with pytest.raises(GenosegError, match="no input files"):
        merge_outputs([], tmp_path / "m.gff3")
    empty = tmp_path / "shard1.bed"  # an empty .bed is a BED12 shard without genes
    empty.write_text("")
    msg = _cli_error([str(empty), "-o", str(tmp_path / "m.gff3"), "--bed", str(tmp_path / "m.bed")])
    assert "no GFF3 input" in msg


def test_genome_digest_is_the_contract():
    contigs = {"chr1": 100, "chr 2;x": 7}
    want = hashlib.sha256(b"chr1\t100\nchr 2;x\t7").hexdigest()
    assert genome_digest(contigs) == genome_digest(list(contigs.items())) == want
    line = run_comment(want, "m", (2, 5), posteriors=True, bam=False)
    assert line == (
        f'genoseg-run: {{"genome": "{want}", "model": "m", "shard": [2, 5], '
        '"posteriors": true, "bam": false}'
    )
