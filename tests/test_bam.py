"""genoseg.data.bam: evidence tracks, strandedness, junctions and bad-BAM errors."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np
import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoseg.data.bam import CHANNELS, Evidence, reverse_evidence
from genoseg.data.fasta import Genome
from genoseg.errors import GenosegError
from tests.shared_data import cram_copy, shared

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_samples"
SAMPLE_BAM = SAMPLES / "athaliana_chr5_60k.bam"
SAMPLE_FA = SAMPLES / "athaliana_chr5_60k.fa"
ORGANISMS = {
    "athaliana_1pct": "annotation_with_rnaseq_splice.gff3",
    "celegans_1pct": "annotation_with_rnaseq.gff3",
    "dmelanogaster_1pct": "annotation_with_rnaseq_splice.gff3",
}


def rnaseq_splice(gff3: Path) -> list[tuple[str, int, int, str, int]]:
    """RNASeq_splice lines as (contig, 0-based start, end, strand, score)."""
    out = []
    for line in gff3.read_text().splitlines():
        f = line.split("\t")
        if len(f) == 9 and f[1] == "RNASeq_splice":
            out.append((f[0], int(f[3]) - 1, int(f[4]), f[6], int(float(f[5]))))
    return out


@pytest.mark.parametrize("organism", sorted(ORGANISMS))
def test_real_junctions_match_gff3_rnaseq_splice(organism: str, tmp_path: Path) -> None:
    """Every junction found in the BAM is an RNASeq_splice intron of the GFF3, and back.

    The synthetic reads put min(score, 20) reads of 50+50 bp on each RNASeq_splice line,
    so junctions whose 50 bp flanks do not fit in the contig have no reads.
    """
    d = shared(organism)
    g = Genome.open(d / "genome.fa", cache=tmp_path)
    ev = Evidence.open(d / "synthetic_junction_reads.bam", g.contigs)
    expected: collections.Counter = collections.Counter()
    for contig, s, e, strand, score in rnaseq_splice(d / ORGANISMS[organism]):
        if s >= 50 and e + 50 <= g.contigs[contig]:
            expected[(contig, s, e, strand)] += min(score, 20)
    found: collections.Counter = collections.Counter()
    for contig in g.contigs:
        for (s, e, strand), n in ev.junctions(contig).items():
            found[(contig, s, e, strand)] += n
    assert len(expected) > 500
    assert found == expected


def reference_tracks(length: int) -> np.ndarray:
    """Evidence of the sample rebuilt from its GFF3 RNASeq_splice lines alone."""
    ref = np.zeros((8, length), dtype=np.float32)
    for _, s, e, strand, score in rnaseq_splice(SAMPLES / "athaliana_chr5_60k.gff3"):
        n = min(score, 20)
        if s < 50:
            continue
        b = 0 if strand == "+" else 4
        ref[b + 0, s - 50 : s] += n
        ref[b + 0, e : e + 50] += n
        ref[b + 1, s:e] += n
        ref[b + 2, s if strand == "+" else e - 1] += n
        ref[b + 3, e - 1 if strand == "+" else s] += n
    return ref


def test_sample_tracks_equal_reference_from_gff3() -> None:
    ev = Evidence.open(SAMPLE_BAM, {"Chr5": 60170})
    track = ev.track("Chr5", 0, 60170)
    assert track.dtype == np.float32 and track.shape == (len(CHANNELS), 60170)
    assert np.array_equal(track, reference_tracks(60170))
    # a sub-range equals the slice of the full track (reads clipped, not dropped)
    assert np.array_equal(ev.track("Chr5", 1200, 5100), track[:, 1200:5100])
    assert ev.track("Chr5", 7, 7).shape == (8, 0)


def test_reverse_evidence_moves_minus_donors_to_plus_channels() -> None:
    ev = Evidence.open(SAMPLE_BAM, {"Chr5": 60170})
    track = ev.track("Chr5", 0, 60170)
    rc = reverse_evidence(track)
    minus = [j for j in rnaseq_splice(SAMPLES / "athaliana_chr5_60k.gff3") if j[3] == "-"]
    _, s, e, _, _ = minus[0]
    L = 60170
    # the '-' intron [s, e) is [L - e, L - s) on the reverse strand; its donor is its first base
    assert rc[2, L - e] == track[6, e - 1] > 0
    assert rc[3, L - s - 1] == track[7, s] > 0
    assert np.array_equal(reverse_evidence(rc), track)


def test_cram_gives_the_same_tracks(tmp_path: Path) -> None:
    cram = cram_copy(SAMPLE_BAM, SAMPLE_FA, tmp_path / "s.cram")
    ev = Evidence.open(cram, {"Chr5": 60170}, reference=SAMPLE_FA)
    ref = Evidence.open(SAMPLE_BAM, {"Chr5": 60170})
    assert np.array_equal(ev.track("Chr5", 0, 60170), ref.track("Chr5", 0, 60170))


def test_cram_whose_reference_moved(tmp_path: Path, capfd) -> None:
    """A CRAM whose reference file is gone decodes against the genome given as reference;
    without one it is a single error that says what a CRAM needs (no htslib noise)."""
    import shutil

    moved = tmp_path / "gone.fa"
    shutil.copy(SAMPLE_FA, moved)
    cram = cram_copy(SAMPLE_BAM, moved, tmp_path / "s.cram")
    moved.unlink()
    Path(f"{moved}.fai").unlink(missing_ok=True)
    with pytest.raises(
        GenosegError, match=r"s\.cram: cannot read alignments: .*no reference FASTA"
    ):
        Evidence.open(cram, {"Chr5": 60170})
    assert "[E::" not in capfd.readouterr().err
    ev = Evidence.open(cram, {"Chr5": 60170}, reference=SAMPLE_FA)
    ref = Evidence.open(SAMPLE_BAM, {"Chr5": 60170})
    assert np.array_equal(ev.track("Chr5", 0, 60170), ref.track("Chr5", 0, 60170))


# -- strandedness on hand-made reads --------------------------------------------------
def make_bam(path: Path, reads: list[dict], sq=(("c", 1000),), so="coordinate", index=True):
    header = {"HD": {"VN": "1.6", "SO": so}, "SQ": [{"SN": n, "LN": ln} for n, ln in sq]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for k, r in enumerate(sorted(reads, key=lambda r: r["pos"])):
            a = pysam.AlignedSegment(out.header)
            a.query_name = r.get("name", f"r{k}")
            a.flag = r.get("flag", 0)
            a.reference_id = 0
            a.reference_start = r["pos"]
            a.mapping_quality = r.get("mapq", 60)
            a.cigarstring = r.get("cigar", "10M")
            qlen = a.infer_query_length()
            a.query_sequence = "A" * qlen
            a.query_qualities = pysam.qualitystring_to_array("I" * qlen)
            if r.get("paired"):
                a.next_reference_id, a.next_reference_start = 0, r["pos"]
            a.set_tags(r.get("tags", []))
            out.write(a)
    if index:
        pysam.index(str(path))
    return path


READS = [
    {"pos": 100},  # single-end, forward
    {"pos": 200, "flag": 16},  # single-end, reverse
    {"pos": 300, "flag": 99, "paired": True},  # read 1 forward, mate reverse
    {"pos": 400, "flag": 147, "paired": True},  # read 2 reverse
    {"pos": 500, "cigar": "5M20N5M", "tags": [("XS", "-", "A")]},  # spliced, XS says '-'
    {"pos": 600, "cigar": "5M30N5M"},  # spliced, forward, no XS
    {"pos": 700, "flag": 256},  # secondary: skipped
    {"pos": 710, "flag": 1024},  # duplicate: skipped
    {"pos": 720, "flag": 512},  # QC fail: skipped
    {"pos": 730, "mapq": 0},  # kept unless min_mapq > 0
    {"pos": 800, "tags": [("XS", 5, "i")]},  # bwa-style integer XS: ignored
]


@pytest.mark.parametrize(
    "mode, expected",
    [
        # strand of reads at 100, 200, 300, 400, 600 (then 730, 800 like 100); 'b' = both
        ("unstranded", "bbbbb"),
        ("fr-secondstrand", "+-+++"),
        ("fr", "+-+++"),
        ("fr-firststrand", "-+---"),
        ("rf", "-+---"),
    ],
)
def test_strandedness(tmp_path: Path, mode: str, expected: str) -> None:
    bam = make_bam(tmp_path / "s.bam", READS)
    ev = Evidence.open(bam, {"c": 1000}, strandedness=mode)
    t = ev.track("c", 0, 1000)
    for pos, strand in zip([100, 200, 300, 400, 600], expected):
        plus, minus = t[0, pos], t[4, pos]
        assert (plus, minus) == {"b": (1, 1), "+": (1, 0), "-": (0, 1)}[strand], (pos, mode)
    # the XS-tagged spliced read is '-' in every mode: donor at the last intron base
    assert t[0, 500] == 0 and t[4, 500] == 1
    assert t[5, 505:525].tolist() == [1] * 20 and t[1, 505:525].sum() == 0
    assert (
        t[6, 524] == 1
        and t[7, 505] == 1
        and t[2].sum() + t[3].sum() == (2 if expected[4] == "+" else 0 if expected[4] == "-" else 2)
    )
    # skipped flags
    assert t[[0, 4], 700:730].sum() == 0
    assert t[[0, 4], 730].sum() >= 1
    assert (t[[0, 4], 800] == t[[0, 4], 100]).all()
    mapq = Evidence.open(bam, {"c": 1000}, strandedness=mode, min_mapq=1).track("c", 0, 1000)
    assert mapq[[0, 4], 730].sum() == 0
    j = ev.junctions("c")
    assert j[(505, 525, "-")] == 1
    assert j[(605, 635, {"b": ".", "+": "+", "-": "-"}[expected[4]])] == 1


# -- bad inputs -----------------------------------------------------------------------
def test_missing_index(tmp_path: Path) -> None:
    bam = make_bam(tmp_path / "noidx.bam", READS, index=False)
    with pytest.raises(GenosegError, match=r"noidx\.bam: no index found.*samtools index"):
        Evidence.open(bam, {"c": 1000})


def test_sam_and_garbage_and_missing(tmp_path: Path) -> None:
    sam = tmp_path / "x.sam"
    sam.write_text("@SQ\tSN:c\tLN:1000\n")
    with pytest.raises(GenosegError, match=r"x\.sam: is a SAM text file"):
        Evidence.open(sam, {"c": 1000})
    junk = tmp_path / "junk.bam"
    junk.write_bytes(b"\x00\x01 not a bam at all")
    with pytest.raises(GenosegError, match=r"junk\.bam: cannot read as BAM/CRAM"):
        Evidence.open(junk, {"c": 1000})
    with pytest.raises(GenosegError, match=r"gone\.bam: BAM/CRAM file not found"):
        Evidence.open(tmp_path / "gone.bam", {"c": 1000})


def test_sam_advice_and_fasta_given_as_bam(tmp_path: Path) -> None:
    sam = tmp_path / "reads.bam"  # SAM text under a .bam name
    sam.write_text("@SQ\tSN:c\tLN:1000\n")
    with pytest.raises(GenosegError) as e:
        Evidence.open(sam, {"c": 1000})
    out = tmp_path / "reads.sorted.bam"  # never the input itself
    assert f"samtools sort -o {out} {sam} && samtools index {out}" in str(e.value)
    with pytest.raises(GenosegError, match=r"_60k\.fa: not a BAM/CRAM file"):
        Evidence.open(SAMPLE_FA, {"c": 1000})


def test_stale_index_is_one_clean_error(tmp_path: Path, capfd) -> None:
    """An index of another version of the BAM: one GenosegError that says so, and no
    htslib or pysam noise on stderr (also when the reader is garbage-collected)."""
    import gc
    import shutil

    src = shared("athaliana_1pct", "synthetic_junction_reads.bam")
    stale = tmp_path / "stale.bam"
    with pysam.AlignmentFile(str(src)) as inp:
        with pysam.AlignmentFile(str(stale), "wb", template=inp) as out:
            for k, read in enumerate(inp):
                if k % 2 == 0:
                    out.write(read)
        contigs = dict(zip(inp.references, inp.lengths))
    shutil.copy(f"{src}.bai", f"{stale}.bai")
    ev = Evidence.open(stale, contigs, strandedness="unstranded")
    with pytest.raises(GenosegError, match=r"stale\.bam: cannot read Chr1:0-100000: .*"
                       r"samtools index"):  # fmt: skip
        ev.track("Chr1", 0, 100_000)
    del ev
    gc.collect()
    err = capfd.readouterr().err
    assert "[E::" not in err and "Exception ignored" not in err, err


def test_index_older_than_the_file_is_a_warning(tmp_path: Path) -> None:
    """An index older than its BAM (rewritten after indexing, or copied without cp -p):
    Evidence.open still opens it, with a warning line that names the index and the fix."""
    import os
    import shutil

    bam = tmp_path / "s.bam"
    shutil.copy(SAMPLE_BAM, bam)
    shutil.copy(f"{SAMPLE_BAM}.bai", f"{bam}.bai")
    t = bam.stat().st_mtime
    os.utime(f"{bam}.bai", (t, t))
    assert Evidence.open(bam, {"Chr5": 60170}).index_warning is None
    os.utime(f"{bam}.bai", (t - 3600, t - 3600))
    ev = Evidence.open(bam, {"Chr5": 60170})
    assert ev.index_warning == (
        f"warning: {bam}.bai is older than {bam}; if the file was rewritten after indexing, "
        f"re-create the index with 'samtools index {bam}'"
    )
    assert ev.track("Chr5", 0, 60170).sum() > 0  # still read (the index is in fact right)


def test_not_coordinate_sorted(tmp_path: Path) -> None:
    bam = make_bam(tmp_path / "qs.bam", READS[:2], so="queryname")
    with pytest.raises(GenosegError, match=r"qs\.bam: sorted by 'queryname'.*samtools sort"):
        Evidence.open(bam, {"c": 1000})


def test_contig_names_not_in_bam_suggest_chr_prefix(tmp_path: Path) -> None:
    bam = make_bam(tmp_path / "n.bam", [{"pos": 1}], sq=(("1", 1000), ("2", 500)))
    with pytest.raises(GenosegError) as info:
        Evidence.open(bam, {"chr1": 1000, "chr2": 500})
    msg = str(info.value)
    assert "n.bam" in msg and "2 of 2 genome contigs are not in the BAM header" in msg
    assert "chr1, chr2" in msg and "did you mean '1'" in msg and "'chr' prefix" in msg


def test_another_assembly(tmp_path: Path) -> None:
    bam = make_bam(tmp_path / "asm.bam", [{"pos": 1}], sq=(("c", 1000), ("d", 600)))
    with pytest.raises(GenosegError, match=r"asm\.bam: contig 'd' has length 600 .* but 500"):
        Evidence.open(bam, {"c": 1000, "d": 500})


def test_allow_missing_gives_zero_evidence(tmp_path: Path) -> None:
    bam = make_bam(tmp_path / "m.bam", READS)
    ev = Evidence.open(bam, {"c": 1000, "extra": 50}, allow_missing=True)
    assert ev.track("extra", 0, 50).shape == (8, 50) and ev.track("extra", 0, 50).sum() == 0


def test_bad_options(tmp_path: Path) -> None:
    bam = make_bam(tmp_path / "o.bam", READS)
    with pytest.raises(GenosegError, match="strandedness 'yes' is not one of"):
        Evidence.open(bam, {"c": 1000}, strandedness="yes")
    ev = Evidence.open(bam, {"c": 1000})
    with pytest.raises(GenosegError, match=r"o\.bam: range c:900-1001 is outside"):
        ev.track("c", 900, 1001)


def test_evidence_pickles(tmp_path: Path) -> None:
    ev = Evidence.open(SAMPLE_BAM, {"Chr5": 60170}, strandedness="fr-firststrand")
    a = ev.track("Chr5", 1000, 2000)
    ev2 = pickle.loads(pickle.dumps(ev))
    assert ev2.strandedness == "fr-firststrand"
    assert np.array_equal(ev2.track("Chr5", 1000, 2000), a)


# -- random reads against pysam's own aligned-position and intron functions -----------
cigar_ops = st.lists(
    st.tuples(st.sampled_from("MIDNS=X"), st.integers(1, 40)), min_size=1, max_size=8
).filter(lambda ops: any(op in "M=X" for op, _ in ops))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    reads=st.lists(
        st.tuples(st.integers(0, 700), cigar_ops, st.sampled_from([0, 16]), st.booleans()),
        min_size=1,
        max_size=25,
    ),
    window=st.tuples(st.integers(0, 999), st.integers(1, 1000)),
)
def test_tracks_match_pysam_on_random_reads(tmp_path: Path, reads, window) -> None:
    specs = []
    for pos, ops, flag, xs in reads:
        cigar = "".join(f"{n}{op}" for op, n in ops)
        tags = [("XS", "+" if flag else "-", "A")] if xs else []
        specs.append({"pos": pos, "cigar": cigar, "flag": flag, "tags": tags})
    bam = make_bam(tmp_path / f"r{abs(hash(str(specs)))}.bam", specs)
    a, b = sorted(window)
    b = max(b, a + 1)
    for mode in ("unstranded", "fr-secondstrand"):
        t = Evidence.open(bam, {"c": 1000}, strandedness=mode).track("c", a, b)
        ref = np.zeros((8, 1000), dtype=np.float32)
        with pysam.AlignmentFile(str(bam)) as fh:
            for read in fh.fetch("c"):
                introns = fh.find_introns([read])
                if introns and read.has_tag("XS"):
                    blocks = [0] if read.get_tag("XS") == "+" else [4]
                elif mode == "unstranded":
                    blocks = [0, 4]
                else:
                    blocks = [4] if read.is_reverse else [0]
                for base in blocks:
                    for p in read.get_reference_positions():
                        ref[base, p] += 1
                    for (s, e), n in introns.items():
                        ref[base + 1, s:e] += n
                        donor, acceptor = (s, e - 1) if base == 0 else (e - 1, s)
                        ref[base + 2, donor] += n
                        ref[base + 3, acceptor] += n
        assert np.array_equal(t, ref[:, a:b])


# -- minimap2 ts tags and strandedness "auto" -------------------------------------------
def test_minimap2_ts_tag_is_relative_to_the_read(tmp_path: Path) -> None:
    """ts:A:+ = transcript on the read's strand; ts:A:+ on a reverse read is minus."""
    reads = [
        {"pos": 100, "cigar": "5M20N5M", "tags": [("ts", "+", "A")]},  # forward, ts + : plus
        {"pos": 200, "cigar": "5M20N5M", "flag": 16, "tags": [("ts", "+", "A")]},  # minus
        {"pos": 300, "cigar": "5M20N5M", "tags": [("ts", "-", "A")]},  # forward, ts - : minus
        {"pos": 400, "cigar": "5M20N5M", "flag": 16, "tags": [("ts", "-", "A")]},  # plus
        {"pos": 500, "cigar": "5M20N5M", "flag": 16, "tags": [("ts", ".", "A")]},  # no strand
    ]
    bam = make_bam(tmp_path / "ts.bam", reads)
    for mode in ("auto", "unstranded", "fr-firststrand", "fr-secondstrand"):
        ev = Evidence.open(bam, {"c": 1000}, strandedness=mode)
        t = ev.track("c", 0, 1000)
        for pos, strand in ((100, "+"), (200, "-"), (300, "-"), (400, "+")):
            assert (t[0, pos], t[4, pos]) == ((1, 0) if strand == "+" else (0, 1)), (mode, pos)
        j = ev.junctions("c")
        assert j[(105, 125, "+")] == 1 and j[(205, 225, "-")] == 1
        assert j[(305, 325, "-")] == 1 and j[(405, 425, "+")] == 1
    # ts:A:. carries no strand: counted like an untagged read
    assert (Evidence.open(bam, {"c": 1000}, strandedness="unstranded").track("c", 0, 1000)
            [[0, 4], 500] == 1).all()  # fmt: skip


