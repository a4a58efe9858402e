"""A file handle that is reopened in every process (DataLoader workers, forks)."""

from __future__ import annotations

import os
from typing import Any


class ProcessLocalHandle:
    """Mixin for readers over pysam files: ``_handle()`` opens the file lazily with
    ``_open_handle()`` and again after a fork; pickling drops the handle. Subclasses call
    ``ProcessLocalHandle.__init__(self)`` and implement ``_open_handle``."""

    def __init__(self) -> None:
        self._fh: Any = None
        self._pid = -1

    def _open_handle(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _handle(self) -> Any:
        if self._fh is None or self._pid != os.getpid():
            self._fh = self._open_handle()
            self._pid = os.getpid()
        return self._fh

    def close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fh"], state["_pid"] = None, -1
        return state
