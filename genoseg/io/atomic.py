"""Atomic, signal-safe output files: the one helper every command that writes files uses.

A file is written to a temporary ``.<name>.tmp-<pid>`` beside its destination and renamed
over it only when complete, so a destination is either the old file or the complete new
one, never a partial file::

    from genoseg.io.atomic import atomic_output, atomic_path

    with atomic_output(out, inputs={"--fasta": fasta}) as fh:   # text; mode="wb" for bytes
        fh.write(text)                                           # out == "-": sys.stdout

    with atomic_path(out) as tmp:            # for libraries that open the file themselves
        with h5py.File(tmp, "w") as h5:      # (h5py, pyBigWig, torch.save, htslib)
            ...

On normal exit the temporary is flushed, fsync'ed and renamed over the destination (then the
directory is fsync'ed); on an exception it is deleted and the exception re-raised. The file
is created with mode ``0o666`` minus the umask (like ``open()``), never ``0o600``.

Signals
-------
Every live temporary is registered process-wide. The first use of :func:`atomic_output` /
:func:`atomic_path` calls :func:`install_signal_cleanup`, which installs a handler for SIGTERM
and SIGHUP (what batch schedulers and closing terminals send) and SIGINT. When such a signal
arrives and no other Python handler was installed before, the handler deletes every
registered temporary of this process, restores the default action and re-sends the signal
to the process: it dies *by* that signal (shell exit status 128 + signum, 143 for SIGTERM),
as schedulers expect. A signal that is ignored (``SIG_IGN``, e.g. SIGHUP under ``nohup``) or
handled outside Python stays as it is.

Combining with a command's own handler (training: checkpoint, then exit)
------------------------------------------------------------------------
:func:`install_signal_cleanup` is idempotent and *wraps* whatever Python handler is installed
when it runs; it may be called again after another handler was installed (every
``atomic_*`` call re-checks, so it also happens at the next write). A wrapped handler runs
first and decides:

* it **returns** (the usual "set a flag, stop at the next step" pattern): nothing is
  deleted and the program continues; writes in progress complete and are renamed normally.
  To end the process the way a scheduler expects after checkpointing, call
  :func:`exit_by_signal` (deletes temporaries, dies by the signal), e.g.::

      stop = []
      signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
      install_signal_cleanup()                     # optional: the next write does it too
      for step in ...:
          ...
          if stop:
              with atomic_path(ckpt) as tmp:
                  torch.save(state, tmp)
              exit_by_signal(stop[0])              # exit status 143, no temporaries left

* it **raises** (``sys.exit(...)``, ``KeyboardInterrupt``): every registered temporary is
  deleted, then the exception propagates (the exit status is the handler's choice).

A handler installed *after* the cleanup and chaining to its predecessor (ours) reaches it
again through the wrapper; that nested call acts as the default action (delete temporaries,
die by the signal) instead of looping.

Temporaries belong to the process that created them: a forked child (DataLoader worker)
that receives a signal does not delete its parent's files.

Only the main thread can install signal handlers; elsewhere the cleanup on exceptions still
works and installation is left to the main thread's next write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, NoReturn

from genoseg.errors import GenosegError

__all__ = [
    "CLEANUP_SIGNALS",
    "atomic_output",
    "atomic_path",
    "check_not_input",
    "exit_by_signal",
    "install_signal_cleanup",
    "is_special",
    "output_error",
    "remove_temporaries",
    "temporary_name",
]

CLEANUP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGHUP", "SIGINT")) if s is not None
)

# temporary path -> pid of the process that created it. Plain dict operations only (atomic
# under the GIL): the signal handler runs in the main thread and must never wait on a lock.
_temporaries: dict[str, int] = {}
_previous: dict[int, Any] = {}  # signum -> the handler that was installed before ours
_handling: set[int] = set()  # signals whose wrapped handler is running (loop guard)


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary ``.<name>.tmp-<pid>`` beside ``path``."""
    p = Path(path)
    return p.parent / f".{p.name}.tmp-{os.getpid()}"


def remove_temporaries() -> None:
    """Delete every registered temporary of this process (safe inside a signal handler)."""
    me = os.getpid()
    for tmp, pid in list(_temporaries.items()):
        if pid != me:
            continue
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _temporaries.pop(tmp, None)


def exit_by_signal(signum: int) -> NoReturn:
    """Delete this process's temporaries, restore the default action of ``signum`` and die
    by it (exit status 128 + signum, what schedulers expect after SIGTERM)."""
    remove_temporaries()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(ValueError, OSError):  # ValueError: not the main thread
        signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(ValueError, OSError, AttributeError):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    os.kill(os.getpid(), signum)
    time.sleep(1.0)  # delivery is asynchronous in multi-threaded processes
    os._exit(128 + signum)


def _handle(signum: int, frame: Any) -> None:
    prev = _previous.get(signum)
    if (
        signum in _handling
        or prev is _handle
        or not callable(prev)
        or prev is signal.default_int_handler
    ):
        exit_by_signal(signum)
    _handling.add(signum)
    try:
        prev(signum, frame)
    except BaseException:
        remove_temporaries()
        raise
    finally:
        _handling.discard(signum)


