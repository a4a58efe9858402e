"""genoseg.decode: path -> genes, posterior tracks, boundary posteriors, structural checks.

Real data: the A. thaliana Chr5 slice in data_samples (19 genes on both strands, single- and
multi-exon), turned into the gold label path the way training does (genoseg.data.labels).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from genoseg import crf
from genoseg.decode import (
    BOUNDARY_TRACKS,
    TRACK_NAMES,
    Segment,
    boundary_posteriors,
    check_gene_models,
    check_gff3,
    fill_boundary_posteriors,
    gene_id,
    genes_from_path,
    posterior_tracks,
)
from genoseg.grammar import reverse_complement
from genoseg.grammar.spec import Grammar, Label, LengthModel
from tests.brute import brute_log_z, enumerate_scores
from tests.gold_paths import SAMPLE_GFF, sample_gold


@pytest.fixture(scope="module")
def gold():
    return sample_gold()


@pytest.fixture(scope="module")
def sample_genes(gold):
    return genes_from_path(gold.grammar, "Chr5", gold.paths["Chr5"])


def _seq(gold) -> str:
    return gold.genome.fetch("Chr5").upper()


# --------------------------------------------------------------------------- genes


def test_gold_path_gives_the_annotated_genes(gold, sample_genes):
    used = gold.used()
    assert len(used) == 19 and len(sample_genes) == 19
    ref = {
        t.id: t
        for g in gold.annotation.genes["Chr5"]
        for t in g.transcripts
        if t.id in set(used.values())
    }
    by_cds = {(t.strand, t.cds): t for t in ref.values()}
    for gene in sample_genes:
        (tx,) = gene.transcripts
        key = (tx.strand, tuple((p.start, p.end) for p in tx.cds))
        assert key in by_cds, gene.id
        r = by_cds[key]
        # GFF3 phases in transcription order equal TAIR10's
        assert tuple(p.phase for p in tx.cds_in_transcription_order()) == r.phases
        assert [(i.start, i.end) for i in tx.introns] == list(r.cds_introns)
        assert (gene.start, gene.end) == (r.cds_start, r.cds_end)
        assert gene.id == f"Chr5:{r.cds_start + 1}-{r.cds_end}:{r.strand}"
        assert tx.id == gene.id + ".t1" and tx.gene_id == gene.id
        assert tx.exons == tx.cds
    assert {g.strand for g in sample_genes} == {"+", "-"}
    assert check_gene_models(sample_genes, gold.genome) == []


def test_minus_strand_gene_reads_mirrored(gold, sample_genes):
    # AT5G01010: minus strand, 16 coding exons; its start codon is at the upper end
    gene = next(g for g in sample_genes if g.start == 1387)
    (tx,) = gene.transcripts
    assert gene.strand == "-" and len(tx.cds) == 16
    order = tx.cds_in_transcription_order()
    assert order[0].kind == "initial" and order[-1].kind == "terminal"
    assert all(p.kind == "internal" for p in order[1:-1])
    assert order[0].start > order[-1].start  # transcription runs towards lower coordinates
    labels = gold.grammar.labels
    assert all(labels[p.label].strand == -1 for p in tx.cds)
    # phases carried across introns: entry of each exon = exit of the one before
    for a, b, intron in zip(order, order[1:], tx.introns_in_transcription_order()):
        assert b.entry_phase == a.exit_phase == intron.phase
    seq = _seq(gold)
    assert reverse_complement(seq[order[0].end - 3 : order[0].end]) == "ATG"
    assert reverse_complement(seq[order[-1].start : order[-1].start + 3]) in {"TAA", "TAG", "TGA"}


def test_single_exon_genes_both_strands(gold, sample_genes):
    singles = [g for g in sample_genes if len(g.transcripts[0].cds) == 1]
    assert {g.strand for g in singles} == {"+", "-"}
    for g in singles:
        (part,) = g.transcripts[0].cds
        assert part.kind == "single" and part.phase == 0 and not g.transcripts[0].introns
        assert (part.entry_phase, part.exit_phase) == (0, 0)


def test_phase_column_follows_entry_phase(gold, sample_genes):
    seen = set()
    for g in sample_genes:
        done = 0
        for p in g.transcripts[0].cds_in_transcription_order():
            assert p.entry_phase == done % 3
            assert p.phase == (3 - done % 3) % 3
            seen.add(p.phase)
            done += p.length
    assert seen == {0, 1, 2}  # the sample exercises every phase


def test_ids_do_not_depend_on_the_rest_of_the_path(gold, sample_genes):
    """A shard that decodes only part of the contig names its genes identically."""
    path = gold.paths["Chr5"]
    ig = gold.grammar.intergenic
    cut = [i for i, (s, e, c) in enumerate(path) if c == ig][8]
    part = genes_from_path(gold.grammar, "Chr5", path[cut:])
    assert part and {g.id for g in part} <= {g.id for g in sample_genes}
    assert [g.id for g in part] == [g.id for g in sample_genes][-len(part) :]
    assert gene_id("Chr5", "-", 1387, 4924) == "Chr5:1388-4924:-"


def test_posteriors_are_carried_onto_parts(gold):
    path = [
        Segment(s, e, c, 0.5 + i / 1000, 0.25, 0.75)
        for i, (s, e, c) in enumerate(gold.paths["Chr5"])
    ]
    genes = genes_from_path(gold.grammar, "Chr5", path)
    by_start = {s.start: s for s in path}
    for g in genes:
        assert g.posterior is None
        tx = g.transcripts[0]
        for item in [*tx.cds, *tx.introns]:
            seg = by_start[item.start]
            assert (item.end, item.label, item.posterior) == (seg.end, seg.label, seg.posterior)
            assert (item.start_posterior, item.end_posterior) == (0.25, 0.75)
        tx.posterior = 0.9
        assert g.posterior == 0.9


def test_masked_stretches_are_gaps(gold):
    """A gap (masked gene) between intergenic segments is allowed; genes around it stay."""
    path = gold.paths["Chr5"]
    ig = gold.grammar.intergenic
    igs = [k for k, (s, e, c) in enumerate(path) if c == ig]
    a, b = igs[5], igs[6]  # one gene lies between these intergenic segments
    gapped = (
        path[:a]
        + [(path[a][0], path[a][1] - 5, ig), (path[b][0] + 5, path[b][1], ig)]
        + path[b + 1 :]
    )
    genes = genes_from_path(gold.grammar, "Chr5", gapped)
    full = genes_from_path(gold.grammar, "Chr5", path)
    assert [g.id for g in genes] == [g.id for g in full[:5] + full[6:]]


def _mini(grammar):
    """intergenic, single+ exon ATG AAA TAA, intergenic (a valid path)."""
    ig, single = grammar.intergenic, grammar.index("single+")
    return [(0, 10, ig), (10, 19, single), (19, 30, ig)]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda g, p: [p[0], (10, 19, g.index("internal+/0/0")), p[2]], "transition"),
        (lambda g, p: [(10, 19, g.index("terminal+/0")), p[2]], "cannot begin"),
        (lambda g, p: [p[0], (10, 19, g.index("initial+/0"))], "gene cut"),
        (lambda g, p: [p[0], (10, 18, g.index("single+")), (18, 30, g.intergenic)], "phase"),
        (lambda g, p: [p[0], (9, 19, g.index("single+")), p[2]], "overlaps"),
        (lambda g, p: [p[0], (10, 19, 99), p[2]], "not a label"),
        (lambda g, p: [p[0], (10, 10, g.index("single+")), p[2]], "empty"),
        (lambda g, p: [p[0], p[1], (19, 25, g.intergenic), (25, 30, g.intergenic)], "transition"),
    ],
)
def test_invalid_paths_are_rejected_naming_the_position(mutate, message):
    from genoseg.grammar import load_grammar

    g = load_grammar()
    assert len(genes_from_path(g, "c1", _mini(g))) == 1
    with pytest.raises(ValueError, match=message) as exc:
        genes_from_path(g, "c1", mutate(g, _mini(g)))
    assert "path of c1 at " in str(exc.value)


def test_gene_cut_by_a_gap_is_rejected(gold):
    g = gold.grammar
    path = [
        (0, 10, g.intergenic),
        (10, 40, g.index("initial+/0")),
        (50, 80, g.index("intron+/0")),
    ]
    with pytest.raises(ValueError, match="gene cut"):
        genes_from_path(g, "c", path)


# --------------------------------------------------------------------------- tracks


def _one_hot(grammar, path, n):
    C = grammar.num_labels
    pos, start, end = (np.zeros((n, C), np.float32) for _ in range(3))
    for s, e, c in path:
        pos[s:e, c] = 1
        start[s, c] = 1
        end[e - 1, c] = 1
    return pos, start, end


def test_boundary_tracks_sit_on_the_first_base_of_each_signal(gold, sample_genes):
    """With the gold path as a certain posterior, every boundary track is 1 exactly at the
    lowest forward coordinate of its signal, and the sequence there is that signal."""
    g, seq = gold.grammar, _seq(gold)
    n = len(seq)
    tracks = posterior_tracks(g, *_one_hot(g, gold.paths["Chr5"], n), contig_length=n)
    assert set(tracks) == set(TRACK_NAMES)
    for t in tracks.values():
        assert (t.start, t.end) == (0, n)
    motifs = {
        "start_codon+": ({"ATG"}, 3),
        "stop_codon+": ({"TAA", "TAG", "TGA"}, 3),
        "donor+": ({"GT", "GC", "AT"}, 2),
        "acceptor+": ({"AG", "AC"}, 2),
        "start_codon-": ({"CAT"}, 3),
        "stop_codon-": ({"TTA", "CTA", "TCA"}, 3),
        "donor-": ({"AC", "GC", "AT"}, 2),
        "acceptor-": ({"CT", "GT"}, 2),
    }
    expect: dict[str, set[int]] = {name: set() for name in BOUNDARY_TRACKS}
    for gene in sample_genes:
        tx = gene.transcripts[0]
        sfx = gene.strand
        first, last = tx.cds[0], tx.cds[-1]
        if sfx == "+":
            expect["start_codon+"].add(first.start)
            expect["stop_codon+"].add(last.end - 3)
            expect["donor+"] |= {i.start for i in tx.introns}
            expect["acceptor+"] |= {i.end - 2 for i in tx.introns}
        else:
            expect["start_codon-"].add(last.end - 3)
            expect["stop_codon-"].add(first.start)
            expect["donor-"] |= {i.end - 2 for i in tx.introns}
            expect["acceptor-"] |= {i.start for i in tx.introns}
    for name, (kmers, k) in motifs.items():
        hits = set(np.flatnonzero(tracks[name].values == 1).tolist())
        assert hits == expect[name], name
        assert np.all(tracks[name].values[[x for x in range(n) if x not in hits]] == 0)
        assert all(seq[x : x + k] in kmers for x in hits), name
    total = sum(
        tracks[t].values for t in ("coding+", "intron+", "coding-", "intron-", "intergenic")
    )
    np.testing.assert_array_equal(total, 1)
    coding = np.zeros(n)
    for gene in sample_genes:
        if gene.strand == "+":
            for p in gene.transcripts[0].cds:
                coding[p.start : p.end] = 1
    np.testing.assert_array_equal(tracks["coding+"].values, coding)


def test_chunked_tracks_tile_the_whole_contig():
    from genoseg.grammar import load_grammar

    g = load_grammar()
    rng = np.random.default_rng(3)
    n, C = 1000, g.num_labels
    pos, start, end = (rng.random((n, C)).astype(np.float32) for _ in range(3))
    whole = posterior_tracks(g, pos, start, end, contig_length=n)
    cuts = [0, 1, 2, 7, 300, 301, 640, 999, 1000]
    pieces: dict[str, np.ndarray] = {name: np.full(n, np.nan, np.float32) for name in TRACK_NAMES}
    for a, b in reversed(list(zip(cuts[:-1], cuts[1:]))):
        part = posterior_tracks(g, pos[a:b], start[a:b], end[a:b], offset=a, contig_length=n)
        for name, t in part.items():
            assert np.all(np.isnan(pieces[name][t.start : t.end])), f"{name} overlap"
            pieces[name][t.start : t.end] = t.values
    for name in TRACK_NAMES:
        np.testing.assert_array_equal(pieces[name], whole[name].values)
    # the end-based tracks: value at x = end posterior of the signal's last base
    idx = [
        i
        for i, lab in enumerate(g.labels)
        if lab.strand == 1 and lab.kind in ("single", "terminal")
    ]
    np.testing.assert_allclose(whole["stop_codon+"].values[:-2], end[2:, idx].sum(1), rtol=1e-6)
    assert np.all(whole["stop_codon+"].values[-2:] == 0)


def test_track_input_shapes_are_checked():
    from genoseg.grammar import load_grammar

    g = load_grammar()
    z = np.zeros((4, g.num_labels))
    with pytest.raises(ValueError, match="shape"):
        posterior_tracks(g, z[:, :3], z, z)
    with pytest.raises(ValueError, match="past contig_length"):
        posterior_tracks(g, z, z, z, offset=2, contig_length=5)


def _toy_grammar() -> Grammar:
    geo = LengthModel("geometric", 1, mean=3.0, table=2)
    mk = lambda name, kind, strand: Label(  # noqa: E731
        name, kind, strand, "x", phase_in=None if kind == "intergenic" else 0,
        phase_out=None if kind == "intergenic" else 0,
    )  # fmt: skip
    labels = [
        mk("intergenic", "intergenic", 0),
        mk("single+", "single", 1),
        mk("initial+/0", "initial", 1),
        mk("intron+/0", "intron", 1),
        mk("terminal+/0", "terminal", 1),
        mk("terminal-/0", "terminal", -1),
        mk("intron-/0", "intron", -1),
    ]
    C = len(labels)
    return Grammar(
        "toy", labels, {(a, b) for a in range(C) for b in range(C)}, {"x": geo}, (0,), (0,)
    )


def test_boundary_posteriors_match_brute_force_enumeration():
    """boundary_posteriors and the boundary tracks against every segmentation of a tiny
    sequence: lower[t, c] = P(some segment of c's class and strand starts at t) etc."""
    g = _toy_grammar()
    C, T, K = g.num_labels, 5, 3
    gen = torch.Generator().manual_seed(7)
    h = torch.randn(T, C, generator=gen, dtype=torch.float64)
    A = torch.randn(C, C, generator=gen, dtype=torch.float64)
    D = torch.randn(C, K, generator=gen, dtype=torch.float64)
    init = torch.randn(C, generator=gen, dtype=torch.float64)
    final = torch.randn(C, generator=gen, dtype=torch.float64)
    m = crf.marginals(h[None], None, A, D, init, final, backend="reference")
    start, end = m.start[0].numpy(), m.end[0].numpy()
    lower, upper = boundary_posteriors(g, start, end)
    tracks = posterior_tracks(g, m.position[0].numpy(), start, end, contig_length=T)

    scores = enumerate_scores(h, T, transitions=A, durations=D, init=init, final=final)
    log_z = brute_log_z(scores)
    cls = [(lab.strand, "exon" if lab.is_exon else lab.kind) for lab in g.labels]
    want_lo, want_up = np.zeros((T, C)), np.zeros((T, C))
    want_tracks = {name: np.zeros(T) for name in BOUNDARY_TRACKS}
    for segs, s in scores:
        p = math.exp(s - log_z)
        lo_ev = {(a, cls[c]) for a, b, c in segs}
        up_ev = {(b - 1, cls[c]) for a, b, c in segs}
        for t in range(T):
            for c in range(C):
                want_lo[t, c] += p * ((t, cls[c]) in lo_ev)
                want_up[t, c] += p * ((t, cls[c]) in up_ev)
        for a, b, c in segs:
            name = g.labels[c].name
            if name in ("single+", "initial+/0"):
                want_tracks["start_codon+"][a] += p
            if name in ("single+", "terminal+/0") and b - 3 >= 0:
                want_tracks["stop_codon+"][b - 3] += p
            if name == "terminal-/0":
                want_tracks["stop_codon-"][a] += p
            if name == "intron+/0":
                want_tracks["donor+"][a] += p
                if b - 2 >= 0:
                    want_tracks["acceptor+"][b - 2] += p
            if name == "intron-/0":
                want_tracks["acceptor-"][a] += p
                if b - 2 >= 0:
                    want_tracks["donor-"][b - 2] += p
    np.testing.assert_allclose(lower, want_lo, atol=1e-6)
    np.testing.assert_allclose(upper, want_up, atol=1e-6)
    assert lower.max() <= 1 + 1e-6 and upper[:, 1].max() > 0.05  # non-trivial
    for name, want in want_tracks.items():
        np.testing.assert_allclose(tracks[name].values, want, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------- checks


def _copy_gene(gene, **tx_changes):
    tx = gene.transcripts[0]
    new_tx = replace(tx, **tx_changes)
    return replace(gene, transcripts=[new_tx])


def test_check_gene_models_finds_each_problem(gold, sample_genes):
    seq = _seq(gold)
    plus = next(g for g in sample_genes if g.strand == "+" and len(g.transcripts[0].cds) == 3)
    tx = plus.transcripts[0]
    assert check_gene_models([plus], {"Chr5": seq}) == []

    # CDS end moved by 3: stop codon gone (and the gene extent no longer holds it)
    last = replace(tx.cds[-1], end=tx.cds[-1].end - 3)
    probs = check_gene_models([_copy_gene(plus, cds=[*tx.cds[:-1], last])], {"Chr5": seq})
    assert any("not a stop codon" in p for p in probs)

    # an exon shortened by one base: length mod 3, phases, introns all break
    mid = replace(tx.cds[1], end=tx.cds[1].end - 1)
    probs = check_gene_models([_copy_gene(plus, cds=[tx.cds[0], mid, tx.cds[2]])], {"Chr5": seq})
    text = "\n".join(probs)
    assert "not a multiple of 3" in text and "introns" in text and "phases" in text

    # a wrong GFF3 phase (entry phase) on one part
    bad = replace(tx.cds[1], entry_phase=(tx.cds[1].entry_phase + 1) % 3)
    probs = check_gene_models([_copy_gene(plus, cds=[tx.cds[0], bad, tx.cds[2]])], {"Chr5": seq})
    assert any("GFF3 phase" in p for p in probs)

    # transcript sticking out of its gene, strand disagreement, duplicate IDs
    probs = check_gene_models([replace(plus, start=plus.start + 5)], {"Chr5": seq})
    assert any("not within its gene" in p for p in probs)
    probs = check_gene_models([replace(plus, strand="-")], {"Chr5": seq})
    assert any("strand +, its gene's -" in p for p in probs)
    assert any("duplicate ID" in p for p in check_gene_models([plus, plus], {"Chr5": seq}))

    # the sequence itself: a non-canonical splice site, a missing ATG, an in-frame stop
    i = tx.introns[0]
    mutated = seq[: i.start] + "CC" + seq[i.start + 2 :]
    assert any("splice sites CC.." in p for p in check_gene_models([plus], {"Chr5": mutated}))
    a = tx.cds[0].start
    mutated = seq[:a] + "CTG" + seq[a + 3 :]
    assert any("not a start codon" in p for p in check_gene_models([plus], {"Chr5": mutated}))
    mutated = seq[: a + 3] + "TAA" + seq[a + 6 :]
    assert any(
        "in-frame stop codon TAA at CDS base 4" in p
        for p in check_gene_models([plus], {"Chr5": mutated})
    )


def test_check_gff3_on_reference_and_on_broken_files(gold, tmp_path):
    assert check_gff3(SAMPLE_GFF, gold.genome) == []
    lines = SAMPLE_GFF.read_text().splitlines(keepends=True)
    # a CDS line whose phase is wrong, and an exon pushed outside its mRNA
    k = next(i for i, l in enumerate(lines) if "\tCDS\t" in l and "\t-\t2\t" in l)
    lines[k] = lines[k].replace("\t-\t2\t", "\t-\t0\t")
    j = next(i for i, l in enumerate(lines) if "\texon\t" in l and "AT5G01010.1" in l)
    cols = lines[j].split("\t")
    cols[4] = str(int(cols[4]) + 30)
    lines[j] = "\t".join(cols)
    bad = tmp_path / "bad.gff3"
    bad.write_text("".join(lines))
    probs = check_gff3(bad, gold.genome)
    assert any(f"bad.gff3:{k + 1}: CDS" in p and "has phase 0, expected 2" in p for p in probs)
    assert any(f"bad.gff3:{j + 1}: exon" in p and "not within its parent mRNA" in p for p in probs)


def test_fill_boundary_posteriors_chunk_by_chunk(gold):
    g = gold.grammar
    path = gold.paths["Chr5"]
    n = path[-1][1]
    rng = np.random.default_rng(5)
    start = rng.random((n, g.num_labels)).astype(np.float32)
    end = rng.random((n, g.num_labels)).astype(np.float32)
    lower, upper = boundary_posteriors(g, start, end)
    whole = [Segment(s, e, c, 0.5) for s, e, c in path]
    fill_boundary_posteriors(whole, lower, upper)
    for seg in whole:
        assert seg.start_posterior == pytest.approx(float(lower[seg.start, seg.label]))
        assert seg.end_posterior == pytest.approx(float(upper[seg.end - 1, seg.label]))
        assert seg.posterior == 0.5
    chunked = [Segment(s, e, c, 0.5) for s, e, c in path]
    cuts = [0, 1000, 1388, 5000, 33333, 45000, n]
    for a, b in reversed(list(zip(cuts[:-1], cuts[1:]))):  # backward-pass order
        lo, up = boundary_posteriors(g, start[a:b], end[a:b])
        fill_boundary_posteriors(chunked, lo, up, offset=a)
    assert chunked == whole
    # the same bits from memory at another alignment (4 bytes off)
    moved = np.empty(start.size + 1, dtype=np.float32)[1:].reshape(start.shape)
    moved[...] = start
    assert np.array_equal(boundary_posteriors(g, moved, end)[0], lower)


def test_check_gff3_accepts_augustus_output():
    """Another tool's valid gene models pass the same checks (AUGUSTUS 3.5.0, Chr5)."""
    from tests.shared_data import shared

    genome = shared("athaliana_1pct", "genome.fa")
    peer = SAMPLE_GFF.parents[1] / "benchmarks" / "peers" / "augustus_athaliana_chr5.gff3"
    assert check_gff3(peer, genome) == []
