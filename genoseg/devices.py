"""``--device auto|cpu|cuda|cuda:N`` -> a torch device (shared by train and predict)."""

from __future__ import annotations

import torch

from genoseg.errors import GenosegError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without it is a one-line
    GenosegError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenosegError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GenosegError(f"--device {name}: not a device (auto, cpu, cuda, cuda:N)") from None
