"""Tests of the GFF3/GTF reader (genoseg.data.annotation) on hand-made and real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyfaidx
import pytest

from genoseg.data.annotation import read_annotation
from genoseg.errors import GenosegError
from tests.shared_data import shared

REAL = {
    # folder, annotation file, coding genes, coding transcripts (from data/README.md)
    "athaliana_1pct": ("annotation_with_rnaseq_splice.gff3", 343, 459),
    "celegans_1pct": ("annotation_with_rnaseq.gff3", 156, 300),
    "dmelanogaster_1pct": ("annotation_with_rnaseq_splice.gff3", 77, 236),
}
STOPS = {"TAA", "TAG", "TGA"}
COMP = str.maketrans("ACGTacgtNn", "TGCAtgcaNn")


def _revcomp(s: str) -> str:
    return s.translate(COMP)[::-1]


def _write(tmp_path: Path, text: str, name: str = "a.gff3") -> Path:
    p = tmp_path / name
    p.write_text(text.lstrip("\n"))
    return p


def _fai_lengths(folder: Path) -> dict[str, int]:
    out = {}
    for line in (folder / "genome.fa.fai").read_text().splitlines():
        name, length = line.split("\t")[:2]
        out[name] = int(length)
    return out


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_counts_and_codons(name: str) -> None:
    folder = shared(name)
    fname, n_genes, n_tx = REAL[name]
    ann = read_annotation(
        folder / fname, contig_lengths=_fai_lengths(folder), missing_parents="skip"
    )
    s = ann.summary
    assert (s.coding_genes, s.coding_transcripts) == (n_genes, n_tx)
    assert s.genes == n_genes  # feature="CDS" keeps coding genes only
    assert "RNASeq_splice" not in s.skipped_types  # types, not sources
    assert s.skipped_types["intron"] > 0
    fasta = pyfaidx.Fasta(str(folder / "genome.fa"))
    checked = 0
    for tx in ann.transcripts():
        assert tx.strand in "+-"
        assert list(tx.cds) == sorted(tx.cds)
        # every CDS piece lies inside an exon
        for cs, ce in tx.cds:
            assert any(es <= cs and ce <= ee for es, ee in tx.exons), tx.id
        seq = "".join(str(fasta[tx.seqid][s:e]) for s, e in tx.cds).upper()
        if tx.strand == "-":
            seq = _revcomp(seq)
        assert len(seq) == tx.cds_length
        assert seq[:3] == "ATG", tx.id
        assert seq[-3:] in STOPS, tx.id
        assert tx.cds_length % 3 == 0, tx.id
        assert tx.phases[0] == 0
        checked += 1
    assert checked == n_tx


def test_real_exon_mode_keeps_noncoding() -> None:
    folder = shared("athaliana_1pct")
    ann = read_annotation(
        folder / "annotation_with_rnaseq_splice.gff3", feature="exon", missing_parents="skip"
    )
    biotypes = {t.biotype for t in ann.transcripts()}
    assert {"mRNA", "ncRNA", "pseudogenic_transcript", "mRNA_TE_gene", "tRNA"} <= biotypes
    gene_types = {g.biotype for gs in ann.genes.values() for g in gs}
    assert {"gene", "pseudogene", "transposable_element_gene"} <= gene_types
    assert ann.summary.coding_transcripts == 459
    assert ann.summary.transcripts > 459


def test_real_missing_parent_is_error_by_default() -> None:
    with pytest.raises(GenosegError, match=r"annotation_with_rnaseq_splice\.gff3:\d+: Parent"):
        read_annotation(shared("athaliana_1pct", "annotation_with_rnaseq_splice.gff3"))


GFF = """
##gff-version 3
##sequence-region c1 1 1000
c1	src	gene	101	900	.	+	.	ID=g1
c1	src	mRNA	101	900	.	+	.	ID=t1;Parent=g1
c1	src	mRNA	101	800	.	+	.	ID=t2;Parent=g1
c1	src	exon	101	300	.	+	.	Parent=t1,t2
c1	src	CDS	151	300	0.9	+	0	ID=cds1;Parent=t1,t2;start_posterior=0.8;end_posterior=0.7
c1	src	exon	401	900	.	+	.	Parent=t1
c1	src	CDS	401	600	.	+	0	ID=cds1;Parent=t1
c1	src	exon	401	800	.	+	.	Parent=t2
c1	src	CDS	401	612	.	+	0	Parent=t2
c1	src	intron	301	400	0.95	+	.	Parent=t1
c1	src	gene	201	500	.	-	.	ID=g2
c1	src	CDS	201	260	.	-	0	Parent=g2
c1	src	CDS	301	500	.	-	2	Parent=g2
c1	rnaseq	intron	301	400	17	+	.	Name=junction
c1	src	repeat_region	1	50	.	.	.	ID=r1
"""


def test_handmade_gff3(tmp_path: Path) -> None:
    ann = read_annotation(_write(tmp_path, GFF))
    assert ann.sequence_regions == {"c1": 1000}
    g1, g2 = ann.genes["c1"]
    assert (g1.id, g1.start, g1.end, g1.strand) == ("g1", 100, 900, "+")
    t1, t2 = sorted(g1.transcripts, key=lambda t: t.id)
    assert t1.exons == ((100, 300), (400, 900))
    assert t1.cds == ((150, 300), (400, 600))
    assert t1.introns == ((300, 400),) == t1.cds_introns
    assert t2.cds == ((150, 300), (400, 612))
    assert (t1.cds_start, t1.cds_end, t1.cds_length) == (150, 600, 350)
    # scores and posteriors are kept per line
    cds_score = [f for f in t1.scores if f.kind == "CDS"]
    assert cds_score[0].score == 0.9 and cds_score[0].start_posterior == 0.8
    assert [f.score for f in t1.scores if f.kind == "intron"] == [0.95]
    # CDS directly under a gene: implicit transcript, exons derived from the CDS
    (t3,) = g2.transcripts
    assert (t3.id, t3.strand, t3.cds, t3.exons) == ("g2", "-", ((200, 260), (300, 500)), t3.cds)
    assert t3.first_phase == 2  # phase of the 5'-most piece on '-' (the higher one)
    assert t3.phases == (2, 0)
    assert ann.summary.skipped_types == {"repeat_region": 1, "intron": 1}


def test_phases_follow_lengths(tmp_path: Path) -> None:
    ann = read_annotation(_write(tmp_path, GFF))
    t1 = next(t for t in ann.transcripts() if t.id == "t1")
    # first piece 150 bp = 50 codons, so the second piece starts on a codon: phase 0
    assert t1.phases == (0, 0)


GTF = """
c1	src	transcript	101	700	.	-	.	gene_id "g"; transcript_id "t";
c1	src	exon	101	300	.	-	.	gene_id "g"; transcript_id "t";
c1	src	exon	401	700	.	-	.	gene_id "g"; transcript_id "t";
c1	src	stop_codon	201	203	.	-	0	gene_id "g"; transcript_id "t";
c1	src	CDS	204	300	.	-	0	gene_id "g"; transcript_id "t";
c1	src	CDS	401	600	.	-	0	gene_id "g"; transcript_id "t";
c1	src	start_codon	598	600	.	-	0	gene_id "g"; transcript_id "t";
c1	AUGUSTUS	gene	801	900	0.4	+	.	g2
c1	AUGUSTUS	transcript	801	900	0.4	+	.	g2.t1
c1	AUGUSTUS	CDS	801	900	0.4	+	0	transcript_id "g2.t1"; gene_id "g2";
"""


def test_gtf_stop_codon_merged(tmp_path: Path) -> None:
    for name in ("a.gtf", "a.txt"):
        ann = read_annotation(_write(tmp_path, GTF, name))
        assert ann.summary.format == "gtf"
        t, t2 = ann.transcripts()
        assert t.cds == ((200, 300), (400, 600))
        assert t.exons == ((100, 300), (400, 700))
        assert t.biotype == "transcript" or t.biotype == "mRNA"
        assert (t2.id, t2.gene_id, t2.score) == ("g2.t1", "g2", 0.4)
        assert ann.summary.gene_id_is_transcript_id == 0


def test_gtf_gene_id_equal_to_transcript_id_is_counted(tmp_path: Path) -> None:
    """UCSC refGene / Table Browser GTFs: gene_id is the transcript name, so isoforms of one
    gene become separate genes; the summary counts them (prepare warns)."""
    text = "".join(
        f'c\tucsc\texon\t{a}\t{b}\t.\t+\t.\tgene_id "{t}"; transcript_id "{t}";\n'
        for t, a, b in (("NM_1", 100, 300), ("NM_2", 100, 250), ("NM_3", 900, 990))
    )
    text += 'c\tx\texon\t2000\t2100\t.\t+\t.\tgene_id "G"; transcript_id "G.1";\n'
    ann = read_annotation(_write(tmp_path, text, "refGene.gtf"), feature="exon")
    assert ann.summary.gene_id_is_transcript_id == 3 and ann.summary.transcripts == 4


def test_gzip(tmp_path: Path) -> None:
    p = tmp_path / "a.gff3.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(GFF.lstrip("\n"))
    assert read_annotation(p).summary.coding_transcripts == 3


def test_contig_lengths(tmp_path: Path) -> None:
    p = _write(tmp_path, GFF.replace("##sequence-region c1 1 1000\n", ""))
    assert read_annotation(p, contig_lengths={"c1": 900}).summary.genes == 2
    with pytest.raises(GenosegError, match=r"a\.gff3:2: .*outside contig c1 \(length 899\)"):
        read_annotation(p, contig_lengths={"c1": 899})
    with pytest.raises(GenosegError, match=r"a\.gff3:2: contig 'c1' is not in the genome"):
        read_annotation(p, contig_lengths={"chr1": 5000})


BAD = [
    ("c1\tsrc\tgene\t10\t5\t.\t+\t.\tID=g", r":2: end 5 < start 10"),
    ("c1\tsrc\tgene\t10\t5000\t.\t+\t.\tID=g", r":2: gene 10-5000 lies outside contig c1"),
    ("c1\tsrc\tgene\t10\t50\t.\t+\t.", r":2: expected 9 tab-separated columns, found 8"),
    ("c1\tsrc\tgene\tten\t50\t.\t+\t.\tID=g", r":2: coordinates 'ten', '50' are not integers"),
    ("c1\tsrc\tgene\t10\t50\t.\tplus\t.\tID=g", r":2: bad strand 'plus'"),
    ("c1\tsrc\tCDS\t10\t50\t.\t+\t5\tParent=t", r":2: bad phase '5'"),
    ("c1\tsrc\tgene\t10\t50\thigh\t+\t.\tID=g", r":2: score 'high' is not a number"),
    ("c1\tsrc\tgene\t0\t50\t.\t+\t.\tID=g", r":2: start 0 < 1"),
    ("c1\tsrc\texon\t10\t50\t.\t+\t.\tParent=nope", r":2: Parent 'nope' of exon is not in"),
    ("c1\tsrc\tCDS\t10\t50\t.\t+\t0\tID=c", r":2: CDS without an mRNA/transcript"),
    (
        "c1\tsrc\tprotein\t10\t50\t.\t+\t.\tID=p\nc1\tsrc\tCDS\t10\t50\t.\t+\t0\tParent=p",
        r":3: CDS without an mRNA/transcript",
    ),
    (
        "c1\tsrc\tmRNA\t10\t50\t.\t+\t.\tID=t;Parent=g0\nc1\tsrc\tCDS\t10\t50\t.\t+\t0\tParent=t",
        r":2: Parent 'g0' of mRNA t is not in the file",
    ),
    (
        "c1\tsrc\tmRNA\t10\t50\t.\t+\t.\tID=t\nc1\tsrc\tCDS\t10\t50\t.\t-\t0\tParent=t",
        r":3: CDS is on strand - but its transcript t is on \+",
    ),
    (
        "c1\tsrc\tgene\t10\t50\t.\t+\t.\tID=t\nc1\tsrc\tgene\t10\t50\t.\t+\t.\tID=t",
        r":3: duplicate ID 't' \(first used on line 2\)",
    ),
    ("c1\tsrc\tgene\t10\t50\t.\t+\t.\tID", r":2: malformed GFF3 attribute 'ID'"),
    (
        "c1\tsrc\tmRNA\t10\t50\t.\t+\t.\tID=t;Parent=t\nc1\tsrc\tCDS\t10\t50\t.\t+\t0\tParent=t",
        r":2: cyclic Parent: mRNA t has Parent 't', which is itself",
    ),
    (
        "c1\tsrc\tgene\t10\t50\t.\t+\t.\tID=g;Parent=t\n"
        "c1\tsrc\tmRNA\t10\t50\t.\t+\t.\tID=t;Parent=g\nc1\tsrc\tCDS\t10\t50\t.\t+\t0\tParent=t",
        r":3: cyclic Parent: mRNA t has Parent 'g', which is its own child \(line 2\)",
    ),
]


@pytest.mark.parametrize("line,message", BAD)
def test_bad_input(tmp_path: Path, line: str, message: str) -> None:
    p = _write(tmp_path, "##sequence-region c1 1 1000\n" + line + "\n")
    with pytest.raises(GenosegError, match=r"a\.gff3" + message) as info:
        read_annotation(p)
    assert "\n" not in str(info.value)


def test_bad_gtf(tmp_path: Path) -> None:
    p = _write(tmp_path, 'c1\tsrc\tCDS\t10\t50\t.\t+\t0\tgene_id "g";\n', "b.gtf")
    with pytest.raises(GenosegError, match=r"b\.gtf:1: CDS without an mRNA/transcript"):
        read_annotation(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenosegError, match="nothere.gff3: cannot read"):
        read_annotation(tmp_path / "nothere.gff3")


def test_intron_scores_before_exons(tmp_path: Path) -> None:
    """Intron lines carry posteriors wherever they appear (AUGUSTUS writes them early)."""
    text = (
        'c1\tA\tintron\t201\t300\t0.38\t+\t.\ttranscript_id "t"; gene_id "g";\n'
        'c1\tA\tCDS\t101\t200\t0.9\t+\t0\ttranscript_id "t"; gene_id "g";\n'
        'c1\tA\tCDS\t301\t400\t0.8\t+\t2\ttranscript_id "t"; gene_id "g";\n'
    )
    (t,) = read_annotation(_write(tmp_path, text, "a.gtf")).transcripts()
    assert t.introns == ((200, 300),)
    assert [(f.kind, f.score) for f in t.scores] == [("CDS", 0.9), ("intron", 0.38), ("CDS", 0.8)]
