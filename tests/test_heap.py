"""genoseg.heap: freed chunk-sized blocks are reused instead of page-faulted in again."""

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

glibc = sys.platform.startswith("linux") and "libc.so" in (ctypes.util.find_library("c") or "")

# Allocate, touch and free a 64 MB array ten times (as predict does per chunk) and count
# the page faults of the last nine rounds.
PROBE = """
import json, resource, numpy as np
core = getattr(np, '_core', None) or np.core
core.multiarray._set_madvise_hugepage(False)  # count 4 KiB pages, not 2 MiB ones
from genoseg.heap import retain_freed_memory
took = retain_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(8 << 20).sum()
before = faults()
for _ in range(9):
    a = np.ones(8 << 20)  # 64 MB, every page written
    a.sum()
    del a
print(json.dumps({"took": took, "faults": faults() - before}))
"""


def _probe(**env) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
        env={**os.environ, **env},
    )  # fmt: skip
    return json.loads(res.stdout)


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    pages = 9 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    default = _probe(GENOSEG_MALLOC="system")
    assert default["took"] is False
    assert default["faults"] > pages // 2  # glibc's default maps every block afresh
    tuned = _probe()
    assert tuned["took"] is True
    assert tuned["faults"] < pages // 20
