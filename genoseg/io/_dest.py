"""Where a writer writes: a path (atomic, through genoseg.io.atomic), ``"-"`` (stdout) or an
open text handle (written as is, not closed)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import IO, Any, Union

from genoseg.io.atomic import atomic_output

Destination = Union[str, "os.PathLike[str]", IO[str]]

__all__ = ["Destination", "open_destination", "format_probability"]


@contextlib.contextmanager
def open_destination(
    dest: Destination,
    *,
    option: str = "-o",
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> Iterator[IO[str]]:
    """Text handle for ``dest``: a path is written to a temporary renamed over it on success
    (no partial file on an error or SIGTERM), ``"-"`` is stdout, a handle (anything with
    ``write``) is used as is. ``inputs`` (option -> path): refuse an output equal to an
    input. ``option`` names the output in error messages."""
    if hasattr(dest, "write"):
        yield dest  # type: ignore[misc]
        return
    with atomic_output(dest, mode="w", inputs=inputs, option=option) as fh:  # type: ignore[arg-type]
        yield fh


def format_probability(p: Any, digits: int = 4) -> str:
    """A posterior as text: ``"."`` for None, else clamped to [0, 1] and written with at most
    ``digits`` decimals, trailing zeros dropped (``0.5``, ``1``, ``0.0123``). NaN is a
    ValueError (a posterior must be a number)."""
    if p is None:
        return "."
    v = float(p)
    if v != v:
        raise ValueError("posterior is NaN")
    v = min(1.0, max(0.0, v))
    text = f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return text or "0"
