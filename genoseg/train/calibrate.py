"""Posterior calibration: one temperature T for the whole model, fitted on held-out windows.

Every engine score is divided by T (:meth:`GeneModel.crf_inputs`), so the path distribution
becomes p(y)^(1/T) / Z: the Viterbi path is unchanged and only the posteriors sharpen
(T < 1) or soften (T > 1). T minimises the exact NLL of the gold segmentations of the
validation windows (a proper scoring rule, so it calibrates the whole path distribution,
exons, introns and boundaries together), by golden-section search on log T in
[1/4, 4]. The result is stored in the checkpoint's ``calibration`` and used by predict.

    python -m genoseg.train.calibrate CHECKPOINT --config configs/train.yaml
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from genoseg.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from genoseg.train.config import load_train_config
from genoseg.train.train import Sources, WindowLoss

__all__ = ["fit_temperature", "validation_nll"]


@torch.no_grad()
def validation_nll(model, sources: Sources, temperature: float, max_windows: int = 0) -> float:
    """Mean NLL (nats per kb of core) of the validation windows at ``temperature``."""
    lossmod = WindowLoss(model, 0.0, 0.0, temperature=temperature)
    items = sources.all_items()[: max_windows or None]
    nll, bases = 0.0, 0
    for f, i in items:
        _, st = lossmod([sources.window(f, i)])
        nll += st["nll_per_kb"] * st["bases"] / 1000.0
        bases += st["bases"]
    return 1000.0 * nll / max(bases, 1)


def fit_temperature(model, sources: Sources, max_windows: int = 0, iters: int = 10) -> dict:
    """Golden-section search of log T minimising :func:`validation_nll`."""
    a, b = math.log(0.25), math.log(4.0)
    g = (math.sqrt(5) - 1) / 2
    f = {}

    def nll(x: float) -> float:
        if x not in f:
            f[x] = validation_nll(model, sources, math.exp(x), max_windows)
        return f[x]

    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(iters):
        if nll(c) < nll(d):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    best = min(f, key=f.get)
    return {"temperature": math.exp(best), "valid_nll_per_kb": f[best],
            "valid_nll_per_kb_at_1": validation_nll(model, sources, 1.0, max_windows)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fit the posterior temperature of a checkpoint.")
    ap.add_argument("checkpoint")
    ap.add_argument("--config", required=True, help="training config (its data.valid files)")
    a = ap.parse_args(argv)
    cfg = load_train_config(a.config)
    if not cfg.data.valid:
        sys.exit(f"{a.config}: data.valid is empty: nothing to calibrate on")
    ck = load_checkpoint(a.checkpoint)
    model = model_from_checkpoint(ck, a.checkpoint).eval()
    src = Sources(cfg.data.valid, ("+",), model.grammar)
    cal = fit_temperature(model, src, cfg.data.valid_max_windows)
    print(f"temperature {cal['temperature']:.3f}: validation NLL {cal['valid_nll_per_kb']:.3f} "
          f"nats/kb (T = 1: {cal['valid_nll_per_kb_at_1']:.3f})", file=sys.stderr)  # fmt: skip
    save_checkpoint(a.checkpoint, model, config=ck.get("config"),
                    train_state=ck.get("train_state"), calibration=cal)  # fmt: skip


if __name__ == "__main__":
    main()
