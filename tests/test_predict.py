"""``genoseg predict`` end to end on the real sample (data_samples/, A. thaliana Chr5 1..60170).

The model is a tiny random network built here (never the trained default model, which these
tests must not depend on): a random network still decodes valid gene models, because the
grammar's hard rules (start/stop codons, splice sites, open reading frames, phases) are
compiled from the sequence, so structure, formats, window invariance, shards, signals and
error handling are all tested for real. Its head biases are set so that it calls about a
hundred short genes (0.1-2.3 kb) on both strands of the sample instead of one contig-long
gene.

What a user checks:
* the same genome decoded with other chunk sizes, chunk offsets or as a --region with flanks
  gives the same gene models and posteriors (1e-4), in the GFF3 and in the tracks;
* every GFF3 passes ``gt gff3validator`` and genoseg's structural checks, and ``genoseg eval``
  reads it and calibrates its posteriors;
* ``-o -`` puts the GFF3, and only the GFF3, on stdout;
* bad input: one ``genoseg: error:`` line, exit 1, no output file;
* SIGTERM: exit by the signal (143), no partial file, no temporary (tracks, spilled outputs);
* ``--shard i/n`` outputs together equal the single run gene for gene;
* ``--no-posteriors``: the same gene models, ``.`` scores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from genoseg.cli import cli
from genoseg.data.fasta import Genome
from genoseg.decode.check import check_gff3
from genoseg.grammar import load_grammar
from genoseg.io.bedgraph import TrackWriter
from genoseg.model import CHANNELS, EncoderConfig, GeneModel, ModelConfig
from genoseg.model.checkpoint import FORMAT_VERSION, save_checkpoint
from tests.gold_paths import SAMPLE_FA, SAMPLE_GFF
from tests.test_writers import gt_validate

REPO = Path(__file__).resolve().parents[1]
SAMPLE_BAM = REPO / "data_samples" / "athaliana_chr5_60k.bam"
SLICE = 24_000  # bases of the sample used by the window-invariance tests


# -- fixtures --------------------------------------------------------------------------


def make_model(path: Path, *, evidence: bool = False, seed: int = 0) -> Path:
    """A tiny random GeneModel checkpoint (halo 7 bp)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = EncoderConfig(
            width=8, kernel=3, stem_kernel=5, dilations=[1, 4], mlp_ratio=1, evidence=evidence
        )
        model = GeneModel(load_grammar(), ModelConfig(encoder=enc))
        with torch.no_grad():
            model.head.weight.normal_(0.0, 0.05)
            for i, ch in enumerate(CHANNELS):
                if ch.startswith("intron"):
                    model.head.bias[i] = -0.8  # short introns
                elif ch.startswith("codon"):
                    model.head.bias[i] = 0.3  # coding stretches worth calling
    save_checkpoint(path, model)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def model(work) -> Path:
    return make_model(work / "tiny.pt")


@pytest.fixture(scope="module")
def slice_fa(work) -> Path:
    """The first SLICE bases of the sample (contig Chr5, so coordinates are the sample's)."""
    seq = Genome.open(SAMPLE_FA).fetch("Chr5", 0, SLICE)
    p = work / "slice.fa"
    p.write_text(">Chr5\n" + "\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + "\n")
    return p


def config(path: Path, **keys) -> Path:
    path.write_text("".join(f"{k}: {v}\n" for k, v in keys.items()))
    return path


def predict(*args, ok: bool = True):
    """``genoseg predict ARGS`` in this process (click's runner: stdout and stderr apart)."""
    res = CliRunner().invoke(cli, ["predict", *map(str, args)])
    if ok:
        assert res.exit_code == 0, res.stderr + repr(res.exception)
    return res


def gff3_features(path_or_text) -> list[tuple]:
    """(type, start, end, strand, phase, ID) -> (score, attributes) rows of a GFF3."""
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split("\t")
        assert len(f) == 9, line
        attrs = dict(kv.split("=", 1) for kv in f[8].split(";"))
        rows.append(((f[0], f[2], int(f[3]), int(f[4]), f[6], f[7], attrs["ID"]), f[5], attrs))
    return rows


def prob(text: str | None) -> float | None:
    return None if text in (None, ".") else float(text)


def assert_same_models(a: list[tuple], b: list[tuple], tol: float = 1e-4) -> None:
    """Same features (coordinates, strand, phase, ID) and posteriors within ``tol`` (the GFF3
    keeps 4 decimals: 1e-4 is one unit of the last digit)."""
    assert [k for k, _, _ in a] == [k for k, _, _ in b]
    for (key, sa, aa), (_, sb, ab) in zip(a, b):
        for x, y in [(sa, sb)] + [(aa.get(n), ab.get(n)) for n in ("start_posterior",
                                                                     "end_posterior")]:  # fmt: skip
            px, py = prob(x), prob(y)
            assert (px is None) == (py is None), key
            if px is not None:
                assert abs(px - py) <= tol + 1e-9, (key, x, y)


def read_bedgraph(path: Path, length: int) -> np.ndarray:
    """Per-base values of a one-contig bedGraph (NaN where it has no entry)."""
    out = np.full(length, np.nan)
    for line in path.read_text().splitlines():
        if line.startswith(("track", "#")):
            continue
        _, s, e, v = line.split("\t")
        out[int(s) : int(e)] = float(v)
    return out


def predict_recording_tracks(*args) -> dict[str, np.ndarray]:
    """Run predict with --tracks; return the float32 per-base track values handed to the
    track writer (before rounding), per track name, NaN where none was given."""
    got: dict[str, np.ndarray] = {}
    original = TrackWriter.add

    def add(self, contig, chunks):
        for name, ch in chunks.items():
            arr = got.setdefault(name, np.full(SLICE, np.nan))
            assert np.isnan(arr[ch.start : ch.end]).all(), f"{name}: bases given twice"
            arr[ch.start : ch.end] = ch.values
        return original(self, contig, chunks)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrackWriter, "add", add)
        predict(*args)
    return got


