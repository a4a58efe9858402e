"""Training throughput of `genoseg train`: positions/s of one optimisation step (forward and
backward of encoder and engine), the share of time in the encoder vs the engine, and peak
memory.

    .venv/bin/python benchmarks/bench_train.py [--config configs/train.yaml] [--steps 6]
        [--window 10000] [--batch 2] [--threads 2]

Windows come from the config's training files (build them with
scripts/build_default_model.sh, or any `genoseg prepare` output); the model is the config's
(untrained: speed does not depend on the weights). Positions are core bases (the CRF rows);
the encoder also reads the halo. Prints a markdown table (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genoseg.train.config import load_train_config  # noqa: E402
from genoseg.train.train import Trainer, crop  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "train.yaml"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--window", type=int, default=10000, help="max_window (core bases)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_train_config(
        a.config, [*a.set, f"out_dir={REPO / 'build' / 'bench_train'}", "threads=0"]
    )
    tr = Trainer(cfg)
    model, lossmod = tr.model, tr.loss_module
    rng = np.random.default_rng(0)
    batches = []
    for s in range(a.steps + 1):
        ws = []
        for k in range(a.batch):
            f, i = tr.train_data.draw(cfg.seed, s, 0, k)
            ws.append(crop(tr.train_data.window(f, i), a.window, rng, model.halo))
        batches.append(ws)
    # warm-up (numba compilation, allocator)
    loss, _ = lossmod(batches[0])
    loss.backward()
    t_full = t_enc = 0.0
    bases = rows = 0
    for ws in batches[1:]:
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss, st = lossmod(ws)
        loss.backward()
        t_full += time.perf_counter() - t0
        bases += st["bases"]
        rows += sum(len(w.sequence) for w in ws)
        # the encoder alone on the same rows, forward + backward
        n = max(len(w.sequence) for w in ws)
        seq = torch.full((len(ws), n), 4, dtype=torch.int64)
        for b, w in enumerate(ws):
            seq[b, : len(w.sequence)] = torch.from_numpy(w.sequence)
        lengths = torch.tensor([len(w.sequence) for w in ws])
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = model.outputs(seq, lengths=lengths)
        out.square().mean().backward()
        t_enc += time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_par = sum(p.numel() for p in model.parameters())
    print(f"| model | {n_par:,} parameters, receptive field {model.encoder.receptive_field} bp |")
    print("|---|---|")
    print(f"| steps x batch | {a.steps} x {a.batch} windows of <= {a.window} core bases |")
    print(f"| threads | {torch.get_num_threads()} |")
    print(f"| positions/s (core bases, fwd+bwd, encoder+engine) | {bases / t_full:,.0f} |")
    print(f"| encoder share | {100 * min(t_enc / t_full, 1):.0f} % |")
    print(f"| engine + grammar + glue share | {100 * max(1 - t_enc / t_full, 0):.0f} % |")
    print(f"| seconds per step | {t_full / a.steps:.2f} |")
    print(f"| peak RSS | {peak_mb:,.0f} MB |")


if __name__ == "__main__":
    main()
