"""Tests of genoseg plot: region PNG with gene models and posterior tracks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from genoseg.cli import cli
from genoseg.errors import GenosegError
from genoseg.eval.plot import parse_track_spec, read_track
from tests.shared_data import REPO, shared

AUGUSTUS = REPO / "benchmarks" / "peers" / "augustus_athaliana_chr5.gff3"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _bedgraph(tmp_path: Path, name: str, rows: list[tuple]) -> Path:
    p = tmp_path / name
    p.write_text("track type=bedGraph\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return p


def test_read_track(tmp_path: Path) -> None:
    p = _bedgraph(tmp_path, "exon_plus.bedgraph", [("Chr5", 0, 10, 0.1), ("Chr5", 10, 30, 0.9)])
    assert read_track(str(p), "Chr5", 5, 12) == [(0, 10, 0.1), (10, 30, 0.9)]
    assert read_track(str(p), "Chr5", 30, 40) == []
    assert read_track(str(p), "Chr1", 0, 40) == []
    assert parse_track_spec(str(p)) == ("exon_plus", str(p))
    assert parse_track_spec(f"intron+={p}") == ("intron+", str(p))


def test_plot_real_region_with_tracks(tmp_path: Path) -> None:
    t1 = _bedgraph(
        tmp_path,
        "cds_minus.bedgraph",
        [("Chr5", 1387, 1444, 0.44), ("Chr5", 1571, 1646, 0.84), ("Chr1", 0, 5, 1)],
    )
    t2 = _bedgraph(tmp_path, "intron_minus.bedgraph", [("Chr5", 1444, 1571, 0.38)])
    out = tmp_path / "region.png"
    ref = shared("athaliana_1pct", "annotation_with_rnaseq_splice.gff3")
    args = ["plot", "Chr5:1,000-12,000", "-r", str(ref), "-p", str(AUGUSTUS)]
    args += ["-t", str(t1), "-t", f"intron-={t2}", "--skip-missing-parents", "-o", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    w, h = _png_size(out)
    assert w == 1200 and h > 300  # 10 in wide at 120 dpi; taller with 2 tracks


def test_plot_with_genome_lengths(tmp_path: Path) -> None:
    genome = shared("athaliana_1pct", "genome.fa")
    out = tmp_path / "g.png"
    res = CliRunner().invoke(
        cli,
        ["plot", "Chr5:260000-269755", "-p", str(AUGUSTUS), "--genome", str(genome)]
        + ["-o", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert _png_size(out)[0] == 1200
    res = CliRunner().invoke(
        cli,
        ["plot", "Chr5:260000-269757", "-p", str(AUGUSTUS), "--genome", str(genome)]
        + ["-o", str(out) + "2"],
    )
    assert res.exit_code == 1 and "beyond contig 'Chr5' of length 269755" in res.stderr


@pytest.mark.parametrize(
    "region,message",
    [
        ("chr5:1-100", "contig 'chr5' is not in the inputs"),
        ("Chr5:100-50", "need 1 <= start <= end"),
    ],
)
def test_plot_bad_region(tmp_path: Path, region: str, message: str) -> None:
    out = tmp_path / "x.png"
    res = CliRunner().invoke(cli, ["plot", region, "-p", str(AUGUSTUS), "-o", str(out)])
    assert res.exit_code == 1
    assert message in res.stderr
    assert "Traceback" not in res.output
    assert not out.exists()


def test_plot_bad_track_leaves_nothing(tmp_path: Path) -> None:
    bad = _bedgraph(tmp_path, "bad.bedgraph", [("Chr5", 10, "x", 0.5)])
    out = tmp_path / "x.png"
    res = CliRunner().invoke(
        cli, ["plot", "Chr5:1-1000", "-p", str(AUGUSTUS), "-t", str(bad), "-o", str(out)]
    )
    assert res.exit_code == 1
    assert f"{bad}:2: start/end must be integers" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bedgraph"]
    with pytest.raises(GenosegError, match="does not exist"):
        parse_track_spec(str(tmp_path / "nope.bedgraph"))


def test_plot_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "x.png"
    res = CliRunner().invoke(cli, ["plot", "Chr5:1-1000", "-p", str(AUGUSTUS), "-o", str(out)])
    assert res.exit_code == 1
    assert "needs matplotlib" in res.stderr
    assert not out.exists()


def test_plot_output_never_overwrites_an_input(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    pred = tmp_path / "p.gff3"
    pred.write_bytes(AUGUSTUS.read_bytes())
    track = _bedgraph(tmp_path, "t.bedgraph", [("Chr5", 0, 10, 0.5)])
    for args in (["-p", str(pred)], ["-r", str(pred)], ["-p", str(AUGUSTUS), "-t", f"x={track}"]):
        out = args[-1].partition("=")[2] or args[-1]
        res = CliRunner().invoke(cli, ["plot", "Chr5:1-1000", *args, "-o", out])
        assert res.exit_code == 1, res.output
        assert "is the same file as the input" in res.stderr and "Traceback" not in res.output
    assert pred.read_bytes() == AUGUSTUS.read_bytes()
    assert track.read_text().startswith("track type=bedGraph")
    # a PNG cannot go to stdout: refused, and no file named '-' appears
    res = CliRunner().invoke(cli, ["plot", "Chr5:1-1000", "-p", str(pred), "-o", "-"])
    assert res.exit_code == 1 and "cannot be written to stdout" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gff3", "t.bedgraph"]
    # nor over the genome's FASTA index (plot --genome reads it)
    fasta = tmp_path / "g.fa"
    fasta.write_text(">Chr5\n" + "ACGT" * 300 + "\n")
    fai = tmp_path / "g.fa.fai"
    fai.write_text("Chr5\t1200\t6\t1200\t1201\n")
    res = CliRunner().invoke(
        cli, ["plot", "Chr5:1-1000", "-p", str(pred), "--genome", str(fasta), "-o", str(fai)]
    )
    assert res.exit_code == 1 and "is the same file as the input" in res.stderr, res.output
    assert fai.read_text() == "Chr5\t1200\t6\t1200\t1201\n"


def test_plot_track_that_is_not_bedgraph_names_file_and_line(tmp_path: Path) -> None:
    fasta = tmp_path / "genome.fa"
    fasta.write_text(">Chr5\nACGTACGT\nACGT\n")
    res = CliRunner().invoke(cli, ["plot", "Chr5:1-10", "-t", str(fasta), "-o", "x.png"])
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        f"genoseg: error: {fasta}:1: bedGraph needs 4 columns (chrom start end value)"
    )
