"""RNA-seq evidence tracks from a coordinate-sorted, indexed BAM or CRAM (pysam).

For a range ``[start, end)`` (0-based half-open) :meth:`Evidence.track` returns float32
counts of shape (8, end - start), channels :data:`CHANNELS`, in forward coordinates:

====  ==============  ==========================================================
  0   ``cov+``        reads of the + strand with an aligned base (M, =, X) here
  1   ``intron+``     + strand split reads spanning this position as an intron (N)
  2   ``donor+``      + strand introns whose donor (5' splice site) base is here:
                      the first intron base
  3   ``acceptor+``   + strand introns whose acceptor base is here: the last intron base
  4-7 same for ``-``  donor = last intron base, acceptor = first intron base (forward
                      coordinates), so that :func:`reverse_evidence` maps them onto
                      channels 0-3 of the reverse-complemented window.
====  ==============  ==========================================================

Transcript strand of a read:

* a spliced read carrying a strand tag: the tag wins in every mode. ``XS:A:+`` / ``XS:A:-``
  (HISAT2, STAR ``--outSAMstrandField intronMotif``, TopHat) gives the transcript strand
  directly; minimap2's ``ts:A:+`` / ``ts:A:-`` (``-ax splice``, Iso-Seq, ONT) is *relative
  to the read*: ``ts:A:+`` means the transcript is on the strand the read aligned to, so
  ``ts:A:+`` on a reverse-strand read is a minus-strand transcript (and ``ts:A:-`` on it a
  plus-strand one). Integer ``XS:i`` (BWA's suboptimal score) and ``ts:A:.`` are ignored;
* ``auto`` (the default): :meth:`Evidence.open` infers the library protocol from the
  first spliced reads with a strand tag (up to 2,000 of them within the first 200,000
  alignments): when at least 50 are found and at least 90 % agree, untagged reads are
  stranded as ``fr-secondstrand`` (read 1 / single-end read on the transcript strand:
  oriented Iso-Seq, direct RNA, ScriptSeq) or ``fr-firststrand`` (dUTP); otherwise as
  ``unstranded``. :meth:`Evidence.describe` says what was inferred and from how many reads;
* ``unstranded``: untagged reads are counted on both strands (channels 0-3 and 4-7 then
  carry the same values);
* ``fr-firststrand`` (dUTP, Illumina TruSeq Stranded; TopHat ``fr-firststrand``,
  HISAT2 ``RF``, Salmon ``ISR``, htseq-count ``-s reverse``, featureCounts ``-s 2``):
  read 1 (or a single-end read) aligns to the opposite strand of the transcript, read 2 to
  the transcript strand. Alias ``rf``.
* ``fr-secondstrand`` (ligation, SOLiD, Illumina ScriptSeq; TopHat ``fr-secondstrand``,
  HISAT2 ``FR``, Salmon ``ISF``, htseq-count ``-s yes``, featureCounts ``-s 1``): read 1 (or
  a single-end read) aligns to the transcript strand. Alias ``fr``.

Unmapped, secondary, QC-failed and duplicate reads and reads below ``min_mapq`` are
skipped. Counts are raw (reads, not fragments); models should compress them (log1p).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pysam

from genoseg.data.handle import ProcessLocalHandle, quiet_htslib
from genoseg.data.regions import missing_contig_message
from genoseg.errors import GenosegError

__all__ = [
    "CHANNELS",
    "STRANDEDNESS",
    "Evidence",
    "check_strandedness",
    "infer_library",
    "RC_CHANNELS",
    "reverse_evidence",
]

CHANNELS: tuple[str, ...] = (
    "cov+",
    "intron+",
    "donor+",
    "acceptor+",
    "cov-",
    "intron-",
    "donor-",
    "acceptor-",
)
N_CHANNELS = len(CHANNELS)

STRANDEDNESS: dict[str, str] = {
    "auto": "auto",
    "unstranded": "unstranded",
    "fr-firststrand": "fr-firststrand",
    "rf": "fr-firststrand",
    "fr-secondstrand": "fr-secondstrand",
    "fr": "fr-secondstrand",
}

_SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x400  # unmapped, secondary, qcfail, duplicate
RC_CHANNELS = np.array([4, 5, 6, 7, 0, 1, 2, 3])  # channel k of the reverse complement
_PLUS, _MINUS, _BOTH = 0, 1, 2
# auto: sample at most this many alignments / tagged spliced reads, need this many tagged
# reads and this agreement to call a stranded protocol
_AUTO_SCAN, _AUTO_TAGGED, _AUTO_MIN, _AUTO_AGREE = 200_000, 2_000, 50, 0.9


def check_strandedness(value: str) -> str:
    """The canonical protocol name of a strandedness value (aliases ``rf``, ``fr``);
    GenosegError listing the allowed values otherwise."""
    mode = STRANDEDNESS.get(value)
    if mode is None:
        raise GenosegError(f"strandedness '{value}' is not one of {', '.join(STRANDEDNESS)}")
    return mode


def _spliced(read: pysam.AlignedSegment) -> bool:
    cig = read.cigartuples
    return bool(cig) and any(op == 3 for op, _ in cig)


def _tag_strand(read: pysam.AlignedSegment) -> int | None:
    """Transcript strand from XS:A (absolute) or minimap2 ts:A (relative to the read),
    or None. Call only for spliced reads."""
    if read.has_tag("XS"):
        xs = read.get_tag("XS")
        if xs == "+":
            return _PLUS
        if xs == "-":
            return _MINUS
    if read.has_tag("ts"):
        ts = read.get_tag("ts")
        if ts in ("+", "-"):
            same = ts == "+"
            return _PLUS if same != read.is_reverse else _MINUS
    return None


def _first_in_pair(read: pysam.AlignedSegment) -> bool:
    return not read.is_paired or read.is_read1


def infer_library(reads, *, max_reads: int = _AUTO_SCAN) -> tuple[str, int, float]:
    """Library protocol from strand-tagged spliced reads: (protocol, tagged reads seen,
    fraction agreeing with the protocol). For each tagged read, the strand of read 1 (a
    read 2 counts flipped) is compared with the tag's transcript strand: mostly equal ->
    ``fr-secondstrand``, mostly opposite -> ``fr-firststrand``, else ``unstranded``."""
    same = opposite = scanned = 0
    for read in reads:
        scanned += 1
        if scanned > max_reads or same + opposite >= _AUTO_TAGGED:
            break
        if read.flag & _SKIP_FLAGS or not _spliced(read):
            continue
        t = _tag_strand(read)
        if t is None:
            continue
        r1_plus = (not read.is_reverse) == _first_in_pair(read)
        if r1_plus == (t == _PLUS):
            same += 1
        else:
            opposite += 1
    n = same + opposite
    if n < _AUTO_MIN:
        return "unstranded", n, 0.0
    if same >= _AUTO_AGREE * n:
        return "fr-secondstrand", n, same / n
    if opposite >= _AUTO_AGREE * n:
        return "fr-firststrand", n, opposite / n
    return "unstranded", n, max(same, opposite) / n


_ALIGNED_OPS = (0, 7, 8)  # M, =, X
_REF_OPS = (0, 2, 3, 7, 8)  # ops that advance on the reference


def reverse_evidence(track: np.ndarray) -> np.ndarray:
    """Evidence (8, L) of a window -> evidence of its reverse complement (8, L).

    Swaps the + and - channel blocks and reverses positions, so channel 2 is again the
    donor (first intron base) in the reverse-complemented coordinates.
    """
    return track[..., RC_CHANNELS, ::-1].copy()


class Evidence(ProcessLocalHandle):
    """RNA-seq evidence reader over one indexed BAM/CRAM; open with :meth:`Evidence.open`.

    Picklable (the file is reopened lazily in each process).
    """

    def __init__(
        self,
        path: Path,
        reference: Path | None,
        strandedness: str,
        min_mapq: int,
        contigs: dict[str, int],
        library: str | None = None,
        inferred_from: tuple[int, float] | None = None,
    ):
        self.path = path
        self.reference = reference
        self.strandedness = strandedness  # as requested (canonical name, may be "auto")
        # protocol used for reads without a strand tag (auto: the inferred one)
        self.library = library if library is not None else strandedness
        self.inferred_from = inferred_from  # auto: (tagged reads, agreeing fraction)
        self.min_mapq = min_mapq
        self.contigs = contigs  # the BAM header's {name: length}
        ProcessLocalHandle.__init__(self)

    @property
    def index_warning(self) -> str | None:
        """A line for the log when the index is older than the file
        (:func:`stale_index_warning`), else None."""
        return stale_index_warning(self.path)

    def describe(self) -> str:
        """The strandedness in use, e.g. ``auto: fr-firststrand (1,843 of 2,000 spliced
        reads with an XS/ts tag agree)``."""
        if self.strandedness != "auto":
            return self.strandedness
        n, frac = self.inferred_from or (0, 0.0)
        if n < _AUTO_MIN:
            return (
                f"auto: unstranded (only {n} spliced reads with an XS/ts tag; "
                "untagged reads count on both strands)"
            )
        return (
            f"auto: {self.library} ({round(frac * n):,} of {n:,} spliced reads with an "
            f"XS/ts tag agree)"
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        genome_contigs: Mapping[str, int] | None = None,
        *,
        strandedness: str = "auto",
        min_mapq: int = 0,
        reference: str | os.PathLike | None = None,
        allow_missing: bool = False,
    ) -> Evidence:
        """Open and check a BAM/CRAM against the genome's ``{contig: length}``.

        Raises GenosegError (naming the file) when the file is missing or unreadable, has no
        index, is not coordinate-sorted, lacks genome contigs (unless ``allow_missing``:
        those contigs then get zero evidence) or has contigs of other lengths (another
        assembly). ``reference`` is the FASTA for CRAM decoding.
        """
        p = Path(path)
        mode = check_strandedness(strandedness)
        if min_mapq < 0:
            raise GenosegError(f"min_mapq must be >= 0, got {min_mapq}")
        if not p.exists():
            raise GenosegError(f"{p}: BAM/CRAM file not found")
        fh = cls._open_file(p, Path(reference) if reference else None)
        try:
            if fh.is_sam:
                out = p.with_name(f"{p.stem}.sorted.bam")
                raise GenosegError(
                    f"{p}: is a SAM text file; convert and index it: "
                    f"samtools sort -o {out} {p} && samtools index {out}"
                )
            if not fh.has_index():
                kind = ".crai" if fh.is_cram else ".bai or .csi"
                raise GenosegError(
                    f"{p}: no index found ({kind}); create it with 'samtools index {p}'"
                )
            so = fh.header.to_dict().get("HD", {}).get("SO")
            if so is not None and so != "coordinate":
                raise GenosegError(
                    f"{p}: sorted by '{so}', not by coordinate; sort it with "
                    f"'samtools sort -o sorted.bam {p}' and index the result"
                )
            header = dict(zip(fh.references, fh.lengths))
            if genome_contigs is not None:
                _check_contigs(p, header, genome_contigs, allow_missing)
            library, inferred = mode, None
            if mode == "auto":
                try:
                    with quiet_htslib():
                        library, n, frac = infer_library(fh.fetch(until_eof=True))
                except (OSError, ValueError) as exc:
                    raise GenosegError(
                        f"{p}: cannot read alignments: {exc}{_hint(fh.is_cram, reference)}"
                    ) from None
                inferred = (n, frac)
        finally:
            fh.close()
        ref = Path(reference) if reference else None
        return cls(p, ref, mode, min_mapq, header, library, inferred)

    @staticmethod
    def _open_file(p: Path, reference: Path | None) -> pysam.AlignmentFile:
        kw = {"reference_filename": str(reference)} if reference else {}
        try:
            with quiet_htslib():
                return pysam.AlignmentFile(str(p), **kw)
        except (OSError, ValueError) as exc:
            if "no sequences defined" in str(exc):  # text that is not SAM, or no @SQ lines
                raise GenosegError(
                    f"{p}: not a BAM/CRAM file (or its header has no @SQ contig lines)"
                ) from None
            raise GenosegError(f"{p}: cannot read as BAM/CRAM: {exc}") from None

    def _open_handle(self) -> pysam.AlignmentFile:
        return self._open_file(self.path, self.reference)

    # -- reads ---------------------------------------------------------------------
    def _strand(self, read: pysam.AlignedSegment, spliced: bool) -> int:
        if spliced:
            t = _tag_strand(read)
            if t is not None:
                return t
        if self.library == "unstranded":
            return _BOTH
        first = _first_in_pair(read)
        same = first == (self.library == "fr-secondstrand")
        forward = not read.is_reverse
        return _PLUS if forward == same else _MINUS

    def _reads(self, contig: str, start: int, end: int):
        if contig not in self.contigs:
            return
        n = self.contigs[contig]
        if not (0 <= start <= end <= n):
            raise GenosegError(
                f"{self.path}: range {contig}:{start}-{end} is outside the contig (length {n})"
            )
        if start == end:
            return
        try:
            with quiet_htslib():  # a read error is reported once, below
                for read in self._handle().fetch(contig, start, end):
                    if read.flag & _SKIP_FLAGS or read.mapping_quality < self.min_mapq:
                        continue
                    cig = read.cigartuples
                    if not cig:
                        continue
                    yield read, cig
        except (OSError, ValueError) as exc:
            cram = self.path.suffix.lower() == ".cram"
            self._discard_handle()
            raise GenosegError(
                f"{self.path}: cannot read {contig}:{start}-{end}: {exc} (corrupt file, or an "
                f"index made for another version of it: re-create it with "
                f"'samtools index {self.path}'){_hint(cram, self.reference)}"
            ) from None

    def track(self, contig: str, start: int, end: int) -> np.ndarray:
        """Evidence counts of ``[start, end)`` (0-based half-open): float32 (8, end-start).

        A contig absent from the BAM header (allowed with ``allow_missing``) gives zeros.
        """
        n = end - start
        diff = np.zeros((N_CHANNELS, n + 1), dtype=np.int64)  # cov / intron run-lengths
        point = np.zeros((N_CHANNELS, n), dtype=np.int64)  # donor / acceptor counts
        runs_ch: list[int] = []
        runs_a: list[int] = []
        runs_b: list[int] = []
        pts_ch: list[int] = []
        pts_x: list[int] = []
        for read, cig in self._reads(contig, start, end):
            spliced = any(op == 3 for op, _ in cig)
            s = self._strand(read, spliced)
            bases = (0, 4) if s == _BOTH else ((0,) if s == _PLUS else (4,))
            pos = read.reference_start
            for op, length in cig:
                if op in _ALIGNED_OPS or op == 3:
                    a, b = max(pos, start), min(pos + length, end)
                    if a < b:
                        off = 0 if op != 3 else 1
                        for base in bases:
                            runs_ch.append(base + off)
                            runs_a.append(a - start)
                            runs_b.append(b - start)
                    if op == 3:
                        first, last = pos, pos + length - 1
                        for base in bases:
                            donor, acceptor = (first, last) if base == 0 else (last, first)
                            if start <= donor < end:
                                pts_ch.append(base + 2)
                                pts_x.append(donor - start)
                            if start <= acceptor < end:
                                pts_ch.append(base + 3)
                                pts_x.append(acceptor - start)
                if op in _REF_OPS:
                    pos += length
        if runs_ch:
            ch = np.asarray(runs_ch)
            np.add.at(diff, (ch, np.asarray(runs_a)), 1)
            np.add.at(diff, (ch, np.asarray(runs_b)), -1)
        if pts_ch:
            np.add.at(point, (np.asarray(pts_ch), np.asarray(pts_x)), 1)
        out = np.cumsum(diff[:, :n], axis=1) + point
        return out.astype(np.float32)

    def junctions(self, contig: str, start: int = 0, end: int | None = None) -> Counter:
        """Split-read counts per intron overlapping ``[start, end)``.

        Keys are ``(intron_start, intron_end, strand)``, 0-based half-open intron
        coordinates and strand '+', '-' or '.' (unknown, unstranded library without XS).
        """
        end = self.contigs.get(contig, 0) if end is None else end
        counts: Counter = Counter()
        for read, cig in self._reads(contig, start, end):
            if not any(op == 3 for op, _ in cig):
                continue
            s = "+-."[self._strand(read, True)]
            pos = read.reference_start
            for op, length in cig:
                if op == 3 and pos < end and pos + length > start:
                    counts[(pos, pos + length, s)] += 1
                if op in _REF_OPS:
                    pos += length
        return counts


def index_path(path: Path) -> Path | None:
    """The index htslib uses for the BAM/CRAM ``path`` (``X.bam.bai``, ``X.bai``,
    ``X.bam.csi``, ``X.cram.crai``, ``X.crai``), or None when there is none."""
    for cand in (
        Path(f"{path}.bai"),
        path.with_suffix(".bai"),
        Path(f"{path}.csi"),
        Path(f"{path}.crai"),
        path.with_suffix(".crai"),
    ):
        if cand.is_file():
            return cand
    return None


def stale_index_warning(path: Path) -> str | None:
    """A one-line warning when the index of ``path`` is older than the file (the file may
    have been rewritten after indexing: reads would be looked up at wrong offsets); None
    when it is not, or there is no index. A copy without ``cp -p`` also trips it."""
    idx = index_path(path)
    if idx is None:
        return None
    try:
        if idx.stat().st_mtime + 1.0 >= path.stat().st_mtime:
            return None
    except OSError:
        return None
    return (
        f"warning: {idx} is older than {path}; if the file was rewritten after indexing, "
        f"re-create the index with 'samtools index {path}'"
    )


def _hint(cram: bool, reference: str | os.PathLike | None) -> str:
    """For a CRAM read error: where its reference sequence came from."""
    if not cram:
        return ""
    ref = f"the reference {reference}" if reference else "no reference FASTA"
    return f"; a CRAM decodes against its reference sequence: {ref} was given"


def _check_contigs(
    path: Path, header: dict[str, int], genome: Mapping[str, int], allow_missing: bool
) -> None:
    missing = [c for c in genome if c not in header]
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        hint = missing_contig_message(missing[0], header, f"{path}")
        raise GenosegError(
            f"{path}: {len(missing)} of {len(genome)} genome contigs are not in the BAM "
            f"header ({shown}); {hint}"
        )
    for name, n in genome.items():
        if name in header and header[name] != n:
            raise GenosegError(
                f"{path}: contig '{name}' has length {header[name]} in the BAM header but "
                f"{n} in the genome: the reads were aligned to another assembly"
            )
