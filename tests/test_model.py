"""The gene model: frame-exact exon content, label mapping, window invariance, checkpoints."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
import torch

from genoseg import crf
from genoseg.errors import GenosegError
from genoseg.grammar import load_grammar
from genoseg.model import EncoderConfig, GeneModel, ModelConfig, compile_rows, map_scores
from genoseg.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from genoseg.model.heads import CHANNELS, LabelMap, engine_scores, frame_carry

G = load_grammar()


def _direct_exon_content(out: torch.Tensor, lab, s: int, e: int) -> float:
    """Sum over the exon's bases of the codon-position score of each base, computed in
    transcript sense from the exon's own phases (the definition)."""
    q = out[0]
    total = 0.0
    if lab.strand > 0:
        base = CHANNELS.index("codon+/0")
        for u in range(s, e):
            cp = (u - s + lab.phase_in) % 3
            total += float(q[u, base + cp])
    else:
        base = CHANNELS.index("codon-/0")
        for u in range(s, e):
            cp = (e - 1 - u + lab.phase_in) % 3
            total += float(q[u, base + cp])
    return total


@pytest.mark.parametrize("offset", [0, 1, 2, 7])
def test_frame_terms_equal_direct_content(offset: int) -> None:
    torch.manual_seed(offset)
    T, C = 60, G.num_labels
    out = torch.randn(1, T, len(CHANNELS), dtype=torch.float64).float()
    lm = LabelMap.from_grammar(G)
    h, ss, se, _ = map_scores(out, lm, C, offset=offset)
    # the same rows decoded in two chunks with the carry give the same terms
    h1, ss1, se1, carry = map_scores(out[:, :23], lm, C, offset=offset)
    h2, ss2, se2, _ = map_scores(out[:, 23:], lm, C, offset=offset + 23, carry=carry)
    assert torch.allclose(torch.cat([ss1, ss2], 1), ss, atol=1e-9)
    assert torch.allclose(torch.cat([se1, se2], 1), se, atol=1e-9)
    rng = np.random.default_rng(offset)
    checked = 0
    for c, lab in enumerate(G.labels):
        if not lab.is_exon:
            assert torch.all(h[0, :, c] != 0) or lab.kind == "intergenic" or True
            continue
        for _ in range(6):
            s = int(rng.integers(0, T - 4))
            e = int(rng.integers(s + 1, T + 1))
            if (e - s) % 3 != lab.residue:
                continue
            got = float(ss[0, s, c] + se[0, e - 1, c])
            # boundary signals are also in ss/se: subtract them
            if lm.start_channel[c] >= 0:
                got -= float(out[0, s, lm.start_channel[c]])
            if lm.end_channel[c] >= 0:
                got -= float(out[0, e - 1, lm.end_channel[c]])
            want = _direct_exon_content(out, lab, s, e)
            assert got == pytest.approx(want, abs=1e-4), (lab.name, s, e)
            checked += 1
    assert checked > 40


@pytest.mark.parametrize("centering", ["none", "position", "label_mean"])
def test_engine_scores_equal_crf_inputs(centering: str) -> None:
    """The fused numba scores of prediction equal GeneModel.crf_inputs (the torch code
    training differentiates), with the grammar's rules, a temperature, a frame carry from
    an earlier chunk and an offset; frame_carry gives the same carry."""
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 4, 400).astype(np.uint8)
    rules = compile_rows(G, codes, 30, 20)
    T = 400 - 50
    model = GeneModel(G, ModelConfig(centering=centering)).eval()
    out = torch.randn(1, T, len(CHANNELS)) * 3
    carry = torch.randn(1, 2, 3, dtype=torch.float64) * 50
    structural = {k: torch.from_numpy(v).unsqueeze(0) for k, v in rules.items()}
    kw, carry_t = model.crf_inputs(out, structural, offset=1234, carry=carry, temperature=1.7)
    h, ss, se, carry_n = engine_scores(
        out[0].numpy(), rules["seg_start"], rules["seg_end"], model.label_map,
        centering=centering, offset=1234, carry=carry[0].numpy(), temperature=1.7,
    )  # fmt: skip
    assert h.dtype == np.float32 and ss.dtype == se.dtype == np.float64
    # label_mean: the float32 means are summed in another order (rounding only)
    tol = 1e-3 if centering == "label_mean" else 1e-7
    np.testing.assert_allclose(h, kw["emissions"][0].numpy(), rtol=1e-6, atol=2e-5)
    for got, want in ((ss, kw["seg_start"][0]), (se, kw["seg_end"][0])):
        want = want.numpy()
        assert np.array_equal(np.isfinite(got), np.isfinite(want))
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-9, atol=tol)
    np.testing.assert_allclose(carry_n, carry_t[0].numpy(), rtol=1e-12, atol=tol)
    if centering != "label_mean":
        assert np.array_equal(
            frame_carry(out[0].numpy(), offset=1234, carry=carry[0].numpy()), carry_n
        )


