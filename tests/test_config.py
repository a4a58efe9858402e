"""YAML config loading: defaults, types, unknown keys, relative paths, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from genoseg.config import config_to_dict, load_config
from genoseg.data.prepare import PrepareConfig
from genoseg.errors import GenosegError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_shipped_prepare_config_loads():
    cfg = load_config(PrepareConfig, ROOT / "configs" / "prepare.yaml")
    assert cfg.fasta == ROOT / "configs" / ".." / "data_samples" / "athaliana_chr5_60k.fa"
    assert cfg.fasta.exists() and cfg.gff3.exists() and cfg.bam.exists()
    assert cfg.windows.max_length == 2 * cfg.windows.length  # 0 -> default


def test_defaults_relative_paths_and_overrides(tmp_path):
    p = _write(tmp_path, "fasta: g.fa\ngff3: /abs/a.gff3\noutput: out.h5\n")
    cfg = load_config(PrepareConfig, p)
    assert cfg.fasta == tmp_path / "g.fa" and cfg.gff3 == Path("/abs/a.gff3")
    assert cfg.bam is None and cfg.windows.length == 50000 and cfg.compression == 4
    cfg = load_config(PrepareConfig, p, {"output": "o2.h5", "bam": None, "windows": {"halo": 7}})
    assert cfg.output == Path("o2.h5")  # command-line paths stay relative to the cwd
    assert cfg.windows.halo == 7 and cfg.windows.length == 50000
    d = config_to_dict(cfg)
    assert d["output"] == "o2.h5" and d["windows"]["halo"] == 7


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("fasta: a\ngff3: b\noutput: c\nfastq: d\n", r"c\.yaml: unknown key 'fastq'"),
        ("fasta: a\ngff3: b\noutput: c\nwindows: {lenght: 5}\n", r"unknown key 'windows\.lenght'"),
        (
            "fasta: a\ngff3: b\noutput: c\nwindows: {length: big}\n",
            r"'windows\.length' must be an int",
        ),
        (
            "fasta: a\ngff3: b\noutput: c\nwindows: {length: 10}\n",
            r"windows\.length must be >= 100",
        ),
        ("fasta: a\ngff3: b\noutput: c\ncompression: true\n", r"'compression' must be an integer"),
        ("fasta: a\ngff3: b\n", r"required key 'output' is missing"),
        ("fasta: a\ngff3: b\noutput: c\nregions: Chr1\n", r"'regions' must be a list"),
        ("fasta: [a\n", r"c\.yaml:\d+: invalid YAML"),
        ("- a\n- b\n", r"must hold a mapping"),
        ("fasta: a\ngff3: b\noutput: c\nannotation: {missing_parents: maybe}\n", "missing_parents"),
    ],
)
def test_bad_configs(tmp_path, text, pattern):
    with pytest.raises(GenosegError, match=pattern):
        load_config(PrepareConfig, _write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(GenosegError, match="nope.yaml: config file not found"):
        load_config(PrepareConfig, tmp_path / "nope.yaml")


def test_evidence_strandedness_is_checked_without_a_bam(tmp_path):
    """A wrong strandedness is an error naming the config file even when no BAM is given
    (it used to be accepted silently until a BAM came along)."""
    from click.testing import CliRunner

    from genoseg.cli import cli

    p = _write(tmp_path, "fasta: a.fa\ngff3: b.gff3\noutput: c.h5\nevidence: {strandedness: yes}\n")
    with pytest.raises(GenosegError, match=r"c\.yaml: 'evidence\.strandedness' must be a string"):
        load_config(PrepareConfig, p)  # YAML reads yes as true
    p.write_text("fasta: a.fa\ngff3: b.gff3\noutput: c.h5\nevidence: {strandedness: reverse}\n")
    res = CliRunner().invoke(cli, ["prepare", "-c", str(p)])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"genoseg: error: {p}: evidence.strandedness 'reverse' is not one of auto, unstranded, "
        "fr-firststrand, rf, fr-secondstrand, fr"
    ]
    p.write_text("fasta: a.fa\ngff3: b.gff3\noutput: c.h5\nevidence: {min_mapq: -1}\n")
    with pytest.raises(GenosegError, match=r"c\.yaml: evidence\.min_mapq must be >= 0"):
        load_config(PrepareConfig, p)
    # the default is auto, and every documented spelling is accepted
    assert (
        load_config(
            PrepareConfig, None, {"fasta": "a", "gff3": "b", "output": "c"}
        ).evidence.strandedness
        == "auto"
    )  # noqa: E501
    for value in ("auto", "unstranded", "fr-firststrand", "rf", "fr-secondstrand", "fr"):
        p.write_text(
            f"fasta: a.fa\ngff3: b.gff3\noutput: c.h5\nevidence: {{strandedness: {value}}}\n"
        )  # noqa: E501
        assert load_config(PrepareConfig, p).evidence.strandedness == value


def test_config_file_is_named_when_a_path_in_it_is_missing(tmp_path):
    from click.testing import CliRunner

    from genoseg.cli import cli

    p = _write(tmp_path, "fasta: missing.fa\ngff3: b.gff3\noutput: c.h5\n")
    res = CliRunner().invoke(cli, ["prepare", "-c", str(p)])
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"genoseg: error: {tmp_path / 'missing.fa'}: FASTA file not found (config {p})"
    )
