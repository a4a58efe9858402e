"""genoseg.data.windows: tiling, halo, padding masks, strands, evidence in windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoseg.data.bam import Evidence
from genoseg.data.fasta import Genome, decode_codes, encode_sequence
from genoseg.data.regions import Region
from genoseg.data.windows import iter_windows, plan_windows, read_window
from genoseg.errors import GenosegError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_samples"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Genome:
    return Genome.open(SAMPLES / "athaliana_chr5_60k.fa", cache=tmp_path_factory.mktemp("c"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Genome, dict[str, str]]:
    rng = np.random.default_rng(1)
    seqs = {
        "a": "".join(rng.choice(list("ACGTNacgt"), size=157)),
        "b": "".join(rng.choice(list("ACGTRY"), size=3)),
        "c:x": "".join(rng.choice(list("acgtN"), size=64)),
    }
    d = tmp_path_factory.mktemp("toy")
    fa = d / "toy.fa"
    fa.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    return Genome.open(fa, cache=d / "cache"), seqs


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(window=st.integers(1, 200), halo=st.integers(0, 60), data=st.data())
def test_cores_tile_contigs_and_halo_matches_genome(toy, window, halo, data) -> None:
    g, seqs = toy
    name = data.draw(st.sampled_from(sorted(seqs)))
    seq = seqs[name]
    n = len(seq)
    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(a + 1, n))
    cores = []
    for w in iter_windows(g, [Region(name, a, b)], window=window, halo=halo):
        s = w.spec
        assert s.length == s.core_length + 2 * halo == len(w.codes) == len(w.valid)
        assert 1 <= s.core_length <= window
        cores.append(w.codes[w.core_slice])
        # every array position is the genome's base, or padding outside the contig
        pos = np.arange(s.start, s.end)
        inside = (pos >= 0) & (pos < n)
        assert np.array_equal(w.in_contig, inside)
        expect_codes, expect_soft = encode_sequence(seq[max(s.start, 0) : min(s.end, n)])
        assert np.array_equal(w.codes[inside], expect_codes)
        assert np.array_equal(w.softmask[inside], expect_soft)
        assert (w.codes[~inside] == 4).all() and not w.softmask[~inside].any()
        assert np.array_equal(w.valid, inside & (w.codes != 4))
    assert decode_codes(np.concatenate(cores)) == decode_codes(encode_sequence(seq[a:b])[0])


def test_sample_windows_default_size(sample: Genome) -> None:
    ws = list(iter_windows(sample, window=25_000, halo=1_000))
    assert [(w.spec.index, w.spec.last) for w in ws] == [(0, False), (1, False), (2, True)]
    assert [(w.spec.core_start, w.spec.core_end) for w in ws] == [
        (0, 25_000),
        (25_000, 50_000),
        (50_000, 60_170),
    ]
    assert ws[0].in_contig[:1000].sum() == 0 and ws[0].in_contig[1000:].all()
    assert ws[-1].in_contig[-1000:].sum() == 0
    assert ws[1].valid.all()  # no N in this stretch of Chr5, no padding in the middle
    seq = sample.fetch("Chr5")
    assert decode_codes(np.concatenate([w.codes[w.core_slice] for w in ws])) == seq.upper()
    assert plan_windows([Region("Chr5", 0, 60170)], sample.contigs)[0].core_length == 60170


def test_reverse_complement_window(toy) -> None:
    g, seqs = toy
    (w,) = list(iter_windows(g, [Region("a", 10, 60)], window=100, halo=15))
    rc = w.reverse_complement()
    assert rc.strand == "-" and rc.spec == w.spec
    table = str.maketrans("ACGTN", "TGCAN")
    assert decode_codes(rc.codes) == decode_codes(w.codes).translate(table)[::-1]
    assert np.array_equal(rc.valid, w.valid[::-1])
    assert np.array_equal(rc.softmask, w.softmask[::-1])
    # index i of the '-' window is forward position end - 1 - i
    i = 20
    p = rc.forward_position(i)
    assert p == w.spec.end - 1 - i
    assert rc.codes[i] == (4 if w.codes[p - w.spec.start] == 4 else 3 - w.codes[p - w.spec.start])
    # the core slice selects the same forward bases on both strands
    assert (
        decode_codes(rc.codes[rc.core_slice])
        == (decode_codes(w.codes[w.core_slice]).translate(table)[::-1])
    )
    assert np.array_equal(rc.reverse_complement().codes, w.codes)
    both = list(iter_windows(g, [Region("a", 10, 60)], window=100, halo=15, both_strands=True))
    assert [x.strand for x in both] == ["+", "-"]


def test_window_evidence_matches_track_and_pads_with_zeros(sample: Genome, tmp_path: Path) -> None:
    ev = Evidence.open(SAMPLES / "athaliana_chr5_60k.bam", sample.contigs)
    full = ev.track("Chr5", 0, 60170)
    ws = list(iter_windows(sample, window=30_000, halo=500, evidence=ev))
    for w in ws:
        assert w.evidence is not None and w.evidence.shape == (8, w.spec.length)
        inside = w.in_contig
        assert np.array_equal(w.evidence[:, inside], full[:, w.spec.start + np.flatnonzero(inside)])
        assert (w.evidence[:, ~inside] == 0).all()
    rc = ws[0].reverse_complement()
    assert np.array_equal(rc.evidence[:4], ws[0].evidence[4:, ::-1])


def test_bad_window_parameters(sample: Genome) -> None:
    with pytest.raises(GenosegError, match="window size"):
        plan_windows([Region("Chr5", 0, 10)], sample.contigs, window=0)
    with pytest.raises(GenosegError, match="halo"):
        plan_windows([Region("Chr5", 0, 10)], sample.contigs, halo=-1)
    with pytest.raises(GenosegError, match="contig 'Chr1' is not in the genome"):
        plan_windows([Region("Chr1", 0, 10)], sample.contigs)
    with pytest.raises(GenosegError, match="beyond contig 'Chr5'"):
        plan_windows([Region("Chr5", 0, 70_000)], sample.contigs)


def test_read_window_single(sample: Genome) -> None:
    (spec,) = plan_windows([Region("Chr5", 100, 200)], sample.contigs, window=1000, halo=50)
    w = read_window(sample, spec)
    assert decode_codes(w.codes) == sample.fetch("Chr5", 50, 250).upper()
    assert w.evidence is None
