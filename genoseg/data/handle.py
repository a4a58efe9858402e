"""A file handle that is reopened in every process (DataLoader workers, forks) and in every
thread (pysam handles must not be shared by threads reading at once)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pysam


@contextlib.contextmanager
def quiet_htslib() -> Iterator[None]:
    """htslib's own messages silenced (``[E::...]`` lines on stderr) while the block runs;
    the caller reports a failure once, as GenosegError. The setting is process-wide."""
    old = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(old)


class ProcessLocalHandle:
    """Mixin for readers over pysam files: ``_handle()`` opens the file lazily with
    ``_open_handle()``, once per process and thread (after a fork, or in another thread,
    it opens its own); pickling drops the handles. Subclasses call
    ``ProcessLocalHandle.__init__(self)`` and implement ``_open_handle``."""

    def __init__(self) -> None:
        self._fhs: dict[tuple[int, int], Any] = {}  # (pid, thread id) -> handle
        self._fh_lock = threading.Lock()

    def _open_handle(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _handle(self) -> Any:
        key = (os.getpid(), threading.get_ident())
        fh = self._fhs.get(key)
        if fh is None:
            fh = self._open_handle()
            with self._fh_lock:
                self._fhs[key] = fh
        return fh

    def _discard_handle(self) -> None:
        """Close and forget this thread's handle after a read error (its state is undefined;
        closing it now, errors ignored, keeps pysam from complaining on stderr when it is
        garbage-collected). The next ``_handle()`` opens a new one."""
        with self._fh_lock:
            fh = self._fhs.pop((os.getpid(), threading.get_ident()), None)
        if fh is not None:
            with contextlib.suppress(Exception):
                fh.close()

    def close(self) -> None:
        """Close this process's handles (every thread's)."""
        pid = os.getpid()
        with self._fh_lock:
            handles, self._fhs = self._fhs, {}
        for (p, _), fh in handles.items():
            if p == pid:
                fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fhs"] = {}
        del state["_fh_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fh_lock = threading.Lock()
