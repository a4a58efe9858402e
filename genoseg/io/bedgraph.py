"""Streaming writers of posterior tracks: bedGraph, and bigWig through pyBigWig (an extra).

A writer takes chunks of per-base values, ``add(contig, start, values)`` (0-based, forward
strand: ``values[i]`` belongs to base ``start + i``), in any order within a contig, e.g. the
reverse order in which the engine's backward pass produces posteriors. Values are rounded to
``digits`` decimals (default 3, i.e. steps of 0.001) and runs of equal rounded values are
merged into one line / entry, also across chunk boundaries. Output is sorted by start
within each contig; chunks that continue the written part of the contig are written
immediately, others are kept in an anonymous temporary file (not in memory) until the gap
before them is filled or the contig ends, so memory does not grow with contig length.

Contigs are written one after another: adding to a new contig ends the previous one (a
finished contig cannot be added to again). A bigWig needs its contigs in the order of its
header (the genome's order) and every contig's size up front.

bedGraph files start with ``track type=bedGraph name="<name>"`` (plus ``description``);
lines are ``contig  start  end  value`` (0-based half-open), every base that was added is
covered (zeros included).

Files are written atomically (genoseg.io.atomic): the destination appears only at
:meth:`close`; an exception inside ``with`` (or :meth:`abort`) leaves no file.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from genoseg.decode.tracks import TRACK_NAMES, TrackChunk
from genoseg.errors import GenosegError
from genoseg.io._dest import Destination
from genoseg.io.atomic import atomic_output, atomic_path, output_error

__all__ = [
    "BedGraphWriter",
    "BigWigWriter",
    "TrackWriter",
    "check_tracks_prefix",
    "have_pybigwig",
    "track_file_name",
]

_DTYPE = np.dtype([("start", "<i8"), ("end", "<i8"), ("value", "<f8")])
Emit = Callable[[str, np.ndarray, np.ndarray, np.ndarray], None]


def have_pybigwig() -> bool:
    """True when pyBigWig can be imported (``pip install 'genoseg[bigwig]'``)."""
    try:
        import pyBigWig  # noqa: F401
    except ImportError:
        return False
    return True


def track_file_name(prefix: str | os.PathLike, name: str, fmt: str = "bedgraph") -> Path:
    """File of track ``name``: ``{prefix}.{name}.{bedgraph|bw}`` with ``+`` / ``-`` spelled
    ``_plus`` / ``_minus`` (``genes.coding_plus.bedgraph``, ``genes.donor_minus.bw``)."""
    safe = name.replace("+", "_plus").replace("-", "_minus")
    ext = {"bedgraph": "bedgraph", "bigwig": "bw"}[fmt]
    return Path(f"{os.fspath(prefix)}.{safe}.{ext}")


def check_tracks_prefix(prefix: str | os.PathLike | None, option: str = "--tracks") -> None:
    """GenosegError for the prefix ``-``: tracks are one file per track
    (:func:`track_file_name`), so they cannot go to stdout. None (no tracks) passes."""
    if prefix is not None and os.fspath(prefix) == "-":
        raise GenosegError(
            f"{option} -: tracks are written one file per track (PREFIX.<track>.bedgraph or "
            ".bw), not to stdout; give a PREFIX"
        )


class _Runs:
    """Assembles value chunks of one contig at a time into ascending merged runs."""

    def __init__(self, digits: int, emit: Emit, contig_order: Sequence[str] | None = None):
        if not 0 <= digits <= 9:
            raise ValueError(f"digits must be in 0..9, got {digits}")
        self.digits = digits
        self._emit = emit
        self._order = {c: i for i, c in enumerate(contig_order)} if contig_order else None
        self._contig: str | None = None
        self._finished: set[str] = set()
        self._frontier = 0
        self._pending: list[tuple[int, int, int, int]] = []  # (start, end, offset, n runs)
        self._spool: IO[bytes] | None = None
        self._last: tuple[int, int, float] | None = None

    def _runs(self, start: int, values: np.ndarray) -> np.ndarray:
        v = np.round(np.asarray(values, dtype=np.float64), self.digits) + 0.0  # no -0.0
        if np.isnan(v).any():
            raise ValueError(f"track values at {start}.. contain NaN")
        n = len(v)
        cut = np.flatnonzero(v[1:] != v[:-1]) + 1
        out = np.empty(len(cut) + 1, dtype=_DTYPE)
        out["start"] = np.concatenate([[0], cut]) + start
        out["end"] = np.concatenate([cut, [n]]) + start
        out["value"] = v[out["start"] - start]
        return out

    def add(self, contig: str, start: int, values) -> None:
        values = np.asarray(values)
        if values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {values.shape}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if len(values) == 0:
            return
        if contig != self._contig:
            self.end_contig()
            if contig in self._finished:
                raise ValueError(f"contig {contig!r} was already finished; add contigs one by one")
            if self._order is not None:
                if contig not in self._order:
                    raise ValueError(f"contig {contig!r} is not in the genome")
                done = [self._order[c] for c in self._finished]
                if done and self._order[contig] < max(done):
                    raise ValueError(
                        f"contig {contig!r} comes before a finished contig in the genome's "
                        "order (bigWig needs contigs in genome order)"
                    )
            self._contig = contig
            self._frontier = 0
        end = start + len(values)
        if start < self._frontier:
            raise ValueError(f"{contig}:{start}-{end} overlaps bases already added")
        i = bisect.bisect_left(self._pending, (start,))
        if (i > 0 and self._pending[i - 1][1] > start) or (
            i < len(self._pending) and self._pending[i][0] < end
        ):
            raise ValueError(f"{contig}:{start}-{end} overlaps bases already added")
        runs = self._runs(start, values)
        if start == self._frontier:
            self._write(runs)
            self._drain()
            return
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(prefix="genoseg-track-")
        self._spool.seek(0, os.SEEK_END)
        offset = self._spool.tell()
        self._spool.write(runs.tobytes())
        self._pending.insert(i, (start, end, offset, len(runs)))

    def _read(self, offset: int, n: int) -> np.ndarray:
        assert self._spool is not None
        self._spool.seek(offset)
        return np.frombuffer(self._spool.read(n * _DTYPE.itemsize), dtype=_DTYPE)

    def _drain(self, everything: bool = False) -> None:
        while self._pending and (everything or self._pending[0][0] == self._frontier):
            _, _, offset, n = self._pending.pop(0)
            self._write(self._read(offset, n))
        if not self._pending and self._spool is not None:
            self._spool.close()
            self._spool = None

    def _write(self, runs: np.ndarray) -> None:
        starts, ends, vals = runs["start"].copy(), runs["end"].copy(), runs["value"].copy()
        last = self._last
        if last is not None and last[1] == starts[0] and last[2] == vals[0]:
            starts[0] = last[0]
        elif last is not None:
            self._emit(self._contig, np.array([last[0]]), np.array([last[1]]), np.array([last[2]]))
        self._last = (int(starts[-1]), int(ends[-1]), float(vals[-1]))
        if len(starts) > 1:
            self._emit(self._contig, starts[:-1], ends[:-1], vals[:-1])
        self._frontier = int(ends[-1])

    def end_contig(self) -> None:
        """Write everything held for the current contig (gaps stay uncovered)."""
        if self._contig is None:
            return
        self._drain(everything=True)
        if self._last is not None:
            s, e, v = self._last
            self._emit(self._contig, np.array([s]), np.array([e]), np.array([v]))
            self._last = None
        self._finished.add(self._contig)
        self._contig = None

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._pending.clear()


class _Writer:
    """Common context-manager behaviour: close() on success, abort() on an exception."""

    _stack: contextlib.ExitStack
    _runs: _Runs

    def add(self, contig: str, start: int, values) -> None:
        """Values of bases ``[start, start + len(values))`` of ``contig`` (1-D array)."""
        self._runs.add(contig, start, values)

    def end_contig(self) -> None:
        """Finish the current contig now (otherwise the next contig or close() does)."""
        self._runs.end_contig()

    def close(self) -> None:
        """Write what is held, close the file and rename it into place."""
        self._runs.end_contig()
        self._finish()
        self._stack.close()

    def _finish(self) -> None:  # pragma: no cover - overridden
        pass

    def abort(self) -> None:
        """Discard the output (no file is left behind)."""
        self._runs.discard()
        exc = RuntimeError("track writer aborted")
        with contextlib.suppress(RuntimeError):
            self._stack.__exit__(type(exc), exc, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._runs.discard()
            self._stack.__exit__(exc_type, exc, tb)


def _value_formatter(digits: int) -> Callable[[float], str]:
    cache: dict[float, str] = {}

    def fmt(v: float) -> str:
        text = cache.get(v)
        if text is None:
            text = f"{v:.{digits}f}"
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            if text == "-0":
                text = "0"
            if len(cache) < 100_000:
                cache[v] = text
        return text

    return fmt


class BedGraphWriter(_Writer):
    """Streaming bedGraph writer of one track (module docstring).

    Args:
        dest: a path (written atomically), ``"-"`` (stdout) or an open text handle.
        name: track name for the ``track`` line.
        description: optional description for the ``track`` line.
        digits: decimals kept; runs of equal rounded values become one line.
        option, inputs: name of the output in error messages; inputs it must not overwrite.
    """

    def __init__(
        self,
        dest: Destination,
        name: str,
        *,
        description: str | None = None,
        digits: int = 3,
        option: str = "--tracks",
        inputs: Mapping[str, str | os.PathLike | None] | None = None,
    ):
        self.name = name
        self._stack = contextlib.ExitStack()
        if hasattr(dest, "write"):
            fh = dest
        else:
            fh = self._stack.enter_context(
                atomic_output(dest, mode="w", inputs=inputs, option=option)  # type: ignore[arg-type]
            )
        self._fh = fh
        fmt = _value_formatter(digits)

        def write(text: str) -> None:  # written while the atomic_output block is suspended
            try:
                fh.write(text)
            except OSError as exc:
                where = name if hasattr(dest, "write") else os.fspath(dest)  # type: ignore[arg-type]
                raise output_error(exc, option, where) from None

        def emit(contig: str, starts, ends, vals) -> None:
            write(
                "".join(
                    f"{contig}\t{s}\t{e}\t{fmt(v)}\n"
                    for s, e, v in zip(starts.tolist(), ends.tolist(), vals.tolist())
                )
            )

        self._runs = _Runs(digits, emit)
        header = f'track type=bedGraph name="{_quote(name)}"'
        if description:
            header += f' description="{_quote(description)}"'
        write(header + "\n")


def _quote(text: str) -> str:
    return " ".join(str(text).replace('"', "'").split())


class BigWigWriter(_Writer):
    """Streaming bigWig writer of one track (needs pyBigWig; GenosegError saying how to
    install it otherwise).

    Args:
        path: output path (written atomically; ``"-"`` is refused).
        contigs: every contig, name -> length, in genome order (the bigWig header).
        digits: decimals kept; runs of equal rounded values become one entry.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        contigs: Mapping[str, int],
        *,
        name: str = "",
        digits: int = 3,
        option: str = "--bigwig",
        inputs: Mapping[str, str | os.PathLike | None] | None = None,
    ):
        try:
            import pyBigWig
        except ImportError:
            raise GenosegError(
                f"{option} {path}: writing bigWig needs pyBigWig (pip install 'genoseg[bigwig]')"
            ) from None
        self.name = name
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(path, inputs=inputs, option=option))
        bw = pyBigWig.open(str(tmp), "w")
        if bw is None:
            self._stack.close()
            raise GenosegError(f"{option} {path}: cannot create bigWig")
        self._bw = bw
        sizes = [(c, int(n)) for c, n in contigs.items() if n > 0]
        bw.addHeader(sizes, maxZooms=10)
        self._open = True

        def emit(contig: str, starts, ends, vals) -> None:
            bw.addEntries(
                [contig] * len(starts),
                starts.astype(np.int64).tolist(),
                ends=ends.astype(np.int64).tolist(),
                values=vals.astype(np.float64).tolist(),
            )

        self._runs = _Runs(digits, emit, contig_order=[c for c, _ in sizes])

    def _finish(self) -> None:
        if self._open:
            self._bw.close()
            self._open = False

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._open:
            with contextlib.suppress(Exception):
                self._bw.close()
            self._open = False
        super().__exit__(exc_type, exc, tb)

    def abort(self) -> None:
        if self._open:
            with contextlib.suppress(Exception):
                self._bw.close()
            self._open = False
        super().abort()


