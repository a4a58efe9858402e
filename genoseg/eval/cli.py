"""``genoseg eval`` and ``genoseg plot``: thin click wrappers over genoseg.eval."""

from __future__ import annotations

import os
from collections import defaultdict

import click

from genoseg.data.annotation import Annotation, read_annotation
from genoseg.errors import GenosegError
from genoseg.io.atomic import atomic_output, check_not_input

__all__ = ["eval_command", "plot_command"]

_BIG = 1 << 62  # length used for a contig whose length no input states


def _read(path: str, mode: str, skip_missing: bool) -> Annotation:
    ann = read_annotation(path, feature=mode, missing_parents="skip" if skip_missing else "error")
    click.echo(f"genoseg eval: {ann.summary}", err=True)
    return ann


def _contigs(*anns: Annotation) -> dict[str, int]:
    """seqid -> length: ##sequence-region when stated, else unbounded."""
    out: dict[str, int] = {}
    for ann in anns:
        for sid in ann.genes:
            out.setdefault(sid, _BIG)
        for sid, n in ann.sequence_regions.items():
            out[sid] = n if out.get(sid, _BIG) == _BIG else min(out[sid], n)
    return out


def _regions(path: str, contigs: dict[str, int]) -> dict[str, list[tuple[int, int]]]:
    from genoseg.data.regions import read_bed_regions

    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in read_bed_regions(path, contigs, source="either annotation"):
        out[r.contig].append((r.start, r.end))
    return dict(out)


def _write_text(path: str, text: str, inputs: dict[str, str | None]) -> None:
    """Write ``text`` to ``path`` atomically (``-`` = stdout), never over an input."""
    with atomic_output(path, inputs=inputs) as fh:
        fh.write(text)