# -- full sample: posteriors, no posteriors, shards --------------------------------------


@pytest.fixture(scope="module")
def full(work, model) -> dict[str, Path]:
    """The whole sample with every output (default window: one chunk)."""
    out = {k: work / f"full.{k}" for k in ("gff3", "bed", "seg.bed", "cds.fa", "faa")}
    predict(SAMPLE_FA, "-o", out["gff3"], "--model", model, "--bed", out["bed"],
            "--segments-bed", out["seg.bed"], "--cds-fasta", out["cds.fa"],
            "--protein-fasta", out["faa"], "-q")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def viterbi_only(work, model) -> Path:
    out = work / "viterbi.gff3"
    predict(SAMPLE_FA, "-o", out, "--model", model, "--no-posteriors", "-q")
    return out


def test_gff3_valid_checked_and_evaluated(full, model):
    gff = full["gff3"]
    rows = gff3_features(gff)
    genes = [r for r in rows if r[0][1] == "gene"]
    strands = {r[0][4] for r in genes}
    assert len(genes) >= 20 and strands == {"+", "-"}, "the fixture model should call genes"
    assert any(r[0][1] == "intron" for r in rows)
    gt_validate(gff)
    assert check_gff3(gff, SAMPLE_FA) == []
    text = gff.read_text()
    assert text.startswith("##gff-version 3\n")
    assert "##sequence-region Chr5 1 60170\n" in text
    run = json.loads(next(ln for ln in text.splitlines() if "genoseg-run:" in ln).split(": ", 1)[1])
    assert run["shard"] == [1, 1] and run["posteriors"] is True
    # every exon/CDS line carries its boundary posteriors
    for key, _, attrs in rows:
        if key[1] in ("exon", "CDS"):
            assert 0 <= float(attrs["start_posterior"]) <= 1
            assert 0 <= float(attrs["end_posterior"]) <= 1
    # BED12: one line per transcript; CDS / protein FASTA: one record per transcript
    n_tx = sum(r[0][1] == "mRNA" for r in rows)
    assert len(full["bed"].read_text().splitlines()) == n_tx
    assert full["cds.fa"].read_text().count(">") == n_tx
    proteins = full["faa"].read_text().split(">")[1:]
    assert len(proteins) == n_tx
    for rec in proteins:
        aa = "".join(rec.splitlines()[1:])
        assert aa.startswith("M") and "*" not in aa.rstrip("*"), rec  # no in-frame stop
    segs = [ln.split("\t") for ln in full["seg.bed"].read_text().splitlines()[1:]]
    assert int(segs[0][1]) == 0 and int(segs[-1][2]) == 60170
    assert all(a[2] == b[1] for a, b in zip(segs, segs[1:])), "segments tile the contig"

    # genoseg eval reads every posterior back for calibration
    res = CliRunner().invoke(cli, ["eval", str(SAMPLE_GFF), str(gff), "--json"])
    assert res.exit_code == 0, res.stderr
    cal = json.loads(res.stdout)["calibration"]
    n_parts = sum(r[0][1] == "CDS" for r in rows)
    assert cal["boundary"]["n"] == 2 * n_parts
    assert cal["boundary"]["ece"] is not None
    assert cal["exon"]["n"] == n_parts and cal["exon"]["ece"] is not None
    assert cal["intron"]["n"] == sum(r[0][1] == "intron" for r in rows)


def test_config_file_documents_every_key_with_its_default():
    """configs/predict.yaml holds every PredictConfig key (nested too) at its default."""
    import dataclasses

    from genoseg.config import load_config, read_yaml_mapping
    from genoseg.predict.run import PredictConfig

    path = REPO / "configs" / "predict.yaml"
    assert load_config(PredictConfig, path) == PredictConfig()
    data = read_yaml_mapping(path)

    def keys(cls, d, prefix=""):
        for f in dataclasses.fields(cls):
            assert f.name in d, f"{path}: key {prefix}{f.name} missing"
            if dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None):
                keys(f.type, d[f.name], prefix + f.name + ".")
        assert set(d) == {f.name for f in dataclasses.fields(cls)}

    keys(PredictConfig, data)
    assert set(data["evidence"]) == {"strandedness", "min_mapq"}


