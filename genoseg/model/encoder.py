"""The sequence encoder: a residual dilated CNN over one-hot DNA (+ soft-mask, + evidence).

Input features, channels first, (B, F, N) float32 (:func:`input_features`):

* 0-4: one-hot A, C, G, T, N (IUPAC codes are N); all zero past a sequence's length, which
  is exactly what the convolutions' zero padding shows at a contig end, so a window that
  ends at a contig end and a padded training row see the same thing;
* 5: soft-mask bit (lowercase in the FASTA);
* 6-13 (``evidence=True``): ``log1p`` of the 8 RNA-seq channels of
  :data:`genoseg.data.bam.CHANNELS`.

Every layer is position-local except the convolutions (no batch norm, no pooling, no
attention), so the output at position t depends only on inputs within
:attr:`Encoder.halo` positions of t: with at least that much real sequence on each side
(or the contig end), a position's scores do not depend on where the window was cut. The
predictor relies on this for seam-free output (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Encoder", "EncoderConfig", "input_features", "n_input_features"]

N_BASE_FEATURES = 6
N_EVIDENCE = 8


@dataclass
class EncoderConfig:
    """Encoder shape. ``dilations``: one residual block per entry (a dilated convolution of
    ``kernel`` taps, then a pointwise MLP); the receptive field is
    ``1 + (kernel - 1) * (stem_kernel_extra + sum(dilations))``."""

    width: int = 64
    kernel: int = 9
    stem_kernel: int = 15
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 1, 4, 16])
    mlp_ratio: int = 2
    evidence: bool = False
    dropout: float = 0.0  # training only: on each block's hidden MLP units and its update

    def __post_init__(self) -> None:
        if self.width < 4:
            raise ValueError(f"model.encoder.width must be >= 4, got {self.width}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"model.encoder.kernel must be odd and >= 1, got {self.kernel}")
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise ValueError(
                f"model.encoder.stem_kernel must be odd and >= 1, got {self.stem_kernel}"
            )
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(
                f"model.encoder.dilations must be positive integers, got {self.dilations}"
            )
        if self.mlp_ratio < 1:
            raise ValueError(f"model.encoder.mlp_ratio must be >= 1, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.encoder.dropout must be in [0, 1), got {self.dropout}")


def n_input_features(evidence: bool) -> int:
    return N_BASE_FEATURES + (N_EVIDENCE if evidence else 0)


def input_features(
    sequence: Tensor,
    softmask: Tensor | None = None,
    evidence: Tensor | None = None,
    lengths: Tensor | None = None,
    *,
    use_evidence: bool = False,
) -> Tensor:
    """Encoder input (B, F, N) float32.

    Args:
        sequence: (B, N) integer codes A=0 C=1 G=2 T=3, anything else = N.
        softmask: (B, N) bool or None.
        evidence: (B, 8, N) raw counts or None (zeros when ``use_evidence`` and absent).
        lengths: (B,) valid columns; columns past them are all-zero features.
    """
    B, N = sequence.shape
    codes = sequence.clamp(0, 4)
    x = torch.zeros(B, n_input_features(use_evidence), N, device=sequence.device)
    x[:, :5].scatter_(1, codes.unsqueeze(1), 1.0)
    if softmask is not None:
        x[:, 5] = softmask.to(x.dtype)
    if use_evidence and evidence is not None:
        x[:, 6:] = torch.log1p(evidence.to(torch.float32).clamp_min(0))
    if lengths is not None:
        valid = torch.arange(N, device=sequence.device).unsqueeze(0) < lengths.unsqueeze(1)
        x = x * valid.unsqueeze(1)
    return x


class _ChannelNorm(nn.Module):
    """LayerNorm over channels at each position (position-local: keeps window invariance).
    Works on (B, N, W): the encoder keeps its state channels-last."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:  # (B, N, W)
        return self.norm(x)


def _conv_nwc(conv: nn.Conv1d, y: Tensor) -> Tensor:
    """``conv`` on a channels-last state y (B, N, W) -> (B, N, W'), as a 2-D convolution in
    channels-last memory format (oneDNN's native layout on CPU: no transposing copies)."""
    y4 = y.transpose(1, 2).unsqueeze(2)  # (B, W, 1, N), NHWC strides
    out = F.conv2d(
        y4, conv.weight.unsqueeze(2), conv.bias, dilation=(1, conv.dilation[0]),
        padding=(0, conv.padding[0]),
    )  # fmt: skip
    return out.squeeze(2).transpose(1, 2).contiguous()


