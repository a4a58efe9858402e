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

from genoseg.errors import GenosegError
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


def exon_calibration(gff3: str, reference: str, seqids: list[str]) -> dict:
    """Exon posteriors of a prediction against a reference (CDS mode, as ``genoseg eval``):
    ``log_loss`` (mean negative log-likelihood of correct / not, a proper score), ``ece``
    and ``n`` exons."""
    from genoseg.data.annotation import read_annotation
    from genoseg.eval.calibration import calibrate, collect_posteriors
    from genoseg.eval.compare import compare

    ref = read_annotation(reference, feature="CDS", missing_parents="skip")
    pred = read_annotation(gff3, feature="CDS", missing_parents="skip")
    res = compare(ref, pred, mode="CDS", seqids=seqids)
    post, ok, _ = collect_posteriors(res.reference_scope, res.prediction_scope, "CDS")["exon"]
    eps = 1e-6
    ll = [-math.log(max(p, eps) if c else max(1.0 - p, eps)) for p, c in zip(post, ok)]
    return {"log_loss": sum(ll) / max(len(ll), 1), "ece": calibrate(post, ok).ece,
            "n": len(post)}  # fmt: skip


def fit_exon_temperature(
    checkpoint: str,
    genome: str,
    reference: str,
    regions: list[str],
    grid: tuple[float, ...] = (0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0),
    bam: str | None = None,
    strand_average: bool = False,
) -> dict:
    """The temperature of ``grid`` whose predicted exon posteriors on ``regions`` (held-out
    contigs, never the test set) have the smallest exon log-loss against ``reference``.
    The Viterbi path does not depend on T, only the posteriors do: one ``genoseg predict``
    per T (with ``strand_average``: both strands' outputs averaged, genoseg.model.strands).
    Returns {"temperature", "strand_average", "objective": "exon_log_loss", per-T
    results}: the checkpoint's ``calibration``."""
    import os
    import tempfile

    from genoseg.predict.run import PredictOptions, run_predict

    ck = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ck, checkpoint)
    tried = {}
    with tempfile.TemporaryDirectory(prefix="genoseg-calibrate-") as tmp:
        for t in grid:
            path = os.path.join(tmp, f"t{t}.pt")
            save_checkpoint(path, model, config=ck.get("config"), calibration={"temperature": t})
            out = os.path.join(tmp, f"t{t}.gff3")
            run_predict(PredictOptions(genome=genome, output=out, model=path, regions=regions,
                                       bam=bam, strand_average=strand_average,
                                       quiet=True))  # fmt: skip
            tried[t] = exon_calibration(out, reference, regions)
            if tried[t]["n"] == 0:  # the path does not depend on T: none at any T
                raise GenosegError(f"{checkpoint}: predicts no exon on {', '.join(regions)}: "
                                   "nothing to calibrate")  # fmt: skip
            print(f"T = {t:.2f}: exon log-loss {tried[t]['log_loss']:.4f}, ECE "
                  f"{tried[t]['ece']:.3f} ({tried[t]['n']} exons)", file=sys.stderr)  # fmt: skip
    best = min(tried, key=lambda t: tried[t]["log_loss"])
    return {"temperature": best, "strand_average": strand_average,
            "objective": "exon_log_loss", "regions": regions,
            "by_temperature": {str(t): v for t, v in tried.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fit the posterior temperature of a checkpoint.")
    ap.add_argument("checkpoint")
    ap.add_argument("--config", required=True, help="training config (its data.valid files)")
    ap.add_argument("--exons", nargs=3, metavar=("GENOME", "REFERENCE", "REGIONS"),
                    help="fit T to the exon posteriors predicted on REGIONS (comma-separated "
                         "held-out contigs of GENOME, annotated in REFERENCE) instead of the "
                         "validation windows' path NLL")  # fmt: skip
    ap.add_argument("--bam", default=None, help="with --exons: RNA-seq evidence to predict with")
    ap.add_argument("--strand-average", action="store_true",
                    help="with --exons: predict with both strands' outputs averaged and make "
                         "that the checkpoint's setting (predict --strand-average)")  # fmt: skip
    a = ap.parse_args(argv)
    if a.strand_average and not a.exons:
        ap.error("--strand-average needs --exons")
    try:
        _calibrate(a)
    except GenosegError as exc:
        sys.exit(f"genoseg calibrate: {exc}")


def _calibrate(a: argparse.Namespace) -> None:
    cfg = load_train_config(a.config)
    ck = load_checkpoint(a.checkpoint)
    model = model_from_checkpoint(ck, a.checkpoint).eval()
    if a.exons:
        genome, reference, regions = a.exons
        cal = fit_exon_temperature(a.checkpoint, genome, reference, regions.split(","),
                                   bam=a.bam, strand_average=a.strand_average)  # fmt: skip
        print(f"temperature {cal['temperature']:.3f} (exon log-loss on {regions})",
              file=sys.stderr)  # fmt: skip
    else:
        if not cfg.data.valid:
            sys.exit(f"{a.config}: data.valid is empty: nothing to calibrate on")
        src = Sources(cfg.data.valid, ("+",), model.grammar)
        cal = fit_temperature(model, src, cfg.data.valid_max_windows)
        print(f"temperature {cal['temperature']:.3f}: validation NLL "
              f"{cal['valid_nll_per_kb']:.3f} nats/kb (T = 1: "
              f"{cal['valid_nll_per_kb_at_1']:.3f})", file=sys.stderr)  # fmt: skip
    save_checkpoint(a.checkpoint, model, config=ck.get("config"),
                    train_state=ck.get("train_state"), calibration=cal)  # fmt: skip


if __name__ == "__main__":
    main()
