"""Indexed FASTA access: plain or bgzip-compressed, read slice by slice.

Coordinates are 0-based half-open throughout. Sequences are encoded as uint8 codes
A=0, C=1, G=2, T=3, and 4 for N, IUPAC ambiguity codes and anything else; soft-masking
(lowercase) is kept as a separate boolean channel.

The .fai (and .gzi for bgzip) index is used from beside the FASTA when it is present and
not older than the FASTA. Otherwise the FASTA is validated (one streaming pass: header
names, duplicates, empty records, line layout, characters) and indexed, beside the FASTA
when that directory is writable, else in the cache directory (``$GENOSEG_CACHE``, else
``$XDG_CACHE_HOME/genoseg``, else ``~/.cache/genoseg``) keyed by absolute path, mtime and
size. A FASTA is validated once per version: the result is remembered in the cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pysam

from genoseg.data.handle import ProcessLocalHandle, quiet_htslib
from genoseg.data.regions import missing_contig_message
from genoseg.errors import GenosegError
from genoseg.io.atomic import atomic_path

__all__ = [
    "CODE_A",
    "CODE_C",
    "CODE_G",
    "CODE_T",
    "CODE_N",
    "Genome",
    "cache_dir",
    "decode_codes",
    "encode_sequence",
    "index_inputs",
    "reverse_complement_codes",
]

CODE_A, CODE_C, CODE_G, CODE_T, CODE_N = 0, 1, 2, 3, 4

_ENCODE = np.full(256, CODE_N, dtype=np.uint8)
for _base, _code in (("A", 0), ("C", 1), ("G", 2), ("T", 3), ("U", 3)):
    _ENCODE[ord(_base)] = _code
    _ENCODE[ord(_base.lower())] = _code
_SOFTMASK = np.zeros(256, dtype=bool)
_SOFTMASK[ord("a") : ord("z") + 1] = True
_DECODE = np.frombuffer(b"ACGTN", dtype=np.uint8)
_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)

# Bytes allowed in sequence lines: letters (IUPAC and others map to N), gap/stop symbols
# and whitespace. Digits or other symbols mean the file is not FASTA (e.g. GenBank).
_ALLOWED = bytes(range(ord("A"), ord("Z") + 1)) + bytes(range(ord("a"), ord("z") + 1))
_ALLOWED += b"*-.\n\r\t "

_CHUNK = 1 << 23


def encode_sequence(seq: str | bytes) -> tuple[np.ndarray, np.ndarray]:
    """Encode a sequence: returns (codes uint8 (L,), softmask bool (L,)).

    Codes: A=0, C=1, G=2, T/U=3, everything else (N, IUPAC ambiguity codes) = 4.
    softmask is True where the input letter is lowercase.
    """
    raw = seq.encode("ascii") if isinstance(seq, str) else bytes(seq)
    arr = np.frombuffer(raw, dtype=np.uint8)
    return _ENCODE[arr], _SOFTMASK[arr]


def decode_codes(codes: np.ndarray) -> str:
    """Codes (L,) uint8 -> uppercase string over ACGTN."""
    return _DECODE[np.asarray(codes, dtype=np.uint8)].tobytes().decode("ascii")


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of codes along the last axis (N stays N); returns a new array."""
    return _COMPLEMENT[np.asarray(codes, dtype=np.uint8)][..., ::-1].copy()


