"""``genoseg predict`` end to end: options -> genome, model, evidence -> spans -> Predictor
-> outputs. Every output path is checked before any work starts (not an input, its folder
exists); every file is written atomically (genoseg.io.atomic), so an error or a SIGTERM
leaves no partial file.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genoseg.config import load_config
from genoseg.devices import PRECISIONS, inference_dtype, resolve_device
from genoseg.errors import GenosegError

__all__ = ["PredictConfig", "PredictOptions", "plan_spans", "run_predict"]


@dataclass
class EvidenceOptions:
    strandedness: str = "auto"  # auto | unstranded | fr-firststrand (rf) | fr-secondstrand (fr)
    min_mapq: int = 0


@dataclass
class PredictConfig:
    """``configs/predict.yaml``."""

    window: int = 100_000  # chunk length (bases); results do not depend on it
    flank: int = 100_000  # sequence decoded past each end of a region or shard piece
    cache: str = "auto"  # auto | memory | spill | recompute (network outputs between passes)
    device: str = "auto"
    precision: str = "auto"  # auto | float32 | bfloat16: the network's arithmetic
    threads: int = 0
    workers: int = 0  # parallel parts of one long contig (0 = one per CPU thread)
    min_part: int = 500_000  # bases per parallel part at least (shorter: one stream)
    overlap: int = 20_000  # convergence overlap of parallel parts (lengthened when needed)
    evidence: EvidenceOptions = field(default_factory=EvidenceOptions)

    def __post_init__(self) -> None:
        if self.window < 1000:
            raise ValueError(f"'window' must be >= 1000, got {self.window}")
        if self.threads < 0:
            raise ValueError(f"'threads' must be >= 0 (0 = torch's default), got {self.threads}")
        if self.workers < 0 or self.min_part < 1 or self.overlap < 1:
            raise ValueError("'workers' must be >= 0, 'min_part' and 'overlap' >= 1")
        if self.flank < 0:
            raise ValueError(f"'flank' must be >= 0, got {self.flank}")
        if self.cache not in ("auto", "memory", "spill", "recompute"):
            raise ValueError(
                f"'cache' must be auto, memory, spill or recompute, got {self.cache!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"'precision' must be {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"'device' must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class PredictOptions:
    genome: str
    output: str
    bam: str | None = None
    model: str | None = None
    config: str | None = None
    regions: list[str] = field(default_factory=list)
    regions_file: str | None = None
    shard: str | None = None
    bed: str | None = None
    segments_bed: str | None = None
    tracks: str | None = None
    tracks_format: str = "bedgraph"
    cds_fasta: str | None = None
    protein_fasta: str | None = None
    posteriors: bool = True
    strand_average: bool | None = None  # None: the checkpoint's setting
    window: int | None = None
    device: str | None = None
    threads: int | None = None
    precision: str | None = None
    quiet: bool = False
    command: str | None = None


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"genoseg predict: {msg}", file=sys.stderr, flush=True)


def plan_spans(contigs: dict[str, int], targets, shard: tuple[int, int] | None, flank: int):
    """Spans to decode: the target regions (default: every contig), or shard i of n of
    them (genoseg.data.regions.shard_plan); a piece that does not start / end at its
    contig's end is decoded with ``flank`` extra bases on that side and keeps the genes
    that start inside it."""
    from genoseg.data.regions import shard_plan, whole_genome
    from genoseg.predict.pipeline import Span

    if isinstance(targets, dict):
        targets = [r for r in whole_genome(targets) if r.end > r.start]
    pieces = targets if shard is None else shard_plan(targets, shard[1])[shard[0] - 1]
    spans = []
    for r in pieces:
        L = contigs[r.contig]
        spans.append(Span(r.contig, max(0, r.start - flank), min(L, r.end + flank), r.start, r.end))
    return spans


def _set_threads(n: int) -> None:
    """CPU threads for torch (encoder) and numba (engine), capped at numba's maximum."""
    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    except (ImportError, ValueError):  # pragma: no cover - numba is a dependency
        pass


def _check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    from genoseg.io.atomic import check_not_input, is_special
    from genoseg.io.bedgraph import check_tracks_prefix

    given = {k: v for k, v in outputs.items() if v is not None}
    check_not_input(given, inputs)
    check_tracks_prefix(given.get("--tracks"))
    stdout = [k for k, v in given.items() if v == "-"]
    if len(stdout) > 1:
        raise GenosegError(f"only one output can go to stdout ('-'), got {', '.join(stdout)}")
    seen: dict[str, str] = {}
    for opt, path in given.items():
        if path == "-" or (opt != "--tracks" and is_special(path)):  # /dev/stdout, a pipe
            continue
        probe = Path(path + ".x") if opt == "--tracks" else Path(path)
        real = str(probe.resolve())
        if real in seen:
            raise GenosegError(f"{opt} and {seen[real]} name the same file {path}")
        seen[real] = opt
        parent = probe.resolve().parent
        if parent.exists() and not parent.is_dir():
            raise GenosegError(f"{opt} {path}: {parent} is not a folder")
        if not parent.is_dir():
            raise GenosegError(f"{opt} {path}: folder {parent} does not exist")
        try:  # a real probe: os.access says yes to root on read-only file systems
            fd, probe_file = tempfile.mkstemp(dir=parent, prefix=".genoseg-probe-")
            os.close(fd)
            os.unlink(probe_file)
        except OSError as exc:
            raise GenosegError(
                f"{opt} {path}: folder {parent} is not writable ({exc.strerror or exc})"
            ) from None
        if probe.is_dir():
            raise GenosegError(f"{opt} {path}: is a folder")


