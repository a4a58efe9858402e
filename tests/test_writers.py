"""genoseg.io writers: GFF3, BED12, segment BED, bedGraph / bigWig, FASTA, Prediction.

The strongest check is the round trip on real data: annotation -> gold label path (as
training builds it) -> genes_from_path -> GFF3, which must pass ``gt gff3validator`` and the
structural checks, and which ``genoseg eval`` must score at 100 % against the transcripts
labels.py used. A second test decodes the sample with the real engine (synthetic emissions)
and checks that ``genoseg eval`` reads every posterior back for calibration.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from genoseg import crf
from genoseg.cli import cli
from genoseg.data.annotation import read_annotation
from genoseg.decode import (
    TRACK_NAMES,
    Segment,
    boundary_posteriors,
    check_gene_models,
    check_gff3,
    fill_boundary_posteriors,
    genes_from_path,
    posterior_tracks,
)
from genoseg.errors import GenosegError
from genoseg.grammar import compile_window
from genoseg.io.bed import SEGMENT_COLUMNS, bed_score
from genoseg.io.bedgraph import BedGraphWriter, BigWigWriter, TrackWriter, track_file_name
from genoseg.io.gff3 import escape_attribute, escape_seqid, write_gff3
from genoseg.io.prediction import Prediction
from tests.gold_paths import SAMPLE_FA, SAMPLE_GFF, filtered_reference, gold_genome, sample_gold
from tests.shared_data import shared

REPO = Path(__file__).resolve().parents[1]


def gt_validate(path: Path) -> None:
    """``gt gff3validator`` must accept ``path`` (genometools; CI installs it)."""
    gt = shutil.which("gt")
    if gt is None:
        msg = "gt (genometools) is not installed: apt-get install -y genometools"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    res = subprocess.run([gt, "gff3validator", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "input is valid GFF3" in res.stdout


def run_eval(reference: Path, prediction: Path, *args: str) -> dict:
    res = CliRunner().invoke(cli, ["eval", str(reference), str(prediction), "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def gold():
    return sample_gold()


@pytest.fixture(scope="module")
def prediction(gold):
    pred = Prediction(dict(gold.genome.contigs), grammar=gold.grammar, model="gold", command="t")
    for contig, path in gold.paths.items():
        pred.add(contig, genes_from_path(gold.grammar, contig, path), path)
    return pred


def _no_temporaries(d: Path) -> bool:
    return not [p for p in d.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------- GFF3


def test_gold_round_trip_is_valid_and_scores_100_percent(gold, prediction, tmp_path):
    out = tmp_path / "gold.gff3"
    prediction.write_gff3(out)
    gt_validate(out)
    assert check_gff3(out, gold.genome) == []
    ref = filtered_reference(SAMPLE_GFF, gold.used(), tmp_path / "used.gff3")
    levels = run_eval(ref, out)["levels"]
    for level in ("base", "exon", "intron", "intron_chain", "transcript", "gene"):
        assert levels[level]["f1"] == 1.0, level
    assert levels["exon"]["reference"] == 76 and levels["gene"]["reference"] == 19
    # against the full reference (all isoforms) every predicted gene and exon is right
    full = run_eval(SAMPLE_GFF, out)["levels"]
    assert full["gene"]["f1"] == 1.0 and full["exon"]["precision"] == 1.0


def test_shared_genome_round_trip_with_masked_genes(tmp_path):
    """All seven A. thaliana 1 % contigs: masked (overlapping) genes leave gaps in the gold
    path; the genes labels.py used come back exactly."""
    root = shared("athaliana_1pct")
    gff = root / "annotation_with_rnaseq_splice.gff3"
    g = gold_genome(root / "genome.fa", gff, missing_parents="skip")
    masked = [st for cl in g.labels.values() for st in cl.genes if st.status != "used"]
    assert masked  # the point of this test
    pred = Prediction(dict(g.genome.contigs))
    for contig, path in g.paths.items():
        pred.add(contig, genes_from_path(g.grammar, contig, path))
    assert len(pred.genes) == len(g.used())
    out = tmp_path / "athaliana.gff3"
    pred.write_gff3(out)
    regions = [l.split()[1] for l in out.read_text().splitlines() if l.startswith("##seq")]
    assert regions == list(g.genome.contigs)
    gt_validate(out)
    assert check_gff3(out, g.genome) == []
    ref = filtered_reference(gff, g.used(), tmp_path / "used.gff3")
    levels = run_eval(ref, out)["levels"]
    for level in ("exon", "intron", "transcript", "gene"):
        assert levels[level]["f1"] == 1.0, level


def test_gff3_layout_escaping_and_read_back(gold, tmp_path):
    name = "chr;1=a,b%"
    contigs = {"empty": 10, name: 60170, "Chr5": 60170}
    genes = genes_from_path(gold.grammar, name, gold.paths["Chr5"])
    path = gold.paths["Chr5"]
    cut = [i for i, seg in enumerate(path) if seg[2] == gold.grammar.intergenic][4]
    genes += genes_from_path(gold.grammar, "Chr5", path[: cut + 1])  # the first 4 genes
    genes[3].transcripts[0].posterior = 0.98765
    out = tmp_path / "x.gff3"
    write_gff3(out, contigs, genes[::-1], model="m v1", command="genoseg predict\tx.fa")
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0] == "##gff-version 3" and text.count("##gff-version") == 1
    assert lines[1].startswith("# genoseg ") and lines[2] == "# model: m v1"
    assert lines[3] == "# command: genoseg predict x.fa"
    assert [l for l in lines if l.startswith("##sequence-region")] == [
        "##sequence-region empty 1 10",
        "##sequence-region chr%3B1%3Da%2Cb%25 1 60170",
        "##sequence-region Chr5 1 60170",
    ]
    feats = [l.split("\t") for l in lines if not l.startswith("#")]
    seqids = [f[0] for f in feats]
    assert seqids == sorted(seqids, key=["chr%3B1%3Da%2Cb%25", "Chr5"].index)  # contig order
    gene_starts = [int(f[3]) for f in feats if f[2] == "gene" and f[0] == "Chr5"]
    assert gene_starts == sorted(gene_starts)
    assert all(f[5] == "." for f in feats if f[2] != "gene" and f[2] != "mRNA")
    g3 = [f for f in feats if f[2] in ("gene", "mRNA") and f[5] != "."]
    assert [f[5] for f in g3] == ["0.9877", "0.9877"]
    assert "ID=chr%3B1%3Da%2Cb%25:1388-4924:-" in text  # IDs escaped like any value
    assert all(f[7] in "012" for f in feats if f[2] == "CDS")
    assert all(f[7] == "." for f in feats if f[2] != "CDS")
    gt_validate(out)
    ann = read_annotation(out)
    ids = {t.id for t in ann.transcripts()}
    assert f"{name}:1388-4924:-.t1" in ids  # unescaped again by the reader
    assert len(ids) == len(genes)


def test_gff3_to_stdout_atomic_and_refusing_inputs(gold, prediction, tmp_path, capsys):
    out = tmp_path / "p.gff3"
    prediction.write_gff3(out)
    prediction.write_gff3("-")
    assert capsys.readouterr().out == out.read_text()
    buf = io.StringIO()
    prediction.write_gff3(buf)
    assert buf.getvalue() == out.read_text()
    # an error while writing leaves neither a file nor a temporary
    bad = Prediction({"Chr5": 100}, genes=list(prediction.genes))
    with pytest.raises(ValueError, match="past the end of Chr5"):
        bad.write_gff3(tmp_path / "bad.gff3")
    assert not (tmp_path / "bad.gff3").exists() and _no_temporaries(tmp_path)
    # an existing output is replaced only by a complete file
    before = out.read_text()
    with pytest.raises(ValueError):
        bad.write_gff3(out)
    assert out.read_text() == before
    with pytest.raises(GenosegError, match="same file as the input --fasta"):
        prediction.write_gff3(out, inputs={"--fasta": str(out)})
    with pytest.raises(GenosegError, match="does not exist"):
        prediction.write_gff3(tmp_path / "missing" / "x.gff3")


def test_escaping_rules():
    assert escape_seqid("scaffold_1|x.2") == "scaffold_1|x.2"
    assert escape_seqid("a b#c") == "a%20b%23c"
    assert escape_attribute("a;b=c&d,e%f\tg") == "a%3Bb%3Dc%26d%2Ce%25f%09g"
    assert escape_attribute("Chr5:1-9:+") == "Chr5:1-9:+"


# --------------------------------------------------------------------------- posteriors


@pytest.fixture(scope="module")
def decoded(gold):
    """The sample decoded by the real engine (CPU): emissions are noise plus a small bonus
    for the gold label, so the Viterbi path differs from the gold path in places and the
    posteriors are spread over [0, 1]."""
    g = gold.grammar
    codes, _ = gold.genome.encode("Chr5")
    n = len(codes)
    si = compile_window(g, codes)
    rng = np.random.default_rng(0)
    h = rng.normal(0.0, 0.5, size=(n, g.num_labels)).astype(np.float32)
    h[np.arange(n), gold.labels["Chr5"].labels] += 0.12
    kw = dict(seg_start=si.seg_start[None], seg_end=si.seg_end[None], max_dur=si.max_dur[None])
    args = (torch.from_numpy(h)[None], None, si.transitions, si.durations, si.init, si.final)
    m = crf.marginals(*args, si.tail, **kw)
    _, paths = crf.viterbi(*args, si.tail, **kw)
    start, end = m.start[0].numpy(), m.end[0].numpy()
    lower, upper = boundary_posteriors(g, start, end)
    # exact segment marginals are predict's job; here a probability in [0, 1] to write and
    # read back: min of the two boundary posteriors (an upper bound of the segment's)
    segs = [Segment(s, e, c) for s, e, c in paths[0]]
    fill_boundary_posteriors(segs, lower, upper)
    segs = [replace(x, posterior=min(x.start_posterior, x.end_posterior)) for x in segs]
    genes = genes_from_path(g, "Chr5", segs)
    for gene in genes:
        tx = gene.transcripts[0]
        tx.posterior = min(p.posterior for p in [*tx.cds, *tx.introns])
    return segs, genes, m


@pytest.mark.slow
def test_engine_decoded_gff3_posteriors_read_back_by_eval(gold, decoded, tmp_path):
    segs, genes, _ = decoded
    assert segs != [Segment(*s) for s in gold.paths["Chr5"]]  # not just the gold path
    assert check_gene_models(genes, gold.genome) == []  # engine + grammar -> valid models
    pred = Prediction(dict(gold.genome.contigs), genes, {"Chr5": segs}, gold.grammar)
    out = tmp_path / "pred.gff3"
    pred.write_gff3(out)
    gt_validate(out)
    assert check_gff3(out, gold.genome) == []

    parts = [p for g in genes for p in g.transcripts[0].cds]
    introns = [i for g in genes for i in g.transcripts[0].introns]
    ref = read_annotation(SAMPLE_GFF)
    ref_exons = {("+-"[t.strand == "-"], s, e) for t in ref.transcripts() for s, e in t.cds}
    ref_lo = {(st, s) for st, s, _ in ref_exons}
    ref_hi = {(st, e) for st, _, e in ref_exons}

    def strand_of(p):
        return "+" if gold.grammar.labels[p.label].strand > 0 else "-"

    cal = run_eval(SAMPLE_GFF, out)["calibration"]
    assert cal["exon"]["n"] == len(parts) and cal["intron"]["n"] == len(introns)
    assert cal["boundary"]["n"] == 2 * len(parts)

    def summary(kind):
        bins = cal[kind]["bins"]
        n = sum(b["count"] for b in bins)
        mean = sum(b["count"] * b["mean_posterior"] for b in bins if b["count"]) / n
        observed = sum(b["count"] * b["observed"] for b in bins if b["count"]) / n
        return mean, observed

    r4 = lambda x: round(x, 4)  # noqa: E731  (the GFF3 keeps 4 decimals)
    mean, observed = summary("exon")
    assert mean == pytest.approx(np.mean([r4(p.posterior) for p in parts]), abs=1e-9)
    correct = [(strand_of(p), p.start, p.end) in ref_exons for p in parts]
    assert 0 < sum(correct) < len(parts)
    assert observed == pytest.approx(np.mean(correct))
    mean, observed = summary("boundary")
    want = [r4(p.start_posterior) for p in parts] + [r4(p.end_posterior) for p in parts]
    assert mean == pytest.approx(np.mean(want), abs=1e-9)
    ok = [(strand_of(p), p.start) in ref_lo for p in parts]
    ok += [(strand_of(p), p.end) in ref_hi for p in parts]
    assert observed == pytest.approx(np.mean(ok))
    assert cal["boundary"]["ece"] is not None

    # every posterior is read back where docs/eval.md says it is
    back = read_annotation(out)
    scores = {(f.kind, f.start, f.end): f for t in back.transcripts() for f in t.scores}
    for p in parts:
        f = scores[("CDS", p.start, p.end)]
        assert (f.score, f.start_posterior, f.end_posterior) == (
            r4(p.posterior),
            r4(p.start_posterior),
            r4(p.end_posterior),
        )
    for i in introns:
        assert scores[("intron", i.start, i.end)].score == r4(i.posterior)
    by_id = {t.id: t for t in back.transcripts()}
    for gene in genes:
        tx = gene.transcripts[0]
        assert by_id[tx.id].score == r4(tx.posterior)


# --------------------------------------------------------------------------- BED


def test_bed12_of_transcripts(gold, prediction, tmp_path):
    genes = prediction.sorted_genes()
    genes[0].transcripts[0].posterior = 0.8126
    out = tmp_path / "t.bed"
    prediction.write_bed(out)
    rows = [l.split("\t") for l in out.read_text().splitlines()]
    assert len(rows) == 19
    for row, gene in zip(rows, genes):
        tx = gene.transcripts[0]
        chrom, start, end, name, score, strand, ts, te, rgb, count, sizes, starts = row
        assert (chrom, int(start), int(end), name, strand) == (
            "Chr5",
            tx.start,
            tx.end,
            tx.id,
            gene.strand,
        )
        assert (int(ts), int(te), rgb) == (tx.cds[0].start, tx.cds[-1].end, "0")
        blocks = [
            (int(start) + int(a), int(start) + int(a) + int(b))
            for a, b in zip(starts.rstrip(",").split(","), sizes.rstrip(",").split(","))
        ]
        assert int(count) == len(blocks)
        assert blocks == [(p.start, p.end) for p in tx.cds]
    assert rows[0][4] == "813" and {r[4] for r in rows[1:]} == {"0"}
    minus16 = next(r for r in rows if r[9] == "16")
    assert minus16[5] == "-" and minus16[3] == "Chr5:1388-4924:-.t1"
    assert bed_score(None) == 0 and bed_score(1.2) == 1000 and bed_score(0.0004) == 0
    genes[0].transcripts[0].posterior = None


def test_segment_bed_columns(gold, prediction, tmp_path):
    path = gold.paths["Chr5"]
    pred = Prediction(
        dict(gold.genome.contigs),
        segments={"Chr5": [Segment(s, e, c, 0.5, 0.25, None) for s, e, c in path]},
        grammar=gold.grammar,
    )
    out = tmp_path / "s.bed"
    pred.write_segments_bed(out)
    lines = out.read_text().splitlines()
    assert lines[0] == "#" + "\t".join(SEGMENT_COLUMNS)
    rows = [l.split("\t") for l in lines[1:]]
    assert len(rows) == len(path)
    for row, (s, e, c) in zip(rows, path):
        lab = gold.grammar.labels[c]
        assert row[:4] == ["Chr5", str(s), str(e), lab.name]
        assert row[4:] == ["500", {1: "+", -1: "-", 0: "."}[lab.strand], "0.5", "0.25", "."]
    # without posteriors (--no-posteriors) every posterior column is '.'
    buf = io.StringIO()
    prediction.write_segments_bed(buf)
    assert {tuple(l.split("\t")[6:]) for l in buf.getvalue().splitlines()[1:]} == {(".", ".", ".")}
    with pytest.raises(ValueError, match="needs the grammar"):
        Prediction({"Chr5": 10}).write_segments_bed(tmp_path / "x.bed")


# --------------------------------------------------------------------------- bedGraph


def _bedgraph(text: str) -> list[tuple[str, int, int, str]]:
    out = []
    for line in text.splitlines()[1:]:
        c, s, e, v = line.split("\t")
        out.append((c, int(s), int(e), v))
    return out


def test_bedgraph_merges_rounded_runs_in_any_chunk_order(tmp_path):
    vals = np.array([0.1001, 0.1004, 0.1, 0.25, 0.25, 0.2504, 1.0, 1.0, 0.0, -1e-9, 0.0])
    forward = tmp_path / "f.bedgraph"
    with BedGraphWriter(forward, "coding+", description="test") as w:
        w.add("c1", 0, vals[:4])
        w.add("c1", 4, vals[4:])
        w.add("c2", 5, np.array([0.5, 0.5]))
    text = forward.read_text()
    assert text.splitlines()[0] == 'track type=bedGraph name="coding+" description="test"'
    assert _bedgraph(text) == [
        ("c1", 0, 3, "0.1"),
        ("c1", 3, 6, "0.25"),
        ("c1", 6, 8, "1"),
        ("c1", 8, 11, "0"),
        ("c2", 5, 7, "0.5"),
    ]
    backward = tmp_path / "b.bedgraph"
    with BedGraphWriter(backward, "coding+", description="test") as w:
        for a, b in [(9, 11), (5, 9), (4, 5), (1, 4), (0, 1)]:
            w.add("c1", a, vals[a:b])
        w.add("c2", 6, np.array([0.5]))
        w.add("c2", 5, np.array([0.5]))
    assert backward.read_text() == text
    # gaps stay uncovered; digits control the rounding
    gaps = tmp_path / "g.bedgraph"
    with BedGraphWriter(gaps, "x", digits=1) as w:
        w.add("c1", 10, np.array([0.14, 0.12]))
        w.add("c1", 0, np.array([0.11, 0.13]))
    assert _bedgraph(gaps.read_text()) == [("c1", 0, 2, "0.1"), ("c1", 10, 12, "0.1")]


def test_bedgraph_errors_leave_no_file(tmp_path):
    out = tmp_path / "e.bedgraph"
    with pytest.raises(ValueError, match="overlaps"):
        with BedGraphWriter(out, "x") as w:
            w.add("c1", 0, np.zeros(5))
            w.add("c1", 3, np.zeros(5))
    with pytest.raises(ValueError, match="overlaps"):
        with BedGraphWriter(out, "x") as w:
            w.add("c1", 10, np.zeros(5))
            w.add("c1", 8, np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        with BedGraphWriter(out, "x") as w:
            w.add("c1", 0, np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="already finished"):
        with BedGraphWriter(out, "x") as w:
            w.add("c1", 0, np.zeros(5))
            w.add("c2", 0, np.zeros(5))
            w.add("c1", 5, np.zeros(5))
    assert not out.exists() and _no_temporaries(tmp_path)


def _random_marginals(grammar, n, seed):
    rng = np.random.default_rng(seed)
    pos = rng.dirichlet(np.full(grammar.num_labels, 0.05), size=n).astype(np.float32)
    start = (rng.random((n, grammar.num_labels)) < 0.01) * rng.random((n, grammar.num_labels))
    end = (rng.random((n, grammar.num_labels)) < 0.01) * rng.random((n, grammar.num_labels))
    return pos, start.astype(np.float32), end.astype(np.float32)


def test_track_writer_reverse_chunks_equal_one_pass(gold, tmp_path):
    g = gold.grammar
    contigs = {"a": 2500, "b": 900}
    marg = {c: _random_marginals(g, n, i) for i, (c, n) in enumerate(contigs.items())}

    def write(prefix, chunk):
        with TrackWriter(prefix, contigs) as tw:
            for c, n in contigs.items():
                pos, st, en = marg[c]
                cuts = list(range(0, n, chunk)) + [n]
                for a, b in reversed(list(zip(cuts[:-1], cuts[1:]))):  # backward pass order
                    tw.add(c, posterior_tracks(g, pos[a:b], st[a:b], en[a:b], offset=a,
                                               contig_length=n))  # fmt: skip
        return tw.paths

    one = write(tmp_path / "one", 10**6)
    many = write(tmp_path / "many", 317)
    assert sorted(one) == sorted(TRACK_NAMES)
    for name in TRACK_NAMES:
        assert one[name] == track_file_name(tmp_path / "one", name)
        a, b = one[name].read_text(), many[name].read_text()
        assert a == b, name
        rows = _bedgraph(a)
        for c, n in contigs.items():  # every base covered exactly once, in order
            spans = [(s, e) for cc, s, e, _ in rows if cc == c]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
    assert (tmp_path / "one.start_codon_minus.bedgraph").exists()


def test_track_writer_bigwig(gold, tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    g = gold.grammar
    contigs = {"a": 1200, "nothing": 50, "b": 700}
    marg = {c: _random_marginals(g, contigs[c], i) for i, c in enumerate(("a", "b"))}
    with TrackWriter(tmp_path / "t", contigs, fmt="bigwig") as tw:
        for c in ("a", "b"):
            pos, st, en = marg[c]
            n = contigs[c]
            for a, b in [(600, n), (0, 600)]:
                tw.add(c, posterior_tracks(g, pos[a:b], st[a:b], en[a:b], offset=a,
                                           contig_length=n))  # fmt: skip
    path = tw.paths["coding-"]
    assert path.name == "t.coding_minus.bw"
    bw = pyBigWig.open(str(path))
    assert bw.chroms() == contigs
    for c in ("a", "b"):
        whole = posterior_tracks(g, *marg[c], contig_length=contigs[c])["coding-"].values
        got = np.array(bw.values(c, 0, contigs[c]))
        np.testing.assert_allclose(got, np.round(whole.astype(np.float64), 3), atol=1e-6)
        iv = bw.intervals(c)
        assert all(x[1] == y[0] and x[2] != y[2] for x, y in zip(iv, iv[1:]))  # merged
    bw.close()
    with pytest.raises(ValueError, match="genome order"):
        with BigWigWriter(tmp_path / "o.bw", contigs) as w:
            w.add("b", 0, np.zeros(3))
            w.add("a", 0, np.zeros(3))
    assert not (tmp_path / "o.bw").exists() and _no_temporaries(tmp_path)


def test_sigterm_while_writing_tracks_leaves_no_file(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time, numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from genoseg.decode.tracks import TrackChunk
        from genoseg.io.bedgraph import TrackWriter
        names = ["coding+", "intron+"]
        vals = np.random.default_rng(0).random(10**5)
        with TrackWriter({str(tmp_path / "t")!r}, {{"c": 10**6}}, names=names) as tw:
            tw.add("c", {{n: TrackChunk(n, 500, vals) for n in names}})
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # temporaries exist
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- FASTA


def test_cds_and_protein_fasta(gold, prediction, tmp_path):
    prediction.genes[0].transcripts[0].posterior = 0.5
    cds_out, prot_out = tmp_path / "cds.fna", tmp_path / "prot.faa"
    prediction.write_fasta(cds_out, gold.genome, kind="cds")
    prediction.write_fasta(prot_out, SAMPLE_FA, kind="protein", width=0)
    prediction.genes[0].transcripts[0].posterior = None
    from Bio import SeqIO

    cds = list(SeqIO.parse(cds_out, "fasta"))
    prot = list(SeqIO.parse(prot_out, "fasta"))
    genes = prediction.sorted_genes()
    assert [r.id for r in cds] == [g.transcripts[0].id for g in genes] == [r.id for r in prot]
    assert cds[0].description.endswith(f"gene={genes[0].id} loc=Chr5:1388-4924(-) posterior=0.5")
    seq_lines = [l for l in cds_out.read_text().splitlines() if not l.startswith(">")]
    assert max(map(len, seq_lines)) == 60
    for c, p, g in zip(cds, prot, genes):
        s = str(c.seq)
        assert len(s) == g.transcripts[0].cds_length and len(s) % 3 == 0
        assert s[:3] == "ATG" and s[-3:] in ("TAA", "TAG", "TGA")
        assert str(p.seq) == str(c.seq.translate())[:-1]
        assert str(p.seq).startswith("M") and "*" not in str(p.seq)
    assert len(prot_out.read_text().splitlines()) == 2 * len(genes)  # width=0: one line
    with pytest.raises(ValueError, match="kind"):
        prediction.write_fasta(tmp_path / "x", gold.genome, kind="rna")
    assert not (tmp_path / "x").exists()


def test_prediction_add_validates(gold):
    pred = Prediction({"Chr5": 60170})
    genes = genes_from_path(gold.grammar, "Chr5", gold.paths["Chr5"])
    with pytest.raises(ValueError, match="not in the genome"):
        pred.add("chrX", genes)
    with pytest.raises(ValueError, match="not 'Chr9'"):
        Prediction({"Chr9": 5}).add("Chr9", genes)
    pred.add("Chr5", genes, gold.paths["Chr5"][:3])
    assert pred.segments["Chr5"][0] == Segment(*gold.paths["Chr5"][0])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_bedgraph_on_a_full_disk_is_one_line() -> None:
    """Lines are written while the atomic_output block is suspended: a full disk there is
    still GenosegError naming the output (was a traceback)."""
    rng = np.random.default_rng(0)
    w = BedGraphWriter("/dev/full", "coding+")
    with pytest.raises(GenosegError, match="^--tracks /dev/full: cannot write: No space left"):
        w.add("c", 0, rng.random(50_000))
        w.close()
    w.abort()