class TrackWriter:
    """One streaming writer per named track: ``{prefix}.{name}.bedgraph`` (or ``.bw``), see
    :func:`track_file_name`.

    Feed it the output of :func:`genoseg.decode.tracks.posterior_tracks` chunk by chunk::

        with TrackWriter("out/genes", genome.contigs) as tw:
            for contig, offset, marg in chunks:          # any chunk order within a contig
                tw.add(contig, posterior_tracks(grammar, ..., offset=offset, ...))

    Args:
        prefix: path prefix of the files.
        contigs: every contig, name -> length, in genome order.
        names: tracks to write (default: all of :data:`genoseg.decode.tracks.TRACK_NAMES`).
        fmt: ``"bedgraph"`` or ``"bigwig"``.
        digits: decimals kept (runs of equal rounded values merge).
    """

    def __init__(
        self,
        prefix: str | os.PathLike,
        contigs: Mapping[str, int],
        *,
        names: Sequence[str] = TRACK_NAMES,
        fmt: str = "bedgraph",
        digits: int = 3,
        option: str = "--tracks",
        inputs: Mapping[str, str | os.PathLike | None] | None = None,
    ):
        if fmt not in ("bedgraph", "bigwig"):
            raise ValueError(f"fmt must be 'bedgraph' or 'bigwig', not {fmt!r}")
        self.paths = {n: track_file_name(prefix, n, fmt) for n in names}
        self._writers: dict[str, BedGraphWriter | BigWigWriter] = {}
        try:
            for n, p in self.paths.items():
                if fmt == "bedgraph":
                    self._writers[n] = BedGraphWriter(
                        p,
                        n,
                        description=f"genoseg posterior: {n}",
                        digits=digits,
                        option=option,
                        inputs=inputs,
                    )
                else:
                    self._writers[n] = BigWigWriter(
                        p, contigs, name=n, digits=digits, option=option, inputs=inputs
                    )
        except BaseException:
            self.abort()
            raise

    def add(self, contig: str, chunks: Mapping[str, TrackChunk]) -> None:
        """Add one chunk of every track (a ``posterior_tracks`` result) on ``contig``;
        tracks not written by this writer are ignored, a missing one is a ValueError."""
        for n, w in self._writers.items():
            if n not in chunks:
                raise ValueError(f"track {n!r} missing from the chunk")
            ch = chunks[n]
            w.add(contig, ch.start, ch.values)

    def close(self) -> None:
        """Finish every file (renamed into place)."""
        try:
            for w in self._writers.values():
                w.close()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard every file."""
        for w in self._writers.values():
            with contextlib.suppress(Exception):
                w.abort()

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