def cache_dir() -> Path:
    """The writable cache directory of genoseg (not created here)."""
    env = os.environ.get("GENOSEG_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "genoseg"


def _sniff(path: Path) -> bool:
    """True for bgzip, False for plain text; GenosegError for other compressions."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(18)
    except IsADirectoryError:
        raise GenosegError(f"{path}: is a directory, not a FASTA file") from None
    except OSError as exc:
        raise GenosegError(f"{path}: cannot read FASTA: {exc.strerror or exc}") from None
    if head[:2] == b"\x1f\x8b":
        # BGZF: gzip member with FEXTRA and a 'BC' subfield.
        if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":
            return True
        raise GenosegError(
            f"{path}: compressed with plain gzip, which cannot be read by position; "
            f"recompress it with bgzip (gunzip -c {path.name} | bgzip > "
            f"{path.name.removesuffix('.gz')}.bgz) or decompress it"
        )
    for magic, name in ((b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd")):
        if head.startswith(magic):
            raise GenosegError(f"{path}: compressed with {name}; decompress it or use bgzip")
    return False


class _Scanner:
    """One streaming validation pass over a FASTA (bytes in, errors with file:line)."""

    def __init__(self, path: Path):
        self.path = path
        self.line = 1  # line number of the first byte of the next buffer
        self.names: dict[str, int] = {}
        self.cur: str | None = None
        self.cur_line = 0
        self.cur_has_seq = False
        self.width = -1  # length of the record's first sequence line
        self.short_line = 0  # line number of a shorter (final?) line, 0 if none

    def _err(self, line: int, msg: str) -> GenosegError:
        return GenosegError(f"{self.path}:{line}: {msg}")

    def _close_record(self) -> None:
        if self.cur is not None and not self.cur_has_seq:
            raise self._err(self.cur_line, f"record '{self.cur}' has no sequence")

    def _sequence(self, seg: bytes) -> None:
        if not seg:
            return
        if seg.isspace():
            self.line += seg.count(b"\n")
            return
        if self.cur is None:
            raise self._err(self.line, "sequence data before the first '>' header (not FASTA?)")
        bad = seg.translate(None, _ALLOWED)
        if bad:
            where = seg.index(bad[:1])
            char = bad[:1].decode("latin-1")
            raise self._err(
                self.line + seg.count(b"\n", 0, where),
                f"unexpected character {char!r} in sequence of record '{self.cur}'",
            )
        self.cur_has_seq = True
        arr = np.frombuffer(seg, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts
        # Strip a trailing '\r' so CRLF files are measured like LF files.
        cr = (lengths > 0) & (arr[np.maximum(ends - 1, 0)] == 13)
        lengths = lengths - cr
        for k in self._layout_breaks(lengths):
            raise self._err(
                self.line + int(k),
                f"lines of record '{self.cur}' differ in length (only its last line may be "
                f"shorter); rewrap it, e.g. with 'seqkit seq -w 60'",
            )
        self.line += len(ends)

    def _layout_breaks(self, lengths: np.ndarray) -> Iterator[int]:
        """Yield the offset of the first line violating the fixed-width layout, if any."""
        if len(lengths) == 0:
            return
        if self.width < 0:
            self.width = int(lengths[0])
        if self.short_line:
            nonempty = np.flatnonzero(lengths > 0)
            if len(nonempty):
                yield int(nonempty[0])
            return
        off = np.flatnonzero(lengths != self.width)
        if len(off) == 0:
            return
        k = int(off[0])
        if lengths[k] > self.width:
            yield k
            return
        rest = lengths[k + 1 :]
        later = np.flatnonzero(rest > 0)
        if len(later):
            yield k + 1 + int(later[0])
            return
        self.short_line = self.line + k

    def _header(self, raw: bytes) -> None:
        self._close_record()
        fields = raw[1:].split(None, 1)
        if not fields:
            raise self._err(self.line, "FASTA header without a name")
        try:
            name = fields[0].decode("utf-8")
        except UnicodeDecodeError:
            raise self._err(
                self.line, f"contig name {fields[0]!r} is not UTF-8 text; rename the record"
            ) from None
        if name in self.names:
            raise self._err(
                self.line,
                f"duplicate contig name '{name}' (first at line {self.names[name]})",
            )
        self.names[name] = self.line
        self.cur, self.cur_line, self.cur_has_seq = name, self.line, False
        self.width, self.short_line = -1, 0
        self.line += 1

    def feed(self, buf: bytes) -> None:
        """Process complete lines (buf ends with b'\\n' or is the end of the file)."""
        pos, n = 0, len(buf)
        while pos < n:
            if buf[pos : pos + 1] == b">":
                h = pos
            else:
                h = buf.find(b"\n>", pos)
                h = n if h < 0 else h + 1
            self._sequence(buf[pos:h])
            if h >= n:
                break
            e = buf.find(b"\n", h)
            e = n if e < 0 else e
            self._header(buf[h:e])
            pos = e + 1

    def finish(self) -> list[str]:
        self._close_record()
        if not self.names:
            raise GenosegError(f"{self.path}: empty FASTA (no '>' records)")
        return list(self.names)


def _scan_fasta(path: Path, bgzf: bool) -> list[str]:
    """Validate a FASTA in one streaming pass; returns its record names in file order."""
    scanner = _Scanner(path)
    opener = gzip.open if bgzf else open
    try:
        with opener(path, "rb") as fh:
            carry = b""
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                buf = carry + chunk
                cut = buf.rfind(b"\n") + 1
                carry = buf[cut:]
                scanner.feed(buf[:cut])
            if carry:
                scanner.feed(carry + b"\n")
    except (OSError, EOFError) as exc:
        raise GenosegError(f"{path}: cannot read FASTA: {exc}") from None
    return scanner.finish()


def _key(path: Path) -> str:
    st = path.stat()
    ident = f"{path.resolve()}\0{st.st_mtime_ns}\0{st.st_size}".encode()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[:80]
    return f"{hashlib.sha256(ident).hexdigest()[:20]}-{safe}"


def _fresh(index: Path, path: Path) -> bool:
    try:
        return index.stat().st_mtime_ns >= path.stat().st_mtime_ns
    except OSError:
        return False


def _writable_dir(d: Path) -> bool:
    """True if files may be created in `d` (created if missing).

    A directory without any write permission bit counts as read-only even for root, so
    genoseg never writes into directories their owner marked read-only.
    """
    try:
        d.mkdir(parents=True, exist_ok=True)
        mode = d.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(d, os.W_OK | os.X_OK)


def _build_index(path: Path, bgzf: bool, fai: Path, gzi: Path | None) -> None:
    """Build the .fai (and .gzi) with htslib through :func:`genoseg.io.atomic.atomic_path`
    (temporaries renamed into place, .gzi first; file mode from the umask; removed on
    errors and on SIGTERM / SIGHUP / SIGINT)."""
    try:
        with contextlib.ExitStack() as stack:
            tmp_fai = stack.enter_context(atomic_path(fai))
            args = [str(path), "--fai-idx", str(tmp_fai)]
            if gzi is not None:  # entered last: renamed first, so a fresh .fai implies a .gzi
                args += ["--gzi-idx", str(stack.enter_context(atomic_path(gzi)))]
            with quiet_htslib():
                pysam.faidx(*args)
    except pysam.SamtoolsError as exc:
        raise GenosegError(f"{path}: cannot index FASTA: {str(exc).strip()}") from None


def _read_fai(fai: Path, path: Path) -> dict[str, int]:
    contigs: dict[str, int] = {}
    try:
        lines = fai.read_text().splitlines()
    except OSError as exc:
        raise GenosegError(f"{fai}: cannot read FASTA index: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise GenosegError(f"{fai}: FASTA index is not UTF-8 text (delete it to rebuild)") from None
    for i, line in enumerate(lines, 1):
        f = line.split("\t")
        if len(f) < 5 or not f[1].isdigit():
            raise GenosegError(f"{fai}:{i}: malformed FASTA index line (delete it to rebuild)")
        if f[0] in contigs:
            raise GenosegError(f"{path}: duplicate contig name '{f[0]}' (in index {fai})")
        if int(f[1]) == 0:
            raise GenosegError(f"{path}: record '{f[0]}' has no sequence (index {fai})")
        contigs[f[0]] = int(f[1])
    if not contigs:
        raise GenosegError(f"{path}: empty FASTA (index {fai} lists no records)")
    return contigs


def index_inputs(path: str | os.PathLike, option: str) -> dict[str, str]:
    """The index files beside the FASTA ``path`` (``PATH.fai``, and ``PATH.gzi`` of a bgzip
    FASTA) as inputs for :func:`genoseg.io.atomic.check_not_input`: ``{"OPTION index":
    PATH.fai, "OPTION bgzip index": PATH.gzi}``. An output must never replace them."""
    return {f"{option} index": f"{os.fspath(path)}.fai",
            f"{option} bgzip index": f"{os.fspath(path)}.gzi"}  # fmt: skip


def _locate_index(path: Path, cache: Path | None) -> tuple[Path, Path | None]:
    """Find or build the index of `path`; returns (fai, gzi or None)."""
    bgzf = _sniff(path)
    cache = (cache if cache is not None else cache_dir()) / "fai"
    key = _key(path)
    marker = cache / f"{key}.ok"
    beside_fai = Path(str(path) + ".fai")
    beside_gzi = Path(str(path) + ".gzi") if bgzf else None
    cache_fai = cache / f"{key}.fai"
    cache_gzi = cache / f"{key}.gzi" if bgzf else None

    def usable(fai: Path, gzi: Path | None) -> bool:
        return _fresh(fai, path) and (gzi is None or _fresh(gzi, path))

    for fai, gzi in ((beside_fai, beside_gzi), (cache_fai, cache_gzi)):
        if usable(fai, gzi):
            if not marker.exists():
                names = _scan_fasta(path, bgzf)
                _check_index_names(path, fai, names)
                if _writable_dir(cache):
                    marker.touch()
            return fai, gzi

    names = _scan_fasta(path, bgzf)
    if _writable_dir(path.parent):
        fai, gzi = beside_fai, beside_gzi
    elif _writable_dir(cache):
        fai, gzi = cache_fai, cache_gzi
    else:
        raise GenosegError(
            f"{path}: no FASTA index and neither {path.parent} nor the cache {cache} is "
            f"writable; set GENOSEG_CACHE to a writable directory"
        )
    _build_index(path, bgzf, fai, gzi)
    _check_index_names(path, fai, names)
    if _writable_dir(cache):
        marker.touch()
    return fai, gzi


def _check_index_names(path: Path, fai: Path, names: list[str]) -> None:
    indexed = list(_read_fai(fai, path))
    if indexed != names:
        raise GenosegError(
            f"{path}: index {fai} does not match the FASTA records (stale index? delete it)"
        )


class Genome(ProcessLocalHandle):
    """Random access to an indexed FASTA; never loads a whole contig unless asked.

    Open with :meth:`Genome.open`. ``contigs`` maps name -> length in file order.
    Picklable (the file handle is reopened lazily in each process), so a Genome can be
    handed to DataLoader workers.
    """

    def __init__(self, path: Path, fai: Path, gzi: Path | None, contigs: dict[str, int]):
        self.path = path
        self.fai = fai
        self.gzi = gzi
        self.contigs: dict[str, int] = contigs
        ProcessLocalHandle.__init__(self)

    @classmethod
    def open(cls, path: str | os.PathLike, *, cache: str | os.PathLike | None = None) -> Genome:
        """Open a plain or bgzip FASTA, validating and indexing it if needed."""
        p = Path(path)
        if not p.exists():
            raise GenosegError(f"{p}: FASTA file not found")
        fai, gzi = _locate_index(p, Path(cache) if cache is not None else None)
        return cls(p, fai, gzi, _read_fai(fai, p))

    # -- handle management (ProcessLocalHandle) -----------------------------------
    def _open_handle(self) -> pysam.FastaFile:
        try:
            return pysam.FastaFile(
                str(self.path),
                filepath_index=str(self.fai),
                filepath_index_compressed=str(self.gzi) if self.gzi else None,
            )
        except (OSError, ValueError) as exc:
            raise GenosegError(f"{self.path}: cannot open FASTA: {exc}") from None

    def __repr__(self) -> str:
        return f"Genome({str(self.path)!r}, {len(self.contigs)} contigs, {self.total_length} bp)"

    @property
    def total_length(self) -> int:
        return sum(self.contigs.values())

    # -- access --------------------------------------------------------------------
    def length(self, contig: str) -> int:
        """Length of `contig`; GenosegError naming the contig and file if absent."""
        try:
            return self.contigs[contig]
        except KeyError:
            raise GenosegError(
                missing_contig_message(contig, self.contigs, str(self.path))
            ) from None

    def _check(self, contig: str, start: int, end: int) -> None:
        n = self.length(contig)
        if not (0 <= start <= end <= n):
            raise GenosegError(
                f"{contig}:{start}-{end} (0-based half-open) is outside contig '{contig}' "
                f"of length {n} in {self.path}"
            )

    def fetch(self, contig: str, start: int = 0, end: int | None = None) -> str:
        """Sequence of [start, end) (0-based half-open) with its original case."""
        end = self.length(contig) if end is None else end
        self._check(contig, start, end)
        if start == end:
            return ""
        try:
            with quiet_htslib():  # the error is reported once, below
                seq = self._handle().fetch(contig, start, end)
        except (OSError, ValueError, KeyError) as exc:
            self._discard_handle()
            raise GenosegError(
                f"{self.path}: cannot read {contig}:{start}-{end}: {exc} (truncated file or "
                f"stale index {self.fai}? delete the index to rebuild it)"
            ) from None
        if len(seq) != end - start:
            raise GenosegError(
                f"{self.path}: read {len(seq)} bp for {contig}:{start}-{end}, expected "
                f"{end - start} (truncated file or stale index {self.fai}?)"
            )
        return seq

    def encode(
        self, contig: str, start: int = 0, end: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Codes uint8 (end-start,) and softmask bool (end-start,) of [start, end)."""
        return encode_sequence(self.fetch(contig, start, end))
