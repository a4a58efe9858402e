"""Markov content priors (genoseg.model.markov): k-mer indices, reading frames of real
genes, the log-odds against a per-base loop, both strands alike, window invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genoseg.data.dataset import WindowDataset
from genoseg.data.fasta import reverse_complement_codes
from genoseg.data.labels import IGNORE
from genoseg.grammar import load_grammar
from genoseg.model import EncoderConfig, GeneModel, ModelConfig
from genoseg.model.heads import CHANNELS
from genoseg.model.markov import CLASSES, MarkovPrior, class_track, kmer_index, markov_counts
from genoseg.model.strands import OUTPUT_MIRROR
from tests.shared_data import prepare_kog_loci

G = load_grammar()


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[tuple[np.ndarray, np.ndarray]]:
    """(codes, labels) of three real A. thaliana KOG loci, one window each."""
    out = prepare_kog_loci(tmp_path_factory.mktemp("markov") / "kog3.h5", 20000, 0)
    ds = WindowDataset(out)
    res = []
    for i in range(len(ds)):
        it = ds[i]
        lab = it["labels"].numpy().astype(np.int64)
        lab[~it["mask"].numpy()] = IGNORE
        res.append((it["sequence"].numpy().astype(np.int64), lab))
    return res


def test_kmer_index_against_a_loop() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 5, (3, 40))
    for order in (0, 2, 4):
        got = kmer_index(codes, order)
        assert isinstance(got, np.ndarray)
        for b in range(3):
            for t in range(40):
                ctx = codes[b, t - order : t + 1] if t >= order else None
                want = -1
                if ctx is not None and (ctx < 4).all():
                    want = int(sum(int(x) * 4 ** (order - j) for j, x in enumerate(ctx)))
                assert got[b, t] == want
        assert torch.equal(kmer_index(torch.from_numpy(codes), order), torch.from_numpy(got))


def _rc(codes: np.ndarray) -> np.ndarray:
    return reverse_complement_codes(codes).astype(np.int64)


def test_class_track_reads_real_genes_in_frame(rows) -> None:
    """Along each real gene in transcript sense the coding classes run codon/0, codon/1,
    codon/2, ... across its introns, start on an ATG and end on a stop codon."""
    genes = 0
    for codes, labels in rows:
        plus, minus = class_track(labels, G)
        for seq, cls in ((codes, plus), (_rc(codes), minus[::-1])):
            coding = np.flatnonzero(cls >= 2)
            if len(coding) == 0:
                continue
            # split into genes where intergenic or unlabelled bases lie between
            gap = np.cumsum(cls <= 0)
            cuts = np.flatnonzero(gap[coding[1:]] != gap[coding[:-1]]) + 1
            for gene in np.split(coding, cuts):
                pos = cls[gene] - 2
                assert (pos == np.arange(len(gene)) % 3).all()
                cds = "".join("ACGT"[c] for c in seq[gene])
                assert cds[:3] == "ATG" and cds[-3:] in ("TAA", "TAG", "TGA")
                assert len(cds) % 3 == 0
                genes += 1
    assert genes >= 3
    # every labelled base has a class on exactly the strands its label allows
    for _codes, labels in rows:
        plus, minus = class_track(labels, G)
        assert ((plus >= 0) | (minus >= 0) | (labels == IGNORE)).all()
        assert ((plus == 0) == (minus == 0)).all()


def test_counts_cover_every_labelled_kmer(rows) -> None:
    order = 3
    counts = markov_counts(rows, G, order)
    assert counts.shape == (len(CLASSES), 4 ** (order + 1))
    want = np.zeros(len(CLASSES))
    for codes, labels in rows:
        plus, minus = class_track(labels, G)
        for seq, cls in ((codes, plus), (_rc(codes), minus[::-1])):
            ok = (kmer_index(seq, order) >= 0) & (cls >= 0)
            want += np.bincount(cls[ok], minlength=len(CLASSES))
    np.testing.assert_array_equal(counts.sum(axis=1), want)
    # the three reading frames hold the same number of bases (whole codons)
    assert abs(counts[2].sum() - counts[4].sum()) <= 3 * len(rows) * (order + 1)


def _naive_prior(prior: MarkovPrior, codes: np.ndarray) -> np.ndarray:
    """Per-base loop: channel scores (N, N_OUTPUTS) of one row."""
    k = prior.order
    table = (prior.llr * prior.scale.view(4, 1)).detach().numpy()
    n = len(codes)
    out = np.zeros((n, len(CHANNELS)))
    rc = _rc(codes)
    names_p = ("intron+", "codon+/0", "codon+/1", "codon+/2")
    names_m = ("intron-", "codon-/0", "codon-/1", "codon-/2")
    for t in range(n):
        for seq, u, names in ((codes, t, names_p), (rc, n - 1 - t, names_m)):
            ctx = seq[u - k : u + 1] if u >= k else None
            if ctx is None or (ctx >= 4).any():
                continue
            idx = int(sum(int(x) * 4 ** (k - j) for j, x in enumerate(ctx)))
            for m, name in enumerate(names):
                out[t, CHANNELS.index(name)] = table[m, idx]
    return out


def test_prior_equals_the_loop_and_scores_both_strands_alike(rows) -> None:
    prior = MarkovPrior(2)
    prior.fit(markov_counts(rows, G, 2))
    with torch.no_grad():
        prior.scale.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    assert prior.llr.abs().sum() > 0
    rng = np.random.default_rng(3)
    lens = torch.tensor([120, 77])
    seq = torch.full((2, 120), 4, dtype=torch.int64)
    for b, n in enumerate(lens.tolist()):
        seq[b, :n] = torch.from_numpy(rng.integers(0, 5, n))
    with torch.no_grad():
        out = prior(seq, lens)
    for b, n in enumerate(lens.tolist()):
        want = _naive_prior(prior, seq[b, :n].numpy())
        np.testing.assert_allclose(out[b, :n].numpy(), want, atol=1e-5)
        assert (out[b, n:] == 0).all()
        # the reverse complement's scores are the forward's mirrored
        rc = torch.from_numpy(_rc(seq[b, :n].numpy())).unsqueeze(0)
        with torch.no_grad():
            back = prior(rc)[0].flip(0)[:, OUTPUT_MIRROR]
        torch.testing.assert_close(back, out[b, :n], atol=1e-5, rtol=1e-5)
    # coding log-odds are high on real coding sequence: the chains separate the classes
    codes, labels = rows[0]
    plus, _ = class_track(labels, G)
    with torch.no_grad():
        s = prior(torch.from_numpy(codes).unsqueeze(0))[0].numpy()
    frame = np.array([s[t, CHANNELS.index(f"codon+/{plus[t] - 2}")] for t in
                      np.flatnonzero(plus >= 2)])  # fmt: skip
    assert frame.mean() > 0.05 > s[plus == 0, CHANNELS.index("codon+/0")].mean()


def test_model_with_prior_is_window_invariant_and_round_trips(rows, tmp_path) -> None:
    from genoseg.model.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2], mlp_ratio=1)
    model = GeneModel(G, ModelConfig(encoder=enc, markov_order=4, rc_equivariant=True))
    assert model.halo == max(model.encoder.halo, 4)
    model.markov.fit(markov_counts(rows, G, 4))
    codes = torch.from_numpy(rows[1][0][:600]).unsqueeze(0)
    with torch.no_grad():
        full = model.outputs(codes)
        part = model.outputs(codes[:, 100 - model.halo : 300 + model.halo])
        torch.testing.assert_close(part[:, model.halo : -model.halo], full[:, 100:300])
        # the prior is in the outputs
        bare = model.one_pass(codes)
        assert (full - bare).abs().max() > 0.1
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    again = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(again.outputs(codes), full)
    assert math.isclose(float(again.markov.llr.abs().sum()), float(model.markov.llr.abs().sum()))


@pytest.mark.parametrize("evidence", [False, True])
def test_prior_as_encoder_inputs_keeps_the_model_rc_equivariant(rows, evidence: bool) -> None:
    """model.markov_use: inputs feeds the 8 log-odds channels to the encoder; the stem's
    tie swaps their + and - blocks, so one pass still equals its own strand average."""
    from genoseg.model.strands import average_strands

    torch.manual_seed(2)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2], evidence=evidence)
    cfg = ModelConfig(encoder=enc, markov_order=3, markov_use="inputs", rc_equivariant=True)
    model = GeneModel(G, cfg)
    assert model.encoder.stem.in_channels == (14 if evidence else 6) + 8
    model.markov.fit(markov_counts(rows, G, 3))
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    codes = torch.from_numpy(rows[0][0][:300]).unsqueeze(0)
    ev = torch.rand(1, 8, 300) * 5 if evidence else None
    for train in (False, True):
        model.train(train)
        with torch.set_grad_enabled(train):
            out = model.outputs(codes, None, ev)
            avg = average_strands(model.one_pass, codes, None, ev)
        torch.testing.assert_close(out, avg, atol=1e-5, rtol=1e-5)
    # the features reach the outputs: other log-odds, other outputs
    with torch.no_grad():
        before = model.outputs(codes, None, ev)
        model.markov.llr.mul_(2.0)
        assert (model.outputs(codes, None, ev) - before).abs().max() > 1e-3