def _library(path: Path, n: int, agree: float, tag: str, paired: bool = False) -> Path:
    """n spliced reads with a strand tag, a fraction `agree` of them sense (read 1 on the
    transcript strand), plus one untagged unspliced forward read at 900."""
    reads = []
    for k in range(n):
        reverse = k % 2 == 1
        sense = k < round(agree * n)
        read_plus = not reverse
        if paired and k % 3 == 0:  # read 2: its strand is flipped relative to read 1
            flag = 128 | 1 | (16 if reverse else 0)
            r1_plus = not read_plus
        else:
            flag = (64 | 1 if paired else 0) | (16 if reverse else 0)
            r1_plus = read_plus
        tx_plus = r1_plus if sense else not r1_plus
        if tag == "XS":
            tags = [("XS", "+" if tx_plus else "-", "A")]
        else:  # ts is relative to the read's own strand
            tags = [("ts", "+" if tx_plus == read_plus else "-", "A")]
        reads.append({"pos": 10 + k, "cigar": "5M20N5M", "flag": flag, "tags": tags,
                      "paired": paired})  # fmt: skip
    reads.append({"pos": 900, "flag": 64 | 1 if paired else 0, "paired": paired})
    return make_bam(path, reads)


@pytest.mark.parametrize("tag", ["XS", "ts"])
@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize(
    "agree, library, untagged",
    [(1.0, "fr-secondstrand", (1, 0)), (0.95, "fr-secondstrand", (1, 0)),
     (0.0, "fr-firststrand", (0, 1)), (0.5, "unstranded", (1, 1))],
)  # fmt: skip
def test_auto_infers_the_library_from_tagged_reads(
    tmp_path: Path, tag: str, paired: bool, agree: float, library: str, untagged: tuple
) -> None:
    bam = _library(tmp_path / "lib.bam", 200, agree, tag, paired)
    ev = Evidence.open(bam, {"c": 1000})  # auto is the default
    assert ev.strandedness == "auto" and ev.library == library
    assert ev.describe().startswith(f"auto: {library}")
    t = ev.track("c", 0, 1000)
    assert (t[0, 900], t[4, 900]) == untagged  # the untagged read follows the library
    # explicit modes are not overridden by the inference
    assert Evidence.open(bam, {"c": 1000}, strandedness="unstranded").library == "unstranded"


def test_auto_without_enough_tagged_reads_is_unstranded(tmp_path: Path) -> None:
    bam = _library(tmp_path / "few.bam", 20, 1.0, "XS")
    ev = Evidence.open(bam, {"c": 1000}, strandedness="auto")
    assert ev.library == "unstranded"
    assert "only 20 spliced reads with an XS/ts tag" in ev.describe()
    t = ev.track("c", 0, 1000)
    assert (t[0, 900], t[4, 900]) == (1, 1)
    ev2 = pickle.loads(pickle.dumps(ev))
    assert ev2.library == "unstranded" and np.array_equal(ev2.track("c", 0, 1000), t)