@click.command("eval")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("prediction", type=click.Path(dir_okay=False))
@click.option(
    "--feature",
    type=click.Choice(["CDS", "exon"]),
    default="CDS",
    show_default=True,
    help="Score CDS pieces of coding transcripts, or exons of every transcript.",
)
@click.option(
    "--longest-isoform", is_flag=True, help="Keep one transcript per gene (longest CDS/exonic)."
)
@click.option(
    "--regions",
    "regions_path",
    type=click.Path(dir_okay=False),
    help="BED file: score only bases, exons and introns inside these regions, and transcripts "
    "wholly inside one (those crossing an edge are counted).",
)
@click.option(
    "--seqids",
    help="Comma-separated sequence names to score (default: the reference's, see --all-seqids).",
)
@click.option(
    "--all-seqids",
    is_flag=True,
    help="Score every sequence of either file; predictions on sequences the reference does "
    "not annotate count as false positives (default: only the reference's sequences).",
)
@click.option(
    "--gene-rule",
    type=click.Choice(["any", "gt"]),
    default="any",
    show_default=True,
    help="any: a gene is found when one of its transcripts is, transcripts are distinct part "
    "chains; gt: as gt eval defines them, all isoforms must match and every transcript counts.",
)
@click.option(
    "--skip-missing-parents",
    is_flag=True,
    help="Drop lines whose Parent is not in the file instead of failing (sliced files).",
)
@click.option("--bins", default=10, show_default=True, help="Calibration bins.")
@click.option(
    "--reliability",
    type=click.Path(dir_okay=False),
    help="Write a reliability diagram PNG of the posteriors (needs matplotlib).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("-o", "--output", default="-", show_default=True, help="Report file (- = stdout).")
def eval_command(
    reference: str,
    prediction: str,
    feature: str,
    longest_isoform: bool,
    regions_path: str | None,
    seqids: str | None,
    all_seqids: bool,
    gene_rule: str,
    skip_missing_parents: bool,
    bins: int,
    reliability: str | None,
    as_json: bool,
    output: str,
) -> None:
    """Accuracy of PREDICTION against REFERENCE (GFF3 or GTF, any tool).

    Levels base, exon, intron, intron chain, transcript and gene, each with sensitivity,
    precision and F1, strand-aware; plus calibration of the prediction's posteriors.
    """
    from genoseg.eval.calibration import plot_reliability, usable
    from genoseg.eval.compare import compare
    from genoseg.eval.report import (
        counts_text,
        format_table,
        left_out_text,
        region_edges_text,
        to_json,
    )

    if bins < 1:
        raise GenosegError(f"--bins must be >= 1, got {bins}")
    if seqids is not None and all_seqids:
        raise GenosegError("--seqids and --all-seqids exclude each other")
    inputs = {"REFERENCE": reference, "PREDICTION": prediction, "--regions": regions_path}
    check_not_input({"-o": output, "--reliability": reliability}, inputs)
    if reliability == "-":
        raise GenosegError("--reliability: a PNG cannot be written to stdout; give a path")
    for option, path in (("-o", output), ("--reliability", reliability)):
        if path and path != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise GenosegError(f"{option} {path}: directory does not exist")
    if reliability:
        from genoseg.eval.calibration import _pyplot

        _pyplot()  # fail before any work when matplotlib is missing
    ref = _read(reference, feature, skip_missing_parents)
    pred = _read(prediction, feature, skip_missing_parents)
    if ref.summary.transcripts == 0:
        what = "coding transcripts (is it non-coding only? try --feature exon)"
        raise GenosegError(
            f"{reference}: no {what if feature == 'CDS' else 'transcripts'} to compare against"
        )
    seqid_list = None
    if seqids is not None:
        seqid_list = [s.strip() for s in seqids.split(",") if s.strip()]
        if not seqid_list:
            raise GenosegError("--seqids: empty list")
        known = set(ref.genes) | set(pred.genes) | set(ref.sequence_regions)
        unknown = [s for s in seqid_list if s not in known]
        if unknown:
            raise GenosegError(
                f"--seqids: {unknown[0]!r} is in neither annotation "
                f"(they have {', '.join(sorted(known)[:8])})"
            )
    regions = _regions(regions_path, _contigs(ref, pred)) if regions_path else None
    result = compare(
        ref,
        pred,
        mode=feature,
        longest_isoform=longest_isoform,
        seqids=seqid_list,
        regions=regions,
        all_seqids=all_seqids,
        gene_rule=gene_rule,
    )
    if seqid_list is None:
        _check_shared_seqids(ref, pred, feature, reference, prediction, all_seqids)
    left = left_out_text(result)
    if left:
        click.echo(
            f"genoseg eval: left out, not on a sequence the reference annotates "
            f"(--all-seqids scores them): {left}"
            if seqid_list is None
            else f"genoseg eval: left out, not in --seqids: {left}",
            err=True,
        )
    edges = region_edges_text(result)
    if edges:
        click.echo(f"genoseg eval: {edges}", err=True)
    click.echo(
        f"genoseg eval: scored on {len(result.scored_seqids)} "
        f"sequence{'' if len(result.scored_seqids) == 1 else 's'}: {counts_text(result)}",
        err=True,
    )
    calib = result.calibration(n_bins=bins)
    if as_json:
        summaries = {"reference": vars(ref.summary), "prediction": vars(pred.summary)}
        text = to_json(
            result, calib, reference=reference, prediction=prediction, summaries=summaries
        )
    else:
        text = format_table(result, calib, reference=reference, prediction=prediction)
    if reliability:
        if usable(calib):
            title = f"{os.path.basename(prediction)} vs {os.path.basename(reference)} ({feature})"
            plot_reliability(calib, reliability, title)
        else:
            why = "; ".join(
                f"{kind}: {c.note}" + (f" ({c.unscored} without a score)" if c.unscored else "")
                for kind, c in calib.items()
            )
            click.echo(
                f"genoseg eval: warning: no reliability diagram written to {reliability}, "
                f"the prediction has no posteriors to draw ({why})",
                err=True,
            )
    _write_text(output, text, inputs)


def _check_shared_seqids(
    ref: Annotation,
    pred: Annotation,
    feature: str,
    reference: str,
    prediction: str,
    all_seqids: bool,
) -> None:
    """Fail (or warn under --all-seqids) when no predicted transcript is on a reference seqid."""
    scored_kind = [t for t in pred.transcripts() if feature == "exon" or t.is_coding]
    pred_seqids = sorted({t.seqid for t in scored_kind})
    ref_seqids = sorted({t.seqid for t in ref.transcripts() if feature == "exon" or t.is_coding})
    if not pred_seqids or set(pred_seqids) & set(ref_seqids):
        return

    def names(ids: list[str]) -> str:
        shown = ", ".join(repr(s) for s in ids[:5])
        return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

    message = (
        f"no sequence name is shared: {reference} annotates {names(ref_seqids)}, "
        f"{prediction} predicts on {names(pred_seqids)} (do the names differ, e.g. 'chr1' "
        "vs '1'?)"
    )
    if not all_seqids:
        raise GenosegError(message + "; --all-seqids scores them anyway")
    click.echo(f"genoseg eval: warning: {message}", err=True)


@click.command("plot")
@click.argument("region")
@click.option(
    "-r",
    "--reference",
    type=click.Path(dir_okay=False),
    help="Reference annotation (GFF3/GTF).",
)
@click.option(
    "-p",
    "--prediction",
    "predictions",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Predicted annotation (GFF3/GTF); repeatable.",
)
@click.option(
    "-t",
    "--track",
    "tracks",
    multiple=True,
    help="Posterior track, bedGraph or bigWig, as FILE or NAME=FILE; repeatable.",
)
@click.option(
    "--genome",
    type=click.Path(dir_okay=False),
    help="FASTA (with .fai) giving contig lengths; otherwise ##sequence-region lines are used.",
)
@click.option(
    "--skip-missing-parents", is_flag=True, help="Drop lines whose Parent is not in the file."
)
@click.option("-o", "--output", required=True, help="PNG to write.")
def plot_command(
    region: str,
    reference: str | None,
    predictions: tuple[str, ...],
    tracks: tuple[str, ...],
    genome: str | None,
    skip_missing_parents: bool,
    output: str,
) -> None:
    """Draw REGION (chr:start-end, 1-based inclusive) with gene models and posterior tracks."""
    from genoseg.data.fasta import index_inputs
    from genoseg.data.regions import parse_region
    from genoseg.eval.calibration import _pyplot
    from genoseg.eval.plot import parse_track_spec, plot_region

    _pyplot()
    if not reference and not predictions and not tracks:
        raise GenosegError("plot: give at least one of --reference, --prediction, --track")
    if output == "-":
        raise GenosegError("-o: a PNG cannot be written to stdout; give a path")
    track_specs = [parse_track_spec(t) for t in tracks]
    inputs = [("--reference", reference), ("--genome", genome)]
    if genome:  # its index is an input too (built beside it, or read)
        inputs += list(index_inputs(genome, "--genome").items())
    inputs += [("--prediction", p) for p in predictions] + [("--track", t) for _, t in track_specs]
    for option, path in inputs:
        check_not_input({"-o": output}, {option: path})
    mp = "skip" if skip_missing_parents else "error"
    ref = read_annotation(reference, feature="exon", missing_parents=mp) if reference else None
    preds = [(p, read_annotation(p, feature="exon", missing_parents=mp)) for p in predictions]
    anns = [a for a in [ref, *(a for _, a in preds)] if a is not None]
    if genome:
        contigs = _fai_lengths(genome)
        source = genome
    else:
        contigs = _contigs(*anns)
        for _, tpath in track_specs:
            for sid in _track_seqids(tpath):
                contigs.setdefault(sid, _BIG)
        source = "the inputs"
    reg = parse_region(region, contigs, source=source)
    plot_region(
        reg.contig,
        reg.start,
        reg.end,
        output,
        reference=(reference, ref) if ref is not None else None,
        predictions=preds,
        tracks=track_specs,
    )
    click.echo(f"genoseg plot: wrote {output}", err=True)


def _fai_lengths(fasta: str) -> dict[str, int]:
    """Contig lengths of a FASTA (index built or cached by genoseg.data.fasta)."""
    from genoseg.data.fasta import Genome

    with Genome.open(fasta) as g:
        return dict(g.contigs)


def _track_seqids(path: str) -> set[str]:
    from genoseg.eval.plot import track_seqids

    return track_seqids(path)