def test_scores_are_segment_and_transcript_posteriors(full):
    """Score column: segment posterior (exon/CDS/intron), transcript posterior (mRNA), the
    gene's = its transcript's; all exact chain marginals of the engine, in [0, 1]."""
    rows = gff3_features(full["gff3"])
    for key, score, _ in rows:
        p = prob(score)
        assert p is not None and 0.0 <= p <= 1.0, key
    by_id = {key[6]: score for key, score, _ in rows}
    parts: dict[str, list[float]] = {}
    for key, score, attrs in rows:
        if key[1] == "gene":
            assert score == by_id[key[6] + ".t1"]  # gene score = its transcript's
        elif key[1] in ("exon", "CDS", "intron"):
            parts.setdefault(attrs["Parent"], []).append(float(score))
    # the whole chain is in the path at most as often as any one of its segments
    for tx, probs in parts.items():
        assert float(by_id[tx]) <= min(probs) + 1e-4, tx
    assert any(float(by_id[tx]) < 0.99 for tx in parts), "posteriors carry no uncertainty"


def test_no_posteriors_same_models_dot_scores(full, viterbi_only):
    post, vit = gff3_features(full["gff3"]), gff3_features(viterbi_only)
    assert [k for k, _, _ in post] == [k for k, _, _ in vit]
    assert all(score == "." for _, score, _ in vit)
    assert not any("start_posterior" in a or "end_posterior" in a for _, _, a in vit)
    gt_validate(viterbi_only)


def test_shards_concatenate_to_the_single_run(work, model, viterbi_only):
    """Shard i of 3 decodes its share plus a flank (config ``flank``) and keeps the genes
    starting in its share: together, gene for gene, the single run."""
    cfg = config(work / "flank.yaml", flank=6000)  # genes of the fixture model are < 2.5 kb
    single = [r for r in gff3_features(viterbi_only)]
    merged = []
    for i in (1, 2, 3):
        out = work / f"shard{i}.gff3"
        predict(SAMPLE_FA, "-o", out, "--model", model, "--no-posteriors", "--shard", f"{i}/3",
                "--config", cfg, "-q")  # fmt: skip
        text = out.read_text()
        assert f'"shard": [{i}, 3]' in text
        gt_validate(out)
        rows = gff3_features(out)
        assert rows, f"shard {i} has no gene: the test would not test the cut"
        merged += rows
    assert [k for k, _, _ in merged] == [k for k, _, _ in single]
    # a gene spans the cut between shards 1 and 2 or starts near it: the flank matters
    cut1 = 60170 // 3
    assert any(k[2] <= cut1 + 3000 and k[3] >= cut1 - 3000 for k, _, _ in single if k[1] == "gene")


# -- window invariance -----------------------------------------------------------------


@pytest.fixture(scope="module")
def invariance(work, model, slice_fa) -> dict[str, tuple[Path, dict]]:
    runs = {}
    for name, extra in {
        "w7000": ["--window", 7000],
        "w23000": ["--window", 23000],
        # a region with flanks: decoded stretch [5000, 24000) with open start, chunks at
        # 5000, 12000, 19000 (other offsets than both runs above); genes kept in 9000..18000
        "region": ["--window", 7000, "--region", "Chr5:9001-18000",
                   "--config", config(work / "flank4k.yaml", flank=4000)],
    }.items():  # fmt: skip
        out = work / f"{name}.gff3"
        tracks = predict_recording_tracks(
            slice_fa, "-o", out, "--model", model, "--tracks", work / name, "-q", *extra
        )
        runs[name] = (out, tracks)
    return runs


def test_window_size_and_offset_invariance(invariance, work):
    (a, ta), (b, tb) = invariance["w7000"], invariance["w23000"]
    fa, fb = gff3_features(a), gff3_features(b)
    assert len([r for r in fa if r[0][1] == "gene"]) >= 5
    assert_same_models(fa, fb)
    assert set(ta) == set(tb) and len(ta) == 13
    for name in ta:
        assert not np.isnan(ta[name]).any(), f"{name}: bases without a value"
        np.testing.assert_allclose(ta[name], tb[name], atol=1e-4, rtol=0, err_msg=name)
    # the files (3 decimals): one unit of the last digit at most
    for path in sorted(work.glob("w7000.*.bedgraph")):
        other = work / path.name.replace("w7000", "w23000")
        va, vb = read_bedgraph(path, SLICE), read_bedgraph(other, SLICE)
        assert not np.isnan(va).any()
        assert np.nanmax(np.abs(va - vb)) <= 1e-3 + 1e-9, path.name
    gt_validate(a)


def test_cache_modes_give_the_same_output(invariance, work, model, slice_fa):
    """Network outputs kept in memory, spilled to a temporary file, or recomputed in every
    pass: byte-identical GFF3 (the w7000 run used the default, in-memory cache)."""
    ref = invariance["w7000"][0].read_text()
    body = lambda t: [ln for ln in t.splitlines() if not ln.startswith("#")]  # noqa: E731
    for mode in ("spill", "recompute"):
        out = work / f"cache_{mode}.gff3"
        cfg = config(work / f"cache_{mode}.yaml", cache=mode)
        predict(slice_fa, "-o", out, "--model", model, "-q", "--window", 7000, "--config", cfg)
        assert body(out.read_text()) == body(ref), mode
        assert len(body(ref)) > 20