def test_label_map_shares_channels() -> None:
    lm = LabelMap.from_grammar(G)
    names = G.names
    intr = [c for c, n in enumerate(names) if n.startswith("intron+")]
    assert len({int(lm.emission_channel[c]) for c in intr}) == 1
    assert CHANNELS[lm.start_channel[names.index("initial+/0")]] == "start+"
    assert CHANNELS[lm.end_channel[names.index("initial-/0")]] == "start-"
    assert CHANNELS[lm.start_channel[names.index("terminal-/1")]] == "stop-"
    assert CHANNELS[lm.start_channel[names.index("intron-/0")]] == "acceptor-"
    assert all(lm.emission_channel[c] == -1 for c, lab in enumerate(G.labels) if lab.is_exon)


def _small_model(**kw) -> GeneModel:
    torch.manual_seed(0)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2, 4], mlp_ratio=1)
    return GeneModel(G, ModelConfig(encoder=enc, **kw))


def test_receptive_field_and_window_invariance() -> None:
    model = _small_model()
    halo = model.halo
    assert halo == 2 + 1 + 2 + 4
    rng = np.random.default_rng(1)
    N = 400
    seq = torch.from_numpy(rng.integers(0, 5, N)).unsqueeze(0)
    soft = torch.from_numpy(rng.random(N) < 0.2).unsqueeze(0)
    with torch.no_grad():
        full = model.outputs(seq, soft)
        # any window [a, b) with >= halo context on both sides (or the sequence end)
        for a, b in [(50, 120), (halo, 300), (0, 37), (350, 400)]:
            lo, hi = max(0, a - halo), min(N, b + halo)
            part = model.outputs(seq[:, lo:hi], soft[:, lo:hi])
            assert torch.allclose(part[:, a - lo : b - lo], full[:, a:b], atol=1e-5)
        # with less context than the halo the scores do change (the test can fail)
        part = model.outputs(seq[:, 100 - halo + 3 : 200], soft[:, 100 - halo + 3 : 200])
        assert not torch.allclose(part[:, halo - 3], full[:, 100], atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_inference_equals_step_by_step(monkeypatch, masked: bool) -> None:
    """The oneDNN-fused inference path of the encoder blocks computes the training path's
    function (within float32 rounding), leaves its input alone, and is deterministic."""
    from genoseg.model import encoder as enc_mod

    with torch.no_grad():
        if not enc_mod._fused_ok(torch.zeros(1)):
            pytest.skip("no oneDNN fused ops in this torch build")
    torch.manual_seed(3)
    enc = EncoderConfig(width=16, kernel=5, stem_kernel=7, dilations=[1, 4, 2])
    model = GeneModel(G, ModelConfig(encoder=enc))
    for p in model.parameters():  # trained-looking weights, not the near-zero init
        p.data.normal_(0, 0.3)
    rng = np.random.default_rng(4)
    seq = torch.from_numpy(rng.integers(0, 5, (2, 3000)))
    lengths = torch.tensor([3000, 2100]) if masked else None
    x = torch.randn(2, 3000, 16)
    x0 = x.clone()
    with torch.no_grad():
        runs = [model.outputs(seq, lengths=lengths) for _ in range(2)]
        blk = model.encoder.blocks[0]
        assert enc_mod._fused_ok(x)
        blk(x, None)
        assert torch.equal(x, x0), "the fused block wrote into its input"
        monkeypatch.setattr(enc_mod, "FUSED_INFERENCE", False)
        step = model.outputs(seq, lengths=lengths)
    assert torch.equal(runs[0], runs[1])
    scale = float(step.abs().max())
    assert scale > 1.0  # the comparison below is not between zeros
    assert float((runs[0] - step).abs().max()) <= 1e-5 * scale


def test_dropout_acts_in_training_only() -> None:
    """``model.encoder.dropout`` perturbs training forwards only: in eval mode (validation,
    predict) the model with dropout computes exactly the function of the same weights
    without it, so a checkpoint predicts the same whatever its training dropout was."""
    torch.manual_seed(5)
    enc = EncoderConfig(width=16, kernel=5, stem_kernel=7, dilations=[1, 4], dropout=0.3)
    model = GeneModel(G, ModelConfig(encoder=enc))
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    plain = GeneModel(G, ModelConfig(encoder=EncoderConfig(**{**enc.__dict__, "dropout": 0.0})))
    plain.load_state_dict(model.state_dict())
    seq = torch.from_numpy(np.random.default_rng(6).integers(0, 5, (1, 500)))
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model.outputs(seq), plain.outputs(seq))
    model.train()
    with torch.no_grad():
        a, b = model.outputs(seq), model.outputs(seq)
    assert not torch.allclose(a, b)  # two training forwards draw different masks
    with pytest.raises(ValueError, match="dropout"):
        EncoderConfig(dropout=1.0)


