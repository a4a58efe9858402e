"""``genoseg predict`` benchmark: whole pipeline (encoder + engine + writers) beside AUGUSTUS.

Run:  .venv/bin/python benchmarks/bench_predict.py [--model CKPT] [--genome FASTA]
          [--sizes 1,5,20] [--rss-no-posteriors] [--cache-contig Chr4] [--no-augustus]
          [-o REPORT.md]

Every measurement runs in a fresh subprocess (``python bench_predict.py --child ...``) that
calls :func:`genoseg.predict.run.run_predict` and reports its wall time, the time split
(:attr:`genoseg.predict.pipeline.Predictor.timing` + writing) and its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so runs do not share memory or caches
(numba's compiled code is loaded from its on-disk cache; one warm-up run fills it).

Sections of the markdown report (stdout or -o):

1. Throughput on the shared genome (default ``../shared/data/athaliana_1pct/genome.fa``
   beside the repository), with and without posteriors, GFF3 + BED + tracks written, with the
   time split; AUGUSTUS 3.5 (``apt-get install augustus augustus-data``) on the same genome,
   same machine, same run: ``--species=arabidopsis`` with its default posterior sampling
   (the species config sets ``sample 100``) and with ``--sample=0`` (Viterbi only). kb/s =
   genome bases / wall seconds of the process (genoseg: also without interpreter start-up).
   A model that averages both strands (``--strand-average``, its calibration setting) is
   also run with ``--no-strand-average``.
2. Cache modes memory / spill / recompute on one contig (posteriors): time and peak RSS.
3. Peak RSS for synthetic contigs of ``--sizes`` Mb (default 1, 5, 20; the genome's
   sequence tiled into one contig), with
   posteriors and the default config (``cache: auto``: network outputs in memory up to 2 Mb,
   spilled to a temporary file beyond): RSS must not grow with the contig beyond the
   engine's per-chunk checkpoints.

The model: ``--model`` (default: build/runs/default/best.pt when present, else the model
shipped with genoseg). It is a benchmark, not a test: numbers depend on the machine and
its load (reported in the header: ``os.getloadavg``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genoseg.devices import cpu_has_bf16
from genoseg.predict.pipeline import AUTO_MEMORY_BP

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


# -- child: one run in a fresh process --------------------------------------------------


def child(spec: dict) -> None:
    """Run genoseg predict in this process; print one JSON line with the measurements."""
    t0 = time.monotonic()
    from genoseg.predict.run import PredictOptions, run_predict

    t_import = time.monotonic() - t0
    summary = run_predict(PredictOptions(**spec))
    print(json.dumps({
        "summary": summary, "import_s": t_import, "process_s": time.monotonic() - t0,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


def run_child(spec: dict, env: dict | None = None) -> dict:
    t = time.monotonic()
    res = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})},
    )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"genoseg predict failed ({spec}):\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.monotonic() - t
    return out


# -- helpers ---------------------------------------------------------------------------


def fasta_length(path: Path) -> int:
    fai = Path(str(path) + ".fai")
    if fai.exists():
        return sum(int(line.split("\t")[1]) for line in fai.read_text().splitlines())
    return sum(len(ln.strip()) for ln in path.open() if not ln.startswith(">"))


def synthetic(path: Path, mb: float, source: Path | None = None, seed: int = 0) -> Path:
    """One contig of ``mb`` megabases, 60 bases per line: the records of ``source`` (a real
    genome) joined and repeated until long enough -- genes every few kb, as in a real
    chromosome -- or uniform random ACGT without a source (no genes at all: a worst case
    for the parallel parts' Viterbi stitching, see docs/crf.md)."""
    import numpy as np

    if path.exists():
        return path
    n = int(mb * 1_000_000)
    if source is not None:
        from pyfaidx import Fasta

        fa = Fasta(str(source))
        unit = "".join(str(fa[k][:]) for k in fa.keys() if len(fa[k]) >= 100_000).upper()
        seq = np.frombuffer((unit * (n // len(unit) + 1))[:n].encode(), dtype=np.uint8)
    else:
        rng = np.random.default_rng(seed)
        seq = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n)]
    with path.open("wb") as fh:
        fh.write(f">synthetic_{mb:g}Mb\n".encode())
        for i in range(0, n, 60):
            fh.write(seq[i : i + 60].tobytes() + b"\n")
    return path


def augustus(genome: Path, out: Path, extra: list[str]) -> dict:
    t = time.monotonic()
    with out.open("w") as fh:
        res = subprocess.run(
            ["augustus", "--species=arabidopsis", "--gff3=on", *extra, str(genome)],
            stdout=fh, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    wall = time.monotonic() - t
    if res.returncode != 0:
        raise SystemExit(f"augustus failed: {res.stderr[-2000:]}")
    genes = sum(1 for ln in out.open() if "\tgene\t" in ln)
    return {"wall_s": wall, "genes": genes}


def averages_strands(model: str | None) -> bool:
    """Whether the checkpoint (None: the shipped default) averages both strands at
    prediction, which ``--no-strand-average`` turns off (not a model that reads both
    strands by itself)."""
    from genoseg.model import strands
    from genoseg.model.checkpoint import load_model

    m = load_model(model)
    return strands.averages_strands(m) and not strands.reads_both_strands(m)


def split(t: dict) -> str:
    keys = ("encoder", "scores", "compile", "engine", "decode", "writing")
    total = sum(t.get(k, 0.0) for k in keys) or 1.0
    return " / ".join(f"{t.get(k, 0.0):.1f} ({100 * t.get(k, 0.0) / total:.0f}%)" for k in keys)


SPLIT_HEAD = "encoder / scores / grammar / engine / decode / writing, s (%)"


# -- main ------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None)
    ap.add_argument("--genome", default=str(SHARED / "athaliana_1pct" / "genome.fa"))
    ap.add_argument("--sizes", default="1,5,20", help="synthetic contig sizes, Mb ('' = none)")
    ap.add_argument("--rss-no-posteriors", action="store_true",
                    help="synthetic contigs without posteriors (default: with)")  # fmt: skip
    ap.add_argument("--cache-contig", default="Chr4", help="contig for the cache comparison")
    ap.add_argument("--no-augustus", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sections", default="throughput,cache,rss",
                    help="which sections to run (comma-separated)")  # fmt: skip
    ap.add_argument("-o", "--output", default="-")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    model = args.model
    if model is None:
        trained = REPO / "build" / "runs" / "default" / "best.pt"
        model = str(trained) if trained.exists() else None
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    if model is not None:  # a snapshot: the training run may replace best.pt meanwhile
        shutil.copy(model, work / "model.pt")
        model = str(work / "model.pt")
    genome = Path(args.genome)
    if not genome.exists():
        raise SystemExit(
            f"{genome}: genome not found (pass --genome, or put ../shared beside the repo)"
        )
    common = {"model": model, "quiet": True, "threads": args.threads}
    lines: list[str] = []
    say = lambda s="": (lines.append(s), print(s, file=sys.stderr, flush=True))  # noqa: E731

    load = os.getloadavg()
    say("## predict (`bench_predict.py`)")
    say()
    say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min); "
        f"model {args.model or ('build/runs/default/best.pt' if model else 'shipped default')}; "
        f"bf16 instructions: {'yes' if cpu_has_bf16() else 'no'} (--precision auto: "
        f"{'bfloat16' if cpu_has_bf16() else 'float32'}); "
        f"{time.strftime('%Y-%m-%d %H:%M')}.")  # fmt: skip
    say()

    # warm-up: numba's on-disk cache, torch kernels
    run_child({**common, "genome": str(REPO / "data_samples" / "athaliana_chr5_60k.fa"),
               "output": str(work / "warm.gff3")})  # fmt: skip

    sections = set(args.sections.split(","))
    # 1. throughput on the shared genome
    if "throughput" in sections:
        n = fasta_length(genome)
        say(f"### Throughput on {genome.name} ({n / 1e6:.2f} Mb, "
            f"{genome.parent.name})")  # fmt: skip
        say()
        say("| tool | mode | wall s | kb/s | kb/s w/o start-up | peak RSS MB | genes | "
            f"{SPLIT_HEAD} |")  # fmt: skip
        say("|---|---|---|---|---|---|---|---|")
        # a model that averages both strands (its calibration) also runs without it
        both = [None, False] if averages_strands(model) else [None]
        # the default precision (auto: bf16 where the CPU has it), then float32 beside it
        precisions = [None, "float32"] if cpu_has_bf16() else [None]
        runs = [(p, a, q) for q in precisions for p in (True, False) for a in both]
        for post, sa, prec in runs:
            spec = {**common, "genome": str(genome), "output": str(work / f"g{post}.gff3"),
                    "bed": str(work / f"g{post}.bed"), "posteriors": post,
                    "tracks": str(work / "tracks") if post else None,
                    "strand_average": sa, "precision": prec}  # fmt: skip
            r = run_child(spec)
            s = r["summary"]
            mode = (
                ("posteriors" if post else "--no-posteriors")
                + (" --no-strand-average" if sa is False else "")
                + (f" --precision {prec}" if prec else "")
            )
            say(f"| genoseg | {mode} | {r['wall_s']:.1f} | "
                f"{n / r['wall_s'] / 1e3:.1f} | {n / s['seconds'] / 1e3:.1f} | "
                f"{r['maxrss_mb']:.0f} | {s['genes']} | {split(s['timing'])} |")  # fmt: skip
        if not args.no_augustus:
            if shutil.which("augustus") is None:
                say("| AUGUSTUS | not installed (apt-get install augustus augustus-data) "
                    "| | | | | | |")  # fmt: skip
            else:
                for label, extra in (("default (sample=100 posteriors)", []),
                                     ("--sample=0 (no sampling)", ["--sample=0"])):  # fmt: skip
                    a = augustus(genome, work / "augustus.gff3", extra)
                    say(f"| AUGUSTUS 3.5.0 | {label} | {a['wall_s']:.1f} | "
                        f"{n / a['wall_s'] / 1e3:.1f} | | | {a['genes']} | |")  # fmt: skip
        say()

    # 2. cache modes
    if "cache" in sections:
        from pyfaidx import Fasta

        contig = args.cache_contig
        one = work / f"{contig}.fa"
        with one.open("w") as fh:
            fh.write(f">{contig}\n{Fasta(str(genome))[contig][:]}\n")
        L = fasta_length(one)
        say(f"### Cache modes ({contig}, {L / 1e3:.0f} kb, posteriors, window 100 kb)")
        say()
        say(f"| cache | wall s | kb/s w/o start-up | peak RSS MB | {SPLIT_HEAD} |")
        say("|---|---|---|---|---|")
        for mode in ("memory", "spill", "recompute"):
            cfg = work / f"{mode}.yaml"
            cfg.write_text(f"cache: {mode}\n")
            r = run_child({**common, "genome": str(one), "output": str(work / f"{mode}.gff3"),
                           "config": str(cfg)})  # fmt: skip
            s = r["summary"]
            say(f"| {mode} | {r['wall_s']:.1f} | {L / s['seconds'] / 1e3:.1f} | "
                f"{r['maxrss_mb']:.0f} | {split(s['timing'])} |")  # fmt: skip
        say()

    # 3. peak RSS against contig length
    sizes = [float(x) for x in args.sizes.split(",") if x.strip()]
    if sizes and "rss" in sections:
        post = not args.rss_no_posteriors
        say(f"### Peak RSS against contig length (one contig: {genome.name} tiled, "
            f"{'posteriors' if post else '--no-posteriors'}, default config)")  # fmt: skip
        say()
        say("| contig Mb | cache | wall s | kb/s w/o start-up | peak RSS MB | genes |")
        say("|---|---|---|---|---|---|")
        for mb in sizes:
            fa = synthetic(work / f"tiled_{mb:g}.fa", mb, genome)
            cfg = work / "auto.yaml"
            cfg.write_text("cache: auto\n")
            r = run_child({**common, "genome": str(fa), "posteriors": post,
                           "output": str(work / "rss.gff3"), "config": str(cfg)})  # fmt: skip
            s = r["summary"]
            mode = "memory" if mb * 1e6 <= AUTO_MEMORY_BP else "spill"
            say(f"| {mb:g} | auto ({mode}) | {r['wall_s']:.1f} | "
                f"{mb * 1e6 / s['seconds'] / 1e3:.1f} | {r['maxrss_mb']:.0f} | "
                f"{s['genes']} |")  # fmt: skip
        say()
    load = os.getloadavg()
    say(f"Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.")
    text = "\n".join(lines) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
