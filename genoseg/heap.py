"""Keep freed memory in the process instead of handing it back to the kernel (glibc).

``genoseg predict`` allocates and frees arrays of 10-100 MB for every chunk and pass
(engine inputs of (T, C) rows, back-pointers, checkpoints). glibc serves each from a fresh
``mmap`` and unmaps it at ``free``, so every chunk page-faults its memory in again: on
A. thaliana about 1.7 million page faults and 5 s of system time in a 25 s run, and one
heap arena per thread holding its own freed blocks. :func:`retain_freed_memory` sets

* ``M_MMAP_MAX = 0``: large blocks come from the heap, not from their own mappings;
* ``M_TRIM_THRESHOLD = 1 GiB``: freed memory stays in the heap for the next chunk;
* ``M_ARENA_MAX = 1``: one heap for all threads, so a block one thread frees is reused
  by the other (the allocations are few and large: the shared lock costs nothing).

Measured in benchmarks/README.md ("Heap", the shared 1.2 Mb A. thaliana genome): wall
time 16.5 -> 11.5 s together with the bf16 encoder, system time 4.7 -> 1.2 s, page faults
1.66 M -> 0.39 M, peak RSS 2.3 -> 1.8 GB.

``GENOSEG_MALLOC=system`` keeps glibc's defaults. Elsewhere than glibc (macOS, musl) it
does nothing. predict applies it only when every stretch it decodes is at most
``AUTO_MEMORY_BP`` (2 Mb) long: on a 20 Mb contig the retained heap fragmented around the
engine's per-chunk states kept for the whole stretch, and peak RSS grew by about 23 MB per
Mb of contig instead of 11 (13 % faster; benchmarks/README.md, "Heap").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["retain_freed_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_ARENA_MAX, 1))


def retain_freed_memory() -> bool:
    """Apply the settings of the module doc to this process; True when glibc took all of
    them, False when they do not apply (not glibc, or ``GENOSEG_MALLOC=system``)."""
    if os.environ.get("GENOSEG_MALLOC", "").lower() == "system":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS)
