"""Tests of genoseg eval: every level on hand-made pairs, real files, calibration, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from genoseg.cli import cli
from genoseg.data.annotation import read_annotation
from genoseg.eval import LEVELS, calibrate, calibration_report, compare
from tests.shared_data import REPO, shared

REAL = [
    ("athaliana_1pct", "annotation_with_rnaseq_splice.gff3"),
    ("celegans_1pct", "annotation_with_rnaseq.gff3"),
    ("dmelanogaster_1pct", "annotation_with_rnaseq_splice.gff3"),
]
AUGUSTUS = REPO / "benchmarks" / "peers" / "augustus_athaliana_chr5.gff3"


def gff(*genes: tuple, seqid: str = "c1") -> str:
    """GFF3 text from (gene_id, strand, [(tx_id, exons, cds), ...]); 1-based closed coords.

    CDS phases are computed in transcription order (so ``gt gff3validator`` accepts them).
    """
    lines = ["##gff-version 3", f"##sequence-region {seqid} 1 10000"]
    for gid, strand, txs in genes:
        lo = min(s for _, ex, cds in txs for s, _ in ex + cds)
        hi = max(e for _, ex, cds in txs for _, e in ex + cds)
        lines.append(f"{seqid}\tt\tgene\t{lo}\t{hi}\t.\t{strand}\t.\tID={gid}")
        for tid, exons, cds in txs:
            tlo = min(s for s, _ in exons + cds)
            thi = max(e for _, e in exons + cds)
            lines.append(f"{seqid}\tt\tmRNA\t{tlo}\t{thi}\t.\t{strand}\t.\tID={tid};Parent={gid}")
            for s, e in exons:
                lines.append(f"{seqid}\tt\texon\t{s}\t{e}\t.\t{strand}\t.\tParent={tid}")
            done, phase = 0, {}
            for s, e in cds if strand == "+" else cds[::-1]:
                phase[(s, e)] = (3 - done % 3) % 3
                done += e - s + 1
            for s, e in cds:
                lines.append(
                    f"{seqid}\tt\tCDS\t{s}\t{e}\t.\t{strand}\t{phase[(s, e)]}\tParent={tid}"
                )
    return "\n".join(lines) + "\n"


def run(tmp_path: Path, ref_text: str, pred_text: str, pred_name="p.gff3", **kw):
    r = tmp_path / "r.gff3"
    p = tmp_path / pred_name
    r.write_text(ref_text)
    p.write_text(pred_text)
    mode = kw.pop("mode", "CDS")
    res = compare(
        read_annotation(r, feature=mode), read_annotation(p, feature=mode), mode=mode, **kw
    )
    return res.levels


def counts(levels, name):
    st = levels[name]
    return (st.reference, st.prediction, st.matched_reference, st.matched_prediction)


# a 3-exon plus-strand gene with two isoforms (the second skips exon 2)
EX = [(101, 300), (401, 600), (701, 900)]
CDS_A = [(151, 300), (401, 600), (701, 850)]
CDS_B = [(151, 300), (701, 850)]
REF_TWO_ISOFORMS = gff(("g", "+", [("a", EX, CDS_A), ("b", [EX[0], EX[2]], CDS_B)]))


def test_gene_found_by_second_isoform(tmp_path: Path) -> None:
    pred = gff(("p", "+", [("p1", [EX[0], EX[2]], CDS_B)]))
    lv = run(tmp_path, REF_TWO_ISOFORMS, pred)
    assert counts(lv, "gene") == (1, 1, 1, 1)
    assert counts(lv, "transcript") == (2, 1, 1, 1)
    assert lv["transcript"].sensitivity == 0.5 and lv["transcript"].precision == 1.0
    assert counts(lv, "exon") == (3, 2, 2, 2)
    # introns of A: (300,400),(600,700); of B: (300,700) -> 3 unique, pred has B's one
    assert counts(lv, "intron") == (3, 1, 1, 1)
    assert counts(lv, "intron_chain") == (2, 1, 1, 1)
    assert counts(lv, "base") == (500, 300, 300, 300)
    assert lv["gene"].f1 == 1.0
    assert lv["exon"].f1 == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_longest_isoform_both_sides(tmp_path: Path) -> None:
    pred = gff(("p", "+", [("p1", [EX[0], EX[2]], CDS_B)]))
    lv = run(tmp_path, REF_TWO_ISOFORMS, pred, longest_isoform=True)
    # the reference keeps isoform a (longest CDS), which the prediction misses
    assert counts(lv, "transcript") == (1, 1, 0, 0)
    assert counts(lv, "gene") == (1, 1, 0, 0)
    assert counts(lv, "exon") == (3, 2, 2, 2)


def test_shifted_exon_end(tmp_path: Path) -> None:
    ref = gff(("g", "+", [("a", EX, CDS_A)]))
    shifted = [(151, 300), (401, 603), (704, 850)]  # exon 2 end +3, exon 3 start +3
    pred = gff(("p", "+", [("p1", [(101, 300), (401, 603), (704, 900)], shifted)]))
    lv = run(tmp_path, ref, pred)
    assert counts(lv, "exon") == (3, 3, 1, 1)
    assert counts(lv, "intron") == (2, 2, 1, 1)
    assert counts(lv, "intron_chain") == (1, 1, 0, 0)
    assert counts(lv, "transcript") == (1, 1, 0, 0)
    assert counts(lv, "gene") == (1, 1, 0, 0)
    assert counts(lv, "base") == (500, 500, 497, 497)


def test_minus_strand_intron_chain(tmp_path: Path) -> None:
    ex = [(1001, 1100), (1201, 1300), (1401, 1500)]
    ref = gff(("g", "-", [("a", ex, ex)]))
    same = gff(("p", "-", [("p1", ex, ex)]))
    lv = run(tmp_path, ref, same)
    for level in LEVELS:
        assert lv[level].f1 == 1.0, level
    assert counts(lv, "intron_chain") == (1, 1, 1, 1)
    # the same coordinates on the other strand match nothing
    other = gff(("p", "+", [("p1", ex, ex)]))
    lv = run(tmp_path, ref, other)
    for level in LEVELS:
        assert lv[level].matched_reference == 0, level
    # one intron of the chain moved: introns partly right, the chain wrong
    moved = [(1001, 1100), (1211, 1300), (1401, 1500)]
    lv = run(tmp_path, ref, gff(("p", "-", [("p1", moved, moved)])))
    assert counts(lv, "intron") == (2, 2, 1, 1)
    assert counts(lv, "intron_chain") == (1, 1, 0, 0)


GTF_PRED = """\
c1\tx\tCDS\t151\t300\t.\t-\t0\tgene_id "p"; transcript_id "p.t1";
c1\tx\tCDS\t401\t600\t.\t-\t0\tgene_id "p"; transcript_id "p.t1";
c1\tx\tstop_codon\t149\t150\t.\t-\t0\tgene_id "p"; transcript_id "p.t1";
c1\tx\tstop_codon\t1\t1\t.\t-\t0\tgene_id "p"; transcript_id "p.t1";
c1\tx\tCDS\t2001\t2097\t.\t+\t0\tgene_id "q"; transcript_id "q.t1";
c1\tx\tstop_codon\t2098\t2100\t.\t+\t0\tgene_id "q"; transcript_id "q.t1";
"""


def test_gtf_separate_stop_codons(tmp_path: Path) -> None:
    # reference CDS includes the stop codon; on '-' the stop is split over an intron:
    # 2 bases at 149-150 and 1 base alone at position 1 (its own 1-bp CDS piece)
    ref = gff(
        ("g", "-", [("a", [(1, 1), (149, 300), (401, 600)], [(1, 1), (149, 300), (401, 600)])]),
        ("h", "+", [("b", [(2001, 2100)], [(2001, 2100)])]),
    )
    lv = run(tmp_path, ref, GTF_PRED, pred_name="p.gtf")
    for level in LEVELS:
        assert lv[level].f1 == 1.0, level
    # without the stop codon lines the CDS ends differ
    no_stop = "".join(ln + "\n" for ln in GTF_PRED.splitlines() if "stop_codon" not in ln)
    lv = run(tmp_path, ref, no_stop, pred_name="p2.gtf")
    assert counts(lv, "transcript") == (2, 2, 0, 0)
    assert counts(lv, "base") == (453, 447, 447, 447)  # 1+152+200+100 vs 150+200+97


def test_exon_mode_vs_cds_mode(tmp_path: Path) -> None:
    ref = gff(("g", "+", [("a", EX, CDS_A)]))
    # same CDS, different UTR ends
    pred = gff(("p", "+", [("p1", [(121, 300), (401, 600), (701, 880)], CDS_A)]))
    lv = run(tmp_path, ref, pred)
    assert all(lv[level].f1 == 1.0 for level in LEVELS)
    lv = run(tmp_path, ref, pred, mode="exon")
    assert counts(lv, "exon") == (3, 3, 1, 1)
    assert counts(lv, "intron") == (2, 2, 2, 2)
    assert counts(lv, "intron_chain") == (1, 1, 1, 1)
    assert counts(lv, "transcript") == (1, 1, 0, 0)
    assert counts(lv, "base") == (600, 560, 560, 560)


def test_noncoding_only_in_exon_mode(tmp_path: Path) -> None:
    ref = gff(("g", "+", [("a", EX, CDS_A)]), ("n", "-", [("nc", [(3001, 3500)], [])]))
    pred = gff(("p", "+", [("p1", EX, CDS_A)]))
    assert counts(run(tmp_path, ref, pred), "gene") == (1, 1, 1, 1)
    assert counts(run(tmp_path, ref, pred, mode="exon"), "gene") == (2, 1, 1, 1)


def test_regions_and_seqids(tmp_path: Path) -> None:
    ref = gff(("g", "+", [("a", EX, CDS_A)]), ("h", "+", [("b", [(5001, 5300)], [(5001, 5300)])]))
    pred = gff(("p", "+", [("p1", EX, CDS_A)]))
    lv = run(tmp_path, ref, pred)
    assert counts(lv, "gene") == (2, 1, 1, 1)
    lv = run(tmp_path, ref, pred, regions={"c1": [(0, 1000)]})
    assert counts(lv, "gene") == (1, 1, 1, 1)
    assert counts(lv, "base") == (500, 500, 500, 500)
    lv = run(tmp_path, ref, pred, seqids=["c2"])
    assert counts(lv, "gene") == (0, 0, 0, 0)
    assert lv["gene"].sensitivity is None and lv["gene"].f1 is None


@pytest.mark.parametrize("parts", REAL, ids=lambda p: p[0])
@pytest.mark.parametrize("mode", ["CDS", "exon"])
def test_real_file_against_itself(parts: tuple[str, str], mode: str) -> None:
    a = read_annotation(shared(*parts), feature=mode, missing_parents="skip")
    res = compare(a, a, mode=mode)
    for level in LEVELS:
        st = res.levels[level]
        assert st.reference > 0, level
        assert st.sensitivity == st.precision == st.f1 == 1.0, level
    if mode == "CDS":
        assert res.levels["gene"].reference == a.summary.coding_genes


def test_real_file_against_augustus() -> None:
    """The committed AUGUSTUS peer output scores between 0 and 100 on Chr5 (docs/eval.md)."""
    ref = read_annotation(shared(*REAL[0]), missing_parents="skip")
    pred = read_annotation(AUGUSTUS)
    res = compare(ref, pred, seqids=["Chr5"])
    assert res.levels["gene"].reference == 76
    assert res.levels["gene"].prediction == 74
    assert 0.5 < res.levels["exon"].f1 < 1.0
    assert res.levels["base"].sensitivity > res.levels["transcript"].sensitivity
    cal = calibration_report(res.reference_models, res.prediction_models, "CDS")
    assert cal["exon"].n == 429 and cal["intron"].n > 300
    assert cal["boundary"].n == 0 and cal["boundary"].ece is None


# ------------------------------------------------------------------ calibration


def test_calibrate_known_answer() -> None:
    p = [0.05] * 10 + [0.95] * 10 + [1.0] * 5
    ok = [True] + [False] * 9 + [True] * 9 + [False] + [True] * 5
    c = calibrate(p, ok, n_bins=10)
    assert c.n == 25
    assert [b.count for b in c.bins] == [10, 0, 0, 0, 0, 0, 0, 0, 0, 15]
    last = c.bins[-1]
    assert last.mean_posterior == pytest.approx((0.95 * 10 + 5) / 15)
    assert last.observed == pytest.approx(14 / 15)
    expected = 10 / 25 * abs(0.05 - 0.1) + 15 / 25 * abs(last.mean_posterior - 14 / 15)
    assert c.ece == pytest.approx(expected)
    # perfectly calibrated: ECE 0
    assert calibrate([0.5, 0.5], [True, False], n_bins=4).ece == 0.0
    with pytest.raises(ValueError):
        calibrate([1.5], [True])


SCORED_PRED = """\
##gff-version 3
c1\tgenoseg\tgene\t101\t900\t0.9\t+\t.\tID=p
c1\tgenoseg\tmRNA\t101\t900\t0.9\t+\t.\tID=p1;Parent=p
c1\tgenoseg\tCDS\t151\t300\t0.8\t+\t0\tParent=p1;start_posterior=0.9;end_posterior=0.7
c1\tgenoseg\tintron\t301\t400\t0.6\t+\t.\tParent=p1
c1\tgenoseg\tCDS\t401\t603\t0.4\t+\t0\tParent=p1;start_posterior=0.7;end_posterior=0.2
c1\tgenoseg\tintron\t604\t703\t0.3\t+\t.\tParent=p1
c1\tgenoseg\tCDS\t704\t850\t0.2\t+\t0\tParent=p1;start_posterior=0.1;end_posterior=1.0
"""


def test_calibration_from_gff3_posteriors(tmp_path: Path) -> None:
    ref = gff(("g", "+", [("a", EX, CDS_A)]))
    r, p = tmp_path / "r.gff3", tmp_path / "p.gff3"
    r.write_text(ref)
    p.write_text(SCORED_PRED)
    res = compare(read_annotation(r), read_annotation(p))
    cal = calibration_report(res.reference_models, res.prediction_models, "CDS", n_bins=2)
    # exons: 0.8 correct; 0.4 wrong (end shifted); 0.2 wrong (start shifted)
    ex = cal["exon"]
    assert (ex.n, [b.count for b in ex.bins]) == (3, [2, 1])
    assert ex.bins[1].observed == 1.0 and ex.bins[0].observed == 0.0
    assert ex.ece == pytest.approx((0.4 - 0 + 0.2 - 0) / 3 + (1 - 0.8) / 3)
    # introns: (300,400) correct at 0.6, (603,703) wrong at 0.3
    assert cal["intron"].ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.3)
    # boundaries: 151 ok .9, 300 ok .7, 401 ok .7, 603 wrong .2, 704 wrong .1, 850 ok 1.0
    b = cal["boundary"]
    assert b.n == 6
    assert [x.count for x in b.bins] == [2, 4]
    assert b.bins[0].observed == 0.0 and b.bins[1].observed == 1.0


# ------------------------------------------------------------------ CLI


def _files(tmp_path: Path) -> tuple[str, str]:
    r, p = tmp_path / "r.gff3", tmp_path / "p.gff3"
    r.write_text(gff(("g", "+", [("a", EX, CDS_A)])))
    p.write_text(SCORED_PRED)
    return str(r), str(p)


def test_cli_table_and_json(tmp_path: Path) -> None:
    r, p = _files(tmp_path)
    res = CliRunner().invoke(cli, ["eval", r, p])
    assert res.exit_code == 0, res.output
    table = res.stdout.split("\n\n")[0]
    rows = {ln.split()[0]: ln.split() for ln in table.splitlines() if ln[:1].isalpha()}
    assert rows["exon"][1:5] == ["3", "3", "1", "1"]
    assert rows["exon"][5] == "33.33"
    assert "ECE=" in res.stdout
    res = CliRunner().invoke(cli, ["eval", r, p, "--json", "--feature", "exon"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["mode"] == "exon"
    assert set(doc["levels"]) == set(LEVELS)
    assert doc["levels"]["intron"]["matched_reference"] == 1
    assert doc["inputs"]["reference"]["coding_transcripts"] == 1


def test_cli_reliability_and_output(tmp_path: Path) -> None:
    r, p = _files(tmp_path)
    png, out = tmp_path / "rel.png", tmp_path / "report.txt"
    res = CliRunner().invoke(cli, ["eval", r, p, "--reliability", str(png), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.read_text().startswith("# reference:")
    assert sorted(x.name for x in tmp_path.iterdir()) == [
        "p.gff3",
        "r.gff3",
        "rel.png",
        "report.txt",
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seqids", "chrX"], "--seqids: 'chrX' is in neither annotation"),
        (["--bins", "0"], "--bins must be >= 1"),
        (["-o", "/nonexistent/dir/x.txt"], "-o /nonexistent/dir/x.txt: directory does not exist"),
    ],
)
def test_cli_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    r, p = _files(tmp_path)
    res = CliRunner().invoke(cli, ["eval", r, p, *args])
    assert res.exit_code != 0
    assert message in res.stderr


def test_cli_bad_input_leaves_nothing(tmp_path: Path) -> None:
    r, p = _files(tmp_path)
    bad = tmp_path / "bad.gff3"
    bad.write_text(Path(p).read_text() + "c1\tx\tCDS\t900\t800\t.\t+\t0\tParent=p1\n")
    out, png = tmp_path / "o.txt", tmp_path / "o.png"
    res = CliRunner().invoke(cli, ["eval", r, str(bad), "-o", str(out), "--reliability", str(png)])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == (f"genoseg: error: {bad}:9: end 800 < start 900")
    assert "Traceback" not in res.output
    assert not out.exists() and not png.exists()
    # a BED region on an unknown contig names the BED file and line
    bed = tmp_path / "r.bed"
    bed.write_text("c1\t0\t1000\nchr9\t0\t10\n")
    res = CliRunner().invoke(cli, ["eval", r, p, "--regions", str(bed), "-o", str(out)])
    assert res.exit_code == 1 and f"{bed}:2: contig 'chr9'" in res.stderr
    assert not out.exists()


@pytest.mark.parametrize("which", ["-o", "--reliability"])
def test_cli_output_never_overwrites_an_input(tmp_path: Path, which: str) -> None:
    r, p = _files(tmp_path)
    before = Path(r).read_bytes(), Path(p).read_bytes()
    for target, name in ((r, "REFERENCE"), (p, "PREDICTION")):
        res = CliRunner().invoke(cli, ["eval", r, p, which, target])
        assert res.exit_code == 1, res.output
        assert f"{which} {target} is the same file as the input {name}" in res.stderr
        assert "Traceback" not in res.output
    assert (Path(r).read_bytes(), Path(p).read_bytes()) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.gff3", "r.gff3"]


def test_console_script_subprocess(tmp_path: Path) -> None:
    r, p = _files(tmp_path)
    exe = Path(sys.executable).parent / "genoseg"
    ok = subprocess.run([str(exe), "eval", r, p, "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["levels"]["gene"]["reference"] == 1
    missing = subprocess.run(
        [str(exe), "eval", r, str(tmp_path / "none.gff3")], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert missing.stdout == ""
    lines = missing.stderr.strip().splitlines()
    assert lines[-1].startswith("genoseg: error: ") and "none.gff3" in lines[-1]
    assert "Traceback" not in missing.stderr


def test_cli_real_self_comparison() -> None:
    path = str(shared(*REAL[2]))
    res = CliRunner().invoke(cli, ["eval", path, path, "--skip-missing-parents", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert all(v["f1"] == 1.0 for v in doc["levels"].values())
    # without the flag the sliced file's missing parents are an error
    res = CliRunner().invoke(cli, ["eval", path, path])
    assert res.exit_code == 1 and "is not in the file" in res.stderr


def test_cli_reliability_without_matplotlib(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r, p = _files(tmp_path)
    out = tmp_path / "o.txt"
    res = CliRunner().invoke(
        cli, ["eval", r, p, "--reliability", str(tmp_path / "x.png"), "-o", str(out)]
    )
    assert res.exit_code == 1 and "needs matplotlib" in res.stderr
    assert not out.exists()


def test_cli_empty_reference(tmp_path: Path) -> None:
    r, p = _files(tmp_path)
    empty = tmp_path / "empty.gff3"
    empty.write_text("##gff-version 3\n")
    res = CliRunner().invoke(cli, ["eval", str(empty), p])
    assert res.exit_code == 1
    assert f"{empty}: no coding transcripts" in res.stderr
    # an empty prediction is valid: nothing found, precision undefined
    res = CliRunner().invoke(cli, ["eval", r, str(empty), "--json"])
    assert res.exit_code == 0, res.output
    gene = json.loads(res.stdout)["levels"]["gene"]
    assert gene["sensitivity"] == 0.0 and gene["precision"] is None


# ------------------------------------------------------------------ scored sequences (issue 8.13)

DMEL = ("dmelanogaster_1pct", "annotation_with_rnaseq_splice.gff3")
AUGUSTUS_DMEL = REPO / "benchmarks" / "peers" / "augustus_dmelanogaster_1pct.gff3"


def _table_rows(text: str) -> dict[str, list[str]]:
    table = text.split("\n\n")[0]
    return {ln.split()[0]: ln.split() for ln in table.splitlines() if ln[:1].isalpha()}


def test_default_scores_only_reference_seqids(tmp_path: Path) -> None:
    ref = gff(("g", "+", [("a", EX, CDS_A)]))
    pred_text = gff(("p", "+", [("p1", EX, CDS_A)]))
    other = gff(("q", "-", [("q1", [(101, 400)], [(101, 400)])]), seqid="c9")
    pred_text += "".join(ln + "\n" for ln in other.splitlines() if not ln.startswith("##gff"))
    lv = run(tmp_path, ref, pred_text)
    assert counts(lv, "base") == (500, 500, 500, 500)
    assert all(lv[level].f1 == 1.0 for level in LEVELS)
    lv = run(tmp_path, ref, pred_text, all_seqids=True)
    assert counts(lv, "base") == (500, 800, 500, 500)
    assert counts(lv, "gene") == (1, 2, 1, 1)
    r, p = tmp_path / "r.gff3", tmp_path / "p.gff3"
    res = compare(read_annotation(r), read_annotation(p))
    assert res.scored_seqids == ["c1"]
    assert res.left_out == {"reference": {}, "prediction": {"c9": 1}}
    cli_res = CliRunner().invoke(cli, ["eval", str(r), str(p)])
    assert cli_res.exit_code == 0, cli_res.output
    assert "left out, not on a sequence the reference annotates" in cli_res.stderr
    assert "prediction c9 (1 transcript)" in cli_res.stderr
    assert "# scored seqids: c1" in cli_res.stdout


def test_cli_no_shared_seqid(tmp_path: Path) -> None:
    r, p = tmp_path / "r.gff3", tmp_path / "p.gff3"
    r.write_text(gff(("g", "+", [("a", EX, CDS_A)]), seqid="chr1"))
    p.write_text(gff(("p", "+", [("p1", EX, CDS_A)]), seqid="1"))
    out = tmp_path / "o.txt"
    res = CliRunner().invoke(cli, ["eval", str(r), str(p), "-o", str(out)])
    assert res.exit_code == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("genoseg: error: no sequence name is shared: ")
    assert f"{r} annotates 'chr1', {p} predicts on '1'" in last
    assert not out.exists()
    # the old behaviour on request: scored, all zeros, with a warning
    res = CliRunner().invoke(cli, ["eval", str(r), str(p), "--all-seqids", "--json"])
    assert res.exit_code == 0, res.output
    assert "warning: no sequence name is shared" in res.stderr
    assert json.loads(res.stdout)["levels"]["gene"]["matched_reference"] == 0
    res = CliRunner().invoke(cli, ["eval", str(r), str(p), "--all-seqids", "--seqids", "1"])
    assert res.exit_code == 1 and "--seqids and --all-seqids exclude each other" in res.stderr


def test_real_dmel_unannotated_seqids_left_out() -> None:
    """AUGUSTUS (fly) on all of D. melanogaster 1pct: 2R and 3R have no reference genes."""
    ref = str(shared(*DMEL))
    res = CliRunner().invoke(cli, ["eval", ref, str(AUGUSTUS_DMEL), "--skip-missing-parents"])
    assert res.exit_code == 0, res.output
    rows = _table_rows(res.stdout)
    assert rows["base"][6] == "83.62"  # base precision on the annotated sequences
    assert "# scored seqids: 2L,3L,4,X,Y" in res.stdout
    assert "prediction 2R (8 transcripts), 3R (14 transcripts)" in res.stderr
    old = CliRunner().invoke(
        cli, ["eval", ref, str(AUGUSTUS_DMEL), "--skip-missing-parents", "--all-seqids"]
    )
    assert old.exit_code == 0, old.output
    assert _table_rows(old.stdout)["base"][6] == "36.79"
    assert _table_rows(old.stdout)["base"][5] == rows["base"][5]  # sensitivity unchanged


# ------------------------------------------------------------------ regions (issue 8.14)


def test_regions_clip_bases_of_a_crossing_transcript(tmp_path: Path) -> None:
    ref = gff(("g", "+", [("a", EX, CDS_A)]))
    crossing = CDS_A + [(951, 1100)]  # last exon crosses the region end (1000)
    pred = gff(("p", "+", [("p1", crossing, crossing)]))
    r, p = tmp_path / "r.gff3", tmp_path / "p.gff3"
    r.write_text(ref)
    p.write_text(pred)
    res = compare(read_annotation(r), read_annotation(p), regions={"c1": [(0, 1000)]})
    lv = res.levels
    assert counts(lv, "base") == (500, 550, 500, 500)  # 951..1000 inside, 1001..1100 not
    assert counts(lv, "exon") == (3, 3, 3, 3)  # the crossing exon is not inside
    assert counts(lv, "intron") == (2, 3, 2, 2)
    assert counts(lv, "intron_chain") == (1, 0, 0, 0)
    assert counts(lv, "transcript") == (1, 0, 0, 0)
    assert counts(lv, "gene") == (1, 0, 0, 0)
    assert res.region_edges == {
        "reference": {"transcripts": 0, "genes": 0},
        "prediction": {"transcripts": 1, "genes": 1},
    }
    bed = tmp_path / "r.bed"
    bed.write_text("c1\t0\t1000\n")
    cli_res = CliRunner().invoke(cli, ["eval", str(r), str(p), "--regions", str(bed)])
    assert cli_res.exit_code == 0, cli_res.output
    edge = "prediction 1 transcript (1 gene left out) cross a region edge"
    assert edge in cli_res.stderr and edge in cli_res.stdout


def test_real_regions_gene_spans_keep_base_sensitivity() -> None:
    """Regions = the reference's Chr5 gene spans hold every reference coding base, so the
    base sensitivity must equal the unrestricted one (AUGUSTUS genes crossing a span edge
    were dropped whole before: 85.0 instead of 98.7)."""
    ref = read_annotation(shared(*REAL[0]), missing_parents="skip")
    pred = read_annotation(AUGUSTUS)
    spans = {"Chr5": [(g.start, g.end) for g in ref.genes["Chr5"]]}
    full = compare(ref, pred, seqids=["Chr5"])
    res = compare(ref, pred, seqids=["Chr5"], regions=spans)
    assert res.levels["base"].reference == full.levels["base"].reference
    assert res.levels["base"].sensitivity == full.levels["base"].sensitivity
    assert round(100 * res.levels["base"].sensitivity, 1) == 98.7
    assert res.region_edges["reference"] == {"transcripts": 0, "genes": 0}
    assert res.region_edges["prediction"] == {"transcripts": 8, "genes": 8}
    # predicted genes overlapping a span, less the 8 crossing an edge, are scored
    overlapping = {m.gene for m in res.prediction_scope}
    assert res.levels["gene"].prediction == len(overlapping) - 8 == 62


# ------------------------------------------------------------------ calibration gaps (issue 8.15)


def test_cli_reliability_without_posteriors_keeps_table(tmp_path: Path) -> None:
    r, p = tmp_path / "r.gff3", tmp_path / "p.gff3"
    r.write_text(gff(("g", "+", [("a", EX, CDS_A)])))
    p.write_text(gff(("p", "+", [("p1", EX, CDS_A)])))  # no scores anywhere
    png = tmp_path / "rel.png"
    res = CliRunner().invoke(cli, ["eval", str(r), str(p), "--reliability", str(png)])
    assert res.exit_code == 0, res.output
    assert _table_rows(res.stdout)["gene"][1:5] == ["1", "1", "1", "1"]
    assert f"warning: no reliability diagram written to {png}" in res.stderr
    assert not png.exists()
    assert "exon posteriors: n=0, no posteriors in the prediction (3 exons without a score" in (
        res.stdout
    )
    assert "intron posteriors: n=0, no posteriors in the prediction (2 introns without" in (
        res.stdout
    )


def test_real_augustus_exon_mode_unscored_exons(tmp_path: Path) -> None:
    """AUGUSTUS scores CDS and intron lines, not exon lines: in exon mode every exon is
    unscored (said, and left out) while the introns still give a diagram."""
    ref = str(shared(*REAL[0]))
    png = tmp_path / "rel.png"
    args = ["eval", ref, str(AUGUSTUS), "--seqids", "Chr5", "--skip-missing-parents"]
    res = CliRunner().invoke(cli, [*args, "--feature", "exon", "--reliability", str(png)])
    assert res.exit_code == 0, res.output
    n_exons = _table_rows(res.stdout)["exon"][2]
    assert f"exon posteriors: n=0, no posteriors in the prediction ({n_exons} exons" in res.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
    # in CDS mode every CDS piece is scored
    res = CliRunner().invoke(cli, [*args, "--json"])
    cal = json.loads(res.stdout)["calibration"]
    assert cal["exon"]["n"] == 429 and cal["exon"]["unscored"] == 0


@pytest.mark.parametrize("rule", ["any", "gt"])
def test_real_transcript_counts_agree_with_stderr(rule: str) -> None:
    """The stderr summary states the transcript row's counts (FlyBase: many isoforms share
    a CDS, so distinct CDS chains and transcripts differ)."""
    ref = str(shared(*DMEL))
    res = CliRunner().invoke(
        cli,
        ["eval", ref, str(AUGUSTUS_DMEL), "--skip-missing-parents", "--gene-rule", rule],
    )
    assert res.exit_code == 0, res.output
    row = _table_rows(res.stdout)["transcript"]
    scored = [ln for ln in res.stderr.splitlines() if "scored on" in ln][0]
    ref_part, pred_part = scored.split(": ")[-1].split("; ")
    assert ref_part.split()[1] == row[1] and pred_part.split()[1] == row[2]
    assert row[1] == ("148" if rule == "any" else "236")


# ------------------------------------------------------------------ gene rule (issue 8.16)

# gene g1 (+): isoforms A and B; gene g2 (-): D and D2 (same CDS as D, longer 5' UTR).
# The prediction has g1's A and a wrong C, and only D of g2.
EX_B = [(101, 300), (701, 950)]
CDS_C = [(151, 300), (401, 600), (701, 880)]
EX_D, CDS_D = [(3001, 3300), (3401, 3600)], [(3051, 3300), (3401, 3550)]
RULE_REF = gff(
    ("g1", "+", [("A", EX, CDS_A), ("B", EX_B, CDS_B)]),
    ("g2", "-", [("D", EX_D, CDS_D), ("D2", [(3001, 3300), (3401, 3700)], CDS_D)]),
)
RULE_PRED = gff(
    ("p1", "+", [("pA", EX, CDS_A), ("pC", [(101, 300), (401, 600), (701, 950)], CDS_C)]),
    ("p2", "-", [("pD", EX_D, CDS_D)]),
)


def test_gene_rule_any_vs_gt(tmp_path: Path) -> None:
    any_rule = run(tmp_path, RULE_REF, RULE_PRED)
    gt_rule = run(tmp_path, RULE_REF, RULE_PRED, gene_rule="gt")
    # any: distinct CDS chains (D and D2 are one); a gene is found through one isoform
    assert counts(any_rule, "transcript") == (3, 3, 2, 2)
    assert counts(any_rule, "gene") == (2, 2, 2, 2)
    # gt: every transcript counts, one to one; a gene needs all its isoforms
    assert counts(gt_rule, "transcript") == (4, 3, 2, 2)
    assert counts(gt_rule, "gene") == (2, 2, 0, 0)
    for level in ("base", "exon", "intron", "intron_chain"):
        assert counts(any_rule, level) == counts(gt_rule, level)
    # the prediction against itself: both rules give 100 %
    selfcmp = run(tmp_path, RULE_PRED, RULE_PRED, gene_rule="gt")
    assert counts(selfcmp, "gene") == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="gene_rule"):
        run(tmp_path, RULE_REF, RULE_PRED, gene_rule="all")


def test_gene_rule_gt_matches_gt_eval(tmp_path: Path) -> None:
    """On the hand-made case, --gene-rule gt gives gt eval's CDS-level gene and mRNA counts."""
    import os
    import re
    import shutil

    gt = shutil.which("gt")
    if gt is None:
        msg = "gt (genometools) is not installed"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    r, p = tmp_path / "r.gff3", tmp_path / "p.gff3"
    r.write_text(RULE_REF)
    p.write_text(RULE_PRED)
    out = subprocess.run([gt, "eval", str(r), str(p)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = dict(
        re.findall(
            r"^(\w+ (?:sensitivity|specificity)) \(CDS level\):.*\((\d+/\d+)\)", out.stdout, re.M
        )
    )
    res = CliRunner().invoke(cli, ["eval", str(r), str(p), "--gene-rule", "gt", "--json"])
    assert res.exit_code == 0, res.output
    lv = json.loads(res.stdout)["levels"]
    for gt_name, ours in (("gene", "gene"), ("mRNA", "transcript")):
        st = lv[ours]
        assert found[f"{gt_name} sensitivity"] == f"{st['matched_reference']}/{st['reference']}"
        assert found[f"{gt_name} specificity"] == f"{st['matched_prediction']}/{st['prediction']}"
