"""Validation and normalisation of semi-CRF inputs (DESIGN.md §1).

Every engine (reference, CPU, Triton) receives a :class:`CRFInputs` built by
:func:`check_inputs`, so shape, dtype and value errors are raised once, in one place, as
``ValueError`` naming the argument.

Conventions: positions are 0-based; a segment ``(s, e, c)`` is half-open ``[s, e)`` with
label ``c`` and length ``d = e - s``. ``durations[c, d-1]`` scores length ``d``.

Per-label table length (an extension of DESIGN.md §1, see docs/crf.md): ``K_c`` is one
plus the index of the last finite entry of ``durations[c]``. A label with a finite
``tail[c]`` scores lengths ``d > K_c`` as ``durations[c, K_c-1] + tail[c] * (d - K_c)``.
When ``durations[c, K-1]`` is finite (``K_c == K``) this is exactly the DESIGN rule; it lets
a label with a short explicit table (an intron) carry a tail without paying for the
longest label's ``K``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")


@dataclass
class CRFInputs:
    """Checked semi-CRF inputs for a batch.

    Shapes: emissions (B, T, C) float; lengths (B,) int64; transitions (C, C);
    durations (C, K); init, final (C,); tail (C,) or None; seg_start, seg_end (B, T, C) or
    None; max_dur (B, T, C) int32 or None; label_mask (B, T, C) bool or None (a label-c
    segment may cover only positions where it is True). ``label_k`` (C,) int64 holds ``K_c``.
    ``position_offset``: absolute position of row 0 the inputs were checked for (chunks).
    """

    emissions: Tensor
    lengths: Tensor
    transitions: Tensor
    durations: Tensor
    init: Tensor
    final: Tensor
    tail: Tensor | None = None
    seg_start: Tensor | None = None
    seg_end: Tensor | None = None
    max_dur: Tensor | None = None
    label_k: Tensor | None = None
    label_mask: Tensor | None = None
    position_offset: int = 0

    @property
    def B(self) -> int:  # noqa: N802
        return self.emissions.shape[0]

    @property
    def T(self) -> int:  # noqa: N802
        return self.emissions.shape[1]

    @property
    def C(self) -> int:  # noqa: N802
        return self.emissions.shape[2]

    @property
    def K(self) -> int:  # noqa: N802
        return self.durations.shape[1]

    def float_tensors(self) -> dict[str, Tensor | None]:
        """The differentiable inputs by name (None where absent)."""
        return {
            "emissions": self.emissions,
            "transitions": self.transitions,
            "durations": self.durations,
            "init": self.init,
            "final": self.final,
            "tail": self.tail,
            "seg_start": self.seg_start,
            "seg_end": self.seg_end,
        }


def label_table_lengths(durations: Tensor) -> Tensor:
    """``K_c`` per label: 1 + index of the last finite entry of ``durations[c]`` (0 if none).

    durations: (C, K). Returns (C,) int64.
    """
    finite = torch.isfinite(durations)
    idx = torch.arange(1, durations.shape[1] + 1, device=durations.device)
    return (finite * idx).amax(dim=1).to(torch.int64)


INT32_MAX = 2**31 - 1


def clamp_max_dur(max_dur: Tensor) -> Tensor:
    """``max_dur`` as int32, values above 2^31 - 1 clamped to it (a cast alone would wrap
    2^32 + 3 to 3). The clamp changes nothing: no segment is that long (T < 2^31), so any
    bound at least the longest possible segment means unbounded."""
    if max_dur.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32):
        return max_dur.to(torch.int32)
    if bool((max_dur > INT32_MAX).any()):
        max_dur = max_dur.clamp(max=INT32_MAX)
    return max_dur.to(torch.int32)


def _check_tensor(name: str, x, shape: tuple[int, ...], device: torch.device) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device != device:
        raise ValueError(
            f"{name} is on device {x.device} but emissions are on {device}: "
            "put every input on the emissions' device"
        )
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")


def _check_float(
    name: str,
    x: Tensor,
    shape: tuple[int, ...],
    allow_neg_inf: bool,
    device: torch.device,
    valid: Tensor | None = None,
) -> Tensor:
    """Check a float input; returns it, with entries at padded positions (``valid`` (B, T)
    False: t >= lengths[b]) replaced by 0 if they are not finite -- the contract ignores
    them, the engines must not see them."""
    if isinstance(x, Tensor) and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    _check_tensor(name, x, shape, device)
    # fast path, one pass: the extremes are NaN if any entry is, and +-inf if any entry is
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if math.isfinite(hi) and (allow_neg_inf or math.isfinite(lo)):
            return x
    nan = torch.isnan(x)
    bad = nan | (x == float("inf")) if allow_neg_inf else ~torch.isfinite(x)
    if not bool(bad.any()):
        return x
    inside = bad if valid is None else bad & valid.unsqueeze(-1)
    if bool(inside.any()):
        if bool((nan if valid is None else nan & valid.unsqueeze(-1)).any()):
            raise ValueError(f"{name} contains NaN")
        if allow_neg_inf:
            raise ValueError(f"{name} contains +inf (only -inf, meaning forbidden, is allowed)")
        raise ValueError(f"{name} contains inf (emission scores must be finite)")
    return torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


@dataclass
class CRFParams:
    """Checked per-label parameters (shared by every position and batch element):
    transitions (C, C), durations (C, K), init, final (C,), tail (C,) or None, label_k
    (C,) int64 (``K_c``)."""

    transitions: Tensor
    durations: Tensor
    init: Tensor
    final: Tensor
    tail: Tensor | None
    label_k: Tensor


def check_params(
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None,
    C: int,
    device: torch.device,
) -> CRFParams:
    """Validate the per-label parameters for C labels on ``device`` (ValueError naming the
    argument)."""
    if not isinstance(durations, Tensor) or durations.dim() != 2:
        shape = tuple(durations.shape) if isinstance(durations, Tensor) else type(durations)
        raise ValueError(f"durations must have shape (C, K), got {shape}")
    K = durations.shape[1]
    if K < 1:
        raise ValueError(f"durations must have K >= 1 columns, got K={K}")
    _check_float("durations", durations, (C, K), True, device)
    _check_float("transitions", transitions, (C, C), True, device)
    _check_float("init", init, (C,), True, device)
    _check_float("final", final, (C,), True, device)
    if tail is not None:
        _check_float("tail", tail, (C,), True, device)
    label_k = label_table_lengths(durations.detach())
    return CRFParams(transitions, durations, init, final, tail, label_k)


def check_inputs(
    emissions: Tensor,
    lengths: Tensor | None,
    transitions: Tensor,
    durations: Tensor,
    init: Tensor,
    final: Tensor,
    tail: Tensor | None = None,
    seg_start: Tensor | None = None,
    seg_end: Tensor | None = None,
    max_dur: Tensor | None = None,
    label_mask: Tensor | None = None,
    *,
    position_offset: int = 0,
    params: CRFParams | None = None,
) -> CRFInputs:
    """Validate the DESIGN.md §1 inputs and return them as :class:`CRFInputs`.

    ``emissions`` may be (T, C) for a single sequence (a batch of one is made);
    ``lengths=None`` means every sequence is T long. Raises ``ValueError`` naming the
    argument for wrong shapes, dtypes or devices (every tensor but ``lengths`` must be on
    the emissions' device), NaN, inf in emissions, +inf in score tables, lengths outside
    [1, T], K < 1, a negative ``max_dur`` or a non-bool ``label_mask``. Values at padded
    positions (t >= lengths[b]) are ignored, as the contract says: NaN/inf scores and
    negative ``max_dur`` there are replaced by 0 instead of rejected.
    ``position_offset``: absolute position of row 0 (for chunks of a longer sequence;
    recorded in the result, see :func:`check_position`). ``params``: the result of
    :func:`check_params` for (transitions, durations, init, final, tail), which are then
    not checked again (streams check them once, not per chunk).
    """
    if not isinstance(emissions, Tensor):
        raise ValueError(f"emissions must be a torch.Tensor, got {type(emissions).__name__}")
    if emissions.dim() == 2:
        emissions = emissions.unsqueeze(0)

        def batch1(t):
            return t.unsqueeze(0) if isinstance(t, Tensor) and t.dim() == 2 else t

        seg_start, seg_end, max_dur, label_mask = map(
            batch1, (seg_start, seg_end, max_dur, label_mask)
        )
    if emissions.dim() != 3:
        raise ValueError(f"emissions must have shape (B, T, C), got {tuple(emissions.shape)}")
    B, T, C = emissions.shape
    if B < 1 or T < 1 or C < 1:
        raise ValueError(f"emissions must be non-empty, got shape {tuple(emissions.shape)}")
    if not emissions.is_floating_point():
        raise ValueError(f"emissions must be a floating-point tensor, got {emissions.dtype}")
    dev = emissions.device

    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64, device=dev)
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
    lengths = lengths.to(device=dev, dtype=torch.int64)  # lengths alone may be anywhere
    if (lengths < 1).any() or (lengths > T).any():
        raise ValueError(f"lengths must lie in [1, T={T}], got {lengths.tolist()}")
    valid = None  # (B, T) bool: t < lengths[b], only when some sequence is padded
    if bool((lengths < T).any()):
        valid = torch.arange(T, device=dev).unsqueeze(0) < lengths.unsqueeze(1)

    if params is None:
        params = check_params(transitions, durations, init, final, tail, C, dev)
    elif params.transitions.shape != (C, C) or params.transitions.device != dev:
        raise ValueError(
            f"params were checked for {params.transitions.shape[0]} labels on "
            f"{params.transitions.device}, but emissions have {C} labels on {dev}"
        )
    emissions = _check_float("emissions", emissions, (B, T, C), False, dev, valid)
    if seg_start is not None:
        seg_start = _check_float("seg_start", seg_start, (B, T, C), True, dev, valid)
    if seg_end is not None:
        seg_end = _check_float("seg_end", seg_end, (B, T, C), True, dev, valid)
    label_k = params.label_k
    if max_dur is not None:
        if (
            not isinstance(max_dur, Tensor)
            or max_dur.dtype.is_floating_point
            or max_dur.dtype.is_complex
            or max_dur.dtype == torch.bool
        ):
            raise ValueError("max_dur must be an integer tensor")
        _check_tensor("max_dur", max_dur, (B, T, C), dev)
        negative = max_dur < 0
        if bool(negative.any()):
            if valid is None or bool((negative & valid.unsqueeze(-1)).any()):
                raise ValueError("max_dur must be >= 0")
            max_dur = max_dur.masked_fill(negative, 0)  # only at padded positions
        max_dur = clamp_max_dur(max_dur)
        if params.tail is not None:
            _check_tail_max_dur(params.tail.detach(), label_k, max_dur, position_offset, valid)
    if label_mask is not None:
        if not isinstance(label_mask, Tensor) or label_mask.dtype != torch.bool:
            raise ValueError("label_mask must be a bool tensor")
        _check_tensor("label_mask", label_mask, (B, T, C), dev)
    return CRFInputs(
        emissions, lengths, params.transitions, params.durations, params.init, params.final,
        params.tail, seg_start, seg_end, max_dur, label_k, label_mask, int(position_offset),
    )  # fmt: skip


def check_position(x: CRFInputs, position: int) -> None:
    """Raise ValueError unless ``x`` was checked (:func:`check_inputs`) as the chunk whose
    row 0 is absolute position ``position`` (the tail/max_dur rule depends on it)."""
    if x.position_offset != position:
        raise ValueError(
            f"chunk inputs were checked with position_offset={x.position_offset}, but the "
            f"stream is at position {position}: call check_inputs(..., "
            f"position_offset={position})"
        )


def _check_tail_max_dur(
    tail: Tensor, label_k: Tensor, max_dur: Tensor, offset: int = 0, valid: Tensor | None = None
) -> None:
    """A tailed label's bound must either cut the tail off (max_dur <= K_c) or admit every
    length that can end there (max_dur >= t + 1); partial tails are not supported. Padded
    positions (``valid`` False) are not checked."""
    tailed = torch.isfinite(tail).to(max_dur.device)
    if not tailed.any():
        return
    cols = tailed.nonzero()[:, 0]  # only the tailed labels' columns are read
    T = max_dur.shape[1]
    reach = torch.arange(offset + 1, offset + T + 1, device=max_dur.device, dtype=torch.int64).view(
        1, T, 1
    )
    md = max_dur.index_select(2, cols).to(torch.int64)
    partial = (md > label_k.to(max_dur.device)[cols].view(1, 1, -1)) & (md < reach)
    if valid is not None:
        partial &= valid.unsqueeze(-1)
    if partial.any():
        b, t, i = (int(v) for v in partial.nonzero()[0])
        c = int(cols[i])
        t += offset
        raise ValueError(
            f"max_dur[{b}, {t}, {c}] = {int(md[b, t - offset, i])} bounds label {c}'s "
            f"geometric tail partially; for a label with a tail, max_dur must be <= "
            f"K_c = {int(label_k[c])} (no tail) or >= t + 1 (unbounded)"
        )
