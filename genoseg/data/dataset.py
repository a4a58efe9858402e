"""torch Dataset over a ``genoseg prepare`` HDF5 file (layout: docs/formats.md).

The file is opened lazily, once per process, on first access: the Dataset can be handed to
a DataLoader with ``num_workers > 0`` (each worker opens its own handle; h5py handles
are not shared across fork).

With ``strands=("+", "-")`` every window also appears reverse-complemented (index
``i + n_windows``): sequence reverse-complemented, labels mapped to their other-strand
label (``label_mirror``) and reversed, evidence channels swapped by strand and reversed,
core offsets mirrored. The grammar is strand-symmetric, so that is again a valid gold
segmentation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from genoseg.data.bam import reverse_evidence
from genoseg.data.prepare import FORMAT, FORMAT_VERSION
from genoseg.errors import GenosegError

__all__ = ["WindowDataset", "collate_windows"]

_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)


class WindowDataset(Dataset):
    """Windows of a prepared HDF5 file.

    Item (dict), for a window of ``length`` valid columns (sequence incl. halo):
      ``sequence`` (length,) int64 codes A=0 C=1 G=2 T=3 N=4; ``softmask`` (length,) bool;
      ``labels`` (length,) int64 label index, ``ignore_label`` (255) where not used;
      ``mask`` (length,) bool; ``evidence`` (8, length) float32 if the file has it;
      ``core`` (2,) int64 [start, end) offsets of the labelled core within the window;
      ``contig`` str; ``start`` int (0-based contig coordinate of column 0, forward
      strand); ``strand`` +1 or -1 (-1: the item is the reverse complement: column j is
      forward position ``start + length - 1 - j``).
    """

    def __init__(self, path: str | os.PathLike, *, strands: tuple[str, ...] = ("+",)):
        self.path = Path(path)
        if not self.path.is_file():
            raise GenosegError(f"{self.path}: prepared HDF5 file not found")
        if not strands or set(strands) - {"+", "-"}:
            raise GenosegError(f"strands must be a non-empty subset of ('+', '-'), got {strands}")
        self.strands = tuple(strands)
        try:
            with h5py.File(self.path, "r") as h5:
                if h5.attrs.get("format") != FORMAT:
                    raise GenosegError(f"{self.path}: not a genoseg prepare file")
                version = int(h5.attrs["format_version"])
                if version > FORMAT_VERSION:
                    raise GenosegError(
                        f"{self.path}: format version {version} is newer than this genoseg "
                        f"reads ({FORMAT_VERSION}); upgrade genoseg"
                    )
                w = h5["windows"]
                self.n_windows = int(w["length"].shape[0])
                self.lengths = w["length"][:]
                self.starts = w["start"][:]
                self.core_start = w["core_start"][:]
                self.core_end = w["core_end"][:]
                self.contig_index = w["contig"][:]
                self.contig_names = [s.decode() if isinstance(s, bytes) else s
                                     for s in h5["contigs/name"][:]]  # fmt: skip
                self.label_names = json.loads(h5.attrs["label_names"])
                self.mirror = np.asarray(h5.attrs["label_mirror"], dtype=np.int64)
                self.ignore_label = int(h5.attrs["ignore_label"])
                self.grammar_yaml = str(h5.attrs["grammar"])
                self.evidence_channels = json.loads(h5.attrs["evidence_channels"])
                self.report = json.loads(h5.attrs["report"])
        except OSError as exc:
            raise GenosegError(f"{self.path}: cannot read HDF5: {exc}") from None
        self.has_evidence = bool(self.evidence_channels)
        lut = np.arange(256, dtype=np.int64)
        lut[: len(self.mirror)] = self.mirror
        self._mirror_lut = lut
        self._h5: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.n_windows * len(self.strands)

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range ({len(self)})")
        i %= len(self)
        strand = self.strands[i // self.n_windows]
        w = i % self.n_windows
        n = int(self.lengths[w])
        g = self._file()["windows"]
        seq = g["sequence"][w, :n]
        soft = g["softmask"][w, :n]
        lab = g["labels"][w, :n].astype(np.int64)
        msk = g["mask"][w, :n]
        ev = g["evidence"][w, :, :n] if self.has_evidence else None
        cs, ce = int(self.core_start[w]), int(self.core_end[w])
        if strand == "-":
            seq = _COMPLEMENT[np.minimum(seq, 4)][::-1]
            soft, msk = soft[::-1], msk[::-1]
            lab = self._mirror_lut[lab][::-1]
            ev = reverse_evidence(ev) if ev is not None else None
            cs, ce = n - ce, n - cs
        item = {
            "sequence": torch.from_numpy(np.ascontiguousarray(seq).astype(np.int64)),
            "softmask": torch.from_numpy(np.ascontiguousarray(soft)),
            "labels": torch.from_numpy(np.ascontiguousarray(lab)),
            "mask": torch.from_numpy(np.ascontiguousarray(msk)),
            "core": torch.tensor([cs, ce], dtype=torch.int64),
            "contig": self.contig_names[int(self.contig_index[w])],
            "start": int(self.starts[w]),
            "strand": 1 if strand == "+" else -1,
        }
        if ev is not None:
            item["evidence"] = torch.from_numpy(np.ascontiguousarray(ev, dtype=np.float32))
        return item


def collate_windows(batch: list[dict], ignore_label: int = 255) -> dict:
    """Pad a list of items to the longest (B, T): sequence padded with N (4), labels with
    ``ignore_label``, mask/softmask False, evidence 0; adds ``lengths`` (B,) int64."""
    T = max(len(b["sequence"]) for b in batch)
    B = len(batch)
    out = {
        "sequence": torch.full((B, T), 4, dtype=torch.int64),
        "softmask": torch.zeros((B, T), dtype=torch.bool),
        "labels": torch.full((B, T), ignore_label, dtype=torch.int64),
        "mask": torch.zeros((B, T), dtype=torch.bool),
        "lengths": torch.tensor([len(b["sequence"]) for b in batch], dtype=torch.int64),
        "core": torch.stack([b["core"] for b in batch]),
        "contig": [b["contig"] for b in batch],
        "start": torch.tensor([b["start"] for b in batch], dtype=torch.int64),
        "strand": torch.tensor([b["strand"] for b in batch], dtype=torch.int64),
    }
    for j, b in enumerate(batch):
        n = len(b["sequence"])
        for k in ("sequence", "softmask", "labels", "mask"):
            out[k][j, :n] = b[k]
    if "evidence" in batch[0]:
        E = batch[0]["evidence"].shape[0]
        out["evidence"] = torch.zeros((B, E, T), dtype=torch.float32)
        for j, b in enumerate(batch):
            out["evidence"][j, :, : b["evidence"].shape[1]] = b["evidence"]
    return out