#: Inference on CPU runs each block as three oneDNN calls with the GELUs and the residual
#: add fused in (:meth:`_Block._fused`): the same function, about 1.8x faster; outputs
#: within a few float32 ulps of the step-by-step path (tested), and deterministic. Off:
#: every call takes the step-by-step path, which training always uses (autograd).
FUSED_INFERENCE = True


def _fused_ok(x: Tensor) -> bool:
    return (
        FUSED_INFERENCE
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and (
            x.dtype == torch.float32
            or (x.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        )
    )


class _Block(nn.Module):
    """Pre-norm residual block: x + MLP(dilated conv(norm(x))), on (B, N, W) states. The
    pointwise MLP layers are 1x1 convolutions (their weights), applied as matrix products
    on the channels-last state (the same function, several times faster on CPU)."""

    def _fused(self, x: Tensor, y: Tensor) -> Tensor:
        """:meth:`forward` from the normed state ``y`` as oneDNN calls with fused
        post-ops: conv + GELU, linear + GELU, linear + residual add (inference only)."""
        mk = torch.ops.mkldnn
        c = self.conv
        _, up, _, down = self.mlp
        B, N, W = x.shape
        z = mk._convolution_pointwise(
            y.transpose(1, 2).unsqueeze(2), c.weight.unsqueeze(2), c.bias,
            [0, c.padding[0]], [1, 1], [1, c.dilation[0]], 1, "gelu", [], "none",
        )  # (B, W, 1, N) in channels-last memory: (B, N, W) rows  # fmt: skip
        z = z.squeeze(2).transpose(1, 2).reshape(B * N, W)
        u = mk._linear_pointwise(z, up.weight.squeeze(-1), up.bias, "gelu", [], "none")
        res = x.reshape(B * N, W)
        out = mk._linear_pointwise.binary(u, res, down.weight.squeeze(-1), down.bias, "add")
        return out.view(B, N, W)

    def __init__(
        self, width: int, kernel: int, dilation: int, mlp_ratio: int, dropout: float = 0.0
    ):
        super().__init__()
        self.dropout = dropout
        self.norm = _ChannelNorm(width)
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv1d(width, width, kernel, dilation=dilation, padding=pad)
        self.mlp = nn.Sequential(
            nn.GELU(),
            nn.Conv1d(width, width * mlp_ratio, 1),
            nn.GELU(),
            nn.Conv1d(width * mlp_ratio, width, 1),
        )

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``x`` (B, N, W); ``mask`` (B, N, 1) or None."""
        y = self.norm(x)
        if mask is not None:  # zero padding at every layer, like a sequence end
            y = y * mask
        if _fused_ok(x) and not (self.training and self.dropout > 0):
            return self._fused(x.contiguous(), y)
        z = _conv_nwc(self.conv, y)  # (B, N, W)
        _, up, _, down = self.mlp
        p, train = self.dropout, self.training  # dropout is the identity in eval mode
        z = F.gelu(z)
        z = F.dropout(F.gelu(F.linear(z, up.weight.squeeze(-1), up.bias)), p, train)
        return x + F.dropout(F.linear(z, down.weight.squeeze(-1), down.bias), p, train)


class Encoder(nn.Module):
    """Residual dilated CNN: (B, F, N) features -> (B, width, N) per-position embeddings."""

    def __init__(self, cfg: EncoderConfig, extra_inputs: int = 0):
        super().__init__()
        self.cfg = cfg
        f = n_input_features(cfg.evidence) + extra_inputs
        self.stem = nn.Conv1d(f, cfg.width, cfg.stem_kernel, padding=cfg.stem_kernel // 2)
        self.blocks = nn.ModuleList(
            _Block(cfg.width, cfg.kernel, d, cfg.mlp_ratio, cfg.dropout) for d in cfg.dilations
        )
        self.norm = _ChannelNorm(cfg.width)

    @property
    def halo(self) -> int:
        """Positions on each side that influence one output position (receptive field =
        2 * halo + 1)."""
        return self.cfg.stem_kernel // 2 + sum(
            d * (self.cfg.kernel - 1) // 2 for d in self.cfg.dilations
        )

    @property
    def receptive_field(self) -> int:
        return 2 * self.halo + 1

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, F, N); ``mask`` (B, 1, N) float, 0 past each sequence's length: every
        convolution then sees zeros there, exactly as at a sequence end."""
        h = self.stem(x).transpose(1, 2).contiguous()  # (B, N, W) channels-last
        m = mask.transpose(1, 2) if mask is not None else None
        for blk in self.blocks:
            h = blk(h, m)
        return self.norm(h).transpose(1, 2)
