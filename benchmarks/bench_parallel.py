"""Chunk-parallel decoding of one contig (genoseg.crf.parallel) against the sequential
streams: the default gene grammar (both strands) compiled on random DNA, random N(0, s²)
emissions, Viterbi path and exact posteriors, wall and CPU time, equality of the results.

    .venv/bin/python benchmarks/bench_parallel.py [--length 1000000] [--workers 2]

Prints a markdown table (benchmarks/README.md). Each row is one run; the sequential rows
use one batch-1 stream over the contig (what genoseg predict does without parallelism).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numba
import numpy as np
import torch

from genoseg.crf import parallel as par
from genoseg.grammar import compile_window, load_grammar


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--parts", type=int, default=0, help="default: --workers")
    ap.add_argument("--overlap", type=int, default=20_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--scale", type=float, default=1.0, help="emission standard deviation")
    ap.add_argument("--skip-posteriors", action="store_true")
    a = ap.parse_args()
    T, parts = a.length, a.parts or a.workers
    numba.set_num_threads(min(a.workers, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, T).astype(np.uint8)
    grammar = load_grammar()
    s = compile_window(grammar, codes)
    C = s.transitions.shape[0]
    h = a.scale * torch.randn(T, C, generator=torch.Generator().manual_seed(0))
    tables = dict(transitions=s.transitions, durations=s.durations, init=s.init,
                  final=s.final, tail=s.tail)  # fmt: skip

    def rows(lo: int, hi: int):
        return h[lo:hi], s.seg_start[lo:hi], s.seg_end[lo:hi], s.max_dur[lo:hi]

    load = os.getloadavg()[0]
    print(f"# genoseg chunk-parallel decoding ({platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load:.1f} at start; torch {torch.__version__}, numba "
          f"{numba.__version__})\n")  # fmt: skip
    print(f"Default gene grammar ({C} labels, K = {s.durations.shape[1]}), {T:,} bp random DNA, "
          f"emissions N(0, {a.scale}²), {parts} parts, overlap {a.overlap:,}, chunk "
          f"{a.chunk:,}\n")  # fmt: skip
    # compile the numba kernels outside the timings
    par.sequential_viterbi(rows, 2000, tables, chunk=1000)
    par.sequential_posteriors(rows, 2000, tables, chunk=1000)
    out = []
    kw = dict(parts=parts, overlap=a.overlap, chunk=a.chunk)
    seq_path, w, c = _timed(lambda: par.sequential_viterbi(rows, T, tables, chunk=a.chunk))
    out.append(("Viterbi", "sequential stream", w, c, "", ""))
    for mode, workers in (("threads", a.workers), ("batch", a.workers)):
        res, w2, c2 = _timed(
            lambda mode=mode, workers=workers: par.parallel_viterbi(
                rows, T, tables, workers=workers, mode=mode, **kw
            )
        )
        same = "identical" if res.segments == seq_path else "DIFFERENT"
        note = f"{same} path; {res.report.lengthened} lengthened"
        out.append(
            ("Viterbi", f"parallel, {mode}, {workers} workers", w2, c2, f"{w / w2:.2f}x", note)
        )
        print(f"  {out[-1]}", file=sys.stderr, flush=True)
    if not a.skip_posteriors:
        seq = np.zeros((3, T, C), dtype=np.float32)

        def keep(c0, c1, m):
            for j, t in enumerate((m.position, m.start, m.end)):
                seq[j, c0:c1] = t[0].numpy()

        chains = [[x] for x in seq_path if x[2] != grammar.intergenic]
        sp, w, c = _timed(
            lambda: par.sequential_posteriors(
                rows, T, tables, chunk=a.chunk, chains=chains, on_chunk=keep
            )
        )
        out.append(("posteriors", "sequential stream", w, c, "", ""))
        for mode in ("threads", "batch"):
            diff = [0.0]

            def cmp(c0, c1, m, diff=diff):
                for j, t in enumerate((m.position, m.start, m.end)):
                    d = np.abs(seq[j, c0:c1] - t[0].numpy()).max()
                    diff[0] = max(diff[0], float(d))

            pp, w2, c2 = _timed(
                lambda mode=mode, cmp=cmp: par.parallel_posteriors(
                    rows,
                    T,
                    tables,
                    workers=a.workers,
                    mode=mode,
                    chains=chains,
                    on_chunk=cmp,
                    **kw,
                )  # fmt: skip
            )
            dc = float((pp.chain_marginals - sp.chain_marginals).abs().max()) if chains else 0.0
            out.append(("posteriors", f"parallel, {mode}, {a.workers} workers", w2, c2,
                        f"{w / w2:.2f}x", f"max diff {diff[0]:.1e}, chains {dc:.1e}, "
                        f"log Z {abs(pp.log_z - sp.log_z):.1e}; "
                        f"{pp.report.lengthened} lengthened"))  # fmt: skip
            print(f"  {out[-1]}", file=sys.stderr, flush=True)
    print("| decode | run | wall s | CPU s | speed-up (wall) | result vs sequential |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]} | {r[5]} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