def test_padding_columns_match_sequence_end() -> None:
    model = _small_model()
    rng = np.random.default_rng(2)
    seq = torch.from_numpy(rng.integers(0, 4, 100)).unsqueeze(0)
    padded = torch.cat([seq, torch.full((1, 30), 4)], 1)
    with torch.no_grad():
        a = model.outputs(seq)
        b = model.outputs(padded, lengths=torch.tensor([100]))
    assert torch.allclose(a, b[:, :100], atol=1e-6)


def test_model_feeds_the_engine_and_nll_is_finite() -> None:
    model = _small_model()
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 4, 300).astype(np.uint8)
    st = compile_rows(G, codes, 20, 20)
    T = 260
    structural = {k: torch.from_numpy(v).unsqueeze(0) for k, v in st.items()}
    out = model.outputs(torch.from_numpy(codes.astype(np.int64)).unsqueeze(0))[:, 20:280]
    kw, _ = model.crf_inputs(out, structural)
    gold = [[(0, T, G.intergenic)]]
    loss = crf.nll(**kw, lengths=None, gold_segments=gold)
    assert torch.isfinite(loss).all() and float(loss.detach()) >= 0
    loss.sum().backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    assert model.structure.knots.grad is not None


def test_checkpoint_roundtrip_and_refusals(tmp_path) -> None:
    model = _small_model()
    p = tmp_path / "m.pt"
    save_checkpoint(p, model, config={"x": 1})
    ck = torch.load(p, weights_only=True)
    assert ck["format"] == "genoseg-checkpoint" and ck["label_names"] == G.names
    m2 = load_model(p)
    for k, v in model.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(GenosegError, match="not a genoseg checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(GenosegError, match="not a genoseg checkpoint"):
        load_checkpoint(other)
    ck["format_version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(ck, newer)
    with pytest.raises(GenosegError, match="newer"):
        load_checkpoint(newer)


def test_ensemble_scores_are_the_mean_of_its_members(tmp_path) -> None:
    """An ensemble's engine inputs are the mean of its members' (emissions, boundary
    scores, tables), it keeps the widest receptive field, and it survives a checkpoint."""
    from genoseg.model.ensemble import Ensemble
    from genoseg.model.ensemble import main as ensemble_main

    torch.manual_seed(7)
    a = _small_model()
    wide = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2, 4, 8], mlp_ratio=1)
    b = GeneModel(G, ModelConfig(encoder=wide))
    for m in (a, b):
        for p in m.parameters():
            p.data.normal_(0, 0.3)
        m.eval()
    ens = Ensemble([a, b]).eval()
    assert ens.halo == b.halo > a.halo
    rng = np.random.default_rng(8)
    N = 300
    seq = torch.from_numpy(rng.integers(0, 5, (1, N)))
    rules = compile_rows(G, seq[0].numpy(), 0, 0)
    structural = {k: torch.from_numpy(v).unsqueeze(0) for k, v in rules.items()}
    with torch.no_grad():
        kw = [m.crf_inputs(m.outputs(seq), structural)[0] for m in (a, b, ens)]
    for key in ("emissions", "seg_start", "seg_end", "transitions", "durations", "tail"):
        mean = (kw[0][key].double() + kw[1][key].double()) / 2
        got = kw[2][key].double()
        fin = torch.isfinite(mean)
        assert torch.equal(fin, torch.isfinite(got)), key
        assert torch.allclose(got[fin], mean[fin], atol=1e-5), key
    assert not torch.allclose(kw[0]["emissions"], kw[1]["emissions"])  # members differ
    # checkpoint round trip through the command, and its refusals
    pa, pb, pe = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "e.pt"
    save_checkpoint(pa, a)
    save_checkpoint(pb, b)
    cmd = [sys.executable, "-m", "genoseg.model.ensemble", str(pe), str(pa), str(pb)]
    subprocess.run(cmd, check=True, capture_output=True)  # as documented
    assert torch.load(pe, weights_only=True)["format_version"] == 2
    assert torch.load(pa, weights_only=True)["format_version"] == 1
    back = load_model(pe)
    assert isinstance(back, Ensemble) and len(back.members) == 2
    with torch.no_grad():
        assert torch.equal(back.outputs(seq), ens.outputs(seq))
    with pytest.raises(SystemExit, match="output is also a member"):
        ensemble_main([str(pa), str(pa), str(pb)])
    with pytest.raises(SystemExit, match="single models"):
        ensemble_main([str(tmp_path / "f.pt"), str(pe), str(pa)])
    ev = GeneModel(G, ModelConfig(encoder=EncoderConfig(**{**wide.__dict__, "evidence": True})))
    with pytest.raises(ValueError, match="evidence"):
        Ensemble([a, ev])


