"""Compile every Triton kernel specialisation of genoseg.crf for real GPUs (no GPU needed)
and print registers, spills, stack and shared memory per kernel as a Markdown table.

    .venv/bin/python benchmarks/compile_report.py [--arch 80 90] [--jobs 2] [--docs]

Uses ``triton.compile`` with ``GPUTarget("cuda", arch, 32)`` and the ptxas shipped in the
triton wheel; resource numbers come from ``ptxas -v`` on the generated PTX; "hazards" counts
the unordered load/store pairs of one scratch address that ``genoseg.crf.barrier_check``
finds in the TTGIR (must be 0). ``--docs``
prints instead the compact table of docs/kernels.md (one row per kernel and BC; registers
as fp32/fp64 emissions per arch; spill bytes summed and the largest stack over all builds).
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor


def _one(job: tuple[int, int]) -> tuple[str, int, dict]:
    index, arch = job
    from genoseg.crf import triton_kernels as tk

    spec = tk.specialisations()[index]
    from genoseg.crf.barrier_check import scratch_hazards

    kernel = tk.compile_specialisation(spec, arch)
    usage = tk.resource_usage(kernel)
    usage["hazards"] = len(scratch_hazards(kernel.asm["ttgir"]))
    usage["num_warps"] = spec["num_warps"]
    usage["cubin_bytes"] = len(kernel.asm["cubin"])
    return spec["name"], arch, usage


def _print_docs_table(rows: list[tuple[str, int, dict]], archs: list[int]) -> None:
    by_key: dict[tuple[str, int], dict] = {}
    for name, arch, u in rows:  # name = "kernel[BC=..,fp..]"
        kernel, rest = name.rstrip("]").split("[")
        bc, dtype = rest.split(",")
        by_key.setdefault((kernel, int(bc.split("=")[1])), {})[(dtype, arch)] = u
    head = " | ".join(f"sm_{a} registers" for a in archs)
    print(f"| kernel | BC | {head} | spill bytes (all {2 * len(archs)} builds) | stack |")
    print("|---|---|" + "---|" * len(archs) + "---|---|")
    for (kernel, bc), d in by_key.items():
        regs = [f"{d[('fp32', a)]['registers']}/{d[('fp64', a)]['registers']}" for a in archs]
        spill = sum(u["spill_stores"] + u["spill_loads"] for u in d.values())
        stack = max(u["stack"] for u in d.values())
        print(f"| {kernel} | {bc} | " + " | ".join(regs) + f" | {spill} | {stack} |")
    hazards = sum(u["hazards"] for _, _, u in rows)
    print(f"\nbarrier check: {hazards} unordered scratch load/store pairs in {len(rows)} builds")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    ap.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--docs", action="store_true", help="compact table for docs/kernels.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    from genoseg.crf import triton_kernels as tk

    jobs = [(i, a) for i in range(len(tk.specialisations())) for a in args.arch]
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        rows = list(ex.map(_one, jobs))
    if args.docs:
        _print_docs_table(rows, args.arch)
        return 0
    print("| kernel | sm | warps | registers | spill stores (B) | spill loads (B) | stack (B) "
          "| shared (B) | cubin (B) | hazards |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    spills = 0
    for name, arch, u in rows:
        spills += u["spill_stores"] + u["spill_loads"]
        cols = (name, arch, u["num_warps"], u["registers"], u["spill_stores"], u["spill_loads"],
                u["stack"], u["shared"], u["cubin_bytes"], u["hazards"])  # fmt: skip
        print("| " + " | ".join(str(c) for c in cols) + " |")
    print(f"\n{len(rows)} kernels compiled; total spill traffic {spills} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