def test_region_with_flanks_matches_whole_run(invariance):
    (a, ta), (r, tr) = invariance["w7000"], invariance["region"]
    keep = lambda rows: [x for x in rows if 9000 < _gene_start(x, rows) <= 18000]  # noqa: E731
    whole, region = gff3_features(a), gff3_features(r)
    assert region and all(9000 < _gene_start(x, region) <= 18000 for x in region)
    assert_same_models(keep(whole), region)
    for name, vals in tr.items():
        given = ~np.isnan(vals)
        assert given[9000:18000].all() and not given[:9000].any() and not given[18000:].any()
        np.testing.assert_allclose(vals[given], ta[name][given], atol=1e-4, rtol=0, err_msg=name)


def test_region_ending_at_a_chunk_boundary_keeps_every_track(invariance, work, model, slice_fa):
    """Chunks at 5000, 12000, 19000 and the region's end at 19000: the chunk after the end
    still holds the last bases of the tracks that stop short of their chunk's end (codon and
    splice-site signals), none of the others ('track missing from the chunk' before)."""
    ta = invariance["w7000"][1]
    tr = predict_recording_tracks(
        slice_fa, "-o", work / "edge.gff3", "--model", model, "--tracks", work / "edge", "-q",
        "--window", 7000, "--region", "Chr5:9001-19000",
        "--config", config(work / "flank4k.yaml", flank=4000),
    )  # fmt: skip
    assert len(tr) == 13
    for name, vals in tr.items():
        given = ~np.isnan(vals)
        assert given[9000:19000].all() and not given[:9000].any() and not given[19000:].any()
        np.testing.assert_allclose(vals[given], ta[name][given], atol=1e-4, rtol=0, err_msg=name)


def _gene_start(row, rows) -> int:
    """GFF3 start (1-based) of the gene a feature row belongs to."""
    gid = row[0][6].split(".t1")[0]
    return int(gid.rsplit(":", 2)[1].split("-")[0])


# -- stdout, signals ---------------------------------------------------------------------


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genoseg.cli", "predict", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, **kw,
    )  # fmt: skip


def test_stdout_holds_only_the_gff3(work, model, slice_fa, tmp_path):
    flank0 = config(tmp_path / "flank0.yaml", flank=0)
    res = run_cli(slice_fa, "-o", "-", "--model", model, "--window", 5000, "--config", flank0,
                  "--bed", tmp_path / "t.bed", "--region", "Chr5:1-10000")  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = tmp_path / "stdout.gff3"
    out.write_text(res.stdout)
    assert res.stdout.startswith("##gff-version 3\n")
    gff3_features(out)  # every non-comment line is a 9-column feature
    gt_validate(out)
    assert check_gff3(out, slice_fa) == []
    assert "genoseg predict:" in res.stderr and "genoseg predict:" not in res.stdout
    assert (tmp_path / "t.bed").read_text().count("\n") == res.stdout.count("\tmRNA\t")


