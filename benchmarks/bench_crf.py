"""Semi-CRF engine benchmark: throughput, peak memory, and ratios against references.

Run:  .venv/bin/python benchmarks/bench_crf.py [--quick] [--threads N]

Prints markdown tables (copied into benchmarks/README.md):
1. CPU engine forward, forward+backward and Viterbi for a grid of (B, T, K, C):
   seconds, positions/s (B·T/s) and cells/s (B·T·K·C/s).
2. Peak memory of forward+backward at T = 10^6, K = 200, C = 8, each measured in a fresh
   subprocess as the growth of peak RSS over the inputs already in memory.
3. CUDA rows (Triton kernels, benchmarks/bench_crf_cuda.py) where a GPU is available, and
   the H100 roofline estimate everywhere.
4. Ratios: the float64 reference (genoseg.crf.reference) and the Flash-SemiCRF pure-PyTorch
   CPU reference (``pip install flash-semicrf``; optional) on the same problem, one thread
   each, with their log Z printed side by side as a check that the problem is the same.

It is a benchmark, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numba
import torch

from genoseg import crf
from genoseg.crf import reference as ref


def problem(B: int, T: int, K: int, C: int, seed: int = 0, grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, C, generator=g).requires_grad_(grad)
    return dict(
        emissions=h,
        lengths=None,
        transitions=torch.randn(C, C, generator=g),
        durations=torch.randn(C, K, generator=g) - 0.01 * torch.arange(K),
        init=torch.randn(C, generator=g),
        final=torch.randn(C, generator=g),
    )


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_grid(grid, repeat: int) -> list[dict]:
    rows = []
    for B, T, K, C in grid:
        p = problem(B, T, K, C)
        args = {k: v for k, v in p.items() if k not in ("emissions", "lengths")}
        small = problem(B, min(T, 64), K, C)
        crf.log_partition(small["emissions"].requires_grad_(True), None, **args).sum().backward()
        crf.viterbi(small["emissions"].detach(), None, **args)  # compile outside the timing

        def fwd(p=p, args=args):
            crf.log_partition(p["emissions"], None, **args)

        def fwd_bwd(p=p, args=args):
            h = p["emissions"].detach().requires_grad_(True)
            crf.log_partition(h, None, **args).sum().backward()

        def vit(p=p, args=args):
            crf.viterbi(p["emissions"], None, **args)

        cells = B * T * K * C
        for name, fn in (("forward", fwd), ("forward+backward", fwd_bwd), ("viterbi", vit)):
            s = best_of(fn, repeat)
            rows.append(
                dict(op=name, B=B, T=T, K=K, C=C, seconds=s, pos_s=B * T / s, cells_s=cells / s)
            )
            print(f"  {name:17s} B={B} T={T} K={K} C={C}: {s:.3f} s", file=sys.stderr)
    return rows


def _peak_child(B: int, T: int, K: int, C: int) -> None:
    """(subprocess) print peak-RSS growth of one forward+backward in MB as JSON."""
    p = problem(B, T, K, C, grad=True)
    args = {k: v for k, v in p.items() if k not in ("emissions", "lengths")}
    warm = problem(1, 64, K, C, grad=True)
    crf.log_partition(warm["emissions"], None, **args).sum().backward()
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS counter (VmHWM)
        f.write("5")
    base = _status_kb("VmRSS")
    inputs_mb = p["emissions"].numel() * 4 / 2**20
    t = time.perf_counter()
    crf.log_partition(p["emissions"], None, **args).sum().backward()
    s = time.perf_counter() - t
    peak = _status_kb("VmHWM")
    growth = (peak - base) / 1024
    print(json.dumps(dict(growth_mb=growth, peak_mb=peak / 1024, inputs_mb=inputs_mb, seconds=s)))


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def bench_memory(T: int, K: int, C: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--peak-child", f"{T},{K},{C}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def flash_semicrf_forward(p, K: int):
    """Flash-SemiCRF's pure-PyTorch streaming forward (its CPU reference) on problem p.

    Its model starts from alpha = 0 for every source label and applies the transition
    before the first segment too, and ends with a plain logsumexp: the same problem in
    genoseg's terms has init[c] = logsumexp_c' A[c', c] and final = 0.
    """
    from flash_semicrf.streaming.pytorch_reference import semi_crf_streaming_forward_pytorch

    h = p["emissions"].detach()
    cum = torch.cat([torch.zeros(h.shape[0], 1, h.shape[2]), torch.cumsum(h, 1)], 1)
    lengths = torch.full((h.shape[0],), h.shape[1], dtype=torch.int64)
    out = semi_crf_streaming_forward_pytorch(
        cum, p["transitions"], p["durations"].T.contiguous(), lengths, K
    )
    return out[0]


def bench_peers(B: int, T: int, K: int, C: int, repeat: int) -> list[dict]:
    p = problem(B, T, K, C)
    p["init"] = torch.logsumexp(p["transitions"], 0)
    p["final"] = torch.zeros(C)
    args = {k: v for k, v in p.items() if k not in ("emissions", "lengths")}
    rows = []
    crf.log_partition(p["emissions"], None, **args)
    z = float(
        crf.log_partition(p["emissions"].double(), None, **{k: v.double() for k, v in args.items()})
    )
    s = best_of(lambda: crf.log_partition(p["emissions"], None, **args), max(repeat, 5))
    rows.append(dict(impl="genoseg cpu (numba)", seconds=s, log_z=z))
    s_ref = best_of(lambda: ref.log_partition(p["emissions"], None, **args), 1)
    z_ref = float(ref.log_partition(p["emissions"], None, **args))
    rows.append(dict(impl="genoseg float64 reference", seconds=s_ref, log_z=z_ref))
    try:
        z_f = float(flash_semicrf_forward(p, K))
        s_f = best_of(lambda: flash_semicrf_forward(p, K), 1)
        rows.append(dict(impl="Flash-SemiCRF PyTorch reference", seconds=s_f, log_z=z_f))
    except ImportError:
        print("flash-semicrf not installed: pip install --no-deps flash-semicrf", file=sys.stderr)
    for r in rows:
        r["speedup_of_genoseg"] = r["seconds"] / rows[0]["seconds"]
    return rows


def bench_grammar(T: int, repeat: int) -> list[dict]:
    """The default gene grammar (both strands) compiled on real sequence: A. thaliana Chr1
    from base 1, random emissions. Exon labels have K in the thousands; max_dur (distance
    to the previous in-frame stop) keeps their length loops short."""
    from genoseg.data.fasta import Genome
    from genoseg.grammar import compile_window, load_grammar

    here = os.path.dirname(os.path.abspath(__file__))
    fasta = os.path.join(here, "..", "..", "shared", "data", "athaliana_1pct", "genome.fa")
    if not os.path.exists(fasta):
        fasta = os.path.join(here, "..", "data_samples", "athaliana_chr5_sample.fa")
    genome = Genome.open(fasta)
    contig = next(iter(genome.contigs))
    T = min(T, genome.contigs[contig])
    codes, _ = genome.encode(contig, 0, T)
    grammar = load_grammar()
    t0 = time.perf_counter()
    s = compile_window(grammar, codes)
    compile_s = time.perf_counter() - t0
    C = s.transitions.shape[0]
    g = torch.Generator().manual_seed(0)
    h = torch.randn(1, T, C, generator=g)
    args = dict(
        transitions=s.transitions, durations=s.durations, init=s.init, final=s.final,
        tail=s.tail, seg_start=s.seg_start[None], seg_end=s.seg_end[None], max_dur=s.max_dur[None],
    )  # fmt: skip
    kc = crf.inputs.label_table_lengths(s.durations)
    md = torch.minimum(s.max_dur.long(), kc.view(1, -1)).float().mean(0)  # loop length
    print(f"  grammar: {C} labels, K = {s.durations.shape[1]}, mean length-loop bound per label "
          f"{md.mean():.1f} (compile_window {compile_s:.2f} s)", file=sys.stderr)  # fmt: skip
    small = {
        k: (v[:, :64] if k in ("seg_start", "seg_end", "max_dur") else v) for k, v in args.items()
    }
    crf.log_partition(h[:, :64].clone().requires_grad_(True), None, **small).sum().backward()
    crf.viterbi(h[:, :64], None, **small)
    rows = []

    def fwd_bwd():
        x = h.clone().requires_grad_(True)
        crf.log_partition(x, None, **args).sum().backward()

    for name, fn in (
        ("forward", lambda: crf.log_partition(h, None, **args)),
        ("forward+backward", fwd_bwd),
        ("viterbi", lambda: crf.viterbi(h, None, **args)),
    ):
        sec = best_of(fn, repeat)
        rows.append(dict(op=name, T=T, C=C, K=s.durations.shape[1], seconds=sec, bp_s=T / sec))
    rows.append(dict(op="compile_window (grammar tensors)", T=T, C=C, K=s.durations.shape[1],
                     seconds=compile_s, bp_s=T / compile_s))  # fmt: skip
    return rows


def bench_stream_overhead(C: int = 8, K: int = 20, n_chunks: int = 2000) -> list[dict]:
    """Fixed cost per chunk of the streams (1-row chunks, B = 1, one thread): what a
    caller pays for feeding a contig in many small pieces on top of the per-position work."""
    p = problem(1, n_chunks + 100, K, C)
    params = {k: v for k, v in p.items() if k not in ("emissions", "lengths")}
    h = p["emissions"]
    rows = []
    fs = crf.ForwardStream(**params)
    fs.update(h[:, :100])  # compile outside the timing
    t = time.perf_counter()
    for k in range(100, 100 + n_chunks):
        fs.update(h[:, k : k + 1])
    rows.append(dict(op="ForwardStream.update", us=(time.perf_counter() - t) / n_chunks * 1e6))
    ps = crf.PosteriorStream(**params)
    n = n_chunks // 4
    t = time.perf_counter()
    for k in range(n):
        ps.forward(h[:, k : k + 1])
    rows.append(dict(op="PosteriorStream.forward", us=(time.perf_counter() - t) / n * 1e6))
    t = time.perf_counter()
    for k in reversed(range(n)):
        ps.backward(h[:, k : k + 1])
    rows.append(dict(op="PosteriorStream.backward", us=(time.perf_counter() - t) / n * 1e6))
    return rows


def bench_chains(T: int = 100_000, K: int = 200, C: int = 8, n_chains: int = 20_000) -> dict:
    """chain_marginals against marginals on the same problem: n_chains chains of 1-5
    consecutive segments of the Viterbi path (what predict asks for: exons, introns with
    their exons, transcripts)."""
    import random

    p = problem(1, T, K, C)
    args = {k: v for k, v in p.items() if k not in ("emissions", "lengths")}
    h = p["emissions"]
    path = crf.viterbi(h, None, **args)[1][0]
    rng = random.Random(0)
    chains = []
    for _ in range(n_chains):
        i = rng.randrange(len(path))
        chains.append(path[i : i + rng.randint(1, 5)])
    crf.chain_marginals(h[:, :64], None, **args, chains=[[[(0, 1, 0)]]])  # compile
    s_m = best_of(lambda: crf.marginals(h, None, **args), 3)
    s_c = best_of(lambda: crf.chain_marginals(h, None, **args, chains=[chains]), 3)
    return dict(T=T, K=K, C=C, n_chains=n_chains, marginals_s=s_m, chains_s=s_c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid only")
    ap.add_argument("--threads", type=int, default=1, help="torch/numba threads (default 1)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--peak-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    if a.peak_child:
        _peak_child(1, *map(int, a.peak_child.split(",")))
        return
    if a.quick:
        grid = [(1, 10_000, 50, 8), (4, 10_000, 50, 8)]
    else:
        grid = [
            (1, 100_000, 200, 8),
            (1, 100_000, 50, 8),
            (8, 20_000, 50, 8),
            (1, 100_000, 20, 39),
            (1, 1_000_000, 20, 8),
        ]
    cpu = platform.processor() or platform.machine()
    print(f"# genoseg semi-CRF benchmark ({cpu}, {os.cpu_count()} cores, {a.threads} thread(s), "
          f"torch {torch.__version__}, numba {numba.__version__})\n")  # fmt: skip
    rows = bench_grid(grid, a.repeat)
    print("| op | B | T | K | C | seconds | positions/s | cells/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['op']} | {r['B']} | {r['T']:,} | {r['K']} | {r['C']} | {r['seconds']:.3f} | "
              f"{r['pos_s']:,.0f} | {r['cells_s']:.3g} |")  # fmt: skip
    mem_T = 100_000 if a.quick else 1_000_000
    mem = bench_memory(mem_T, 200, 8)
    print(f"\nPeak memory, forward+backward, T={mem_T:,}, K=200, C=8: "
          f"+{mem['growth_mb']:.0f} MB over the inputs ({mem['inputs_mb']:.0f} MB emissions); "
          f"process peak {mem['peak_mb']:.0f} MB; {mem['seconds']:.1f} s\n")  # fmt: skip
    peers = bench_peers(1, 2000, 50, 8, a.repeat)
    print(
        "| implementation (B=1, T=2000, K=50, C=8, forward) | seconds | genoseg faster by | log Z |"
    )
    print("|---|---|---|---|")
    for r in peers:
        speedup = r["speedup_of_genoseg"]
        print(f"| {r['impl']} | {r['seconds']:.4f} | {speedup:.0f}x | {r['log_z']:.4f} |")
    gram = bench_grammar(100_000, a.repeat)
    print(f"\nDefault gene grammar on real sequence (A. thaliana, {gram[0]['T']:,} bp, "
          f"{gram[0]['C']} labels, K = {gram[0]['K']}, both strands):\n")  # fmt: skip
    print("| op | seconds | bp/s |")
    print("|---|---|---|")
    for r in gram:
        print(f"| {r['op']} | {r['seconds']:.3f} | {r['bp_s']:,.0f} |")
    overhead = bench_stream_overhead()
    print("\nStream overhead per chunk (1-row chunks, B=1, K=20, C=8):\n")
    print("| call | µs per chunk |")
    print("|---|---|")
    for r in overhead:
        print(f"| {r['op']} | {r['us']:.0f} |")
    ch = bench_chains()
    print(f"\nchain_marginals, T={ch['T']:,}, K={ch['K']}, C={ch['C']}, {ch['n_chains']:,} chains "
          f"of 1-5 segments: {ch['chains_s']:.3f} s (marginals on the same problem: "
          f"{ch['marginals_s']:.3f} s)")  # fmt: skip
    print("\n## CUDA (Triton kernels)\n")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_crf_cuda

    for k, v in bench_crf_cuda.roofline(10**6, 1000, 32).items():
        print(f"  {k:32s} {v:.4g}")
    if torch.cuda.is_available():
        cuda_grid = [(B, T, K, C) for B, T, K, C in grid if T <= 100_000]
        bench_crf_cuda.bench(cuda_grid)
    else:
        print("\nno CUDA device here: CUDA rows skipped (run this script on a GPU machine)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                dict(
                    grid=rows, memory=mem, peers=peers, grammar=gram, overhead=overhead, chains=ch
                ),
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
