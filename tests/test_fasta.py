"""genoseg.data.fasta: indexing, slicing, encoding and bad-FASTA errors."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoseg.data import fasta
from genoseg.data.fasta import (
    Genome,
    decode_codes,
    encode_sequence,
    reverse_complement_codes,
)
from genoseg.errors import GenosegError
from tests.shared_data import shared

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data_samples" / "athaliana_chr5_60k.fa"


def read_fasta_naive(path: Path) -> dict[str, str]:
    """Reference parser: the whole file in memory."""
    out: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            out[name] = []
        elif name is not None:
            out[name].append(line.strip())
    return {k: "".join(v) for k, v in out.items()}


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- real data -----------------------------------------------------------------------
@pytest.mark.parametrize("organism", ["athaliana_1pct", "celegans_1pct", "dmelanogaster_1pct"])
def test_real_genomes_match_naive_parse(organism: str, cache: Path) -> None:
    path = shared(organism, "genome.fa")
    g = Genome.open(path, cache=cache)
    truth = read_fasta_naive(path)
    assert list(g.contigs) == list(truth)
    assert g.contigs == {k: len(v) for k, v in truth.items()}
    rng = np.random.default_rng(0)
    for name, seq in truth.items():
        assert g.fetch(name) == seq
        for _ in range(20):
            a, b = sorted(rng.integers(0, len(seq) + 1, size=2))
            assert g.fetch(name, int(a), int(b)) == seq[a:b]
            codes, soft = g.encode(name, int(a), int(b))
            assert decode_codes(codes) == "".join(
                c if c in "ACGT" else "N" for c in seq[a:b].upper()
            )
            assert np.array_equal(soft, np.array([c.islower() for c in seq[a:b]], dtype=bool))


def test_sample_fasta(cache: Path) -> None:
    g = Genome.open(SAMPLE, cache=cache)
    assert g.contigs == {"Chr5": 60170}
    assert g.fetch("Chr5") == read_fasta_naive(SAMPLE)["Chr5"]
    assert g.total_length == 60170


# -- encoding -------------------------------------------------------------------------
def test_encode_codes_iupac_and_softmask() -> None:
    codes, soft = encode_sequence("ACGTacgtNnRYKMSWBDHVU-*x")
    assert codes.dtype == np.uint8 and soft.dtype == bool
    # N, n and the IUPAC codes RYKMSWBDHV are 4; U is T; '-', '*' and other letters are 4
    assert codes.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] + [4] * 12 + [3] + [4, 4, 4]
    assert soft.tolist() == [False] * 4 + [True] * 4 + [False, True] + [False] * 13 + [True]


@given(st.text(alphabet="ACGTNacgtn", max_size=200))
def test_reverse_complement_codes(seq: str) -> None:
    codes, _ = encode_sequence(seq)
    rc = reverse_complement_codes(codes)
    table = str.maketrans("ACGTN", "TGCAN")
    assert decode_codes(rc) == decode_codes(codes).translate(table)[::-1]
    assert np.array_equal(reverse_complement_codes(rc), codes)


# -- compression and index placement ---------------------------------------------------
def test_bgzip_fasta_matches_plain(tmp_path: Path, cache: Path) -> None:
    bgz = tmp_path / "sample.fa.gz"
    pysam.tabix_compress(str(SAMPLE), str(bgz))
    g = Genome.open(bgz, cache=cache)
    plain = Genome.open(SAMPLE, cache=cache)
    assert g.contigs == plain.contigs
    assert g.gzi is not None and g.gzi.exists()
    for a, b in [(0, 10), (12345, 23456), (60000, 60170)]:
        assert g.fetch("Chr5", a, b) == plain.fetch("Chr5", a, b)


def test_plain_gzip_is_refused(tmp_path: Path, cache: Path) -> None:
    gz = tmp_path / "genome.fa.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(SAMPLE.read_bytes())
    with pytest.raises(GenosegError, match=r"genome\.fa\.gz.*bgzip"):
        Genome.open(gz, cache=cache)


def test_index_built_beside_writable_fasta(tmp_path: Path, cache: Path) -> None:
    fa = tmp_path / "g.fa"
    shutil.copy(SAMPLE, fa)
    g = Genome.open(fa, cache=cache)
    assert g.fai == Path(str(fa) + ".fai") and g.fai.exists()
    assert g.fetch("Chr5", 100, 110) == read_fasta_naive(SAMPLE)["Chr5"][100:110]


@pytest.mark.parametrize("umask", [0o022, 0o002])
@pytest.mark.parametrize("compress", [False, True])
def test_index_files_get_the_umask_mode(
    tmp_path: Path, cache: Path, compress: bool, umask: int
) -> None:
    """.fai / .gzi written by genoseg are readable like any file the user creates (not
    0600 temporaries), and no temporary is left beside them."""
    fa = tmp_path / ("g.fa.gz" if compress else "g.fa")
    if compress:
        pysam.tabix_compress(str(SAMPLE), str(fa))
    else:
        shutil.copy(SAMPLE, fa)
    old = os.umask(umask)
    try:
        g = Genome.open(fa, cache=cache)
    finally:
        os.umask(old)
    made = [g.fai] + ([Path(str(fa) + ".gzi")] if compress else [])
    for p in made:
        assert p.parent == tmp_path and p.stat().st_mode & 0o777 == 0o666 & ~umask, p
    assert not [p for p in tmp_path.rglob(".*")], "temporaries left behind"


@pytest.mark.parametrize("compress", [False, True])
def test_index_goes_to_cache_when_directory_is_read_only(
    tmp_path: Path, cache: Path, compress: bool
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    fa = ro / ("g.fa.gz" if compress else "g.fa")
    if compress:
        pysam.tabix_compress(str(SAMPLE), str(fa))
    else:
        shutil.copy(SAMPLE, fa)
    ro.chmod(0o555)
    try:
        g = Genome.open(fa, cache=cache)
        assert sorted(os.listdir(ro)) == [fa.name]  # nothing written beside the FASTA
        assert g.fai.parent == cache / "fai"
        assert g.fetch("Chr5", 59000, 59010) == read_fasta_naive(SAMPLE)["Chr5"][59000:59010]
        # a second open reuses the cached index
        assert Genome.open(fa, cache=cache).fai == g.fai
    finally:
        ro.chmod(0o755)


def test_stale_index_is_not_used(tmp_path: Path, cache: Path) -> None:
    fa = write(tmp_path / "g.fa", ">a\nACGT\n")
    Genome.open(fa, cache=cache)
    fa.write_text(">b\nACGTACGT\n")
    os.utime(fa, ns=(fa.stat().st_mtime_ns + 10**9, fa.stat().st_mtime_ns + 10**9))
    g = Genome.open(fa, cache=cache)
    assert g.contigs == {"b": 8}


def test_genome_pickles_and_reopens(cache: Path) -> None:
    g = Genome.open(SAMPLE, cache=cache)
    g.fetch("Chr5", 0, 5)
    g2 = pickle.loads(pickle.dumps(g))
    assert g2.fetch("Chr5", 0, 50) == g.fetch("Chr5", 0, 50)
    with g2:
        pass


# -- bad inputs: each names the file (and line / record / contig) ---------------------
@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", r"bad\.fa: empty FASTA"),
        ("\n\n", r"bad\.fa: empty FASTA"),
        (">a\nACGT\n>b\n>c\nACGT\n", r"bad\.fa:3: record 'b' has no sequence"),
        (">a\nACGT\n>b\n", r"bad\.fa:3: record 'b' has no sequence"),
        (">a\nACGT\n>a\nACGTA\n", r"bad\.fa:3: duplicate contig name 'a' \(first at line 1\)"),
        ("ACGT\n>a\nACGT\n", r"bad\.fa:1: sequence data before the first '>' header"),
        (">a\nACGT\nAC\nACGT\n", r"bad\.fa:4: lines of record 'a' differ in length"),
        (">a\nACGT\nACGTA\n", r"bad\.fa:3: lines of record 'a' differ in length"),
        (">a\nACGT\n\nACGT\n", r"bad\.fa:4: lines of record 'a' differ in length"),
        (">a\nAC1T\n", r"bad\.fa:2: unexpected character '1'"),
        ("> \nACGT\n", r"bad\.fa:1: FASTA header without a name"),
    ],
)
def test_bad_fasta(tmp_path: Path, cache: Path, text: str, pattern: str) -> None:
    fa = write(tmp_path / "bad.fa", text)
    with pytest.raises(GenosegError, match=pattern):
        Genome.open(fa, cache=cache)
    assert not Path(str(fa) + ".fai").exists()  # no partial index left behind


def test_duplicate_hidden_by_existing_index_is_found(tmp_path: Path, cache: Path) -> None:
    """samtools faidx silently drops duplicates; genoseg validates once anyway."""
    fa = write(tmp_path / "dup.fa", ">a\nACGT\n>a\nACGTA\n")
    pysam.faidx(str(fa))
    with pytest.raises(GenosegError, match=r"dup\.fa:3: duplicate contig name 'a'"):
        Genome.open(fa, cache=cache)


def test_missing_unreadable_and_directory(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(GenosegError, match=r"nope\.fa: FASTA file not found"):
        Genome.open(tmp_path / "nope.fa", cache=cache)
    with pytest.raises(GenosegError, match=r"is a directory"):
        Genome.open(tmp_path, cache=cache)


def test_non_utf8_contig_name_names_file_and_line(tmp_path: Path, cache: Path) -> None:
    fa = tmp_path / "latin1.fa"
    fa.write_bytes(b">a\nACGT\n>\xe9chr2 desc\nACGT\n")
    with pytest.raises(GenosegError, match=r"latin1\.fa:3: contig name .* is not UTF-8 text"):
        Genome.open(fa, cache=cache)
    assert not Path(str(fa) + ".fai").exists()
    # bytes that are not UTF-8 in the description only are fine
    fa.write_bytes(b">a \xe9\xff\nACGT\n")
    assert Genome.open(fa, cache=cache).contigs == {"a": 4}


def test_index_command_never_overwrites_the_index(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from genoseg.cli import cli

    monkeypatch.setenv("GENOSEG_CACHE", str(tmp_path / "cache"))
    fa = write(tmp_path / "g.fa", ">a\nACGT\n>b\nGG\n")
    res = CliRunner().invoke(cli, ["index", str(fa), "-o", f"{fa}.fai"])
    assert res.exit_code == 1, res.output
    assert f"-o {fa}.fai is the same file as the input FASTA index" in res.stderr
    assert Genome.open(fa).contigs == {"a": 4, "b": 2}  # the index is intact


def test_crlf_fasta_accepted(tmp_path: Path, cache: Path) -> None:
    fa = tmp_path / "crlf.fa"
    fa.write_bytes(b">a x\r\nACGT\r\nAC\r\n>b\r\nGGGG\r\n")
    g = Genome.open(fa, cache=cache)
    assert g.contigs == {"a": 6, "b": 4}
    assert g.fetch("a") == "ACGTAC"


def test_fetch_errors_name_contig_and_file(cache: Path) -> None:
    g = Genome.open(SAMPLE, cache=cache)
    with pytest.raises(GenosegError, match=r"contig 'chr5' is not in .*athaliana_chr5_60k\.fa"):
        g.fetch("chr5", 0, 10)
    with pytest.raises(GenosegError, match=r"outside contig 'Chr5' of length 60170"):
        g.fetch("Chr5", 60000, 60171)


def test_index_with_wrong_offsets_is_one_clean_error(
    tmp_path: Path, cache: Path, capfd: pytest.CaptureFixture
) -> None:
    """An index with the right names but another file's offsets (copied from elsewhere):
    fetch fails with one message that points at the index, and htslib prints nothing."""
    fa = write(tmp_path / "g.fa", ">a\n" + "ACGT" * 50 + "\n")
    (tmp_path / "g.fa.fai").write_text("a\t200\t9999\t60\t61\n")
    g = Genome.open(fa, cache=cache)
    with pytest.raises(GenosegError, match=r"g\.fa: cannot read a:0-200: .*stale index"):
        g.fetch("a", 0, 200)
    assert "[E::" not in capfd.readouterr().err


# -- the streaming validator across chunk boundaries ----------------------------------
records = st.lists(
    st.tuples(
        st.text(alphabet="ACGTNacgtRY", min_size=1, max_size=120),
        st.integers(min_value=1, max_value=30),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(recs=records, chunk=st.integers(min_value=1, max_value=64))
def test_validator_and_index_on_random_fasta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recs, chunk: int
) -> None:
    monkeypatch.setattr(fasta, "_CHUNK", chunk)
    d = tmp_path / f"r{abs(hash((tuple(recs), chunk)))}"
    d.mkdir()
    lines = []
    for k, (seq, width) in enumerate(recs):
        lines.append(f">seq{k} description")
        lines.extend(seq[i : i + width] for i in range(0, len(seq), width))
    fa = write(d / "r.fa", "\n".join(lines) + "\n")
    g = Genome.open(fa, cache=d / "cache")
    assert g.contigs == {f"seq{k}": len(s) for k, (s, _) in enumerate(recs)}
    for k, (seq, _) in enumerate(recs):
        assert g.fetch(f"seq{k}") == seq


def test_sample_is_the_shared_slice(cache: Path) -> None:
    """data_samples/ holds TAIR10 Chr5 1..60170 unchanged, with whole genes only."""
    real = Genome.open(shared("athaliana_1pct", "genome.fa"), cache=cache)
    assert Genome.open(SAMPLE, cache=cache).fetch("Chr5") == real.fetch("Chr5", 0, 60170)
    ids, parents = set(), set()
    for line in SAMPLE.with_suffix(".gff3").read_text().splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        assert f[0] == "Chr5" and 1 <= int(f[3]) <= int(f[4]) <= 60170
        attrs = dict(kv.split("=", 1) for kv in f[8].split(";") if "=" in kv)
        ids.add(attrs.get("ID"))
        parents.update(attrs.get("Parent", "").split(",") if "Parent" in attrs else [])
    assert parents <= ids  # every parent is in the slice