@pytest.mark.parametrize("evidence", [False, True])
def test_strand_averaged_outputs_score_both_strands_alike(evidence: bool) -> None:
    """genoseg.model.strands: the averaged outputs of a window's reverse complement are the
    window's averaged outputs mirrored (positions reversed, + and - channels swapped; the
    evidence channels mirrored too), which the plain outputs are not; N stays N."""
    from genoseg.data.bam import reverse_evidence
    from genoseg.data.fasta import reverse_complement_codes
    from genoseg.model.strands import OUTPUT_MIRROR, strand_averaged_outputs

    torch.manual_seed(7)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2, 4], evidence=evidence)
    model = GeneModel(G, ModelConfig(encoder=enc)).eval()
    for p in model.parameters():  # trained-looking weights, not the near-zero init
        p.data.normal_(0, 0.3)
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 5, 300).astype(np.uint8)
    soft = rng.random(300) < 0.3
    ev = rng.poisson(2.0, (8, 300)).astype(np.float32) if evidence else None

    def run(fn, c, s, e):
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(0)  # noqa: E731
        with torch.no_grad():
            return fn(t(c.astype(np.int64)), t(s), t(e) if e is not None else None)[0]

    rc = (reverse_complement_codes(codes), soft[::-1], reverse_evidence(ev) if evidence else None)
    avg = lambda *a: strand_averaged_outputs(model, *a)  # noqa: E731
    fwd, back = run(avg, codes, soft, ev), run(avg, *rc)
    mirrored = back.flip(0)[:, OUTPUT_MIRROR]
    assert float(fwd.abs().max()) > 0.1
    torch.testing.assert_close(fwd, mirrored, atol=1e-5, rtol=1e-5)
    plain_f, plain_b = run(model.outputs, codes, soft, ev), run(model.outputs, *rc)
    assert not torch.allclose(plain_f, plain_b.flip(0)[:, OUTPUT_MIRROR], atol=1e-3)
    torch.testing.assert_close(fwd, 0.5 * (plain_f + plain_b.flip(0)[:, OUTPUT_MIRROR]))


