"""From per-position network outputs to the semi-CRF's emissions and boundary scores.

The network emits :data:`N_OUTPUTS` channels per position (:data:`CHANNELS`); the grammar's
45 labels share them (:class:`LabelMap`), so phase variants of one label kind are not 45
independent outputs:

* ``intergenic`` and ``intron±`` are position scores: the emission ``h[t, c]`` of every
  label of that class (all intron phases and variants share ``intron±``);
* ``codon±/k`` (k = 0, 1, 2) scores base t as codon position k of a coding sequence on
  that strand (transcript sense). An exon label does not fix the absolute reading frame
  per base -- that depends on where the exon ends -- so exon content cannot be a
  per-position emission. It is exact through the boundary scores instead: for a plus exon
  with entry phase i and exit phase j over [s, e), base u sits at codon position
  ``(u - r) mod 3`` with ``r = (s - i) mod 3 = (e - j) mod 3`` (the label's length rule
  makes both equal). With prefix sums ``Q_r[t] = sum_{u<t} q[u, (u - r) mod 3]`` its
  content is ``Q_r[e] - Q_r[s]``: ``-Q_{(s-i)%3}[s]`` goes into ``seg_start[s, c]`` and
  ``Q_{(e-j)%3}[e]`` into ``seg_end[e-1, c]``. Minus exons are the mirror image (codon
  position ``(r' - u) mod 3`` with ``r' = (e - 1 + i) mod 3 = (s - 1 + j) mod 3``).
  Prefix sums are float64 and may be carried across the chunks of a contig
  (:func:`frame_terms`), so the same exon scores the same wherever chunks are cut;
* ``start±``, ``stop±``, ``donor±``, ``acceptor±`` are boundary scores added to the
  ``seg_start`` / ``seg_end`` of the labels whose boundary that signal is (plus:
  single/initial start = start codon, single/terminal end = stop codon, intron start =
  donor, intron end = acceptor; minus: the mirror image). They are added to the
  grammar's own motif scores, so where the grammar forbids (-inf) it stays forbidden.

Coordinates: positions are 0-based; ``seg_start[t]`` concerns a segment starting at t,
``seg_end[t]`` one whose last base is t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
import torch
from torch import Tensor

from genoseg.grammar.spec import Grammar

__all__ = ["CHANNELS", "N_OUTPUTS", "LabelMap", "engine_scores", "frame_terms", "map_scores"]

CHANNELS: tuple[str, ...] = (
    "intergenic",
    "intron+",
    "codon+/0",
    "codon+/1",
    "codon+/2",
    "intron-",
    "codon-/0",
    "codon-/1",
    "codon-/2",
    "start+",
    "stop+",
    "donor+",
    "acceptor+",
    "start-",
    "stop-",
    "donor-",
    "acceptor-",
)
N_OUTPUTS = len(CHANNELS)
_CH = {name: i for i, name in enumerate(CHANNELS)}
# content channels of the auxiliary per-position classes: intergenic, intron+, coding+,
# intron-, coding-
AUX_CLASSES = ("intergenic", "intron+", "coding+", "intron-", "coding-")


@dataclass
class LabelMap:
    """Index tables from the grammar's labels to the output channels (all numpy int64).

    ``emission_channel`` (C,): channel of the label's emission, -1 for exon labels (their
    content comes through :func:`frame_terms`). ``start_channel`` / ``end_channel`` (C,):
    boundary channel added to seg_start / seg_end, -1 for none. ``exon_labels`` (E,),
    ``exon_strand`` (E,) +1/-1, ``exon_start_shift`` / ``exon_end_shift`` (E,): the
    residue offsets a of ``(t + a) mod 3`` used by :func:`frame_terms`. ``aux_class`` (C,):
    index into :data:`AUX_CLASSES` of each label.
    """

    emission_channel: np.ndarray
    start_channel: np.ndarray
    end_channel: np.ndarray
    exon_labels: np.ndarray
    exon_strand: np.ndarray
    exon_start_shift: np.ndarray
    exon_end_shift: np.ndarray
    aux_class: np.ndarray

    @classmethod
    def from_grammar(cls, grammar: Grammar) -> LabelMap:
        C = grammar.num_labels
        emis = np.full(C, -1, dtype=np.int64)
        st = np.full(C, -1, dtype=np.int64)
        en = np.full(C, -1, dtype=np.int64)
        aux = np.zeros(C, dtype=np.int64)
        ex, ex_strand, ex_ss, ex_se = [], [], [], []
        for c, lab in enumerate(grammar.labels):
            sign = "+" if lab.strand > 0 else "-"
            if lab.kind == "intergenic":
                emis[c] = _CH["intergenic"]
                aux[c] = 0
                continue
            if lab.kind == "intron":
                emis[c] = _CH[f"intron{sign}"]
                aux[c] = 1 if lab.strand > 0 else 3
                if lab.strand > 0:
                    st[c], en[c] = _CH["donor+"], _CH["acceptor+"]
                else:
                    st[c], en[c] = _CH["acceptor-"], _CH["donor-"]
                continue
            if not lab.is_exon:
                raise ValueError(f"label {lab.name}: kind {lab.kind!r} has no model output")
            aux[c] = 2 if lab.strand > 0 else 4
            i, j = int(lab.phase_in), int(lab.phase_out)
            if lab.residue is not None and (j - i) % 3 != lab.residue:
                raise ValueError(f"label {lab.name}: length residue is not exit - entry phase")
            begins = lab.kind in ("single", "initial")
            ends = lab.kind in ("single", "terminal")
            if lab.strand > 0:
                if begins:
                    st[c] = _CH["start+"]
                if ends:
                    en[c] = _CH["stop+"]
                ex_ss.append(-i)
                ex_se.append(1 - j)
            else:
                if begins:
                    en[c] = _CH["start-"]
                if ends:
                    st[c] = _CH["stop-"]
                ex_ss.append(-1 + j)
                ex_se.append(i)
            ex.append(c)
            ex_strand.append(lab.strand)
        return cls(
            emis, st, en,
            np.array(ex, dtype=np.int64), np.array(ex_strand, dtype=np.int64),
            np.array(ex_ss, dtype=np.int64), np.array(ex_se, dtype=np.int64), aux,
        )  # fmt: skip


def frame_terms(
    q_plus: Tensor,
    q_minus: Tensor,
    lm: LabelMap,
    C: int,
    *,
    offset: int = 0,
    carry: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Exon content as boundary scores (module doc), float64.

    Args:
        q_plus, q_minus: (B, T, 3) codon-position scores of rows [offset, offset + T).
        offset: absolute position of row 0 (only its value mod 3 matters).
        carry: (B, 2, 3) float64 prefix sums Q (plus, minus; residue r) before row 0, from
            the previous chunk; None = zeros (start of a sequence).

    Returns:
        (seg_start_add, seg_end_add, carry_out): (B, T, C) float64 each (zero outside exon
        labels) and the (B, 2, 3) prefix sums after the last row.
    """
    B, T, _ = q_plus.shape
    dev = q_plus.device
    t = torch.arange(T, device=dev) + offset
    r = torch.arange(3, device=dev)
    # g[u, r] = score of base u under codon-start residue r
    idx_p = (t.view(T, 1) - r.view(1, 3)) % 3
    idx_m = (r.view(1, 3) - t.view(T, 1)) % 3
    gp = q_plus.double().gather(2, idx_p.expand(B, T, 3))
    gm = q_minus.double().gather(2, idx_m.expand(B, T, 3))
    if carry is None:
        carry = torch.zeros(B, 2, 3, dtype=torch.float64, device=dev)
    Qp = torch.cat([carry[:, 0:1], carry[:, 0:1] + gp.cumsum(1)], dim=1)  # (B, T+1, 3)
    Qm = torch.cat([carry[:, 1:2], carry[:, 1:2] + gm.cumsum(1)], dim=1)
    ss = torch.zeros(B, T, C, dtype=torch.float64, device=dev)
    se = torch.zeros(B, T, C, dtype=torch.float64, device=dev)
    ex = torch.as_tensor(lm.exon_labels, device=dev)
    plus = torch.as_tensor(lm.exon_strand > 0, device=dev)
    a_s = torch.as_tensor(lm.exon_start_shift, device=dev)
    a_e = torch.as_tensor(lm.exon_end_shift, device=dev)
    E = len(ex)
    res_s = (t.view(T, 1) + a_s.view(1, E)) % 3  # residue read at Q[t] for a start at t
    res_e = (t.view(T, 1) + a_e.view(1, E)) % 3  # residue read at Q[t+1] for an end at t
    Qs = torch.where(
        plus.view(1, 1, E),
        Qp[:, :T].gather(2, res_s.expand(B, T, E)),
        Qm[:, :T].gather(2, res_s.expand(B, T, E)),
    )
    Qe = torch.where(
        plus.view(1, 1, E),
        Qp[:, 1:].gather(2, res_e.expand(B, T, E)),
        Qm[:, 1:].gather(2, res_e.expand(B, T, E)),
    )
    ss[:, :, ex] = -Qs
    se[:, :, ex] = Qe
    carry_out = torch.stack([Qp[:, -1], Qm[:, -1]], dim=1)
    return ss, se, carry_out