def test_sigterm_leaves_no_partial_file(work, model, tmp_path):
    """SIGTERM while decoding (tracks being written, network outputs spilled to TMPDIR):
    the process dies by the signal, no output, no temporary."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(tmp_path / "spill.yaml", cache="spill", window=2000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "genoseg.cli", "predict", str(SAMPLE_FA), "-o",
         str(out / "genes.gff3"), "--model", str(model), "--tracks", str(out / "t"),
         "--bed", str(out / "genes.bed"), "--config", str(cfg)],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )  # fmt: skip
    try:
        line = proc.stderr.readline()  # the plan is logged right before decoding starts
        assert "stretch(es)" in line, line
        deadline = time.monotonic() + 60
        while not any(out.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)  # the track temporaries exist once decoding writes
        assert any(out.iterdir()), "no temporary appeared"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM, err  # shell: 143
    assert "Traceback" not in err
    assert list(out.iterdir()) == []
    assert list(tmpdir.iterdir()) == []


# -- bad input ---------------------------------------------------------------------------


def bam(path: Path, contigs: dict[str, int]) -> Path:
    import pysam

    header = {"HD": {"VN": "1.6", "SO": "coordinate"},
              "SQ": [{"SN": n, "LN": L} for n, L in contigs.items()]}  # fmt: skip
    with pysam.AlignmentFile(str(path), "wb", header=header) as fh:
        read = pysam.AlignedSegment()
        read.query_name, read.query_sequence, read.flag = "r1", "ACGT" * 10, 0
        read.reference_id, read.reference_start, read.mapping_quality = 0, 100, 60
        read.cigarstring = "20M100N20M"
        read.query_qualities = pysam.qualitystring_to_array("I" * 40)
        fh.write(read)
    pysam.index(str(path))
    return path


@pytest.fixture(scope="module")
def bad(work, model) -> dict[str, Path]:
    d = work / "bad"
    d.mkdir()
    (d / "empty.fa").write_text("")
    (d / "no_sequence.fa").write_text(">chr1\n")
    (d / "text.pt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.zeros(3)}, d / "plain.pt")
    ckpt = torch.load(model, weights_only=True)
    ckpt["format_version"] = FORMAT_VERSION + 1
    torch.save(ckpt, d / "newer.pt")
    (d / "regions.bed").write_text("Chr5\t0\t1000\n")
    (d / "a_file").write_text("")
    (d / "a_folder").mkdir()
    bam(d / "other_names.bam", {"chr5": 60170})
    bam(d / "other_length.bam", {"Chr5": 60171})
    make_model(d / "evidence.pt", evidence=True)
    return {p.name: p for p in d.iterdir()}


BAD = {
    # name: (arguments after GENOME, expected fragment of the message); GENOME = the sample
    "empty FASTA": (["GENOME=empty.fa"], "empty FASTA"),
    "FASTA record without sequence": (["GENOME=no_sequence.fa"], "no sequence"),
    "missing FASTA": (["GENOME=missing.fa"], "not found"),
    "text file as model": (["--model", "text.pt"],
                           "not a genoseg checkpoint (not a file written by torch.save)"),
    "torch file, not a checkpoint": (["--model", "plain.pt"], "not a genoseg checkpoint"),
    "newer checkpoint": (["--model", "newer.pt"], "is newer than this genoseg reads"),
    "missing model": (["--model", "missing.pt"], "not found"),
    "model is a folder": (["--model", "a_folder"], "is a folder, not a model checkpoint"),
    "BAM of other contig names": (["--bam", "other_names.bam"], "not in the BAM header"),
    "BAM of other lengths": (["--bam", "other_length.bam"], "another assembly"),
    "BAM of other assembly, evidence model": (
        ["--bam", "other_length.bam", "--model", "evidence.pt"], "another assembly"),
    "output folder missing": (["-o", "nowhere/genes.gff3"], "does not exist"),
    "output folder is a file": (["-o", "a_file/genes.gff3"], "is not a folder"),
    "output is the genome": (["-o", "GENOME"], "refusing to overwrite an input"),
    "output is the model": (["-o", "MODEL"], "refusing to overwrite an input"),
    "--bed is the regions file": (["--regions-file", "regions.bed", "--bed", "regions.bed"],
                                  "refusing to overwrite an input"),
    "two outputs, one file": (["--bed", "x.gff3", "--segments-bed", "x.gff3"], "the same file"),
    "two outputs on stdout": (["-o", "-", "--bed", "-"], "only one output can go to stdout"),
    "tracks to stdout": (["--tracks", "-"], "--tracks -: tracks are written one file per track"),
    "shard 0/3": (["--shard", "0/3"], "need 1 <= I <= N"),
    "shard 4/3": (["--shard", "4/3"], "need 1 <= I <= N"),
    "shard not I/N": (["--shard", "two"], "expected I/N"),
    "unknown region contig": (["--region", "Chr9:1-100"], "'Chr9' is not in"),
    "region past the end": (["--region", "Chr5:1-70000"], "beyond contig"),
    "tracks without posteriors": (["--tracks", "t", "--no-posteriors"], "--tracks needs"),
    "window too small": (["--window", "10"], "'window' must be >= 1000"),
    "negative threads": (["--threads", "-1"], "'threads' must be >= 0"),
    "output is the genome's index": (["-o", "GENOME.fai"], "refusing to overwrite an input"),
    "no CUDA": (["--device", "cuda"], "CUDA is not available"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_1_no_file(case, bad, model, tmp_path, monkeypatch):
    if case == "no CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args, fragment = BAD[case]
    monkeypatch.chdir(tmp_path)
    genome = str(SAMPLE_FA)
    if args[0].startswith("GENOME="):
        genome = str(bad.get(args[0][7:], tmp_path / args[0][7:]))
        args = args[1:]
    subst = {"GENOME": genome, "GENOME.fai": f"{genome}.fai", "MODEL": str(model),
             **{k: str(v) for k, v in bad.items()}}  # fmt: skip
    args = [subst.get(a, a) for a in args]
    if "-o" not in args:
        args = ["-o", "x.gff3", *args]
    if "--model" not in args:
        args = ["--model", str(model), *args]
    if any(a.startswith("a_file/") for a in args):
        (tmp_path / "a_file").write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    res = predict(genome, *args, ok=False)
    assert res.exit_code == 1, (res.stderr, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genoseg: error: "), res.stderr
    assert fragment in lines[0]
    assert res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary


def test_bam_of_the_genome_is_accepted(model, tmp_path):
    """The right BAM passes the header check; a model without evidence ignores it (and
    says so on stderr)."""
    out = tmp_path / "g.gff3"
    flank0 = config(tmp_path / "flank0.yaml", flank=0)
    res = predict(SAMPLE_FA, "-o", out, "--model", model, "--bam", SAMPLE_BAM, "--no-posteriors",
                  "--region", "Chr5:1-3000", "--config", flank0)  # fmt: skip
    assert "checked against the genome, then ignored" in res.stderr
    assert "older than" not in res.stderr
    assert out.read_text().startswith("##gff-version 3\n")
    # an index older than its BAM: a warning on stderr, and the run goes on
    bam = tmp_path / "old_index.bam"
    shutil.copy(SAMPLE_BAM, bam)
    shutil.copy(f"{SAMPLE_BAM}.bai", f"{bam}.bai")
    t = bam.stat().st_mtime - 3600
    os.utime(f"{bam}.bai", (t, t))
    res = predict(SAMPLE_FA, "-o", out, "--model", model, "--bam", bam, "--no-posteriors",
                  "--region", "Chr5:1-3000", "--config", flank0)  # fmt: skip
    assert f"genoseg predict: warning: {bam}.bai is older than {bam}" in res.stderr, res.stderr


def test_bam_without_model_uses_the_shipped_evidence_model(tmp_path):
    """`--bam` and no `--model`: the shipped evidence model reads the BAM (docs/accuracy.md);
    without --bam the sequence-only default model runs."""
    from genoseg.model.checkpoint import default_model_path

    assert default_model_path(evidence=True).is_file()
    flank0 = config(tmp_path / "flank0.yaml", flank=0)
    for with_bam in (True, False):
        out = tmp_path / f"g{with_bam}.gff3"
        extra = ["--bam", SAMPLE_BAM] if with_bam else []
        res = predict(SAMPLE_FA, "-o", out, *extra, "--no-posteriors", "--region",
                      "Chr5:1-3000", "--config", flank0)  # fmt: skip
        name = "evidence.pt" if with_bam else "default.pt"
        assert f"model {name}" in res.stderr, res.stderr
        assert ("RNA-seq evidence" in res.stderr) == with_bam, res.stderr
        assert f"# model: {name[:-3]} (shipped with genoseg " in out.read_text()


def test_model_by_shipped_name(tmp_path):
    """`--model accurate` (a shipped model's name, docs/accuracy.md) runs the shipped ensemble;
    an unknown name that is no file either is one clear line."""
    from genoseg.model.checkpoint import SHIPPED_MODELS, shipped_model_path

    assert all(shipped_model_path(n).is_file() for n in SHIPPED_MODELS)
    flank0 = config(tmp_path / "flank0.yaml", flank=0)
    out = tmp_path / "g.gff3"
    res = predict(SAMPLE_FA, "-o", out, "--model", "accurate", "--no-posteriors", "--region",
                  "Chr5:1-3000", "--config", flank0)  # fmt: skip
    assert "model accurate.pt" in res.stderr, res.stderr
    assert "# model: accurate (shipped with genoseg " in out.read_text()
    res = predict(SAMPLE_FA, "-o", tmp_path / "h.gff3", "--model", "accurrate", ok=False)
    assert res.exit_code == 1 and "accurrate" in res.stderr and not (tmp_path / "h.gff3").exists()


def test_unwritable_output_folder(model, tmp_path):
    """Refused before any work. Root writes into folders whatever their mode, so as root a
    folder of sysfs (no file can be created there) stands in for a read-only folder."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    target = Path("/sys") if os.geteuid() == 0 else ro
    try:
        res = predict(SAMPLE_FA, "-o", target / "g.gff3", "--model", model, ok=False)
    finally:
        ro.chmod(0o755)
    assert res.exit_code == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not writable" in lines[0], res.stderr
    assert not (target / "g.gff3").exists() and list(ro.iterdir()) == []


def test_parallel_parts_equal_one_stream(work, model, slice_fa, tmp_path, monkeypatch):
    """One contig decoded in 3 parallel parts (tiny parts and overlaps forced, so the
    convergence checks have work to do) equals the one-stream decode (w7000 run)."""
    from genoseg.crf import parallel as par_mod

    calls = {"viterbi": 0, "posteriors": 0}
    real_v, real_p = par_mod.parallel_viterbi, par_mod.parallel_posteriors

    def count_v(*a, **k):
        calls["viterbi"] += 1
        assert k["parts"] == 3
        return real_v(*a, **k)

    def count_p(*a, **k):
        calls["posteriors"] += 1
        return real_p(*a, **k)

    monkeypatch.setattr(par_mod, "parallel_viterbi", count_v)
    monkeypatch.setattr(par_mod, "parallel_posteriors", count_p)
    runs = {}
    for name, keys in {
        "seq": {"workers": 1},
        "par": {"workers": 3, "min_part": 6000, "overlap": 300},
    }.items():
        out = tmp_path / f"{name}.gff3"
        tracks = predict_recording_tracks(
            slice_fa, "-o", out, "--model", model, "--tracks", tmp_path / name, "-q",
            "--window", 7000, "--config", config(tmp_path / f"{name}.yaml", **keys),
        )  # fmt: skip
        runs[name] = (out, tracks)
        if name == "par":
            assert calls["viterbi"] == 1 and calls["posteriors"] == 1, calls
    (one, one_tracks), (par, par_tracks) = runs["seq"], runs["par"]
    assert_same_models(gff3_features(one), gff3_features(par), tol=1e-6)
    assert set(one_tracks) == set(par_tracks)
    for name, v in one_tracks.items():
        assert np.nanmax(np.abs(v - par_tracks[name])) <= 1e-6, name


def test_lone_contig_is_split_across_workers(work, model, slice_fa, tmp_path, monkeypatch):
    """A contig shorter than 2 x min_part, predicted alone with two workers, is decoded in
    two parallel parts (the second core would idle otherwise) and gives the one-stream
    result: same gene models, posteriors and tracks within 1e-6."""
    from genoseg.crf import parallel as par_mod

    parts = []
    real_v = par_mod.parallel_viterbi

    def count_v(*a, **k):
        parts.append(k["parts"])
        return real_v(*a, **k)

    monkeypatch.setattr(par_mod, "parallel_viterbi", count_v)
    runs = {}
    for name, keys in {"one": {"workers": 1}, "two": {"workers": 2, "overlap": 2000}}.items():
        out = tmp_path / f"{name}.gff3"
        tracks = predict_recording_tracks(
            slice_fa, "-o", out, "--model", model, "--tracks", tmp_path / name, "-q",
            "--window", 7000, "--config", config(tmp_path / f"{name}.yaml", **keys),
        )  # fmt: skip
        runs[name] = (gff3_features(out), tracks)
    assert parts == [2]
    assert_same_models(runs["one"][0], runs["two"][0], tol=1e-6)
    for name, v in runs["one"][1].items():
        assert np.nanmax(np.abs(v - runs["two"][1][name])) <= 1e-6, name


def test_concurrent_contigs_equal_one_at_a_time(model, tmp_path):
    """Contigs decoded two at a time in threads (workers 2) give byte-identical GFF3, BED
    and bedGraph tracks to one at a time (workers 1): results and track chunks are put
    back in contig order."""
    seq = Genome.open(SAMPLE_FA).fetch("Chr5", 0, 60_000)
    fa = tmp_path / "five.fa"
    with fa.open("w") as fh:  # five contigs of unequal lengths
        for i, (a, b) in enumerate([(0, 17_000), (17_000, 21_000), (21_000, 40_000),
                                    (40_000, 44_000), (44_000, 60_000)]):  # fmt: skip
            fh.write(f">ctg{i}\n{seq[a:b]}\n")
    outs = {}
    for w in (1, 2):
        d = tmp_path / f"w{w}"
        d.mkdir()
        predict(fa, "-o", d / "g.gff3", "--bed", d / "g.bed", "--tracks", d / "t", "-q",
                "--model", model, "--window", 5000,
                "--config", config(tmp_path / f"w{w}.yaml", workers=w))  # fmt: skip
        outs[w] = {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}
    assert len(outs[1]) >= 15 and outs[1].keys() == outs[2].keys()
    genes = outs[1]["g.gff3"].decode().count("\tgene\t")
    assert genes >= 4
    for name in outs[1]:
        if name.endswith(".gff3"):
            body = [b"\n".join(ln for ln in o[name].splitlines() if not ln.startswith(b"#"))
                    for o in (outs[1], outs[2])]  # fmt: skip
            assert body[0] == body[1]
        else:
            assert outs[1][name] == outs[2][name], name


def test_ensemble_decodes_seam_free_and_as_its_member(work, model, slice_fa, invariance):
    """An ensemble checkpoint (genoseg.model.ensemble) predicts like any model: of a model
    with itself, exactly that model's genes and posteriors; of two different models, the
    same genes and posteriors at two window sizes."""
    from genoseg.model.ensemble import main as ensemble_main

    twin = work / "twin.pt"
    ensemble_main([str(twin), str(model), str(model)])
    out = work / "twin.gff3"
    predict(slice_fa, "-o", out, "--model", twin, "--window", 7000, "-q")
    assert_same_models(gff3_features(out), gff3_features(invariance["w7000"][0]), tol=1e-6)
    pair = work / "pair.pt"
    ensemble_main([str(pair), str(model), str(make_model(work / "tiny_seed1.pt", seed=1))])
    runs = []
    for w in (7000, 23000):
        out = work / f"pair_w{w}.gff3"
        predict(slice_fa, "-o", out, "--model", pair, "--window", w, "-q")
        runs.append(gff3_features(out))
    assert len([r for r in runs[0] if r[0][1] == "gene"]) >= 3
    assert runs[0] != gff3_features(invariance["w7000"][0])  # not just the first member
    assert_same_models(runs[0], runs[1])
    gt_validate(work / "pair_w7000.gff3")


def test_strand_average_seam_free_recorded_and_the_checkpoint_setting(
    work, model, slice_fa, invariance
):
    """``--strand-average`` (both strands' outputs averaged): other gene models than the
    plain run, the same at two window sizes, valid GFF3, said in the run line; a checkpoint
    calibrated with ``strand_average`` uses it without the option, ``--no-strand-average``
    turns it off."""
    from genoseg.model.checkpoint import load_model

    runs = []
    for w in (7000, 23000):
        out = work / f"sa_w{w}.gff3"
        predict(slice_fa, "-o", out, "--model", model, "--window", w, "--strand-average", "-q")
        runs.append(gff3_features(out))
    plain = gff3_features(invariance["w7000"][0])
    assert len([r for r in runs[0] if r[0][1] == "gene"]) >= 3
    assert runs[0] != plain
    assert_same_models(runs[0], runs[1])
    text = (work / "sa_w7000.gff3").read_text()
    assert '"strand_average": true' in text
    assert '"strand_average"' not in invariance["w7000"][0].read_text()
    gt_validate(work / "sa_w7000.gff3")
    both = work / "tiny_both_strands.pt"
    save_checkpoint(both, load_model(model), calibration={"temperature": 1.0,
                                                          "strand_average": True})  # fmt: skip
    out = work / "sa_ckpt.gff3"
    predict(slice_fa, "-o", out, "--model", both, "--window", 7000, "-q")
    assert_same_models(gff3_features(out), runs[0], tol=1e-6)
    predict(slice_fa, "-o", out, "--model", both, "--window", 7000, "--no-strand-average", "-q")
    assert_same_models(gff3_features(out), plain, tol=1e-6)
    # a model that reads both strands by itself (model.strand_average, trained so): the same
    # gene models, and --no-strand-average cannot take its second strand away
    from dataclasses import replace

    from genoseg.model.gene_model import GeneModel

    one = load_model(model)
    itself = GeneModel(one.grammar, replace(one.cfg, strand_average=True))
    itself.load_state_dict(one.state_dict())
    save_checkpoint(work / "tiny_reads_both.pt", itself)
    for opt in ("--strand-average", "--no-strand-average"):
        res = predict(slice_fa, "-o", out, "--model", work / "tiny_reads_both.pt",
                      "--window", 7000, opt)  # fmt: skip
        assert_same_models(gff3_features(out), runs[0], tol=1e-6)
    assert "reads both strands by itself" in res.stderr
    # an RC-equivariant model (the same weights tied): its own gene models, seam-free at
    # two window sizes, and one pass whatever the option says
    tied = GeneModel(one.grammar, replace(one.cfg, rc_equivariant=True))
    tied.load_state_dict(one.state_dict())
    save_checkpoint(work / "tiny_tied.pt", tied)
    eq = []
    for w, opt in ((7000, "--strand-average"), (23000, "--no-strand-average")):
        res = predict(slice_fa, "-o", out, "--model", work / "tiny_tied.pt", "--window", w, opt)
        eq.append(gff3_features(out))
    assert_same_models(eq[0], eq[1])
    assert any(r[0][1] == "gene" for r in eq[0])
    assert eq[0] != plain and eq[0] != runs[0]
    assert "reads both strands by itself" in res.stderr
    gt_validate(out)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_precision_is_seam_free_and_said(work, model, slice_fa, tmp_path, precision):
    """--precision float32 / bfloat16 (auto picks one by the CPU, so both are forced here):
    each decodes the same gene models and posteriors (1e-4) at two window sizes, writes
    valid GFF3 and says its arithmetic on stderr; a wrong value is refused in one line."""
    runs = []
    for w in (7000, 23000):
        out = tmp_path / f"{precision}_{w}.gff3"
        res = predict(slice_fa, "-o", out, "--model", model, "--window", w,
                      "--precision", precision)  # fmt: skip
        runs.append(gff3_features(out))
    assert f"device cpu ({precision})" in res.stderr
    assert any(r[0][1] == "gene" for r in runs[0])
    assert_same_models(runs[0], runs[1])
    gt_validate(out)
    bad = predict(slice_fa, "-o", tmp_path / "x.gff3", "--model", model,
                  "--config", config(tmp_path / "p.yaml", precision="half"), ok=False)  # fmt: skip
    assert bad.exit_code == 1 and "'precision' must be" in bad.stderr
    assert not (tmp_path / "x.gff3").exists()


def test_precision_auto_follows_the_hardware(monkeypatch):
    """auto: bf16 on CUDA and on CPUs with bf16 instructions, float32 on other CPUs."""
    from genoseg import devices
    from genoseg.errors import GenosegError

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native in (True, False):
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda n=native: n)
        want = torch.bfloat16 if native else torch.float32
        assert devices.inference_dtype("auto", cpu) == want
        assert devices.inference_dtype("auto", cuda) == torch.bfloat16
        assert devices.inference_dtype("float32", cuda) == torch.float32
        assert devices.inference_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(GenosegError, match="--precision half"):
        devices.inference_dtype("half", cpu)


def test_full_temporary_folder_is_one_line(monkeypatch):
    """Spilled network outputs (long stretches) on a full TMPDIR: GenosegError saying what
    to do (was a traceback)."""
    import errno

    from genoseg.errors import GenosegError
    from genoseg.predict.pipeline import _Spool

    spool = _Spool(".f32")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(GenosegError, match=r"No space left on device\); set TMPDIR"):
        spool.append(b"\0" * 16)
    spool.close()