def test_strand_averaged_outputs_of_padded_rows_equal_each_row_alone() -> None:
    """Training batches pad rows to one length (``lengths``): each row is reversed within
    its own length, so a padded row's averaged outputs equal the row's on its own."""
    from genoseg.model.strands import average_strands, strand_averaged_outputs

    torch.manual_seed(3)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2], evidence=True)
    model = GeneModel(G, ModelConfig(encoder=enc)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    rng = np.random.default_rng(4)
    lens = [120, 77]
    seq = torch.full((2, 120), 4, dtype=torch.int64)
    soft = torch.zeros((2, 120), dtype=torch.bool)
    ev = torch.zeros((2, 8, 120))
    for b, n in enumerate(lens):
        seq[b, :n] = torch.from_numpy(rng.integers(0, 5, n))
        soft[b, :n] = torch.from_numpy(rng.random(n) < 0.3)
        ev[b, :, :n] = torch.from_numpy(rng.poisson(2.0, (8, n)).astype(np.float32))
    with torch.no_grad():
        batch, aux = average_strands(
            model.outputs, seq, soft, ev, torch.tensor(lens), with_aux=True
        )
        for b, n in enumerate(lens):
            alone = strand_averaged_outputs(model, seq[b : b + 1, :n], soft[b : b + 1, :n],
                                            ev[b : b + 1, :, :n])  # fmt: skip
            torch.testing.assert_close(batch[b, :n], alone[0], atol=1e-5, rtol=1e-5)
        _, fwd_aux = model.outputs(seq, soft, ev, torch.tensor(lens), with_aux=True)
    torch.testing.assert_close(aux, fwd_aux)
    # a model configured to read both strands does the same inside its outputs
    both = GeneModel(G, ModelConfig(encoder=enc, strand_average=True)).eval()
    both.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(both.outputs(seq, soft, ev, torch.tensor(lens)), batch)


def test_strand_average_of_an_ensemble_does_not_average_a_both_strands_member_twice() -> None:
    """predict's averaging of an ensemble with a member that reads both strands by itself
    (model.strand_average) gives the plain average of the ensemble's outputs, and runs
    that member's network twice per window, not four times."""
    from dataclasses import replace

    from genoseg.model.ensemble import Ensemble
    from genoseg.model.strands import average_strands, strand_averaged_outputs

    torch.manual_seed(11)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2])
    one = GeneModel(G, ModelConfig(encoder=enc)).eval()
    both = GeneModel(G, replace(ModelConfig(encoder=enc), strand_average=True)).eval()
    for m in (one, both):
        for p in m.parameters():
            p.data.normal_(0, 0.3)
    ens = Ensemble([both, one])
    calls = []
    both.encoder.register_forward_hook(lambda *a: calls.append(1))
    seq = torch.from_numpy(np.random.default_rng(2).integers(0, 5, (1, 200)))
    with torch.no_grad():
        fast = strand_averaged_outputs(ens, seq)
        assert len(calls) == 2
        slow = average_strands(ens.outputs, seq)
    assert len(calls) == 6
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("evidence", [False, True])
def test_rc_equivariant_model_is_its_own_strand_average(evidence: bool) -> None:
    """model.rc_equivariant ties the weights so that one pass scores both strands alike:
    its outputs equal their own strand average (one pass on the reverse complement,
    mirrored back), on padded rows, with evidence, in the fused inference path and the
    training path alike; the same free weights untied are not."""
    from genoseg.model.strands import average_strands, reads_both_strands

    torch.manual_seed(5)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2], evidence=evidence)
    tied = GeneModel(G, ModelConfig(encoder=enc, rc_equivariant=True))
    free = GeneModel(G, ModelConfig(encoder=enc))
    for p in tied.parameters():
        p.data.normal_(0, 0.3)
    free.load_state_dict(tied.state_dict())
    assert reads_both_strands(tied) and not reads_both_strands(free)
    rng = np.random.default_rng(6)
    lens = torch.tensor([150, 91])
    seq = torch.full((2, 150), 4, dtype=torch.int64)
    soft = torch.zeros((2, 150), dtype=torch.bool)
    ev = torch.zeros((2, 8, 150)) if evidence else None
    for b, n in enumerate(lens.tolist()):
        seq[b, :n] = torch.from_numpy(rng.integers(0, 5, n))
        soft[b, :n] = torch.from_numpy(rng.random(n) < 0.3)
        if evidence:
            ev[b, :, :n] = torch.from_numpy(rng.poisson(2.0, (8, n)).astype(np.float32))
    for train in (False, True):  # fused oneDNN inference path / autograd path
        tied.train(train)
        free.train(train)
        with torch.set_grad_enabled(train):
            out, aux = tied.outputs(seq, soft, ev, lens, with_aux=True)
            avg = average_strands(tied.one_pass, seq, soft, ev, lens)
            plain = free.outputs(seq, soft, ev, lens)
            plain_avg = average_strands(free.one_pass, seq, soft, ev, lens)
            for b, n in enumerate(lens.tolist()):  # (padding columns are not outputs)
                torch.testing.assert_close(out[b, :n], avg[b, :n], atol=1e-5, rtol=1e-5)
                assert (plain[b, :n] - plain_avg[b, :n]).abs().max() > 1e-2
    # the gradient reaches the free parameters through the tie
    (out.sum() + aux.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in
               tied.named_parameters() if not n.startswith("structure"))  # fmt: skip


