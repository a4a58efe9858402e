"""Annotation -> labels on the three real genomes: round trips and grammar validity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genoseg.crf import reference as crf_ref
from genoseg.data.annotation import read_annotation
from genoseg.data.fasta import Genome
from genoseg.data.labels import (
    IGNORE,
    GeneModel,
    gene_models_from_segments,
    label_annotation,
    segments_from_labels,
)
from genoseg.grammar import compile_window, load_grammar
from tests.shared_data import shared

GENOMES = {
    "athaliana_1pct": "annotation_with_rnaseq_splice.gff3",
    "celegans_1pct": "annotation_with_rnaseq.gff3",
    "dmelanogaster_1pct": "annotation_with_rnaseq_splice.gff3",
}


@pytest.fixture(scope="module")
def grammar():
    return load_grammar()


@pytest.fixture(scope="module", params=sorted(GENOMES))
def labelled(request, grammar):
    name = request.param
    genome = Genome.open(shared(name, "genome.fa"))
    ann = read_annotation(
        shared(name, GENOMES[name]),
        feature="exon",
        missing_parents="skip",
        contig_lengths=genome.contigs,
    )
    codes = {c: genome.encode(c)[0] for c in genome.contigs}
    labels, report = label_annotation(grammar, ann, codes.items())
    return name, ann, codes, labels, report


def _used_transcripts(ann, labels):
    tx = {t.id: t for t in ann.transcripts()}
    for cl in labels.values():
        for st in cl.genes:
            if st.status == "used":
                yield cl, tx[st.transcript]


def test_report_counts(labelled):
    name, ann, _, labels, report = labelled
    genes = sum(len(v) for v in ann.genes.values())
    coding = sum(any(t.is_coding for t in g.transcripts) for v in ann.genes.values() for g in v)
    # every gene is accounted for exactly once
    assert report.used + report.masked + report.noncoding_intergenic == genes
    # most real coding genes are usable (a curated annotation)
    assert report.used >= 0.8 * coding - 25, str(report)
    assert report.used > 70
    assert 0 < report.masked_bp < 0.3 * report.total_bp
    d = report.as_dict()
    assert d["genes_used"] == report.used and sum(d["masked_by_reason"].values()) == report.masked
    print(name, report)


def test_round_trip_reproduces_cds(labelled, grammar):
    """labels -> segments -> gene structures == the used transcripts' CDS, exactly."""
    _, ann, _, labels, _ = labelled
    want: dict[str, set[GeneModel]] = {c: set() for c in labels}
    for cl, tx in _used_transcripts(ann, labels):
        want[cl.seqid].add(GeneModel(tx.strand, tx.cds))
    for seqid, cl in labels.items():
        assert cl.labels.dtype == np.uint8 and cl.labels.shape == cl.mask.shape
        assert ((cl.labels == IGNORE) == ~cl.mask).all()
        got = gene_models_from_segments(segments_from_labels(cl.labels, cl.mask), grammar)
        assert len(got) == len(set(got))
        assert set(got) == want[seqid], seqid


def _gold_window(cl, tx, ig: int, flank: int = 40) -> tuple[int, int]:
    """[lo, hi) around a used transcript's CDS, extended through unmasked intergenic."""
    lo, hi = tx.cds_start, tx.cds_end
    for _ in range(flank):
        if lo > 0 and cl.mask[lo - 1] and cl.labels[lo - 1] == ig:
            lo -= 1
    for _ in range(flank):
        if hi < len(cl.labels) and cl.mask[hi] and cl.labels[hi] == ig:
            hi += 1
    return lo, hi


@pytest.fixture
def one_thread():
    """Small reference-engine calls are much faster single-threaded on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gene_windows(labelled, grammar):
    """Per used transcript: (tx, compiled arrays of its gold window, gold tiling)."""
    _, ann, codes, labels, _ = labelled
    ig = grammar.intergenic
    for cl, tx in _used_transcripts(ann, labels):
        lo, hi = _gold_window(cl, tx, ig)
        c = codes[cl.seqid]
        a, b = max(0, lo - 10), min(len(c), hi + 10)
        st = compile_window(grammar, c[a:b], left_context=lo - a, right_context=b - hi)
        yield tx, st, segments_from_labels(cl.labels[lo:hi])


def test_gold_segmentations_allowed_by_grammar(labelled, grammar, one_thread):
    """Every used gene's gold tiling scores > -inf (zero emissions) under the grammar
    compiled on its real sequence: checks start/stop/splice/frame/max_dur rules.

    The gene windows (each from and to intergenic) are concatenated into one sequence per
    genome, merging the intergenic segments where they meet, and scored with the float64
    reference in one call."""
    ig = grammar.intergenic
    parts, tiling, offset, n = [], [], 0, 0
    for tx, st, segs in _gene_windows(labelled, grammar):
        assert segs[0][2] == ig and segs[-1][2] == ig, tx.id
        assert segs[0][0] == 0 and all(segs[i][1] == segs[i + 1][0] for i in range(len(segs) - 1))
        moved = [(s + offset, e + offset, c) for s, e, c in segs]
        if tiling:
            s0, _, _ = tiling.pop()
            moved[0] = (s0, moved[0][1], ig)
        tiling += moved
        parts.append(st)
        offset += segs[-1][1]
        n += 1
    assert n > 70
    cat = {
        k: torch.cat([getattr(p, k) for p in parts]) for k in ("seg_start", "seg_end", "max_dur")
    }
    st = parts[0].as_dict() | cat
    em = torch.zeros(offset, grammar.num_labels)
    assert math.isfinite(crf_ref.score_segmentation(em, tiling, **st))


def test_shifted_gold_is_forbidden(labelled, grammar, one_thread):
    """Negative control: moving a gene's first exon start by one base (frame, start codon
    or stop codon broken) makes the tiling forbidden."""
    ig = grammar.intergenic
    for i, (tx, st, segs) in enumerate(_gene_windows(labelled, grammar)):
        if i >= 12:
            break
        em = torch.zeros(segs[-1][1], grammar.num_labels)
        shifted = list(segs)
        shifted[0] = (0, segs[0][1] + 1, ig)
        shifted[1] = (segs[1][0] + 1, segs[1][1], segs[1][2])
        assert crf_ref.score_segmentation(em, shifted, **st.as_dict()) == -math.inf, tx.id


def test_isoform_rule_longest_valid_cds(labelled):
    _, ann, _, labels, _ = labelled
    genes = {g.id: g for v in ann.genes.values() for g in v}
    for cl in labels.values():
        for st in cl.genes:
            if st.status == "used":
                tx = next(t for t in genes[st.gene_id].transcripts if t.id == st.transcript)
                longest = max(t.cds_length for t in genes[st.gene_id].transcripts if t.is_coding)
                assert tx.cds_length <= longest
            else:
                assert not cl.mask[st.start : st.end].any()


def test_labels_on_masked_reasons_real(grammar):
    """Real unusable genes are masked with a specific reason (A. thaliana: AT2G01090's
    start codon is split by an intron)."""
    genome = Genome.open(shared("athaliana_1pct", "genome.fa"))
    ann = read_annotation(
        shared("athaliana_1pct", GENOMES["athaliana_1pct"]),
        feature="exon",
        missing_parents="skip",
    )
    labels, report = label_annotation(grammar, ann, [("Chr2", genome.encode("Chr2")[0])])
    st = {s.gene_id: s for s in labels["Chr2"].genes}
    assert st["AT2G01090"].status == "exon_length"
    assert report.counts["exon_length"] >= 1
