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

The report (root attribute ``report``, and the log) counts what was written: genes
overlapping the regions, bases of the written cores; a gene masked by a forced cut or a
region end is ``window_cut`` / ``region_edge``, not ``used``. Warnings (no usable gene,
regions without annotation, overlapping regions, UCSC-style GTF gene ids) go to stderr and
``report["warnings"]``.

The output is written with :func:`genoseg.io.atomic.atomic_path`: a temporary file beside
it, renamed on success, deleted on errors and on SIGTERM / SIGHUP / SIGINT; an output
equal to an input is refused.
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
from genoseg.data.annotation import Annotation, read_annotation
from genoseg.data.bam import CHANNELS, Evidence, check_strandedness
from genoseg.data.fasta import CODE_N, Genome
from genoseg.data.labels import (
    DEFAULT_MASK_BIOTYPES,
    IGNORE,
    GeneStatus,
    LabelReport,
    label_contig,
)
from genoseg.data.regions import Region, select_regions
from genoseg.errors import GenosegError
from genoseg.grammar import Grammar, load_grammar
from genoseg.io.atomic import atomic_path, check_not_input

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
    """BAM reading options (genoseg.data.bam.Evidence.open): ``strandedness`` ``auto``
    (infer from XS / minimap2 ts tags), ``unstranded``, ``fr-firststrand`` (``rf``) or
    ``fr-secondstrand`` (``fr``); reads below ``min_mapq`` are skipped. Checked when the
    config is read, with or without a BAM."""

    strandedness: str = "auto"
    min_mapq: int = 0

    def __post_init__(self) -> None:
        try:
            check_strandedness(self.strandedness)
        except GenosegError as exc:
            raise ValueError(f"evidence.{exc}") from None
        if self.min_mapq < 0:
            raise ValueError(f"evidence.min_mapq must be >= 0, got {self.min_mapq}")


@dataclass
class PrepareConfig:
    """Schema of configs/prepare.yaml (paths relative to the config file)."""

    fasta: Path
    gff3: Path
    output: Path
    bam: Path | None = None
    grammar: Path | None = None
    regions: list[str] | None = None
    exclude: list[str] | None = None
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


def _check_file(path: Path | None, what: str, where: str) -> None:
    if path is not None and not Path(path).is_file():
        raise GenosegError(f"{path}: {what} file not found{where}")