def test_rc_equivariant_excludes_strand_average() -> None:
    with pytest.raises(ValueError, match="rc_equivariant"):
        ModelConfig(strand_average=True, rc_equivariant=True)


def test_rc_equivariant_inference_leaves_the_shared_modules_alone() -> None:
    """predict runs the encoder from several threads at once: inference of a tied model
    must not swap the shared modules' parameters while it runs (functional_call does, and
    two threads then raced: one ran on the other's restored, untied weights). During a
    forward the model's own parameters stay the free ones, and threads agree."""
    import threading

    torch.manual_seed(8)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2])
    model = GeneModel(G, ModelConfig(encoder=enc, rc_equivariant=True)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    stem = model.encoder.stem.weight
    seen = []
    model.encoder.blocks[0].register_forward_pre_hook(
        lambda *a: seen.append(model.encoder.stem.weight is stem)
    )
    seq = torch.from_numpy(np.random.default_rng(9).integers(0, 5, (1, 3000)))
    with torch.no_grad():
        want = model.outputs(seq)
        got: list = []

        def work() -> None:  # (grad mode is per thread: predict's threads disable it)
            with torch.no_grad():
                got.extend(model.outputs(seq) for _ in range(4))

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert seen and all(seen)
    assert len(got) == 8 and all(torch.equal(g, want) for g in got)
    # a changed parameter is seen at once (the tied copies are rebuilt)
    with torch.no_grad():
        model.head.bias.add_(1.0)
        assert not torch.equal(model.outputs(seq), want)


@pytest.mark.parametrize("rc", [False, True])
def test_bf16_inference_tracks_float32_and_is_window_free(rc: bool) -> None:
    """``dtype=torch.bfloat16`` (predict's --precision bfloat16 on the CPU): outputs close
    to float32 (bf16 keeps 8 bits of mantissa), of the same layers (an RC-equivariant
    model's tied weights: still its own strand average within bf16 rounding), and a
    position's outputs do not depend on where the window starts; training refuses it."""
    from genoseg.model.strands import average_strands

    torch.manual_seed(12)
    enc = EncoderConfig(width=8, kernel=3, stem_kernel=5, dilations=[1, 2])
    model = GeneModel(G, ModelConfig(encoder=enc, rc_equivariant=rc)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    seq = torch.from_numpy(np.random.default_rng(13).integers(0, 5, (1, 400)))
    bf = torch.bfloat16
    with torch.no_grad():
        f32 = model.outputs(seq)
        b16 = model.outputs(seq, dtype=bf)
        assert b16.dtype == torch.float32 and b16.shape == f32.shape
        scale = f32.abs().max()
        assert 0 < (b16 - f32).abs().max() <= 0.03 * scale
        if rc:
            avg = average_strands(functools.partial(model.one_pass, dtype=bf), seq)
            assert (b16 - avg).abs().max() <= 0.03 * scale
        # window invariance: rows 100..300 from a window starting 37 bases later
        h = model.halo
        shifted = model.outputs(seq[:, 37:], dtype=bf)
        torch.testing.assert_close(
            b16[0, 37 + h : 400 - h], shifted[0, h : 363 - h], atol=1e-6 * scale, rtol=0
        )
        assert torch.equal(model.outputs(seq, dtype=torch.float32), f32)
    with pytest.raises(ValueError, match="inference"):
        model.outputs(seq, dtype=bf)
