"""``--device auto|cpu|cuda|cuda:N`` -> a torch device (shared by train and predict)."""

from __future__ import annotations

import torch

from genoseg.errors import GenosegError

__all__ = ["PRECISIONS", "cpu_has_bf16", "inference_dtype", "resolve_device"]


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


PRECISIONS = ("auto", "float32", "bfloat16")


def cpu_has_bf16() -> bool:
    """The CPU multiplies bf16 natively (AMX or AVX512-BF16: Intel Sapphire Rapids and
    later, AMD Zen 4 and later); elsewhere oneDNN emulates it, slower than float32."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def inference_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The encoder's arithmetic for ``--precision`` on ``device`` (the ``dtype`` of
    GeneModel.outputs): ``auto`` is bf16 on CUDA (autocast) and on CPUs with bf16
    instructions (:func:`cpu_has_bf16`), float32 on other CPUs."""
    if precision not in PRECISIONS:
        raise GenosegError(f"--precision {precision}: must be one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16" or device.type == "cuda" or cpu_has_bf16():
        return torch.bfloat16
    return torch.float32