def run_predict(o: PredictOptions) -> dict:
    """The whole command (see the module doc). Returns a summary: ``genes`` (count), ``bp``
    (bases decoded, flanks included), ``seconds`` (decoding and writing, wall clock) and
    ``timing`` (seconds per stage, :attr:`Predictor.timing` plus ``writing``)."""
    from genoseg import __version__
    from genoseg.data.bam import Evidence
    from genoseg.data.fasta import Genome, index_inputs
    from genoseg.data.regions import merge_regions, parse_region, parse_shard, read_bed_regions
    from genoseg.heap import retain_freed_memory
    from genoseg.io.atomic import install_signal_cleanup
    from genoseg.io.bedgraph import TrackWriter
    from genoseg.io.prediction import Prediction
    from genoseg.model.checkpoint import default_model_path, load_model, resolve_model_path
    from genoseg.model.strands import averages_strands, reads_both_strands
    from genoseg.predict.pipeline import AUTO_MEMORY_BP, Predictor, file_digest
    from genoseg.workflow.merge import genome_digest, run_comment

    over = {"window": o.window, "device": o.device, "threads": o.threads,
            "precision": o.precision}  # fmt: skip
    cfg = load_config(PredictConfig, o.config, {k: v for k, v in over.items() if v is not None})
    shard = parse_shard(o.shard) if o.shard else None
    # --model: a file or a shipped model's name; without it the shipped evidence model
    # when there is a BAM to read, else the shipped default
    model_path = resolve_model_path(o.model) if o.model else default_model_path(bool(o.bam))
    if o.model is None and o.bam and not model_path.is_file():
        model_path = default_model_path()
    if o.model is None and not model_path.is_file():
        raise GenosegError("no default model is installed with this genoseg; pass --model")
    shipped = o.model is None or model_path != Path(o.model)  # a shipped model, by name
    inputs = {"GENOME": o.genome, "--bam": o.bam, "--model": str(model_path), "--config": o.config,
              "--regions-file": o.regions_file, **index_inputs(o.genome, "GENOME")}  # fmt: skip
    outputs = {"-o": o.output, "--bed": o.bed, "--segments-bed": o.segments_bed,
               "--tracks": o.tracks, "--cds-fasta": o.cds_fasta,
               "--protein-fasta": o.protein_fasta}  # fmt: skip
    _check_outputs(outputs, inputs)
    if o.tracks and not o.posteriors:
        raise GenosegError("--tracks needs posteriors: drop --no-posteriors")
    if cfg.threads:
        _set_threads(cfg.threads)
    # SIGTERM / SIGHUP / SIGINT from here on delete every temporary (outputs being written,
    # spilled network outputs) and end the process by the signal (exit status 128 + signum).
    install_signal_cleanup()
    device = resolve_device(cfg.device)
    dtype = inference_dtype(cfg.precision, device)

    genome = Genome.open(o.genome)
    contigs = dict(genome.contigs)
    if not contigs or sum(contigs.values()) == 0:
        raise GenosegError(f"{o.genome}: no sequence records")
    model = load_model(model_path, device=str(device))
    evidence = None
    if o.bam:
        # The BAM is always opened and its header checked against the genome (index,
        # sort order, contig names and lengths), even when the model does not read it:
        # a BAM of another assembly is a user error worth one line, not a silent no-op.
        # Strandedness inference reads alignments, so it runs only when they are used.
        reads = model.uses_evidence
        checked = Evidence.open(
            o.bam, contigs, strandedness=cfg.evidence.strandedness if reads else "unstranded",
            min_mapq=cfg.evidence.min_mapq, reference=o.genome,  # the genome decodes a CRAM
        )  # fmt: skip
        if warning := checked.index_warning:
            log(warning, o.quiet)
        if reads:
            evidence = checked
            log(f"RNA-seq evidence {o.bam}: strandedness {evidence.describe()}", o.quiet)
        else:
            log(f"the model {model_path.name} does not read RNA-seq evidence: --bam checked "
                "against the genome, then ignored", o.quiet)  # fmt: skip
    elif model.uses_evidence:
        log(f"the model {model_path.name} was trained with RNA-seq evidence; without --bam "
            "it sees no coverage (expect lower accuracy)", o.quiet)  # fmt: skip

    regions = [parse_region(r, contigs, source=o.genome) for r in o.regions]
    if o.regions_file:
        regions += read_bed_regions(o.regions_file, contigs, source=o.genome)
    targets = merge_regions(regions, contigs) if regions else contigs
    spans = plan_spans(contigs, targets, shard, cfg.flank)
    if max((s.end - s.start for s in spans), default=0) <= AUTO_MEMORY_BP:
        # chunks reuse the memory earlier chunks freed instead of page-faulting it in again
        # (not for longer stretches: there the retained heap fragments around the states
        # kept for the whole stretch, and peak memory would grow faster with its length)
        retain_freed_memory()

    strand_average = averages_strands(model) if o.strand_average is None else o.strand_average
    both_strands = strand_average or reads_both_strands(model)
    if o.strand_average is False and reads_both_strands(model):
        log(f"{model_path.name} reads both strands by itself (trained so, or RC-equivariant): "
            "--no-strand-average changes nothing", o.quiet)  # fmt: skip
    run_line = run_comment(
        genome_digest(contigs), file_digest(model_path), shard or (1, 1),
        posteriors=o.posteriors, bam=evidence is not None,
        strand_average=strand_average,
    )  # fmt: skip
    pred = Prediction(
        contigs, grammar=model.grammar, command=o.command,
        model=f"{model_path.stem} (shipped with genoseg {__version__})" if shipped
        else str(model_path),
        comments=[run_line],
    )  # fmt: skip
    track_writer = None
    if o.tracks:
        track_writer = TrackWriter(o.tracks, contigs, fmt=o.tracks_format, inputs=inputs)

    def on_tracks(contig: str, chunks: dict, span) -> None:
        # every track is passed on, clipped to the kept range (empty when outside it): the
        # tracks of one chunk end at different bases (codon and splice-site signals stop
        # short), so at the edge of a region some are inside and others not
        clipped = {}
        for name, ch in chunks.items():
            lo, hi = max(ch.start, span.keep_start), min(ch.end, span.keep_end)
            hi = max(hi, lo)
            clipped[name] = type(ch)(ch.name, lo, ch.values[lo - ch.start : hi - ch.start])
        if any(len(ch.values) for ch in clipped.values()):
            track_writer.add(contig, clipped)

    total = sum(s.end - s.start for s in spans)
    log(f"{len(spans)} stretch(es), {total:,} bp; model {model_path.name} (halo "
        f"{model.halo} bp{', both strands averaged' if both_strands else ''}); device "
        f"{device} ({str(dtype).removeprefix('torch.')}); "
        f"{'posteriors' if o.posteriors else 'Viterbi only'}",
        o.quiet)  # fmt: skip
    t0 = time.monotonic()
    workers = cfg.workers or (1 if device.type == "cuda" else torch.get_num_threads())
    from genoseg.predict.pipeline import _Progress

    prog = _Progress(total, 4 if o.posteriors else 2, o.quiet)
    torch_threads = torch.get_num_threads()
    try:
        if device.type == "cpu" and workers > 1 and not cfg.threads:
            # one core per worker thread, encoder included: encoders side by side on one
            # thread each beat one at a time on all cores while the engine waits for a core
            torch.set_num_threads(1)
        predictor = Predictor(model, genome, evidence, window=cfg.window,
                              posteriors=o.posteriors, cache=cfg.cache, quiet=o.quiet,
                              workers=workers, min_part=cfg.min_part,
                              overlap=cfg.overlap,
                              strand_average=strand_average, dtype=dtype)  # fmt: skip
        sink = None
        if track_writer is not None:
            sink = lambda span, c, ch: on_tracks(c, ch, span)  # noqa: E731
        for span, res in zip(spans, predictor.predict_spans(spans, prog, sink)):
            pred.add(span.contig, res.genes, res.segments)
        prog.close()
        el = time.monotonic() - t0
        n_genes = len(pred.genes)
        log(f"{n_genes} genes in {el:.1f} s ({total / max(el, 1e-9) / 1e3:.1f} kb/s)", o.quiet)
        t1 = time.monotonic()
        pred.write_gff3(o.output, inputs=inputs)
        if o.bed:
            pred.write_bed(o.bed, inputs=inputs)
        if o.segments_bed:
            pred.write_segments_bed(o.segments_bed, inputs=inputs)
        if o.cds_fasta:
            pred.write_fasta(o.cds_fasta, genome, kind="cds", option="--cds-fasta", inputs=inputs)
        if o.protein_fasta:
            pred.write_fasta(o.protein_fasta, genome, kind="protein", option="--protein-fasta",
                             inputs=inputs)  # fmt: skip
        if track_writer is not None:
            track_writer.close()
            track_writer = None
        t = predictor.timing
        t["writing"] += time.monotonic() - t1
        log("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()), o.quiet)
        return {"genes": n_genes, "bp": total, "seconds": time.monotonic() - t0, "timing": t}
    finally:
        torch.set_num_threads(torch_threads)
        if track_writer is not None:
            track_writer.abort()