def prepare(
    cfg: PrepareConfig,
    *,
    config_path: str | Path | None = None,
    log: Callable[[str], None] = _log,
) -> dict:
    """Run ``genoseg prepare``; returns the summary (also stored as the ``report`` attr).

    ``config_path`` (the ``--config`` file, if any) is named in errors about values that
    came from it and is refused as the output like every input. Warnings (see
    docs/formats.md) go to ``log`` (stderr) and to ``report["warnings"]``.
    """
    t0 = time.time()
    where = f" (config {config_path})" if config_path is not None else ""
    _check_file(cfg.fasta, "FASTA", where)
    _check_file(cfg.gff3, "annotation", where)
    _check_file(cfg.bam, "BAM", where)
    _check_file(cfg.grammar, "grammar", where)
    out = Path(cfg.output)
    if str(out) == "-":
        raise GenosegError("-o: an HDF5 file cannot be written to stdout; give a path")
    check_not_input(
        {"-o": out},
        {"--fasta": cfg.fasta, "--gff3": cfg.gff3, "--bam": cfg.bam, "--grammar": cfg.grammar,
         "--config": config_path},
    )  # fmt: skip
    if not out.parent.is_dir():
        raise GenosegError(f"-o {out}: output directory {out.parent} does not exist")
    grammar = load_grammar(cfg.grammar)
    genome = Genome.open(cfg.fasta)
    try:
        regions = select_regions(cfg.regions, cfg.exclude, genome.contigs, str(cfg.fasta))
    except GenosegError as exc:
        raise GenosegError(f"{exc}{where}") from None
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
            reference=cfg.fasta,  # decodes a CRAM
        )
        log(f"{cfg.bam}: strandedness {evidence.describe()}")
        if warning := evidence.index_warning:
            log(warning)
    inputs = {"fasta": cfg.fasta, "gff3": cfg.gff3, "bam": cfg.bam, "grammar": cfg.grammar}
    input_meta = {
        k: {"path": str(Path(p).resolve()), "sha256": sha256_file(Path(p))}
        for k, p in inputs.items()
        if p is not None
    }
    if cfg.grammar is None:
        input_meta["grammar"] = {"path": "<packaged default>", "sha256": _sha(grammar.yaml_text)}
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"warning: {msg}")

    for msg in input_warnings(regions, ann):
        warn(msg)
    try:
        with atomic_path(out) as tmp:
            report = _write(
                cfg, grammar, genome, regions, ann, evidence, tmp, input_meta, log, warn, warnings
            )
    finally:
        genome.close()
        if evidence is not None:
            evidence.close()
    log(f"wrote {report['windows']} windows to {out} in {time.time() - t0:.1f} s")
    return report


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _examples(items: list[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (", ..." if len(items) > k else "")


def input_warnings(regions: list[Region], ann: Annotation) -> list[str]:
    """Warnings about the inputs, before anything is written (docs/formats.md):
    duplicate or overlapping regions, regions without any annotated gene, and GTFs whose
    gene_id is the transcript id (UCSC refGene / Table Browser style)."""
    out = []
    by_contig: dict[str, list[Region]] = {}
    for r in regions:
        by_contig.setdefault(r.contig, []).append(r)
    dup, overlap, twice = [], [], 0
    for regs in by_contig.values():
        regs = sorted(regs, key=lambda r: (r.start, r.end))
        reach: Region | None = None  # the region reaching furthest so far
        for r in regs:
            if reach is not None and r.start < reach.end:
                twice += min(r.end, reach.end) - r.start
                (dup if r == reach else overlap).append(
                    str(r) if r == reach else f"{reach} and {r}"
                )
            if reach is None or r.end > reach.end:
                reach = r
    if dup or overlap:
        parts = []
        if dup:
            parts.append(f"{len(dup)} given more than once ({_examples(dup)})")
        if overlap:
            parts.append(f"{len(overlap)} overlapping pairs ({_examples(overlap)})")
        out.append(
            f"regions: {'; '.join(parts)}: {twice} bp are written more than once "
            "(duplicated training data)"
        )
    bare = []
    for r in regions:
        genes = ann.genes.get(r.contig, [])
        if not any(g.start < r.end and r.start < g.end for g in genes):
            bare.append(r)
    if bare:
        total = sum(r.length for r in regions)
        out.append(
            f"{len(bare)} of {len(regions)} regions ({sum(r.length for r in bare)} of {total} "
            f"bp) have no annotated gene at all ({_examples([str(r) for r in bare])}): they "
            "are labelled intergenic throughout; if the annotation covers only part of the "
            "genome, restrict --region to the annotated part"
        )
    summ = ann.summary
    if summ is not None and summ.format == "gtf" and summ.transcripts:
        same = summ.gene_id_is_transcript_id
        if same * 2 >= summ.transcripts and summ.transcripts > 1:
            out.append(
                f"{summ.path}: {same} of {summ.transcripts} transcripts have gene_id equal to "
                "their transcript_id (a UCSC refGene / Table Browser-style GTF): isoforms are "
                "read as separate genes, overlap each other and get masked "
                "(overlapping_gene); use a GTF whose gene_id names the gene (e.g. "
                "genePredToGtf -genePredExt, or UCSC's bigZips/genes/*.gtf.gz)"
            )
    return out


def _write(
    cfg: PrepareConfig,
    grammar: Grammar,
    genome: Genome,
    regions: list[Region],
    ann: Annotation,
    evidence: Evidence | None,
    tmp: Path,
    input_meta: dict,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    warnings: list[str],
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
            cores = [
                c
                for r in regs
                for c in plan_training_windows(cl.labels, r, ig, wc.length, wc.max_length)
            ]
            written = np.zeros(L, dtype=bool)  # inside some core
            masked = np.zeros(L, dtype=bool)  # masked in some core
            rep = LabelReport()
            for cs, ce in cores:
                a, b = max(0, cs - wc.halo), min(L, ce + wc.halo)
                m = b - a
                lab = np.full(m, IGNORE, dtype=np.uint8)
                msk = np.zeros(m, dtype=bool)
                core_lab = cl.labels[cs:ce].copy()
                core_msk = cl.mask[cs:ce].copy()
                _mask_cut_genes(core_lab, core_msk, ig)
                written[cs:ce] = True
                masked[cs:ce] |= ~core_msk
                rep.total_bp += ce - cs
                rep.masked_bp += int((~core_msk).sum())
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

            def inside(start: int, end: int, regs: list[Region] = regs) -> bool:
                return any(start < r.end and r.start < end for r in regs)

            for st in cl.genes:
                if not inside(st.start, st.end):
                    continue
                _final_status(st, written, masked, wc.max_length)
                rep.counts[st.status] += 1
                gene_rows.append((st.gene_id, cidx[contig], st.start, st.end, st.strand,
                                  st.status, st.transcript or ""))  # fmt: skip
            rep.noncoding_intergenic = sum(1 for _, a, b in cl.noncoding if inside(a, b))
            total.add(rep)
            log(f"{contig}: {len(cores)} windows; {rep}")
        if total.used == 0:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(total.counts.items()))
            warn(
                f"{cfg.gff3}: no usable gene in the written windows "
                f"({total.masked} masked: {reasons or 'no coding gene in the regions'}); "
                "every label is intergenic or masked"
            )
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
        report = total.as_dict() | {"windows": n, "warnings": list(warnings)}
        if evidence is not None:
            report["strandedness"] = evidence.describe()
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


def _final_status(st: GeneStatus, written: np.ndarray, masked: np.ndarray, max_len: int) -> None:
    """In place: a gene labelled ``used`` whose positions were not all written unmasked
    becomes ``region_edge`` (a region end cuts it) or ``window_cut`` (a forced window cut
    runs through it: longer than windows.max_length or no intergenic cut point)."""
    if st.status != "used":
        return
    if not written[st.start : st.end].all():
        st.status, st.detail = "region_edge", "a region end cuts the gene"
    elif masked[st.start : st.end].any():
        st.status = "window_cut"
        st.detail = f"gene {st.end - st.start} bp, windows.max_length {max_len}"


# --------------------------------------------------------------------------- CLI
# The click command lives in the light module genoseg.data.cli (see genoseg/cli.py).
from genoseg.data.cli import prepare_command  # noqa: E402
