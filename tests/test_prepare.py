"""genoseg prepare -> HDF5 -> WindowDataset, through the CLI, on real data."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch.utils.data import DataLoader

from genoseg.cli import cli
from genoseg.crf import reference as crf_ref
from genoseg.data.annotation import read_annotation
from genoseg.data.dataset import WindowDataset, collate_windows
from genoseg.data.labels import GeneModel, gene_models_from_segments, segments_from_labels
from genoseg.grammar import compile_window, default_grammar_path, load_grammar
from tests.shared_data import cram_copy, shared

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"
FA, GFF, BAM = (SAMPLES / f"athaliana_chr5_60k.{x}" for x in ("fa", "gff3", "bam"))


def run(*args: str):
    return CliRunner().invoke(cli, ["prepare", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "w.h5"
    res = run("-c", ROOT / "configs" / "prepare.yaml", "-o", out)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def grammar():
    return load_grammar()


def test_layout_and_attributes(prepared):
    with h5py.File(prepared) as h5:
        assert h5.attrs["format"] == "genoseg-windows" and h5.attrs["format_version"] == 1
        assert h5.attrs["grammar"] == default_grammar_path().read_text()
        inputs = json.loads(h5.attrs["inputs"])
        for key, path in (("fasta", FA), ("gff3", GFF), ("bam", BAM)):
            assert inputs[key]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        w = h5["windows"]
        n, W = w["sequence"].shape
        assert n >= 3 and W == 2 * 20000 + 2 * 1000
        for name in ("sequence", "labels", "mask", "softmask"):
            assert w[name].chunks == (1, W) and w[name].compression == "gzip"
        assert w["evidence"].shape == (n, 8, W) and w["evidence"].chunks == (1, 8, W)
        report = json.loads(h5.attrs["report"])
        assert report["genes_used"] == 19 and report["windows"] == n
        assert list(h5["genes/status"].asstr()[:]).count("used") == 19
        # cores tile the contig without gaps or overlaps
        starts, cs, ce = w["start"][:], w["core_start"][:], w["core_end"][:]
        cores = sorted(zip(starts + cs, starts + ce))
        assert cores[0][0] == 0 and cores[-1][1] == 60170
        assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))


def test_dataset_reproduces_annotation(prepared, grammar):
    """Labels read back through the Dataset rebuild every annotated CDS exactly, and each
    core starts and ends intergenic."""
    ds = WindowDataset(prepared)
    ann = read_annotation(GFF, feature="exon")
    tx_models = {(t.gene_id, GeneModel(t.strand, t.cds)) for t in ann.transcripts() if t.cds}
    seq_all = np.array([4] * 60170)
    got = set()
    for i in range(len(ds)):
        it = ds[i]
        s, e = it["core"].tolist()
        lab = it["labels"].numpy()
        assert lab[s] == grammar.intergenic and lab[e - 1] == grammar.intergenic
        assert it["mask"][s:e].all() and not it["mask"][:s].any()
        for gm in gene_models_from_segments(segments_from_labels(lab[s:e]), grammar):
            got.add(GeneModel(gm.strand, tuple((a + it["start"] + s, b + it["start"] + s)
                                               for a, b in gm.cds)))  # fmt: skip
        seq_all[it["start"] : it["start"] + len(it["sequence"])] = it["sequence"].numpy()
    # one transcript per gene, each a real annotated transcript
    assert len(got) == 19
    assert got <= {m for _, m in tx_models}
    # the stored sequence is the FASTA
    fasta = "".join(line.strip() for line in FA.read_text().splitlines()[1:])
    assert "".join("ACGTN"[c] for c in seq_all) == fasta.upper()
    assert any(ds[i]["evidence"].sum() > 0 for i in range(len(ds)))


def test_reverse_strand_items_are_valid_gold(prepared, grammar):
    """Reverse-complemented items: mirrored labels form a gold tiling the grammar allows
    on the reverse-complemented sequence (strand symmetry on real genes)."""
    ds = WindowDataset(prepared, strands=("+", "-"))
    assert len(ds) == 2 * ds.n_windows
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small reference calls: faster single-threaded
    try:
        _check_reverse_items(ds, grammar)
    finally:
        torch.set_num_threads(threads)


def _check_reverse_items(ds, grammar):
    for i in range(ds.n_windows):
        fwd, rev = ds[i], ds[i + ds.n_windows]
        assert rev["strand"] == -1
        assert torch.equal(rev["sequence"], (3 - fwd["sequence"]).flip(0))  # no N here
        s, e = rev["core"].tolist()
        codes = rev["sequence"].numpy().astype(np.uint8)
        st = compile_window(grammar, codes, left_context=s, right_context=len(codes) - e)
        segs = segments_from_labels(rev["labels"][s:e].numpy())
        em = torch.zeros(e - s, grammar.num_labels)
        assert math.isfinite(crf_ref.score_segmentation(em, segs, **st.as_dict()))
        assert torch.equal(rev["evidence"][0], fwd["evidence"][4].flip(0))


def test_dataloader_workers(prepared):
    ds = WindowDataset(prepared, strands=("+", "-"))
    single = [ds[i]["labels"] for i in range(len(ds))]
    dl = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_windows)
    rows = []
    for batch in dl:
        assert batch["sequence"].shape == batch["labels"].shape
        for j, n in enumerate(batch["lengths"].tolist()):
            rows.append(batch["labels"][j, :n])
    assert len(rows) == len(single)
    assert all(torch.equal(a, b) for a, b in zip(rows, single))


def test_forced_cuts_mask_cut_genes(tmp_path, grammar):
    """Windows shorter than genes: cuts inside genes mask the cut gene's positions, so
    every core still starts and ends intergenic or masked."""
    out = tmp_path / "small.h5"
    res = run("--fasta", FA, "--gff3", GFF, "-o", out, "--region", "Chr5:1-30000",
              "-c", _cfg(tmp_path, "windows: {length: 400, max_length: 600, halo: 0}"))  # fmt: skip
    assert res.exit_code == 0, res.output
    ds = WindowDataset(out)
    assert len(ds) > 40
    ig = grammar.intergenic
    masked = 0
    for i in range(len(ds)):
        it = ds[i]
        lab, msk = it["labels"].numpy(), it["mask"].numpy()
        assert (lab[0] == ig or not msk[0]) and (lab[-1] == ig or not msk[-1])
        assert ((lab == 255) == ~msk).all()
        masked += int((~msk).sum())
    assert masked > 0
    report = _check_report_is_what_was_written(out)
    # genes longer than max_length are masked and say so (they were reported as used)
    assert report["masked_by_reason"]["window_cut"] >= 5
    assert report["masked_bp"] > 0.3 * report["total_bp"] and report["total_bp"] == 30000


def _check_report_is_what_was_written(path: Path) -> dict:
    """The report and /genes agree with the stored windows: bp counted over the written
    cores, a gene is `used` only if every position of it was written with its label."""
    with h5py.File(path) as h5:
        report = json.loads(h5.attrs["report"])
        w = h5["windows"]
        mask, start = w["mask"][:], w["start"][:]
        cs, ce, contig = w["core_start"][:], w["core_end"][:], w["contig"][:]
        lengths = h5["contigs/length"][:]
        g = h5["genes"]
        rows = list(zip(g["contig"][:], g["start"][:], g["end"][:], g["status"].asstr()[:]))
    assert report["windows"] == len(mask)
    assert report["total_bp"] == int((ce - cs).sum())
    assert report["masked_bp"] == sum(
        int((~mask[i, cs[i] : ce[i]]).sum()) for i in range(len(mask))
    )
    written = {c: np.zeros(lengths[c], bool) for c in set(contig.tolist())}
    masked = {c: np.zeros(lengths[c], bool) for c in set(contig.tolist())}
    for i in range(len(mask)):
        a, b = start[i] + cs[i], start[i] + ce[i]
        written[contig[i]][a:b] = True
        masked[contig[i]][a:b] |= ~mask[i, cs[i] : ce[i]]
    statuses = [st for *_, st in rows]
    assert report["genes_used"] == statuses.count("used")
    assert report["genes_masked"] == len(statuses) - statuses.count("used")
    assert report["masked_by_reason"] == dict(Counter(st for st in statuses if st != "used"))
    for c, a, b, st in rows:
        assert written[c][a:b].any(), "a reported gene overlaps the written windows"
        full = written[c][a:b].all() and not masked[c][a:b].any()
        assert full == (st == "used"), (c, a, b, st)
    return report


def test_region_report_counts_the_region_only(tmp_path):
    """With --region the report counts what was written, not the whole contig; a gene cut
    by the region end is masked as region_edge."""
    out = tmp_path / "r.h5"
    res = run("--fasta", FA, "--gff3", GFF, "-o", out, "--region", "Chr5:1-35000")
    assert res.exit_code == 0, res.output
    report = _check_report_is_what_was_written(out)
    assert report["total_bp"] == 35000
    with h5py.File(out) as h5:
        ids = list(h5["genes/id"].asstr()[:])
        status = dict(zip(ids, h5["genes/status"].asstr()[:]))
    assert ids[-1] == "AT5G01100" and "AT5G01110" not in ids  # genes from 41,767 on: outside
    assert status["AT5G01100"] == "region_edge"  # CDS 34,872-37,756 crosses the region end
    assert report["genes_used"] + report["genes_masked"] == len(ids) == 12
    assert "Chr5: 1 windows; 11 genes used, 1 masked (region_edge 1); " in res.output
    assert "of 35000 bp masked" in res.output


def _cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def _no_leftovers(d: Path) -> None:
    assert not list(d.glob("*.h5")) and not list(d.glob(".*tmp*"))


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--fasta", "missing.fa"], "missing.fa: FASTA file not found"),
        (["--gff3", "missing.gff3"], "missing.gff3: annotation file not found"),
        (["--region", "Chr9:1-100"], "Chr9"),
        (["--region", "Chr5:1-99999999"], "outside|beyond|exceeds|length"),
    ],
)
def test_bad_inputs_one_line_no_output(tmp_path, extra, pattern, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--fasta", FA, "--gff3", GFF, "-o", tmp_path / "o.h5"]
    res = CliRunner().invoke(cli, ["prepare", *map(str, args), *extra])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genoseg: error:"), res.output
    import re

    assert re.search(pattern, lines[0]), lines[0]
    _no_leftovers(tmp_path)


def test_bad_config_key_and_bad_annotation(tmp_path):
    res = CliRunner().invoke(cli, ["prepare", "-c", str(_cfg(tmp_path, "windoes: {}\n"))])
    assert res.exit_code == 1 and "cfg.yaml: unknown key 'windoes'" in res.output
    # a GFF3 feature beyond the contig end: error names file and line
    bad = tmp_path / "bad.gff3"
    lines = GFF.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if "\tCDS\t" in line)
    cols = lines[k].split("\t")
    cols[4] = "70000"
    lines[k] = "\t".join(cols)
    bad.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(
        cli, ["prepare", "--fasta", str(FA), "--gff3", str(bad), "-o", str(tmp_path / "o.h5")]
    )
    assert res.exit_code == 1 and f"bad.gff3:{k + 1}" in res.output, res.output
    assert not (tmp_path / "o.h5").exists() and not list(tmp_path.glob(".*tmp*"))


def test_bam_of_another_assembly(tmp_path):
    d = shared("athaliana_1pct")
    cfg = _cfg(tmp_path, "annotation: {missing_parents: skip}\n")
    res = CliRunner().invoke(cli, ["prepare", "-c", str(cfg), "--fasta", str(d / "genome.fa"),
                                   "--gff3", str(d / "annotation_with_rnaseq_splice.gff3"),
                                   "--bam", str(BAM), "-o", str(tmp_path / "o.h5")])  # fmt: skip
    assert res.exit_code == 1 and "athaliana_chr5_60k.bam" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.h5").exists() and not list(tmp_path.glob(".*tmp*"))


def test_cram_decodes_against_the_fasta(tmp_path):
    """A CRAM whose original reference file is gone: prepare decodes it with --fasta."""
    import shutil

    moved = tmp_path / "moved.fa"
    shutil.copy(FA, moved)
    cram = cram_copy(BAM, moved, tmp_path / "reads.cram")
    moved.unlink()
    Path(f"{moved}.fai").unlink(missing_ok=True)
    out = tmp_path / "w.h5"
    res = run("--fasta", FA, "--gff3", GFF, "--bam", cram, "-o", out, "--region", "Chr5:1-20000")
    assert res.exit_code == 0, res.output
    assert out.is_file()


def test_prepare_shared_fly_region(tmp_path):
    d = shared("dmelanogaster_1pct")
    cfg = _cfg(tmp_path, "annotation: {missing_parents: skip}\nwindows: {length: 30000}\n")
    out = tmp_path / "fly.h5"
    res = run("-c", cfg, "--fasta", d / "genome.fa", "--gff3",
              d / "annotation_with_rnaseq_splice.gff3", "--bam",
              d / "synthetic_junction_reads.bam", "--region", "2L", "-o", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    ds = WindowDataset(out)
    assert ds.report["genes_used"] > 20
    assert sum(ds.lengths) >= 230000 and set(ds.contig_names) >= {"2L", "X"}
    assert {ds[i]["contig"] for i in range(len(ds))} == {"2L"}


def test_sigterm_during_prepare_leaves_nothing(tmp_path):
    """`genoseg prepare` killed with SIGTERM (what schedulers send) while writing its HDF5:
    no temporary and no output remain, and the process dies by the signal."""
    rng = np.random.default_rng(1)
    fa = tmp_path / "g.fa"
    fa.write_text(">c1\n" + "".join("ACGT"[i] for i in rng.integers(0, 4, 300_000)) + "\n")
    gff = tmp_path / "a.gff3"
    gff.write_text("##gff-version 3\n")
    out = tmp_path / "w.h5"
    # window length 100: thousands of windows, so the write lasts long enough to be hit
    cfg = _cfg(tmp_path, "windows: {length: 100, halo: 0}\ncompression: 9\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(
        [sys.executable, "-m", "genoseg.cli", "prepare", "-c", str(cfg), "--fasta", str(fa),
         "--gff3", str(gff), "-o", str(out)],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.time() + 120
    while not list(tmp_path.glob(".w.h5.tmp-*")) and time.time() < deadline:
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.005)
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def _copy_inputs(tmp_path: Path) -> dict[str, Path]:
    import shutil

    paths = {}
    for key, src in (("fasta", FA), ("gff3", GFF), ("bam", BAM)):
        paths[key] = Path(shutil.copy(src, tmp_path / src.name))
    shutil.copy(str(BAM) + ".bai", tmp_path / (BAM.name + ".bai"))
    paths["config"] = _cfg(tmp_path, "windows: {length: 20000}\n")
    return paths


@pytest.mark.parametrize("victim", ["fasta", "gff3", "bam", "config"])
@pytest.mark.parametrize("spelling", ["same", "relative", "symlink"])
def test_output_equal_to_an_input_is_refused(tmp_path, monkeypatch, victim, spelling):
    paths = _copy_inputs(tmp_path)
    before = {k: p.read_bytes() for k, p in paths.items()}
    monkeypatch.chdir(tmp_path)
    target = paths[victim]
    if spelling == "relative":
        (tmp_path / "sub").mkdir()
        target = Path("sub") / ".." / target.name
    elif spelling == "symlink":
        target = tmp_path / "link.h5"
        target.symlink_to(paths[victim])
    res = CliRunner().invoke(
        cli,
        ["prepare", "-c", str(paths["config"]), "--fasta", str(paths["fasta"]), "--gff3",
         str(paths["gff3"]), "--bam", str(paths["bam"]), "-o", str(target)],
    )  # fmt: skip
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (
        f"genoseg: error: -o {target} is the same file as the input --{victim} "
        f"{paths[victim]}; refusing to overwrite an input"
    )
    assert {k: p.read_bytes() for k, p in paths.items()} == before
    assert not list(tmp_path.glob(".*tmp*"))


def _warnings(res) -> list[str]:
    return [line for line in res.output.splitlines() if "warning:" in line]


def test_no_usable_gene_and_unannotated_regions_warn(tmp_path):
    # the sample genome plus a contig the annotation does not cover
    fa = tmp_path / "g.fa"
    rng = np.random.default_rng(0)
    extra = "".join("ACGT"[i] for i in rng.integers(0, 4, 5000))
    fa.write_text(FA.read_text() + f">extra\n{extra}\n")
    out = tmp_path / "o.h5"
    res = run("--fasta", fa, "--gff3", GFF, "-o", out)
    assert res.exit_code == 0, res.output
    (w,) = _warnings(res)
    assert w.startswith("genoseg prepare: warning: 1 of 2 regions (5000 of 65170 bp) have no ")
    assert "extra:1-5000" in w
    assert json.loads(h5py.File(out).attrs["report"])["warnings"] == [w.split("warning: ", 1)[1]]
    # an annotation without any usable gene
    empty = tmp_path / "empty.gff3"
    empty.write_text("##gff-version 3\n")
    res = run("--fasta", FA, "--gff3", empty, "-o", out)
    assert res.exit_code == 0, res.output
    ws = _warnings(res)
    assert len(ws) == 2 and "no annotated gene at all" in ws[0]
    assert "empty.gff3: no usable gene in the written windows" in ws[1]
    assert len(json.loads(h5py.File(out).attrs["report"])["warnings"]) == 2


def test_duplicate_and_overlapping_regions_warn(tmp_path):
    out = tmp_path / "o.h5"
    res = run("--fasta", FA, "--gff3", GFF, "-o", out, "--region", "Chr5:1-20000",
              "--region", "Chr5:10001-30000", "--region", "Chr5:1-20000")  # fmt: skip
    assert res.exit_code == 0, res.output
    (w,) = _warnings(res)
    assert "1 given more than once (Chr5:1-20000)" in w
    assert "1 overlapping pairs (Chr5:1-20000 and Chr5:10001-30000)" in w
    assert "30000 bp are written more than once" in w
    report = _check_report_is_what_was_written(out)
    assert report["total_bp"] == 60000
    # no warning for adjacent, disjoint regions
    res = run("--fasta", FA, "--gff3", GFF, "-o", out, "--region", "Chr5:1-20000",
              "--region", "Chr5:20001-30000")  # fmt: skip
    assert res.exit_code == 0 and _warnings(res) == [], res.output


def _gtf_gene_id_is_transcript_id(path: Path) -> Path:
    """The sample annotation as a UCSC refGene-style GTF: gene_id = transcript_id."""
    ann = read_annotation(GFF, feature="exon")
    lines = []
    for t in ann.transcripts():
        attrs = f'gene_id "{t.id}"; transcript_id "{t.id}";'
        for a, b in t.exons:
            lines.append(f"Chr5\tucsc\texon\t{a + 1}\t{b}\t.\t{t.strand}\t.\t{attrs}")
        order = list(t.cds_in_transcription_order())
        for (a, b), ph in zip(order, t.phases):
            lines.append(f"Chr5\tucsc\tCDS\t{a + 1}\t{b}\t.\t{t.strand}\t{ph}\t{attrs}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ucsc_style_gtf_warns(tmp_path):
    gtf = _gtf_gene_id_is_transcript_id(tmp_path / "refGene.gtf")
    out = tmp_path / "o.h5"
    res = run("--fasta", FA, "--gff3", gtf, "-o", out)
    assert res.exit_code == 0, res.output
    (w,) = _warnings(res)
    assert "refGene.gtf: " in w and "have gene_id equal to their transcript_id" in w
    report = _check_report_is_what_was_written(out)
    assert report["masked_by_reason"]["overlapping_gene"] > 0


def test_bam_strandedness_is_logged_and_reported(prepared):
    with h5py.File(prepared) as h5:
        report = json.loads(h5.attrs["report"])
        assert yaml.safe_load(h5.attrs["config"])["evidence"]["strandedness"] == "auto"
    # the sample's synthetic reads all carry XS; 2,000 of them sampled
    assert (
        report["strandedness"].startswith("auto: ")
        and "of 2,000 spliced reads" in report["strandedness"]
    )


def test_region_patterns_and_exclude_split_locus_sets(tmp_path):
    """A locus set is split by contig-name patterns (S. pombe KOG loci by chromosome) and a
    held-out locus is dropped by name, as configs/data/prepare_spombe_kog_*.yaml do."""
    from genoseg.data.fasta import Genome
    from genoseg.data.regions import select_regions
    from genoseg.errors import GenosegError

    fa = shared("spombe_kog", "genome.fa")
    contigs = Genome.open(fa).contigs
    train = select_regions(["KOG*_SPAC*", "KOG*_SPBC*"], None, contigs, str(fa))
    test = select_regions(["KOG*_SPC*"], None, contigs, str(fa))
    names = {r.contig for r in train}
    assert len(names) == len(train) == 266
    assert not names & {r.contig for r in test} and len(test) == 46
    assert all(r.start == 0 and r.end == contigs[r.contig] for r in train)
    first = train[0].contig
    assert first not in {r.contig for r in select_regions(None, [first], contigs, str(fa))}
    mixed = select_regions([f"{first}:1-100", "KOG*_SPCP*"], ["KOG*_SPCC*"], contigs, str(fa))
    assert [(r.contig, r.start, r.end) for r in mixed][0] == (first, 0, 100) and len(mixed) == 3
    with pytest.raises(GenosegError, match="matches no contig"):
        select_regions(["KOG*_SPX*"], None, contigs, str(fa))
    with pytest.raises(GenosegError, match="exclude"):
        select_regions(None, ["no_such_locus"], contigs, str(fa))
    with pytest.raises(GenosegError, match="no region left"):
        select_regions(["KOG*_SPCP*"], ["KOG*_SPCP*"], contigs, str(fa))
