"""Gene-structure grammar: YAML loading, compiled tensors, frame rules, both strands."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from genoseg.crf import reference as crf_ref
from genoseg.crf import viterbi
from genoseg.data.labels import gene_models_from_segments
from genoseg.errors import GenosegError
from genoseg.grammar import (
    MAX_DUR_UNBOUNDED,
    compile_window,
    compile_window_np,
    default_grammar_path,
    grammar_from_yaml,
    load_grammar,
    max_dur_fast,
    max_dur_reference,
    reverse_complement,
)
from genoseg.grammar.compile import _shifted_kmer_index

ROOT = Path(__file__).resolve().parents[1]
ENC = {b: i for i, b in enumerate("ACGTN")}
STOPS = {"TAA", "TAG", "TGA"}


def enc(s: str) -> np.ndarray:
    return np.array([ENC[c] for c in s], dtype=np.uint8)


@pytest.fixture(scope="module")
def g():
    return load_grammar()


def test_default_grammar_label_set(g):
    assert g.num_labels == 45
    kinds = [lab.kind for lab in g.labels]
    assert kinds.count("intergenic") == 1
    for strand in (1, -1):
        labs = [lab for lab in g.labels if lab.strand == strand]
        assert sum(lab.kind == "single" for lab in labs) == 1
        assert sum(lab.kind == "initial" for lab in labs) == 3
        assert sum(lab.kind == "internal" for lab in labs) == 9
        assert sum(lab.kind == "terminal" for lab in labs) == 3
        assert sum(lab.kind == "intron" for lab in labs) == 6  # 0, 1, 1T, 2, 2TA, 2TG
    no_split = grammar_from_yaml(
        default_grammar_path().read_text().replace("junction_stops: true", "junction_stops: false")
    )
    assert no_split.num_labels == 39
    # mirror is an involution mapping + to -
    m = g.mirror
    assert (m[m] == np.arange(g.num_labels)).all()
    assert all(g.labels[m[i]].strand == -g.labels[i].strand for i in range(g.num_labels))


def test_packaged_and_repo_grammar_are_identical():
    assert default_grammar_path().read_bytes() == (ROOT / "configs" / "grammar.yaml").read_bytes()


def test_static_tables(g):
    t = g.static_tables
    C = g.num_labels
    A, D, tail = t["transitions"], t["durations"], t["tail"]
    assert A.shape == (C, C) and D.shape[0] == C and D.shape[1] >= 15000
    assert not np.isfinite(np.diag(A)).any()  # no self transitions: runs are segments
    ig = g.intergenic
    assert np.isfinite(t["init"]).sum() == 1 and np.isfinite(t["init"][ig])
    for c, lab in enumerate(g.labels):
        finite = np.flatnonzero(np.isfinite(D[c])) + 1  # allowed lengths
        if lab.is_exon:
            assert tail[c] == -math.inf
            assert (finite % 3 == lab.residue).all()
            assert finite.max() > 14000
        else:
            assert math.isfinite(tail[c]) and tail[c] < 0
            assert finite.max() <= 60
    # transitions are strand-mirrored: A[a, b] == A[m(b), m(a)]
    m = g.mirror
    assert np.array_equal(np.isfinite(A), np.isfinite(A[np.ix_(m, m)].T))
    # phase bookkeeping: exon exit phase = next intron's phase = next exon's entry phase
    for a, b in g.transitions:
        la, lb = g.labels[a], g.labels[b]
        if la.strand > 0 and lb.strand > 0:
            assert la.phase_out == lb.phase_in


def test_shifted_kmer_index_matches_naive():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 5, size=40).astype(np.uint8)
    for shift in (-3, -1, 0, 2):
        for k in (1, 2, 3):
            got = _shifted_kmer_index(codes, shift, k)
            for t in range(40):
                want = 0
                for j in range(k):
                    p = t + shift + j
                    want = want * 5 + (int(codes[p]) if 0 <= p < 40 else 4)
                assert got[t] == want


@pytest.mark.parametrize("seed", range(6))
def test_max_dur_fast_matches_reference(g, seed):
    rng = np.random.default_rng(seed)
    n = 240
    codes = rng.integers(0, 4, size=n).astype(np.uint8)
    codes[rng.random(n) < 0.03] = 4
    valid = rng.random(n) > (0.02 if seed % 2 else 0.0)
    fast = max_dur_fast(g, codes, valid)
    ref = max_dur_reference(g, codes, valid)
    np.testing.assert_array_equal(fast, ref)
    assert (fast[:, g.intergenic] == MAX_DUR_UNBOUNDED).all()
    assert (fast[:, [c for c, lab in enumerate(g.labels) if lab.is_exon]] < n + 1).any()


@pytest.mark.parametrize("seed", range(8))
def test_compiled_rows_kernel_equals_the_numpy_reference(g, seed):
    """compile_window_np's numba pass gives the numpy reference's arrays bit for bit:
    random sequences with N bases, invalid positions, contexts on either side, open ends,
    and windows shorter than a k-mer or a codon."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 4000)) if seed else 3
    codes = rng.integers(0, 5 if seed % 3 else 4, size=n).astype(np.uint8)
    valid = None if seed % 2 else rng.random(n) > 0.03
    left = int(rng.integers(0, n // 3 + 1)) if n > 6 else 0
    right = int(rng.integers(0, n // 3 + 1)) if n > 6 else 0
    kw = dict(left_context=left, right_context=right, open_start=seed % 4 == 1,
              open_end=seed % 4 == 2)  # fmt: skip
    fast = compile_window_np(g, codes, valid, **kw)
    ref = compile_window_np(g, codes, valid, backend="numpy", **kw)
    assert fast.keys() == ref.keys()
    for k in ref:
        assert fast[k].dtype == ref[k].dtype
        np.testing.assert_array_equal(fast[k], ref[k], err_msg=k)
    assert np.isneginf(ref["seg_start"]).any() and np.isfinite(ref["seg_start"]).any()


def test_strand_symmetry(g):
    """A minus-strand label's rules on x are the plus label's rules on rc(x), mirrored."""
    rng = np.random.default_rng(7)
    s = "".join(rng.choice(list("ACGT"), size=500))
    x = compile_window_np(g, enc(s))
    y = compile_window_np(g, enc(reverse_complement(s)))
    m = g.mirror
    for c, lab in enumerate(g.labels):
        if lab.strand < 0:
            np.testing.assert_array_equal(x["seg_start"][:, c], y["seg_end"][::-1, m[c]])
            np.testing.assert_array_equal(x["seg_end"][:, c], y["seg_start"][::-1, m[c]])
            np.testing.assert_array_equal(x["durations"][c], x["durations"][m[c]])


def _plus_gene() -> tuple[str, list[tuple[int, int, str]]]:
    """A 3-exon plus-strand gene with phase-1 and phase-2 introns, no in-frame stop."""
    ig1 = "CCCCCCCCCC"
    ex1 = "ATGGCCGCCC"  # 10 bases -> exit phase 1
    in1 = "GTAAGTCCCCCCCCCCCCCCCCCCCCTTTCAG"  # donor GT, acceptor AG, 32 bp
    ex2 = "GCCGCCGCCGCCGCCGC"  # 17 bases: entry 1, exit (10+17)%3 = 0
    in2 = "GTAAGCCCCCCCCCCCCCCCCCCCCCCCCCAG"
    ex3 = "GCCGCCTAA"
    ig2 = "CCCCCCCCCC"
    seq = ig1 + ex1 + in1 + ex2 + in2 + ex3 + ig2
    pieces = [(ig1, "intergenic"), (ex1, "initial+/1"), (in1, "intron+/1"),
              (ex2, "internal+/1/0"), (in2, "intron+/0"), (ex3, "terminal+/0"),
              (ig2, "intergenic")]  # fmt: skip
    segs, pos = [], 0
    for part, name in pieces:
        segs.append((pos, pos + len(part), name))
        pos += len(part)
    return seq, segs


def _score(g, seq: str, segs) -> float:
    st = compile_window(g, enc(seq))
    tiling = [(s, e, g.index(n)) for s, e, n in segs]
    em = torch.zeros(len(seq), g.num_labels)
    return crf_ref.score_segmentation(em, tiling, **st.as_dict())


def test_synthetic_gene_rules_both_strands(g):
    seq, segs = _plus_gene()
    assert math.isfinite(_score(g, seq, segs))
    # minus strand: reverse complement, mirrored labels, reversed order
    L = len(seq)
    rsegs = [(L - e, L - s, n.replace("+", "-")) for s, e, n in reversed(segs)]
    assert math.isfinite(_score(g, reverse_complement(seq), rsegs))
    # each broken signal forbids the model
    ex1_start, in1_start = segs[1][0], segs[2][0]
    bad = {
        "no start codon": seq[:ex1_start] + "CTG" + seq[ex1_start + 3 :],
        "no donor": seq[:in1_start] + "CA" + seq[in1_start + 2 :],
        "no stop": seq[: segs[5][1] - 3] + "CAA" + seq[segs[5][1] :],
        "in-frame stop": seq[: ex1_start + 3] + "TAG" + seq[ex1_start + 6 :],
    }
    for what, s2 in bad.items():
        assert _score(g, s2, segs) == -math.inf, what
    # wrong phase label: intron+/0 after a 10-base initial exon is not a transition
    wrong = list(segs)
    wrong[2] = (segs[2][0], segs[2][1], "intron+/0")
    assert _score(g, seq, wrong) == -math.inf


def test_junction_spanning_stop_is_forbidden(g):
    """Exon 1 ends ...T (phase 1), exon 2 starts AA...: TAA across the intron."""
    seq, segs = _plus_gene()
    e2 = segs[3][0]
    ex1 = "ATGGCCGCCT"  # last coding base before the phase-1 intron is T
    seq_t = seq[: segs[1][0]] + ex1 + seq[segs[1][1] : e2] + "AA" + seq[e2 + 2 :]
    segs_t = list(segs)
    segs_t[2] = (segs[2][0], segs[2][1], "intron+/1T")
    assert _score(g, seq_t, segs_t) == -math.inf
    # the same sequence with a harmless junction codon (TCA) is fine
    seq_ok = seq_t[:e2] + "CA" + seq_t[e2 + 2 :]
    assert math.isfinite(_score(g, seq_ok, segs_t))
    # without the junction split the grammar cannot see the stop
    g39 = grammar_from_yaml(
        default_grammar_path().read_text().replace("junction_stops: true", "junction_stops: false")
    )
    assert math.isfinite(_score(g39, seq_t, segs))


def _check_gene_model(seq: str, strand: str, cds: tuple[tuple[int, int], ...]) -> None:
    """The protein-coding validity rules of DESIGN.md §2, checked from scratch."""
    spliced = "".join(seq[a:b] for a, b in cds)
    introns = [seq[cds[i][1] : cds[i + 1][0]] for i in range(len(cds) - 1)]
    if strand == "-":
        spliced = reverse_complement(spliced)
        introns = [reverse_complement(x) for x in introns]
    assert len(spliced) % 3 == 0
    assert spliced[:3] == "ATG" and spliced[-3:] in STOPS
    codons = [spliced[i : i + 3] for i in range(0, len(spliced) - 3, 3)]
    assert not STOPS & set(codons)
    for intron in introns:
        assert intron[:2] in ("GT", "GC", "AT") and intron[-2:] in ("AG", "AC")
        assert len(intron) >= 20


@pytest.mark.parametrize("seed", range(3))
def test_viterbi_paths_are_valid_gene_models(g, seed):
    """Whatever the emissions, decoded genes obey the grammar's biology (both strands)."""
    rng = np.random.default_rng(seed)
    T = 4000
    seq = "".join(rng.choice(list("ACGT"), size=T, p=[0.3, 0.2, 0.2, 0.3]))
    st = compile_window(g, enc(seq))
    em = torch.from_numpy(rng.normal(size=(1, T, g.num_labels)).astype(np.float32))
    em[..., [c for c, lab in enumerate(g.labels) if lab.strand != 0]] += 0.7
    args = st.as_dict()
    for k in ("seg_start", "seg_end", "max_dur"):
        args[k] = args[k].unsqueeze(0)
    _, paths = viterbi(em, None, **args)
    models = gene_models_from_segments(paths[0], g)
    assert models, "biased emissions should yield genes"
    for gm in models:
        _check_gene_model(seq, gm.strand, gm.cds)


def test_bad_grammar_yaml(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text(default_grammar_path().read_text() + "colour: blue\n")
    with pytest.raises(GenosegError, match=r"g\.yaml.*unknown key 'colour'"):
        load_grammar(p)
    p.write_text(default_grammar_path().read_text().replace("median: 150", "medain: 150"))
    with pytest.raises(GenosegError, match=r"unknown key 'lengths\.internal\.medain'"):
        load_grammar(p)
    p.write_text(default_grammar_path().read_text().replace("GT: 0.0", "GTT: 0.0"))
    with pytest.raises(GenosegError, match="not a 2-mer"):
        load_grammar(p)
    with pytest.raises(GenosegError, match="not found"):
        load_grammar(tmp_path / "missing.yaml")
    # not YAML at all: a GFF3 line (file:line and the problem), a binary file (the file)
    p.write_text("##gff-version 3\nc1\tsrc\tgene\t1\t9\t.\t+\t.\tID=g\n")
    with pytest.raises(GenosegError, match=r"g\.yaml:2: invalid YAML: found character '\\t'"):
        load_grammar(p)
    p.write_bytes(b"\x1f\x8b\x08\x04\x00\x00")
    with pytest.raises(GenosegError, match=r"g\.yaml: cannot read grammar: 'utf-8' codec"):
        load_grammar(p)
