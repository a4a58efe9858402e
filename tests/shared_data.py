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


#: three A. thaliana KOG loci (chromosomes 1-3; the set has no chromosome-5 gene)
KOG_LOCI = ["KOG0018_At3g54670.1", "KOG0025_At3g45770.1", "KOG0062_At1g64550.1"]


def prepare_kog_loci(out: Path, length: int, halo: int) -> Path:
    """``genoseg prepare`` of :data:`KOG_LOCI` of athaliana_kog into ``out`` (HDF5)."""
    from genoseg.data.prepare import load_prepare_config, prepare

    d = shared("athaliana_kog")
    cfg = load_prepare_config(
        None,
        {"fasta": str(d / "genome.fa"), "gff3": str(d / "annotation.gff3"),
         "output": str(out), "regions": KOG_LOCI, "windows": {"length": length, "halo": halo}},
    )  # fmt: skip
    prepare(cfg, log=lambda m: None)
    return out


def cram_copy(bam: Path, reference: Path, out: Path) -> Path:
    """Write the reads of ``bam`` to the CRAM ``out`` encoded against ``reference`` (a
    FASTA), and index it; returns ``out``."""
    import pysam

    with pysam.AlignmentFile(str(bam)) as src:
        with pysam.AlignmentFile(
            str(out), "wc", template=src, reference_filename=str(reference)
        ) as dst:
            for read in src.fetch():
                dst.write(read)
    pysam.index(str(out))
    return out
