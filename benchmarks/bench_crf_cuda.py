"""CUDA rows of the semi-CRF benchmark (Triton kernels) and the roofline estimate.

    .venv/bin/python benchmarks/bench_crf_cuda.py [--quick]

On a machine with a CUDA device: times forward (log Z), forward+backward (log Z and its
gradient) and Viterbi of the Triton kernels for a grid of (B, T, K, C) and prints
positions/s, cells/s (cells = B·T·K·C) and peak CUDA memory. Everywhere: prints the
analytic roofline estimate (bytes and exp/log per position, and the time bound it implies
on an H100 for T = 10^6, K = 1000, C = 32). It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

# H100 SXM5 figures used for the bound (NVIDIA H100 datasheet / whitepaper): 132 SMs at
# 1.83 GHz boost; the SFU (MUFU.EX2) issues 16 fp32 exponentials per clock per SM; L2
# bandwidth ~5.5 TB/s for the whole chip; one SM sustains at most ~64 B/clock from L2.
H100 = {"sms": 132, "clock": 1.83e9, "mufu_per_clk_sm": 16, "l2_bw": 5.5e12, "sm_l2_b_clk": 64}


def roofline(T: int, K: int, C: int) -> dict[str, float]:
    """Per-position work of the kernels and the H100 time bounds (seconds).

    Forward, per (position, label, duration) cell: two passes over the fp64 ring row
    (8 B) and the fp64 duration entry (8 B) -> 32 B, one fp32 exp. Per (position, label
    pair): one fp32 exp for the transition log-sum-exp. Backward kernel: the recompute
    (as forward) plus the reverse sweep: ring 8 B + duration 8 B + read-modify-write of the
    start adjoint 16 B and of the duration gradient 16 B -> 48 B, one exp; transition step
    one exp per label pair. Per-label fp64 exp/log are O(C) per position (negligible).
    """
    cells = K * C
    fwd_bytes, fwd_exp = 32 * cells, cells + C * C
    bwd_bytes, bwd_exp = (32 + 48) * cells, 2 * cells + 2 * C * C
    hw = H100
    out = {
        "cells_per_position": cells,
        "fwd_bytes_per_position": fwd_bytes,
        "fwd_exp_per_position": fwd_exp,
        "fwdbwd_bytes_per_position": fwd_bytes + bwd_bytes,
        "fwdbwd_exp_per_position": fwd_exp + bwd_exp,
    }
    for tag, b, e in (("fwd", fwd_bytes, fwd_exp), ("fwdbwd", fwd_bytes + bwd_bytes,
                                                     fwd_exp + bwd_exp)):  # fmt: skip
        # one long contig = one program = one SM
        sm_exp = T * e / (hw["mufu_per_clk_sm"] * hw["clock"])
        sm_mem = T * b / (hw["sm_l2_b_clk"] * hw["clock"])
        # the same positions spread over every SM (a batch of windows)
        gpu_exp = sm_exp / hw["sms"]
        gpu_mem = T * b / hw["l2_bw"]
        out[f"{tag}_one_sm_s"] = max(sm_exp, sm_mem)
        out[f"{tag}_one_sm_exp_s"] = sm_exp
        out[f"{tag}_one_sm_l2_s"] = sm_mem
        out[f"{tag}_all_sms_s"] = max(gpu_exp, gpu_mem)
        out[f"{tag}_all_sms_exp_s"] = gpu_exp
        out[f"{tag}_all_sms_l2_s"] = gpu_mem
    return out


def _problem(B: int, T: int, K: int, C: int, device: str):
    from genoseg.crf.inputs import check_inputs

    g = torch.Generator(device="cpu").manual_seed(0)
    h = torch.randn(B, T, C, generator=g).to(device)
    A = torch.randn(C, C, generator=g).to(device)
    D = -0.01 * torch.arange(1, K + 1, dtype=torch.float32).expand(C, K).contiguous().to(device)
    z = torch.zeros(C, device=device)
    return check_inputs(h, None, A, D, z, z)


def _time(fn, reps: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def bench(grid: list[tuple[int, int, int, int]]) -> None:
    from genoseg.crf import triton_kernels as tk

    print("| op | B | T | K | C | time (s) | positions/s | cells/s | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B, T, K, C in grid:
        x = _problem(B, T, K, C, "cuda")

        def fwdbwd(x=x):
            h = x.emissions.detach().requires_grad_(True)
            y = type(x)(**{**x.__dict__, "emissions": h})
            tk.log_partition(y).sum().backward()

        ops = {
            "forward": lambda x=x: tk.log_partition(x),
            "forward+backward": fwdbwd,
            "viterbi": lambda x=x: tk.viterbi(x),
        }
        for name, fn in ops.items():
            torch.cuda.reset_peak_memory_stats()
            t = _time(fn)
            peak = torch.cuda.max_memory_allocated() / 2**20
            print(f"| {name} | {B} | {T} | {K} | {C} | {t:.4f} | {B * T / t:.3g} "
                  f"| {B * T * K * C / t:.3g} | {peak:.0f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid")
    args = ap.parse_args()
    r = roofline(10**6, 1000, 32)
    print("Roofline, T = 10^6, K = 1000, C = 32 (per position; H100 SXM bounds):")
    for k, v in r.items():
        print(f"  {k:32s} {v:.4g}")
    if not torch.cuda.is_available():
        print("\nno CUDA device: CUDA timings skipped")
        return
    grid = [(64, 10_000, 200, 39), (1, 100_000, 200, 8), (1, 1_000_000, 1000, 32)]
    if args.quick:
        grid = [(8, 10_000, 100, 8), (1, 100_000, 200, 8)]
    bench(grid)


if __name__ == "__main__":
    main()
