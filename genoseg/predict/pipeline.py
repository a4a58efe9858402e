"""Whole-contig prediction: model -> engine streams -> gene models with exact posteriors.

For every stretch of a contig that is decoded (the whole contig, or a shard's share plus
flanks), positions are cut into chunks of ``window`` bases. Chunk ``[c0, c1)`` (0-based,
half-open, forward strand) is scored from:

* the encoder over ``[c0 - halo, c1 + halo]`` (clipped at the contig ends, where the
  encoder's zero padding is the contig end), so its scores do not depend on where chunks
  fall (window invariance of the encoder);
* the grammar's hard rules compiled over ``[c0 - G, c1 + halo]`` with G = the longest
  allowed exon (+3): an exon ending in the chunk may reach back that far, and its open
  reading frame bound (max_dur) needs the bases it covers;
* the frame prefix sums carried from the previous chunk (genoseg.model.heads).

The engine streams carry their exact state from chunk to chunk, so the decoded contig is
exactly the one-call result whatever ``window`` is (tested with several windows and
offsets). Passes over the chunks:

1. Viterbi forward, 2. Viterbi traceback (chunks in reverse) -> the best path;
3. posterior forward with the path's exons, introns and transcripts as chains,
4. posterior backward (chunks in reverse) -> per-position and boundary posteriors (tracks)
   and the exact chain marginals: P(this exon / intron / whole transcript is in the path).

Network outputs of a chunk are computed once and kept for the later passes
(``cache="memory"``), written to a temporary file and read back (``"spill"``), or recomputed
(``"recompute"``); see docs/predict.md for the measured trade-off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genoseg.crf.stream import PosteriorStream, ViterbiStream
from genoseg.data.bam import Evidence
from genoseg.data.fasta import Genome
from genoseg.decode.genes import Gene, Segment, genes_from_path
from genoseg.decode.tracks import (
    TrackChunk,
    boundary_posteriors,
    fill_boundary_posteriors,
    posterior_tracks,
)
from genoseg.errors import GenosegError
from genoseg.model.gene_model import GeneModel, compile_rows
from genoseg.model.heads import N_OUTPUTS, engine_scores, frame_carry
from genoseg.model.strands import averages_strands, strand_averaged_outputs

__all__ = ["ContigResult", "Predictor", "Span"]

#: ``cache="auto"`` keeps the network outputs of spans up to this long in memory (68 bytes
#: per base: 136 MB) and spills longer ones to a temporary file, so that peak memory does
#: not grow with contig length.
AUTO_MEMORY_BP = 2_000_000
#: Spans up to this long keep their Viterbi back-pointers from pass 1 (3 bytes per base and
#: label: 135 MB per Mb for the gene grammar), so pass 2 only traces back instead of
#: recomputing every chunk; longer ones recompute, and memory does not grow with them.
KEEP_POINTERS_BP = 1_000_000


@dataclass(frozen=True)
class Span:
    """A stretch to decode: contig rows ``[start, end)`` (0-based half-open), of which the
    genes whose lowest coordinate lies in ``[keep_start, keep_end)`` are kept."""

    contig: str
    start: int
    end: int
    keep_start: int
    keep_end: int


@dataclass
class ContigResult:
    """Decoded genes and path segments of one span (contig coordinates)."""

    span: Span
    genes: list[Gene] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    log_z: float | None = None


class _Progress:
    """Bases done across all passes, bp/s and ETA on stderr (a bar on a TTY, lines
    otherwise, nothing when quiet)."""

    def __init__(self, total_bp: int, passes: int, quiet: bool):
        self.total = max(1, total_bp * passes)
        self.done = 0
        self.t0 = time.monotonic()
        self.last = 0.0
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.lock = threading.Lock()

    def add(self, bp: int) -> None:
        with self.lock:
            self.done += bp
        if self.quiet:
            return
        now = time.monotonic()
        if now - self.last < (0.5 if self.tty else 30.0) and self.done < self.total:
            return
        self.last = now
        el = max(now - self.t0, 1e-9)
        rate = self.done / el
        eta = (self.total - self.done) / max(rate, 1e-9)
        pct = min(100.0, 100 * self.done / self.total)
        msg = (f"genoseg predict: {pct:5.1f}% {rate / 1e3:8.1f} kb/s "
               f"(all passes) ETA {eta:6.0f} s")  # fmt: skip
        if self.tty:
            print("\r" + msg, end="", file=sys.stderr, flush=True)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr, flush=True)


class Predictor:
    """Decode contigs with a :class:`GeneModel` (library entry point of ``genoseg predict``).

    Args:
        model: the model (eval mode, on ``device``).
        genome: the opened FASTA.
        evidence: the opened BAM (only when the model reads evidence), or None.
        window: chunk length in bases (results do not depend on it).
        posteriors: compute exact posteriors (4 passes) or only the Viterbi path (2).
        cache: ``auto`` | ``memory`` | ``spill`` | ``recompute`` (module doc); ``auto`` keeps
            spans up to :data:`AUTO_MEMORY_BP` in memory and spills longer ones.
        on_tracks: called with (contig, {track: TrackChunk}) for every chunk of posteriors.
        workers, min_part, overlap: a stretch of at least ``2 * min_part`` bases is decoded
            in ``min(workers, length // min_part)`` parallel parts (genoseg.crf.parallel:
            exact, each part converged over ``overlap`` bases, lengthened when a check
            fails); shorter stretches use one stream each, and :meth:`predict_spans` decodes
            up to ``workers`` of them at once (threads; one encoder call at a time), the
            last of them in parts of at least ``4 * overlap`` bases (load balance).
        strand_average: average the network's outputs over both strands
            (genoseg.model.strands; twice the encoder's work); None: the checkpoint's
            ``calibration["strand_average"]`` (default off). A model configured with
            ``strand_average`` averages by itself either way.
        dtype: the network's arithmetic (GeneModel.outputs; None: its default). The
            encoder's outputs at a position do not depend on the window in either.
    """

    def __init__(
        self,
        model: GeneModel,
        genome: Genome,
        evidence: Evidence | None = None,
        *,
        window: int = 100_000,
        posteriors: bool = True,
        cache: str = "auto",
        on_tracks: Callable[[str, dict], None] | None = None,
        quiet: bool = False,
        workers: int = 1,
        min_part: int = 500_000,
        overlap: int = 20_000,
        strand_average: bool | None = None,
        dtype: torch.dtype | None = None,
    ):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if cache not in ("auto", "memory", "spill", "recompute"):
            raise ValueError(f"cache must be auto, memory, spill or recompute, got {cache!r}")
        self.model = model
        self.grammar = model.grammar
        self.genome = genome
        self.evidence = evidence
        self.window = window
        self.posteriors = posteriors
        self.cache = cache
        self.on_tracks = on_tracks
        self.quiet = quiet
        self.dtype = dtype
        if model.cfg.centering == "label_mean":
            raise ValueError(
                "the model centres emissions by their mean over a window (label_mean): its "
                "scores depend on where windows fall, so it cannot decode seam-free"
            )
        self.workers, self.min_part, self.overlap = workers, min_part, overlap
        self.device = next(model.parameters()).device
        with torch.no_grad():
            tabs = model.structure.tables()
        # posterior calibration (genoseg.train.calibrate): every score divided by T
        self.temperature = float(getattr(model, "calibration", {}).get("temperature", 1.0))
        # both strands' outputs averaged: the checkpoint's setting unless given
        # (strand_averaged_outputs does not average a model that reads both strands again)
        self.strand_average = averages_strands(model) if strand_average is None else strand_average
        self.tables = {k: v.detach().float().cpu() / self.temperature for k, v in tabs.items()}
        D = self.tables["durations"].numpy()
        C = self.grammar.num_labels
        exon = [c for c in range(C) if self.grammar.labels[c].is_exon]
        longest = max(int(np.flatnonzero(np.isfinite(D[c]))[-1]) + 1 for c in exon)
        self.grammar_context = longest + 3
        # seconds: encoder (network), compile (grammar rules), scores (network outputs ->
        # engine inputs), engine (streams), decode (boundary posteriors, tracks), writing
        # (track chunks handed to on_tracks; genoseg predict adds the final files)
        # (summed over threads when stretches are decoded concurrently)
        self.timing = {"encoder": 0.0, "compile": 0.0, "scores": 0.0, "engine": 0.0,
                       "decode": 0.0, "writing": 0.0}  # fmt: skip
        self._timing_lock = threading.Lock()
        # encoder calls on all torch threads run one at a time; on one thread each (several
        # workers on CPU, genoseg.predict.run) side by side
        self._encoder_lock = (threading.Lock() if torch.get_num_threads() > 1
                              else contextlib.nullcontext())  # fmt: skip

    @property
    def _cuda(self) -> bool:
        """The streams run the Triton kernels (CUDA tensors)."""
        return self.device.type == "cuda"

    def _tick(self, stage: str, t0: float) -> None:
        dt = time.monotonic() - t0
        with self._timing_lock:
            self.timing[stage] += dt

    # -- one chunk ------------------------------------------------------------------

    def _outputs(self, contig: str, c0: int, c1: int) -> np.ndarray:
        """Network outputs (c1 - c0, N_OUTPUTS) float32 of contig rows [c0, c1)."""
        L = self.genome.length(contig)
        h = self.model.halo
        lo, hi = max(0, c0 - h), min(L, c1 + h)
        t0 = time.monotonic()
        codes, soft = self.genome.encode(contig, lo, hi)
        seq = torch.from_numpy(codes.astype(np.int64)).unsqueeze(0).to(self.device)
        sm = torch.from_numpy(soft).unsqueeze(0).to(self.device)
        ev = None
        if self.model.uses_evidence and self.evidence is not None:
            ev = torch.from_numpy(self.evidence.track(contig, lo, hi)).unsqueeze(0)
            ev = ev.to(self.device)
        self._tick("encoder", t0)  # reading the sequence and evidence
        with self._encoder_lock, torch.no_grad():
            t0 = time.monotonic()  # (not the wait for another thread's encoder call)
            if self.strand_average:
                out = strand_averaged_outputs(self.model, seq, sm, ev, dtype=self.dtype)
            else:
                out = self.model.outputs(seq, sm, ev, dtype=self.dtype)
            out = out[0, c0 - lo : c1 - lo]
            out = out.float().cpu().numpy()
            self._tick("encoder", t0)
        return out

    def _structural(self, contig: str, c0: int, c1: int, open_start: bool, open_end: bool):
        """The grammar's rules (seg_start, seg_end, max_dur; (T, C) numpy) of rows [c0, c1)."""
        L = self.genome.length(contig)
        lo = max(0, c0 - self.grammar_context)
        hi = min(L, c1 + max(self.model.halo, 8))
        t0 = time.monotonic()
        codes, _ = self.genome.encode(contig, lo, hi)
        st = compile_rows(
            self.grammar, codes, c0 - lo, hi - c1, open_start=open_start, open_end=open_end
        )
        self._tick("compile", t0)
        return st

    def _chunk_inputs(self, span: Span, c0: int, c1: int, out: np.ndarray, carry: np.ndarray):
        """(engine inputs of the chunk, frame carry after it): GeneModel.crf_inputs
        fused into one numba pass (genoseg.model.heads.engine_scores, tested against it)."""
        rules = self._structural(
            span.contig, c0, c1, open_start=c0 == span.start and span.start > 0,
            open_end=c1 == span.end and span.end < self.genome.length(span.contig),
        )  # fmt: skip
        t0 = time.monotonic()
        h, ss, se, carry = engine_scores(
            out, rules["seg_start"], rules["seg_end"], self.model.label_map,
            centering=self.model.cfg.centering, offset=c0, carry=carry,
            temperature=self.temperature,
        )  # fmt: skip
        md = np.ascontiguousarray(rules["max_dur"])
        chunk = tuple(torch.from_numpy(v).unsqueeze(0) for v in (h, ss, se, md))
        if self.device.type == "cuda":  # the streams run the Triton kernels there
            chunk = tuple(t.to(self.device) for t in chunk)
        self._tick("scores", t0)
        return chunk, carry

    # -- chunk output cache -----------------------------------------------------------

    def _chunks(self, span: Span) -> list[tuple[int, int]]:
        return [
            (a, min(a + self.window, span.end)) for a in range(span.start, span.end, self.window)
        ]

    def _pass(self, span: Span, store, reverse: bool, prog: _Progress) -> Iterator[tuple]:
        """Yield (c0, c1, engine inputs) for every chunk, in order or reversed."""
        chunks = self._chunks(span)
        order = range(len(chunks) - 1, -1, -1) if reverse else range(len(chunks))
        for k in order:
            c0, c1 = chunks[k]
            if store.last is not None and store.last[0] == k:
                # a pass starts where the previous one ended (passes alternate direction):
                # reuse that chunk's engine inputs (all of them for a one-chunk span)
                inputs = store.last[1]
            else:
                store.last = None  # free it before building the next chunk's inputs
                out = store.get(k, c0, c1)
                carry = store.carries[k]
                inputs, nxt = self._chunk_inputs(span, c0, c1, out, carry)
                if k + 1 < len(chunks) and store.carries[k + 1] is None:
                    store.carries[k + 1] = nxt
            store.last = (k, inputs)
            yield c0, c1, inputs
            prog.add(c1 - c0)

    # -- a span -----------------------------------------------------------------------

    def predict_spans(
        self,
        spans: list[Span],
        prog: _Progress | None = None,
        on_tracks: Callable[[Span, str, dict], None] | None = None,
    ) -> Iterator[ContigResult]:
        """Decode ``spans``, yielding their results in order. With ``workers`` > 1, spans
        too short for parallel parts run up to ``workers`` at a time in threads (the
        engine releases the GIL), at most ``2 * workers`` of them in flight; their track
        chunks are buffered (at most 2 * min_part bases each) and handed to
        ``on_tracks(span, contig, chunks)`` in span order, exactly as one at a time. The
        last of them that is at least ``8 * overlap`` long is decoded in parallel parts
        while the others finish, so that a lone or last contig does not leave cores idle
        (the parts' results equal one stream's: genoseg.crf.parallel)."""
        if self.workers <= 1:
            for span in spans:
                sink = None if on_tracks is None else _bind(on_tracks, span)
                yield self.predict_span(span, prog, sink)
            return
        pending: deque[tuple[Future, Span, list]] = deque()

        def drain() -> ContigResult:
            fut, span, buf = pending.popleft()
            res = fut.result()
            if on_tracks is not None:
                t0 = time.monotonic()
                for contig, chunks in buf:
                    on_tracks(span, contig, chunks)
                self._tick("writing", t0)
            return res

        # the last span long enough to split is decoded in parts alongside the spans still
        # running, so the cores do not idle while it runs alone (a single short contig
        # included)
        tail = max((i for i, s in enumerate(spans) if self._parts(s) == 1
                    and self._tail_parts(s) > 1), default=-1)  # fmt: skip
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="genoseg-span")
        try:
            for i, span in enumerate(spans):
                if self._parts(span) > 1:  # parallel parts: alone, tracks written directly
                    while pending:
                        yield drain()
                    sink = None if on_tracks is None else _bind(on_tracks, span)
                    yield self.predict_span(span, prog, sink)
                    continue
                # up to 2 x workers queued: a thread that finishes early takes the next
                # span while an earlier, longer one is still running
                while len(pending) >= 2 * self.workers:
                    yield drain()
                buf: list = []
                sink = None if on_tracks is None else (lambda c, ch, b=buf: b.append((c, ch)))
                parts = self._tail_parts(span) if i == tail else 1
                fut = pool.submit(self.predict_span, span, prog, sink, parts)
                pending.append((fut, span, buf))
            while pending:
                yield drain()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def predict_span(
        self,
        span: Span,
        prog: _Progress | None = None,
        on_tracks: Callable[[str, dict], None] | None = None,
        parts: int | None = None,
    ) -> ContigResult:
        """Decode one span (see :class:`Span`); ``on_tracks(contig, chunks)`` gets every
        chunk's posterior tracks (default: the ``on_tracks`` given to the constructor).
        ``parts``: parallel parts (default: ``min(workers, length // min_part)``)."""
        sink = on_tracks if on_tracks is not None else self.on_tracks
        own = prog is None
        if own:
            prog = _Progress(span.end - span.start, 4 if self.posteriors else 2, self.quiet)
        mode = self.cache
        if mode == "auto":
            mode = "memory" if span.end - span.start <= AUTO_MEMORY_BP else "spill"
        store = _OutputStore(self, span, mode)
        try:
            res = self._decode(span, store, prog, sink, parts or self._parts(span))
        finally:
            store.close()
            if own:
                prog.close()
        return res

    def _stream_args(self, open_start: bool, open_end: bool):
        t = self.tables
        init = torch.zeros_like(t["init"]) if open_start else t["init"]
        final = torch.zeros_like(t["final"]) if open_end else t["final"]
        args = (t["transitions"], t["durations"], init, final, t["tail"])
        return tuple(a.to(self.device) for a in args) if self.device.type == "cuda" else args

    def _parts(self, span: Span) -> int:
        return max(1, min(self.workers, (span.end - span.start) // max(1, self.min_part)))

    def _tail_parts(self, span: Span) -> int:
        """Parts for a span that would otherwise run alone: each at least 4 overlaps long
        (the parts' overlaps cost at most about a quarter more engine work)."""
        return max(1, min(self.workers, (span.end - span.start) // (4 * max(1, self.overlap))))

    def _rows(self, span: Span, store, prog: _Progress):
        """``rows(a, b)`` for genoseg.crf.parallel: the engine inputs of span rows [a, b)
        (span-relative), exactly as the sequential passes build them (frame carry from
        the chunk's start). Fills every chunk's carry first (one pass over the outputs)."""
        chunks = self._chunks(span)
        for k, (c0, c1) in enumerate(chunks[:-1]):
            out = store.get(k, c0, c1)
            store.carries[k + 1] = self._advance_carry(out, c0, store.carries[k])
            prog.add(c1 - c0)
        prog.add(chunks[-1][1] - chunks[-1][0])

        def rows(a: int, b: int):
            c0, c1 = span.start + a, span.start + b
            k0, k1 = (c0 - span.start) // self.window, (c1 - 1 - span.start) // self.window
            base = chunks[k0][0]
            out = np.concatenate([store.get(k, *chunks[k]) for k in range(k0, k1 + 1)])
            carry = store.carries[k0]
            if c0 > base:
                carry = self._advance_carry(out[: c0 - base], base, carry)
            inputs, _ = self._chunk_inputs(span, c0, c1, out[c0 - base : c1 - base], carry)
            prog.add(c1 - c0)
            return inputs

        return rows

    def _advance_carry(self, out: np.ndarray, offset: int, carry: np.ndarray) -> np.ndarray:
        """Frame prefix sums after the rows ``out`` (rows from ``offset``)."""
        t0 = time.monotonic()
        nxt = frame_carry(out, offset=offset, carry=carry)
        self._tick("scores", t0)
        return nxt

    def _decode_parallel(
        self, span: Span, store, prog: _Progress, parts: int, sink
    ) -> ContigResult:
        from genoseg.crf import parallel as par

        L = self.genome.length(span.contig)
        T = span.end - span.start
        A, D, init, final, tail = self._stream_args(span.start > 0, span.end < L)
        tables = {"transitions": A, "durations": D, "init": init, "final": final, "tail": tail}
        rows = self._rows(span, store, prog)
        # rows() is thread-safe (numba/numpy, per-thread FASTA handles, one encoder at a
        # time), so parts build their inputs in parallel too
        common = dict(parts=parts, overlap=self.overlap, chunk=self.window, workers=parts,
                      thread_safe_rows=True)  # fmt: skip
        t0 = time.monotonic()
        vit = par.parallel_viterbi(rows, T, tables, keep_pointers=KEEP_POINTERS_BP, **common)
        self._tick("engine", t0)
        segments = self._segments(span, vit.segments)
        if not self.posteriors:
            return self._finish(span, segments, None, None)
        chains, chain_of = self._chains(span, segments)
        seg_list = list(segments)
        marks = _marks(segments)

        # a part's chunks wait in memory until it can be delivered: its tracks wait on disk
        spool = _TrackSpool() if sink is not None else None

        def reduce(a: int, b: int, m):  # in the part's worker
            kept = self._keep_chunk(span, span.start + a, span.start + b, m, marks, sink)
            return kept if spool is None else (*kept[:3], spool.put(kept[3]))

        def on_chunk(a: int, b: int, kept) -> None:
            nonlocal seg_list
            if spool is not None:
                kept = (*kept[:3], spool.take(kept[3]))
            seg_list = self._apply_chunk(span, span.start + a, span.start + b, kept, seg_list,
                                         sink)  # fmt: skip

        t0 = time.monotonic()
        try:
            post = par.parallel_posteriors(
                rows, T, tables, chains=chains, on_chunk=on_chunk, reduce=reduce, **common
            )
        finally:
            if spool is not None:
                spool.close()
        self._tick("engine", t0)
        marg = post.chain_marginals.numpy()
        return self._finish(span, seg_list, marg, chain_of, post.log_z)

    def _keep_chunk(self, span: Span, c0: int, c1: int, m, marks: np.ndarray, sink):
        """What a span keeps of the posteriors of contig rows [c0, c1): the boundary
        posteriors at ``marks`` (the rows where a path segment starts or has its last base,
        all the genes need) and the tracks when there is a ``sink`` -- not 12·C bytes per
        row (parallel parts compute it in their workers)."""
        t0 = time.monotonic()
        st, en = m.start[0].cpu().numpy(), m.end[0].cpu().numpy()
        lower, upper = boundary_posteriors(self.grammar, st, en)
        idx = marks[(marks >= c0) & (marks < c1)] - c0
        tracks = None
        if sink is not None:
            L = self.genome.length(span.contig)
            tracks = posterior_tracks(self.grammar, m.position[0].cpu().numpy(), st, en,
                                      offset=c0, contig_length=L if c1 == L else None)  # fmt: skip
        self._tick("decode", t0)
        return idx, lower[idx], upper[idx], tracks

    def _apply_chunk(self, span: Span, c0: int, c1: int, kept, seg_list: list[Segment], sink):
        """Boundary posteriors of a :meth:`_keep_chunk` result onto the path's segments,
        and its tracks to ``sink``; returns the updated segments."""
        idx, low, up, tracks = kept
        lower = np.zeros((c1 - c0, low.shape[1]), np.float32)
        upper = np.zeros_like(lower)
        lower[idx], upper[idx] = low, up
        fill_boundary_posteriors(seg_list, lower, upper, offset=c0)
        if tracks is not None:
            t0 = time.monotonic()
            sink(span.contig, tracks)
            self._tick("writing", t0)
        return seg_list

    def _segments(self, span: Span, path) -> list[Segment]:
        """The decoded path (span-relative (start, end, label)) in contig coordinates,
        without genes cut by an open end of the stretch."""
        path = [(s + span.start, e + span.start, c) for s, e, c in path]
        return [Segment(*p) for p in _complete_genes(path, self.grammar.intergenic)]

    def _chains(self, span: Span, segments: list[Segment]):
        """Chains whose exact marginals the posterior pass computes (see :func:`_chains`)."""
        genes = genes_from_path(self.grammar, span.contig, segments)
        return _chains(segments, genes, span.start, self.grammar.intergenic)

    def _decode(self, span: Span, store, prog: _Progress, sink, parts: int) -> ContigResult:
        if parts > 1:
            return self._decode_parallel(span, store, prog, parts, sink)
        L = self.genome.length(span.contig)
        args = self._stream_args(span.start > 0, span.end < L)
        # a short span keeps its Viterbi back-pointers from the forward pass, and its
        # posterior forward runs in the same pass (the chains are given after it, CPU
        # engine): 2 passes over the chunks' inputs instead of 4
        keep = span.end - span.start <= KEEP_POINTERS_BP
        vs = ViterbiStream(*args, keep_pointers=keep)
        ps = PosteriorStream(*args) if self.posteriors and keep and not self._cuda else None
        for _, _, inp in self._pass(span, store, False, prog):
            t0 = time.monotonic()
            vs.forward(*inp)
            if ps is not None:
                ps.forward(*inp)
            self._tick("engine", t0)
        pieces: list[list[tuple[int, int, int]]] = []  # traced on the host
        if keep:
            for c0, c1 in reversed(self._chunks(span)):
                t0 = time.monotonic()
                pieces.append(vs.backward()[0])
                self._tick("engine", t0)
                prog.add(c1 - c0)
        else:
            for _, _, inp in self._pass(span, store, True, prog):
                t0 = time.monotonic()
                pieces.append(vs.backward(*inp)[0])
                self._tick("engine", t0)
        del vs
        segments = self._segments(span, [seg for piece in reversed(pieces) for seg in piece])
        if not self.posteriors:
            return self._finish(span, segments, None, None)
        # the posteriors, with the path's segments and transcripts as chains
        chains, chain_of = self._chains(span, segments)
        if ps is not None:
            ps.set_chains([chains])
            prog.add(span.end - span.start)  # (its forward pass ran with the Viterbi's)
        else:
            ps = PosteriorStream(*args, chains=[chains])
            for _, _, inp in self._pass(span, store, False, prog):
                t0 = time.monotonic()
                ps.forward(*inp)
                self._tick("engine", t0)
        seg_list = list(segments)
        marks = _marks(segments)
        for c0, c1, inp in self._pass(span, store, True, prog):
            t0 = time.monotonic()
            m = ps.backward(*inp)
            self._tick("engine", t0)
            kept = self._keep_chunk(span, c0, c1, m, marks, sink)
            seg_list = self._apply_chunk(span, c0, c1, kept, seg_list, sink)
        marg = ps.chain_marginals()[0].numpy()
        log_z = float(ps.log_z()[0])
        return self._finish(span, seg_list, marg, chain_of, log_z)

    def _finish(self, span, segments, marg, chain_of, log_z=None) -> ContigResult:
        if marg is not None:
            segments = [
                Segment(s.start, s.end, s.label, float(marg[chain_of[("seg", i)]]),
                        s.start_posterior, s.end_posterior)
                if ("seg", i) in chain_of else s
                for i, s in enumerate(segments)
            ]  # fmt: skip
        genes = genes_from_path(self.grammar, span.contig, segments)
        kept = [g for g in genes if span.keep_start <= g.start < span.keep_end]
        if marg is not None:
            for g in kept:
                for tx in g.transcripts:
                    key = ("tx", tx.start, tx.end)
                    if key in chain_of:
                        tx.posterior = float(marg[chain_of[key]])
        segs = [s for s in segments if span.keep_start <= s.start < span.keep_end]
        return ContigResult(span, kept, segs, log_z)


def _bind(on_tracks: Callable[[Span, str, dict], None], span: Span):
    return lambda contig, chunks: on_tracks(span, contig, chunks)


def _marks(segments: list[Segment]) -> np.ndarray:
    """Contig rows where a path segment starts or has its last base (sorted, unique)."""
    rows = [s.start for s in segments] + [s.end - 1 for s in segments]
    return np.unique(np.array(rows, dtype=np.int64))


def _complete_genes(path: list[tuple[int, int, int]], ig: int) -> list[tuple[int, int, int]]:
    """Drop a gene cut by the end of a decoded stretch (open boundaries of a shard's
    flank): everything before the first and after the last intergenic segment."""
    idx = [i for i, (_, _, c) in enumerate(path) if c == ig]
    if not idx:
        return []
    return path[idx[0] : idx[-1] + 1]


def _chains(segments: list[Segment], genes: list[Gene], origin: int, ig: int):
    """Chains (span-relative coordinates) whose marginals are wanted: every non-intergenic
    segment, and every transcript as the run of its segments. Returns (chains, index of
    ("seg", i) / ("tx", start, end) in chains)."""
    chains: list[list[tuple[int, int, int]]] = []
    where: dict = {}
    for i, s in enumerate(segments):
        if s.label != ig:
            where[("seg", i)] = len(chains)
            chains.append([(s.start - origin, s.end - origin, s.label)])
    starts = {s.start: i for i, s in enumerate(segments)}
    for g in genes:
        for tx in g.transcripts:
            i = starts[tx.start]
            run = []
            while i < len(segments) and segments[i].end <= tx.end:
                s = segments[i]
                run.append((s.start - origin, s.end - origin, s.label))
                i += 1
            where[("tx", tx.start, tx.end)] = len(chains)
            chains.append(run)
    return chains, where


class _OutputStore:
    """Network outputs of a span's chunks for the later passes (module doc), plus the frame
    carry at every chunk start."""

    def __init__(self, pred: Predictor, span: Span, mode: str):
        self.pred, self.span, self.mode = pred, span, mode
        n = len(pred._chunks(span))
        self.carries: list[np.ndarray | None] = [None] * n
        self.carries[0] = None if n == 0 else np.zeros((2, 3))
        self.mem: dict[int, np.ndarray] = {}
        self.file = _Spool(".f32") if mode == "spill" and n else None
        self.have: set[int] = set()
        self.last: tuple[int, tuple] | None = None  # (chunk, engine inputs) of the last yield

    def get(self, k: int, c0: int, c1: int) -> np.ndarray:
        if self.mode == "memory" and k in self.mem:
            return self.mem[k]
        at = (c0 - self.span.start) * N_OUTPUTS * 4
        if self.mode == "spill" and k in self.have:
            raw = self.file.read(at, (c1 - c0) * N_OUTPUTS * 4)
            return np.frombuffer(raw, dtype=np.float32).reshape(c1 - c0, N_OUTPUTS)
        out = self.pred._outputs(self.span.contig, c0, c1)
        if self.mode == "memory":
            self.mem[k] = out
        elif self.mode == "spill":
            self.file.write(np.ascontiguousarray(out, dtype=np.float32).tobytes(), at)
            self.have.add(k)
        return out

    def close(self) -> None:
        self.last = None
        self.mem.clear()
        if self.file is not None:
            self.file.close()
            self.file = None


def _spill_error(exc: OSError) -> GenosegError:
    return GenosegError(
        f"temporary folder {tempfile.gettempdir()}: cannot write the data kept between passes "
        f"({exc.strerror or exc}); set TMPDIR to a folder with more space (or, for network "
        "outputs, cache: memory or recompute in the predict config)"
    )


class _Spool:
    """An anonymous temporary file for data kept between passes. Created and unlinked at
    once (POSIX): the open descriptor keeps it alive and nothing is left in TMPDIR however
    the process ends (SIGTERM, SIGKILL). Read and written with pread/pwrite, not mapped:
    its pages stay in the page cache and do not count in the process's resident memory.
    Thread-safe (positional I/O; :meth:`append` reserves its range under a lock)."""

    def __init__(self, suffix: str):
        try:
            fd, path = tempfile.mkstemp(prefix="genoseg-predict-", suffix=suffix)
        except OSError as exc:
            raise _spill_error(exc) from None
        self.fd: int | None = fd
        self.path: str | None = None
        try:
            os.unlink(path)
        except OSError:  # pragma: no cover - platforms that cannot unlink an open file
            self.path = path
        self.size = 0
        self.lock = threading.Lock()

    def write(self, data: bytes, at: int) -> None:
        done = 0
        try:
            while done < len(data):  # pwrite may write less than asked
                done += os.pwrite(self.fd, data[done:], at + done)
        except OSError as exc:
            raise _spill_error(exc) from None

    def append(self, data: bytes) -> int:
        """Write ``data`` after everything appended so far; returns its offset."""
        with self.lock:
            at, self.size = self.size, self.size + len(data)
        self.write(data, at)
        return at

    def read(self, at: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:  # pread may return less than asked
            part = os.pread(self.fd, n - len(out), at + len(out))
            if not part:
                raise OSError(f"temporary file ended at {at + len(out)}, {n} bytes wanted")
            out += part
        return bytes(out)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.path is not None:  # pragma: no cover
            os.unlink(self.path)
            self.path = None


class _TrackSpool(_Spool):
    """Posterior tracks of a span's chunks parked on disk while a parallel part waits to be
    delivered in contig order (its chunks are kept until its neighbours are checked), so
    memory does not grow with the part's length. :meth:`put` returns a token for
    :meth:`take`."""

    def __init__(self):
        super().__init__(".tracks")

    def put(self, tracks: dict[str, TrackChunk]) -> list[tuple[str, int, int, int]]:
        token = []
        for name, t in tracks.items():
            v = np.ascontiguousarray(t.values, dtype=np.float32)
            token.append((name, t.start, len(v), self.append(v.tobytes())))
        return token

    def take(self, token: list[tuple[str, int, int, int]]) -> dict[str, TrackChunk]:
        return {
            name: TrackChunk(name, start, np.frombuffer(self.read(at, 4 * n), dtype=np.float32))
            for name, start, n, at in token
        }


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(Path(path), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
