"""Region plot: reference and predicted gene models above posterior tracks (PNG).

Region coordinates are 0-based half-open internally; the x axis is labelled in 1-based
genome positions. Tracks are bedGraph (``chrom start end value``, 0-based half-open) or
bigWig (needs pyBigWig), typically genoseg's per-label, per-strand posterior tracks.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence

from genoseg.data.annotation import Annotation, Transcript
from genoseg.errors import GenosegError
from genoseg.eval.calibration import _pyplot, save_figure

__all__ = ["parse_track_spec", "plot_region", "read_track", "track_seqids"]

_BIGWIG = (".bw", ".bigwig")


def parse_track_spec(spec: str) -> tuple[str, str]:
    """``NAME=FILE`` or ``FILE`` (name = file name without extensions) -> (name, path)."""
    name, sep, path = spec.partition("=")
    if not sep or os.path.exists(spec):
        path = spec
        name = os.path.basename(spec)
        for ext in (".gz", ".bedgraph", ".bedGraph", ".bdg", ".bw", ".bigwig", ".bigWig"):
            name = name.removesuffix(ext)
    if not os.path.isfile(path):
        raise GenosegError(f"--track {spec}: file {path} does not exist")
    return name, path


def _is_bigwig(path: str) -> bool:
    return path.lower().endswith(_BIGWIG)


def _open_bigwig(path: str):
    try:
        import pyBigWig
    except ImportError:
        raise GenosegError(
            f"{path}: reading bigWig needs pyBigWig (pip install pyBigWig)"
        ) from None
    try:
        bw = pyBigWig.open(path)
    except RuntimeError:
        bw = None
    if bw is None or not bw.isBigWig():
        raise GenosegError(f"{path}: not a bigWig file")
    return bw


def _lines(path: str):
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        fh = gzip.open(path, "rt") if gz else open(path)
    except OSError as exc:
        raise GenosegError(f"{path}: cannot read track: {exc.strerror or exc}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            s = line.strip()
            if not s or s.startswith(("#", "track", "browser")):
                continue
            yield lineno, s


def track_seqids(path: str) -> set[str]:
    """Sequence names present in a bedGraph/bigWig track."""
    if _is_bigwig(path):
        bw = _open_bigwig(path)
        try:
            return set(bw.chroms())
        finally:
            bw.close()
    out = set()
    for lineno, s in _lines(path):
        cols = s.split()
        if len(cols) < 4:
            raise GenosegError(f"{path}:{lineno}: bedGraph needs 4 columns (chrom start end value)")
        out.add(cols[0])
    return out


def read_track(path: str, seqid: str, start: int, end: int) -> list[tuple[int, int, float]]:
    """Entries ``(start, end, value)`` (0-based half-open) of ``seqid`` overlapping [start, end)."""
    if _is_bigwig(path):
        bw = _open_bigwig(path)
        try:
            if seqid not in bw.chroms():
                return []
            n = bw.chroms(seqid)
            ivs = bw.intervals(seqid, max(0, start), min(end, n)) or ()
            return [(int(s), int(e), float(v)) for s, e, v in ivs]
        finally:
            bw.close()
    out = []
    for lineno, s in _lines(path):
        cols = s.split()
        if len(cols) < 4:
            raise GenosegError(f"{path}:{lineno}: bedGraph needs 4 columns (chrom start end value)")
        if cols[0] != seqid:
            continue
        try:
            a, b, v = int(cols[1]), int(cols[2]), float(cols[3])
        except ValueError:
            raise GenosegError(
                f"{path}:{lineno}: start/end must be integers and value a number"
            ) from None
        if b < a or a < 0:
            raise GenosegError(f"{path}:{lineno}: need 0 <= start <= end, got {a} {b}")
        if b > start and a < end:
            out.append((a, b, v))
    return out


def _transcripts_in(ann: Annotation, seqid: str, start: int, end: int) -> list[Transcript]:
    return sorted(
        (t for t in ann.transcripts(seqid) if t.end > start and t.start < end),
        key=lambda t: (t.start, t.end, t.id),
    )


def _pack(ts: list[Transcript]) -> list[int]:
    """Row per transcript so that transcripts in one row do not overlap."""
    rows_end: list[int] = []
    rows = []
    for t in ts:
        for i, e in enumerate(rows_end):
            if t.start > e:
                rows_end[i] = t.end
                rows.append(i)
                break
        else:
            rows_end.append(t.end)
            rows.append(len(rows_end) - 1)
    return rows


def _draw_models(ax, ts: list[Transcript], color: str, start: int, end: int, label: str) -> None:
    from matplotlib.patches import Rectangle

    rows = _pack(ts)
    n = max(rows, default=-1) + 1
    for t, r in zip(ts, rows, strict=True):
        y = -r
        ax.plot([t.start + 1, t.end], [y, y], color=color, lw=0.8, zorder=1)
        for s, e in t.exons:
            ax.add_patch(Rectangle((s + 0.5, y - 0.15), e - s, 0.3, color=color, alpha=0.45))
        for s, e in t.cds:
            ax.add_patch(Rectangle((s + 0.5, y - 0.3), e - s, 0.6, color=color, zorder=2))
        mid = (max(t.start, start) + min(t.end, end)) / 2
        ax.text(
            mid,
            y + 0.38,
            f"{t.id} {'→' if t.strand == '+' else '←'}",
            ha="center",
            va="bottom",
            fontsize=6,
            clip_on=True,
        )
    ax.set_ylim(-max(n, 1) + 0.4, 0.9)
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if not ts:
        ax.text((start + end) / 2, 0, "no genes here", ha="center", fontsize=7, color="0.5")


def plot_region(
    seqid: str,
    start: int,
    end: int,
    output: str | os.PathLike,
    *,
    reference: tuple[str, Annotation] | None = None,
    predictions: Sequence[tuple[str, Annotation]] = (),
    tracks: Sequence[tuple[str, str]] = (),
) -> None:
    """Draw ``seqid:[start, end)`` (0-based half-open) to a PNG at ``output`` (atomic write).

    One panel per annotation (transcripts packed in rows: thin boxes = exons, thick = CDS,
    arrow = strand) and one step plot per track (values of entries overlapping the region).
    """
    plt = _pyplot()
    track_data = [(name, read_track(path, seqid, start, end)) for name, path in tracks]
    panels = ([("reference", reference)] if reference else []) + [
        (os.path.basename(p), (p, a)) for p, a in predictions
    ]
    model_rows = []
    for label, (_, ann) in panels:
        ts = _transcripts_in(ann, seqid, start, end)
        model_rows.append((label, ts))
    heights = [max(1.0, 0.45 * (max(_pack(ts), default=0) + 1)) for _, ts in model_rows]
    heights += [1.0] * len(track_data)
    if not heights:
        raise GenosegError("plot: nothing to draw")
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(10, 0.9 + 0.75 * sum(heights)),
        height_ratios=heights,
        sharex=True,
        squeeze=False,
        constrained_layout=True,
    )
    axes = axes[:, 0]
    colors = ["0.15", "C0", "C3", "C2", "C4"]
    for i, (label, ts) in enumerate(model_rows):
        _draw_models(axes[i], ts, colors[min(i, len(colors) - 1)], start, end, label)
    for j, (name, entries) in enumerate(track_data):
        ax = axes[len(model_rows) + j]
        xs, ys = [], []
        for a, b, v in entries:
            lo, hi = max(a, start) + 0.5, min(b, end) + 0.5
            xs += [lo, lo, hi, hi]  # each entry a closed box, so gaps drop to zero
            ys += [0.0, v, v, 0.0]
        if xs:
            ax.fill_between(xs, ys, step=None, color=f"C{j % 10}", alpha=0.5, lw=0.6)
        else:
            ax.text((start + end) / 2, 0.5, "no data here", ha="center", fontsize=7, color="0.5")
        top = max([1.0] + ys)
        ax.set_ylim(0, top * 1.05)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlim(start + 0.5, end + 0.5)
    axes[-1].set_xlabel(f"{seqid} (1-based position)")
    axes[0].set_title(f"{seqid}:{start + 1}-{end}", fontsize=9)
    axes[-1].ticklabel_format(axis="x", style="plain", useOffset=False)
    save_figure(fig, output)
    plt.close(fig)