def map_scores(
    out: Tensor,
    lm: LabelMap,
    C: int,
    *,
    centering: str = "none",
    offset: int = 0,
    carry: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Network outputs (B, T, N_OUTPUTS) -> emissions (B, T, C) float32, seg_start and
    seg_end additions (B, T, C) float64, and the frame carry (see :func:`frame_terms`).

    ``centering``: ``none``; ``position`` subtracts, at every position, the mean of the
    content channels from every label's emission (the same constant for every label at t,
    so every path changes by the same amount: path-invariant, numerics only);
    ``label_mean`` subtracts each content channel's mean over the T rows (Flash-SemiCRF's
    zero-centred scores: an adaptive length prior; the rows are the training window or
    the chunk being decoded).
    """
    B, T, _ = out.shape
    content = out[..., :9]
    if centering == "label_mean":
        content = content - content.mean(dim=1, keepdim=True)
    elif centering not in ("none", "position"):
        raise ValueError(f"unknown centering {centering!r}")
    em_ch = torch.as_tensor(lm.emission_channel, device=out.device)
    h = torch.where(
        (em_ch >= 0).view(1, 1, C),
        content[..., em_ch.clamp_min(0)],
        torch.zeros((), device=out.device, dtype=out.dtype),
    )
    if centering == "position":
        h = h - content.mean(dim=-1, keepdim=True)
    ss, se, carry_out = frame_terms(
        content[..., 2:5], content[..., 6:9], lm, C, offset=offset, carry=carry
    )
    bnd = out[..., 9:].double()
    st = torch.as_tensor(lm.start_channel, device=out.device)
    en = torch.as_tensor(lm.end_channel, device=out.device)
    zero = torch.zeros((), dtype=torch.float64, device=out.device)
    ss = ss + torch.where((st >= 0).view(1, 1, C), bnd[..., (st - 9).clamp_min(0)], zero)
    se = se + torch.where((en >= 0).view(1, 1, C), bnd[..., (en - 9).clamp_min(0)], zero)
    return h, ss, se, carry_out


@nb.njit(cache=True, nogil=True)
def _frame_step(Qp, Qm, content, u, nxt_p, nxt_m):
    """Frame prefix sums after base u (absolute position) with centred content scores
    ``content`` (9,) float32: nxt[r] = Q[r] + score of u under codon-start residue r."""
    for r in range(3):
        nxt_p[r] = Qp[r] + np.float64(content[2 + (u - r) % 3])
        nxt_m[r] = Qm[r] + np.float64(content[6 + (r - u) % 3])


@nb.njit(cache=True, nogil=True)
def _engine_scores_kernel(
    out, ss_rule, se_rule, emis, st, en, ex, ex_plus, a_s, a_e, offset, carry, inv_t, center,
    label_mean,
):  # fmt: skip
    T, C = ss_rule.shape
    h = np.empty((T, C), dtype=np.float32)
    ss = np.empty((T, C))
    se = np.empty((T, C))
    Qp = carry[0].copy()  # prefix sums before the current row, residue r
    Qm = carry[1].copy()
    nxt_p = np.empty(3)
    nxt_m = np.empty(3)
    content = np.empty(9, dtype=np.float32)
    for t in range(T):
        u = offset + t
        for k in range(9):
            content[k] = out[t, k] - label_mean[k]
        mean = np.float32(0.0)
        if center:
            acc = np.float32(0.0)
            for k in range(9):
                acc += content[k]
            mean = acc / np.float32(9.0)
        for c in range(C):
            v = content[emis[c]] if emis[c] >= 0 else np.float32(0.0)
            h[t, c] = (v - mean) * np.float32(inv_t)
            x = 0.0
            if st[c] >= 0:
                x = np.float64(out[t, st[c]])
            ss[t, c] = x
            y = 0.0
            if en[c] >= 0:
                y = np.float64(out[t, en[c]])
            se[t, c] = y
        _frame_step(Qp, Qm, content, u, nxt_p, nxt_m)
        for i in range(ex.shape[0]):
            c = ex[i]
            rs = (u + a_s[i]) % 3
            re = (u + a_e[i]) % 3
            if ex_plus[i]:
                ss[t, c] -= Qp[rs]
                se[t, c] += nxt_p[re]
            else:
                ss[t, c] -= Qm[rs]
                se[t, c] += nxt_m[re]
        for c in range(C):
            ss[t, c] = (np.float64(ss_rule[t, c]) + ss[t, c]) * inv_t
            se[t, c] = (np.float64(se_rule[t, c]) + se[t, c]) * inv_t
        for r in range(3):
            Qp[r] = nxt_p[r]
            Qm[r] = nxt_m[r]
    carry_out = np.empty((2, 3))
    carry_out[0] = Qp
    carry_out[1] = Qm
    return h, ss, se, carry_out


def engine_scores(
    out: np.ndarray,
    seg_start: np.ndarray,
    seg_end: np.ndarray,
    lm: LabelMap,
    *,
    centering: str = "none",
    offset: int = 0,
    carry: np.ndarray | None = None,
    temperature: float = 1.0,
    label_mean: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`map_scores` of one sequence fused with the grammar's rules and the
    temperature, in one numba pass (prediction; training differentiates the torch code).

    ``out`` (T, N_OUTPUTS) float32 network outputs of rows [offset, offset + T);
    ``seg_start`` / ``seg_end`` (T, C) the grammar's rule scores (compile_rows);
    ``carry`` (2, 3) float64 frame prefix sums before row 0 (None = zeros);
    ``label_mean`` (9,) content means to subtract (``label_mean`` centering; computed
    over ``out`` when None). Returns emissions (T, C) float32 and seg_start, seg_end
    (T, C) float64, all divided by ``temperature``, and the carry after the last row --
    :func:`map_scores` + the rules, within float32 rounding of the emissions (tested).
    """
    if centering not in ("none", "position", "label_mean"):
        raise ValueError(f"unknown centering {centering!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    out = np.ascontiguousarray(out, dtype=np.float32)
    if centering == "label_mean":
        lmean = out[:, :9].mean(0) if label_mean is None else label_mean
    else:
        lmean = np.zeros(9)
    lmean = np.asarray(lmean, dtype=np.float32)
    carry = np.zeros((2, 3)) if carry is None else np.asarray(carry, dtype=np.float64)
    plus = np.ascontiguousarray(lm.exon_strand > 0)
    return _engine_scores_kernel(
        out, np.ascontiguousarray(seg_start), np.ascontiguousarray(seg_end),
        lm.emission_channel, lm.start_channel, lm.end_channel, lm.exon_labels, plus,
        lm.exon_start_shift, lm.exon_end_shift, int(offset), carry.reshape(2, 3),
        1.0 / float(temperature), centering == "position", lmean,
    )  # fmt: skip


@nb.njit(cache=True, nogil=True)
def _frame_carry_kernel(out, offset, carry, label_mean):
    Qp, Qm = carry[0].copy(), carry[1].copy()
    nxt_p, nxt_m = np.empty(3), np.empty(3)
    content = np.empty(9, dtype=np.float32)
    for t in range(out.shape[0]):
        for k in range(9):
            content[k] = out[t, k] - label_mean[k]
        _frame_step(Qp, Qm, content, offset + t, nxt_p, nxt_m)
        Qp[:] = nxt_p
        Qm[:] = nxt_m
    Q = np.empty((2, 3))
    Q[0] = Qp
    Q[1] = Qm
    return Q


def frame_carry(
    out: np.ndarray,
    *,
    offset: int = 0,
    carry: np.ndarray | None = None,
    label_mean: np.ndarray | None = None,
) -> np.ndarray:
    """The (2, 3) frame prefix sums after rows ``out`` (T, N_OUTPUTS) of positions
    [offset, offset + T), continuing ``carry``: exactly the carry :func:`engine_scores`
    returns for the same rows, without computing their scores."""
    out = np.ascontiguousarray(out, dtype=np.float32)
    lmean = np.zeros(9, np.float32) if label_mean is None else np.asarray(label_mean, np.float32)
    carry = np.zeros((2, 3)) if carry is None else np.asarray(carry, dtype=np.float64)
    return _frame_carry_kernel(out, int(offset), carry.reshape(2, 3).copy(), lmean)