def install_signal_cleanup() -> None:
    """Install (or re-wrap) the cleanup handler for SIGTERM, SIGHUP and SIGINT.

    Idempotent: a signal whose handler is already ours is left alone; a Python handler
    installed since is wrapped (it runs first, see the module docstring); ignored signals
    and handlers set outside Python are not touched. A no-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in CLEANUP_SIGNALS:
        cur = signal.getsignal(sig)
        if cur is _handle or cur is None or cur == signal.SIG_IGN:
            continue
        try:
            signal.signal(sig, _handle)
        except (ValueError, OSError):  # pragma: no cover - embedded interpreters
            continue
        _previous[sig] = cur


def is_special(path: str | os.PathLike) -> bool:
    """True when ``path`` (symlinks followed) is a device, FIFO or socket: ``/dev/null``,
    ``/dev/stdout``, a named pipe. Such outputs are written in place (nothing to rename)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_input(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Mapping[str, str | os.PathLike | None],
) -> None:
    """Refuse an output that is one of the inputs.

    ``outputs`` / ``inputs`` map an option name (``"-o"``, ``"--fasta"``) to a path. Two
    paths are the same file when :func:`os.path.samefile` says so (both exist: symlinks and
    hard links count), else when their resolved paths are equal. ``"-"`` and ``None`` are
    ignored. Raises GenosegError ``"-o X is the same file as the input --fasta Y; refusing
    to overwrite an input"``.
    """
    for oname, out in outputs.items():
        if out is None or str(out) == "-":
            continue
        for iname, inp in inputs.items():
            if inp is None or str(inp) == "-":
                continue
            if _same_file(Path(out), Path(inp)):
                raise GenosegError(
                    f"{oname} {out} is the same file as the input {iname} {inp}; "
                    "refusing to overwrite an input"
                )


def _prepare(path: Path, inputs: Mapping[str, Any] | None, option: str) -> Path:
    if inputs:
        check_not_input({option: path}, inputs)
    if is_special(path):
        raise GenosegError(f"{option} {path}: not a regular file (a device or pipe); give a path")
    if not path.parent.is_dir():
        raise GenosegError(f"{option} {path}: output directory {path.parent} does not exist")
    if path.is_dir():
        raise GenosegError(f"{option} {path}: is a directory")
    install_signal_cleanup()
    return temporary_name(path)


# errors of the output itself (not of the inputs being read while it is written)
_FULL = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n)}


def output_error(exc: BaseException, option: str, path: str | os.PathLike) -> BaseException:
    """A full disk or quota error (ENOSPC, EDQUOT, EFBIG) of an output as GenosegError
    naming it; other exceptions as they are (``raise output_error(exc, ...) from None``)."""
    if isinstance(exc, OSError) and exc.errno in _FULL:  # h5py's strerror spans lines
        return GenosegError(f"{option} {path}: cannot write: {os.strerror(exc.errno)}")
    return exc


def _target(path: Path) -> Path:
    """The file a symlink names (written, and renamed over, there: the link stays a link
    instead of being replaced by a regular file); other paths as they are."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _finish(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _temporaries.pop(str(tmp), None)
    _fsync_dir(path.parent)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    _temporaries.pop(str(tmp), None)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    *,
    mode: str = "w",
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
    option: str = "-o",
    encoding: str = "utf-8",
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing through a temporary renamed over it on success.

    ``mode`` is ``"w"`` / ``"wt"`` (text, ``encoding``) or ``"wb"`` (binary). ``path`` ``"-"``
    yields ``sys.stdout`` (``sys.stdout.buffer`` for binary), flushed but not closed.
    ``inputs`` (option name -> path) are checked with :func:`check_not_input`; ``option``
    names the output in error messages. Errors creating the file are GenosegError.
    A device, FIFO or socket (``/dev/stdout``, ``/dev/null``, a named pipe) is written in
    place; a symlink is followed (the file it names is replaced; the link stays a link).
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_output: mode must be 'w', 'wt' or 'wb', got {mode!r}")
    binary = "b" in mode
    if str(path) == "-":
        stream = sys.stdout.buffer if binary else sys.stdout
        try:
            yield stream
            stream.flush()
        except OSError as exc:
            raise output_error(exc, option, Path("-")) from None
        return
    path = Path(path)
    if is_special(path):  # /dev/stdout, /dev/null, a named pipe: written in place
        if inputs:
            check_not_input({option: path}, inputs)
        try:
            stream = open(path, mode, **({} if binary else {"encoding": encoding}))
        except OSError as exc:
            raise GenosegError(f"{option} {path}: cannot write: {exc.strerror or exc}") from None
        try:
            yield stream
            stream.close()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                stream.close()
            raise output_error(exc, option, path) from None
        return
    path = _target(path)
    tmp = _prepare(path, inputs, option)
    _temporaries[str(tmp)] = os.getpid()  # registered before it exists: no window
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666
        )
    except OSError as exc:
        _temporaries.pop(str(tmp), None)
        raise GenosegError(f"{option} {path}: cannot write: {exc.strerror or exc}") from None
    fh = os.fdopen(fd, mode, **({} if binary else {"encoding": encoding}))
    try:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        _finish(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            fh.close()
        _discard(tmp)
        raise output_error(exc, option, path) from None


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
    option: str = "-o",
) -> Iterator[Path]:
    """Like :func:`atomic_output` but yields the temporary's Path (which does not exist
    yet) for libraries that create the file themselves; the file must be closed when the
    block ends. ``"-"`` and devices or pipes are refused (GenosegError): such files cannot
    be streamed. A symlink is followed, as in :func:`atomic_output`."""
    if str(path) == "-":
        raise GenosegError(f"{option}: this output cannot be written to stdout; give a path")
    path = _target(Path(path))
    tmp = _prepare(path, inputs, option)
    _temporaries[str(tmp)] = os.getpid()
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a stale temporary of a dead process with our pid
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"atomic_path: nothing was written to {tmp}")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _finish(tmp, path)
    except BaseException as exc:
        _discard(tmp)
        raise output_error(exc, option, path) from None
