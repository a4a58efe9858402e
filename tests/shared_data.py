"""Where the tests find the real shared data: ``../shared/data`` beside the checkout.

``GENOSEG_SHARED_DATA`` overrides the location. Tests that need the data use
:func:`shared` (or the ``SHARED_DATA`` path): when the folder is absent they fail loudly under
CI (``CI`` set) and skip with the reason elsewhere, so a CI run without the data never passes
silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GENOSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """Path inside the shared data folder; fails (CI) or skips (local) when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        msg = f"real data {p} is absent (set GENOSEG_SHARED_DATA or put ../shared beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return p
