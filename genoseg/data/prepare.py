"""``genoseg prepare``: FASTA + GFF3 (+ BAM) -> one HDF5 file of labelled training windows.

Layout (docs/formats.md): per window a row of ``sequence`` (uint8 codes), ``softmask``,
``labels`` (uint8 grammar label index, 255 = ignore), ``mask`` (bool, True = label used
for training) and, with a BAM, ``evidence`` (8 channels); coordinates and core offsets per
window; attributes with the format version, grammar YAML, config and input checksums.

Windows: each region (default: every contig) is cut into cores of about
``windows.length`` bases. A cut is placed where both neighbouring positions are
intergenic or masked, the nearest such place to the target length within
[length/2, max_length], so that a window's gold segmentation starts and ends with
intergenic (the grammar's ``init``/``final``) and no used gene is split. When no such
place exists (a gene longer than max_length, or a region boundary inside a gene) the cut
is forced and the positions of the cut gene inside the window are masked. Each stored row
is the core plus up to ``windows.halo`` bases of sequence context on either side (mask
False there), padded with N to the row width ``max_length + 2 * halo``.

The output is written with :func:`genoseg.io.atomic.atomic_path`: a temporary file beside
it, renamed on success, deleted on errors and on SIGTERM / SIGHUP / SIGINT.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

from genoseg import __version__
from genoseg.config import config_to_dict, load_config
from genoseg.data.annotation import read_annotation
from genoseg.data.bam import CHANNELS, Evidence
from genoseg.data.fasta import CODE_N, Genome
from genoseg.data.labels import (
    DEFAULT_MASK_BIOTYPES,
    IGNORE,
    LabelReport,
    label_contig,
)
from genoseg.data.regions import Region, parse_region, whole_genome
from genoseg.errors import GenosegError
from genoseg.grammar import Grammar, load_grammar
from genoseg.io.atomic import atomic_path

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PrepareConfig",
    "load_prepare_config",
    "plan_training_windows",
    "prepare",
    "prepare_command",
    "sha256_file",
]

FORMAT = "genoseg-windows"
FORMAT_VERSION = 1


@dataclass
class WindowConfig:
    """Window sizes in bases: target core ``length``, hard cap ``max_length`` (0 = 2 x
    length), sequence context ``halo`` stored on each side of the core."""

    length: int = 50000
    max_length: int = 0
    halo: int = 1000

    def __post_init__(self) -> None:
        if self.length < 100:
            raise ValueError(f"windows.length must be >= 100, got {self.length}")
        if self.max_length == 0:
            self.max_length = 2 * self.length
        if self.max_length < self.length:
            raise ValueError("windows.max_length must be >= windows.length")
        if self.halo < 0:
            raise ValueError(f"windows.halo must be >= 0, got {self.halo}")


@dataclass
class AnnotationConfig:
    """How the GFF3/GTF is read: ``missing_parents`` ``error`` or ``skip`` (see
    genoseg.data.annotation.read_annotation); genes of ``mask_biotypes`` are masked."""

    missing_parents: str = "error"
    mask_biotypes: list[str] = field(default_factory=lambda: list(DEFAULT_MASK_BIOTYPES))

    def __post_init__(self) -> None:
        if self.missing_parents not in ("error", "skip"):
            raise ValueError(
                f"annotation.missing_parents must be 'error' or 'skip', "
                f"got {self.missing_parents!r}"
            )


@dataclass
class EvidenceConfig:
    """BAM reading options (genoseg.data.bam.Evidence.open)."""

    strandedness: str = "unstranded"
    min_mapq: int = 0


@dataclass
class PrepareConfig:
    """Schema of configs/prepare.yaml (paths relative to the config file)."""

    fasta: Path
    gff3: Path
    output: Path
    bam: Path | None = None
    grammar: Path | None = None
    regions: list[str] | None = None
    windows: WindowConfig = field(default_factory=WindowConfig)
    annotation: AnnotationConfig = field(default_factory=AnnotationConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    compression: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.compression <= 9:
            raise ValueError(f"compression must be 0..9 (gzip level), got {self.compression}")


def sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _cut_allowed(labels: np.ndarray, ig: int) -> np.ndarray:
    """(L+1,) bool: a window boundary may sit before position b (b = 0..L)."""
    free = (labels == ig) | (labels == IGNORE)
    ok = np.zeros(len(labels) + 1, dtype=bool)
    ok[1:-1] = free[:-1] & free[1:]
    ok[0] = ok[-1] = True
    return ok


def plan_training_windows(
    labels: np.ndarray, region: Region, ig: int, length: int, max_length: int
) -> list[tuple[int, int]]:
    """Cores [start, end) (0-based, contig coordinates) tiling ``region``; see the module
    docstring for the rule. ``labels`` (L,) are the whole contig's labels."""
    allowed = _cut_allowed(labels, ig)
    out = []
    pos = region.start
    while pos < region.end:
        rest = region.end - pos
        if rest <= min(length + length // 4, max_length):
            out.append((pos, region.end))
            break
        lo, hi = pos + length // 2, min(region.end, pos + max_length)
        cand = np.flatnonzero(allowed[lo : hi + 1]) + lo
        if len(cand):
            end = int(cand[np.argmin(np.abs(cand - (pos + length)))])
        else:
            end = hi  # forced cut inside a gene: masked by _mask_cut_genes
        out.append((pos, end))
        pos = end
    return out


def _mask_cut_genes(labels: np.ndarray, mask: np.ndarray, ig: int) -> None:
    """In-place: mask the gene positions at either end of a core that a cut runs through
    (a core must start and end with intergenic or masked positions)."""
    free = (labels == ig) | ~mask
    n = len(labels)
    if n and not free[0]:
        stop = int(np.argmax(free)) if free.any() else n
        mask[:stop] = False
    if n and not free[-1]:
        stop = int(np.argmax(free[::-1])) if free.any() else n
        mask[n - stop :] = False
    labels[~mask] = IGNORE


def _log(msg: str) -> None:
    print(f"genoseg prepare: {msg}", file=sys.stderr, flush=True)


def load_prepare_config(path: str | Path | None, overrides: dict | None = None) -> PrepareConfig:
    """Read configs/prepare.yaml-style config with CLI overrides (see genoseg.config)."""
    return load_config(PrepareConfig, path, overrides)


def _check_file(path: Path | None, what: str) -> None:
    if path is not None and not Path(path).is_file():
        raise GenosegError(f"{path}: {what} file not found")


def prepare(cfg: PrepareConfig, *, log: Callable[[str], None] = _log) -> dict:
    """Run ``genoseg prepare``; returns the summary (also stored as the ``report`` attr)."""
    t0 = time.time()
    _check_file(cfg.fasta, "FASTA")
    _check_file(cfg.gff3, "annotation")
    _check_file(cfg.bam, "BAM")
    _check_file(cfg.grammar, "grammar")
    out = Path(cfg.output)
    if str(out) == "-":
        raise GenosegError("output: an HDF5 file cannot be written to stdout; give a path")
    if not out.parent.is_dir():
        raise GenosegError(f"{out}: output directory {out.parent} does not exist")
    grammar = load_grammar(cfg.grammar)
    genome = Genome.open(cfg.fasta)
    if cfg.regions:
        regions = [parse_region(r, genome.contigs, source=str(cfg.fasta)) for r in cfg.regions]
    else:
        regions = whole_genome(genome.contigs)
    ann = read_annotation(
        cfg.gff3,
        feature="exon",
        contig_lengths=genome.contigs,
        missing_parents=cfg.annotation.missing_parents,
    )
    evidence = None
    if cfg.bam is not None:
        evidence = Evidence.open(
            cfg.bam,
            genome.contigs,
            strandedness=cfg.evidence.strandedness,
            min_mapq=cfg.evidence.min_mapq,
        )
    inputs = {"fasta": cfg.fasta, "gff3": cfg.gff3, "bam": cfg.bam, "grammar": cfg.grammar}
    input_meta = {
        k: {"path": str(Path(p).resolve()), "sha256": sha256_file(Path(p))}
        for k, p in inputs.items()
        if p is not None
    }
    if cfg.grammar is None:
        input_meta["grammar"] = {"path": "<packaged default>", "sha256": _sha(grammar.yaml_text)}
    try:
        with atomic_path(out) as tmp:
            report = _write(cfg, grammar, genome, regions, ann, evidence, tmp, input_meta, log)
    finally:
        genome.close()
        if evidence is not None:
            evidence.close()
    log(f"wrote {report['windows']} windows to {out} in {time.time() - t0:.1f} s")
    return report


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write(
    cfg: PrepareConfig,
    grammar: Grammar,
    genome: Genome,
    regions: list[Region],
    ann,
    evidence: Evidence | None,
    tmp: Path,
    input_meta: dict,
    log: Callable[[str], None],
) -> dict:
    wc = cfg.windows
    W = wc.max_length + 2 * wc.halo
    ig = grammar.intergenic
    contigs = list(genome.contigs)
    cidx = {c: i for i, c in enumerate(contigs)}
    comp = {"compression": "gzip", "compression_opts": cfg.compression} if cfg.compression else {}
    total = LabelReport()
    gene_rows: list[tuple] = []
    by_contig: dict[str, list[Region]] = {}
    for r in regions:
        by_contig.setdefault(r.contig, []).append(r)
    with h5py.File(tmp, "w") as h5:
        g = h5.create_group("windows")

        def ds(name: str, dtype, fill, extra: tuple = ()) -> h5py.Dataset:
            return g.create_dataset(
                name,
                shape=(0, *extra, W),
                maxshape=(None, *extra, W),
                dtype=dtype,
                chunks=(1, *extra, W),
                fillvalue=fill,
                **comp,
            )

        d_seq = ds("sequence", np.uint8, CODE_N)
        d_soft = ds("softmask", bool, False)
        d_lab = ds("labels", np.uint8, IGNORE)
        d_mask = ds("mask", bool, False)
        d_ev = ds("evidence", np.float32, 0.0, (len(CHANNELS),)) if evidence else None
        meta: dict[str, list[int]] = {
            k: [] for k in ("contig", "start", "length", "core_start", "core_end")
        }
        n = 0
        for contig, regs in by_contig.items():
            L = genome.length(contig)
            codes, soft = genome.encode(contig)
            cl = label_contig(
                grammar,
                contig,
                codes,
                ann.genes.get(contig, []),
                mask_biotypes=cfg.annotation.mask_biotypes,
            )
            gene_rows += [
                (st.gene_id, cidx[contig], st.start, st.end, st.strand, st.status,
                 st.transcript or "")
                for st in cl.genes
                if any(st.start < r.end and r.start < st.end for r in regs)
            ]  # fmt: skip
            total.add(cl.report)
            cores = [
                c
                for r in regs
                for c in plan_training_windows(cl.labels, r, ig, wc.length, wc.max_length)
            ]
            for cs, ce in cores:
                a, b = max(0, cs - wc.halo), min(L, ce + wc.halo)
                m = b - a
                lab = np.full(m, IGNORE, dtype=np.uint8)
                msk = np.zeros(m, dtype=bool)
                core_lab = cl.labels[cs:ce].copy()
                core_msk = cl.mask[cs:ce].copy()
                _mask_cut_genes(core_lab, core_msk, ig)
                lab[cs - a : ce - a] = core_lab
                msk[cs - a : ce - a] = core_msk
                for d in (d_seq, d_soft, d_lab, d_mask, d_ev):
                    if d is not None:
                        d.resize(n + 1, axis=0)
                d_seq[n, :m] = codes[a:b]
                d_soft[n, :m] = soft[a:b]
                d_lab[n, :m] = lab
                d_mask[n, :m] = msk
                if d_ev is not None:
                    d_ev[n, :, :m] = evidence.track(contig, a, b)
                for k, v in zip(meta, (cidx[contig], a, m, cs - a, ce - a)):
                    meta[k].append(v)
                n += 1
            log(f"{contig}: {len(cores)} windows; {cl.report}")
        for k, dt in (("contig", np.int32), ("start", np.int64), ("length", np.int32),
                      ("core_start", np.int32), ("core_end", np.int32)):  # fmt: skip
            g.create_dataset(k, data=np.asarray(meta[k], dtype=dt))
        str_dt = h5py.string_dtype()
        cg = h5.create_group("contigs")
        cg.create_dataset("name", data=np.array(contigs, dtype=object), dtype=str_dt)
        cg.create_dataset("length", data=np.array([genome.contigs[c] for c in contigs], np.int64))
        gg = h5.create_group("genes")
        cols = list(zip(*gene_rows)) if gene_rows else [()] * 7
        for name, col, dt in zip(
            ("id", "contig", "start", "end", "strand", "status", "transcript"),
            cols,
            (str_dt, np.int32, np.int64, np.int64, str_dt, str_dt, str_dt),
        ):
            arr = np.array(col, dtype=object if dt is str_dt else dt)
            gg.create_dataset(name, data=arr, dtype=dt)
        report = total.as_dict() | {"windows": n}
        h5.attrs["format"] = FORMAT
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["genoseg_version"] = __version__
        h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        h5.attrs["grammar"] = grammar.yaml_text
        h5.attrs["label_names"] = json.dumps(grammar.names)
        h5.attrs["label_strand"] = grammar.strand_array.astype(np.int8)
        h5.attrs["label_mirror"] = grammar.mirror.astype(np.int32)
        h5.attrs["ignore_label"] = IGNORE
        h5.attrs["evidence_channels"] = json.dumps(list(CHANNELS) if evidence else [])
        h5.attrs["config"] = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
        h5.attrs["inputs"] = json.dumps(input_meta)
        h5.attrs["report"] = json.dumps(report)
    log(f"genes: {total}")
    return report


# --------------------------------------------------------------------------- CLI


def _click_command():
    import click

    @click.command("prepare")
    @click.option(
        "-c",
        "--config",
        "config",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML config (configs/prepare.yaml); options below override it.",
    )
    @click.option("--fasta", type=click.Path(dir_okay=False), help="Genome FASTA (plain/bgzip).")
    @click.option("--gff3", type=click.Path(dir_okay=False), help="Reference annotation GFF3/GTF.")
    @click.option("--bam", type=click.Path(dir_okay=False), help="RNA-seq BAM/CRAM (indexed).")
    @click.option("--grammar", type=click.Path(dir_okay=False), help="Grammar YAML.")
    @click.option(
        "--region",
        "regions",
        multiple=True,
        help="Region chr or chr:start-end (1-based inclusive); repeatable. Default: all contigs.",
    )
    @click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output HDF5 file.")
    def prepare_command(config, fasta, gff3, bam, grammar, regions, output):
        """Label a genome from its annotation and write training windows to HDF5."""
        overrides = {
            "fasta": fasta, "gff3": gff3, "bam": bam, "grammar": grammar,
            "output": output, "regions": list(regions) or None,
        }  # fmt: skip
        prepare(load_prepare_config(config, overrides))

    return prepare_command


prepare_command = _click_command()
