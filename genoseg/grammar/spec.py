"""Gene-structure grammar as data: labels, transitions, length models, frame rules.

A :class:`Grammar` is a list of :class:`Label` objects plus the allowed transitions between
them. It is built from a YAML file (``genoseg/configs/grammar.yaml`` is the default) by
:func:`load_grammar`, and compiled into the semi-CRF's structural tensors by
:mod:`genoseg.grammar.compile`. docs/grammar.md explains the label set and conventions.

Coordinates: forward-strand genome coordinates, 0-based; a segment is half-open [s, e).
A :class:`MotifRule` anchored at ``"start"`` reads the k-mer ``x[s+offset : s+offset+k]``,
one anchored at ``"end"`` reads ``x[e+offset : e+offset+k]`` (``e`` exclusive). Motifs are
written in forward-strand letters; minus-strand labels carry the mirrored rules (anchor
swapped, offset ``-offset-k``, motifs reverse-complemented), so that a minus-strand gene is
exactly the reverse complement of a plus-strand gene.

Phase (transcript sense, the GHMM convention): the phase of an intron is the number of
coding bases of the interrupted codon that lie upstream of it, i.e. (coding bases
upstream of the intron) mod 3. An exon's entry phase is the phase of the intron before it
(0 for an exon that starts with the start codon), its exit phase the phase of the intron
after it (0 for an exon that ends with the stop codon). The GFF3 CDS phase column of an
exon is ``(3 - entry_phase) % 3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from genoseg.errors import GenosegError

__all__ = [
    "FrameRule",
    "Grammar",
    "Label",
    "LengthModel",
    "MotifRule",
    "default_grammar_path",
    "load_grammar",
    "reverse_complement",
]

NEG_INF = float("-inf")
_COMP = str.maketrans("ACGTN", "TGCAN")
EXON_KINDS = ("single", "initial", "internal", "terminal")
KINDS = ("intergenic", "intron", *EXON_KINDS)


def reverse_complement(seq: str) -> str:
    """Reverse complement of an ACGTN string."""
    return seq.translate(_COMP)[::-1]


@dataclass(frozen=True)
class MotifRule:
    """Score of the k-mer at a fixed offset from a segment boundary.

    anchor: ``"start"`` (reference point s) or ``"end"`` (reference point e, exclusive).
    The k-mer ``x[ref+offset : ref+offset+k]`` scores ``scores[kmer]`` if listed, else
    ``default`` (use ``-inf`` for a whitelist, ``0`` with ``-inf`` scores for a blacklist).
    Bases outside the sequence read as N.
    """

    anchor: str
    offset: int
    scores: tuple[tuple[str, float], ...]
    default: float

    @property
    def k(self) -> int:
        return len(self.scores[0][0])

    def mirrored(self) -> MotifRule:
        """The same rule for the reverse-complemented (other-strand) segment."""
        return MotifRule(
            anchor="end" if self.anchor == "start" else "start",
            offset=-self.offset - self.k,
            scores=tuple((reverse_complement(m), v) for m, v in self.scores),
            default=self.default,
        )

    def table(self) -> np.ndarray:
        """Scores of all 5**k k-mers over codes A=0 C=1 G=2 T=3 N=4 (base-5, first base
        most significant), float64."""
        out = np.full(5**self.k, self.default, dtype=np.float64)
        for motif, val in self.scores:
            idx = 0
            for ch in motif:
                idx = idx * 5 + "ACGTN".index(ch)
            out[idx] = val
        return out


@dataclass(frozen=True)
class FrameRule:
    """Open-reading-frame rule of an exon label, anchored at the segment's last position t.

    Complete codons of the exon occupy ``[q-2, q]`` (forward coordinates) for
    ``q = t - offset - 3j``, j = 0, 1, ... ; none of them may be one of ``stops``
    (forward-strand letters), except: ``skip_last`` exempts the codon ending at t (a
    plus-strand terminal/single exon's own stop codon) and ``allow_first`` exempts the
    codon starting at the segment's first position (a minus-strand terminal/single exon's
    own stop codon).
    """

    offset: int
    stops: tuple[str, ...]
    skip_last: bool = False
    allow_first: bool = False


@dataclass(frozen=True)
class LengthModel:
    """Length distribution of a label, compiled to a score table (log-probabilities).

    geometric: P(d) = q (1-q)^(d-min) for d >= min, q = 1/(mean-min+1); explicit table up to
    ``table`` (at least ``min``), the geometric tail (slope log(1-q)) beyond.
    lognormal: discretized log-normal with the given median and sigma (of log d), normalized
    over min <= d <= max; no tail (longer segments are forbidden).
    """

    model: str
    min: int
    max: int | None = None
    table: int | None = None
    mean: float | None = None
    median: float | None = None
    sigma: float | None = None

    def scores(self) -> tuple[np.ndarray, float]:
        """(table (K_c,) float64 with -inf below min, tail slope or -inf)."""
        if self.model == "geometric":
            kc = max(int(self.table or 1), self.min)
            q = 1.0 / (float(self.mean) - self.min + 1.0)
            d = np.arange(1, kc + 1, dtype=np.float64)
            tab = np.where(d >= self.min, math.log(q) + (d - self.min) * math.log1p(-q), NEG_INF)
            return tab, (math.log1p(-q) if q < 1.0 else NEG_INF)
        d = np.arange(1, int(self.max) + 1, dtype=np.float64)
        mu, s = math.log(float(self.median)), float(self.sigma)
        logp = -np.log(d) - (np.log(d) - mu) ** 2 / (2 * s * s)
        logp[d < self.min] = NEG_INF
        finite = logp[np.isfinite(logp)]
        top = finite.max()
        logp = logp - (top + math.log(np.exp(finite - top).sum()))
        return logp, NEG_INF


@dataclass(frozen=True)
class Label:
    """One segment label.

    strand: +1, -1 or 0 (intergenic). phase_in / phase_out: transcript-sense entry/exit
    phase (exons; an intron has phase_in == phase_out == its phase; None for intergenic).
    residue: required segment length mod 3 (exons) or None. min_length: extra lower bound
    on the length (0 = none). start_rules / end_rules: :class:`MotifRule` lists whose
    scores are added to seg_start / seg_end. frame: the ORF rule (exons) or None.
    """

    name: str
    kind: str
    strand: int
    length_class: str
    phase_in: int | None = None
    phase_out: int | None = None
    residue: int | None = None
    min_length: int = 0
    start_rules: tuple[MotifRule, ...] = ()
    end_rules: tuple[MotifRule, ...] = ()
    frame: FrameRule | None = None
    intron_type: str | None = None
    variant: str = ""

    @property
    def is_exon(self) -> bool:
        return self.kind in EXON_KINDS


@dataclass
class Grammar:
    """Labels, allowed transitions (src -> dst in forward genome order), length models.

    ``init_labels`` / ``final_labels``: labels allowed as the first / last segment of a
    sequence that starts / ends at a contig end or an intergenic cut.
    """

    name: str
    labels: list[Label]
    transitions: set[tuple[int, int]]
    lengths: dict[str, LengthModel]
    init_labels: tuple[int, ...]
    final_labels: tuple[int, ...]
    yaml_text: str = ""
    source: str = ""
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {lab.name: i for i, lab in enumerate(self.labels)}

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def index(self, name: str) -> int:
        """Label index by name; KeyError names the label."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"grammar {self.name!r} has no label {name!r}") from None

    @cached_property
    def intergenic(self) -> int:
        return next(i for i, lab in enumerate(self.labels) if lab.kind == "intergenic")

    @cached_property
    def mirror(self) -> np.ndarray:
        """(C,) int64: index of the same label on the other strand (itself if unstranded)."""
        out = np.arange(self.num_labels)
        for i, lab in enumerate(self.labels):
            if lab.strand:
                flip = "-" if lab.strand > 0 else "+"
                other = lab.name.replace("+" if lab.strand > 0 else "-", flip, 1)
                out[i] = self.index(other)
        return out

    @cached_property
    def strand_array(self) -> np.ndarray:
        """(C,) int8: +1, -1 or 0 per label."""
        return np.array([lab.strand for lab in self.labels], dtype=np.int8)

    @cached_property
    def static_tables(self) -> dict[str, np.ndarray]:
        """Position-independent tensors as float32 numpy arrays: ``transitions`` (C, C),
        ``durations`` (C, K), ``init``, ``final``, ``tail`` (C,). K = longest label table."""
        C = self.num_labels
        tables, tails = [], np.full(C, NEG_INF)
        for i, lab in enumerate(self.labels):
            tab, tail = self.lengths[lab.length_class].scores()
            tab = tab.copy()
            d = np.arange(1, len(tab) + 1)
            if lab.residue is not None:
                tab[d % 3 != lab.residue] = NEG_INF
                if math.isfinite(tail):
                    raise GenosegError(
                        f"{self.source}: label {lab.name}: an exon length model cannot have a "
                        "geometric tail (it would break the modulo-3 rule); use lognormal"
                    )
            tab[d < lab.min_length] = NEG_INF
            if not np.isfinite(tab).any():
                raise GenosegError(f"{self.source}: label {lab.name} allows no length")
            tables.append(tab)
            tails[i] = tail
        K = max(len(t) for t in tables)
        D = np.full((C, K), NEG_INF)
        for i, tab in enumerate(tables):
            D[i, : len(tab)] = tab
        A = np.full((C, C), NEG_INF)
        for a, b in self.transitions:
            A[a, b] = 0.0
        init = np.full(C, NEG_INF)
        init[list(self.init_labels)] = 0.0
        final = np.full(C, NEG_INF)
        final[list(self.final_labels)] = 0.0
        f32 = np.float32
        return {
            "transitions": A.astype(f32),
            "durations": D.astype(f32),
            "init": init.astype(f32),
            "final": final.astype(f32),
            "tail": tails.astype(f32),
        }


# --------------------------------------------------------------------------- YAML


def default_grammar_path() -> Path:
    """Path of the packaged default grammar (genoseg/configs/grammar.yaml)."""
    return Path(str(resources.files("genoseg") / "configs" / "grammar.yaml"))


_TOP_KEYS = {
    "name",
    "version",
    "model",
    "start_codons",
    "stop_codons",
    "intron_types",
    "junction_stops",
    "lengths",
}
_LENGTH_KEYS = {"model", "min", "max", "table", "mean", "median", "sigma"}
_LENGTH_CLASSES = ("intergenic", "intron", "initial", "internal", "terminal", "single")


def _err(src: str, msg: str) -> GenosegError:
    return GenosegError(f"{src}: {msg}")


def _check_keys(d: object, allowed: set[str], src: str, where: str) -> dict:
    if not isinstance(d, dict):
        raise _err(src, f"{where or 'grammar'} must be a mapping")
    for key in d:
        if key not in allowed:
            raise _err(
                src,
                f"unknown key '{where + '.' if where else ''}{key}' "
                f"(allowed: {', '.join(sorted(allowed))})",
            )
    return d


def _motifs(d: object, k: int, src: str, where: str) -> tuple[tuple[str, float], ...]:
    items = {m: 0.0 for m in d} if isinstance(d, list) else d
    if not isinstance(items, dict) or not items:
        raise _err(src, f"'{where}' must be a non-empty list or mapping of {k}-mers")
    out = []
    for m, v in items.items():
        m = str(m).upper()
        if len(m) != k or set(m) - set("ACGT"):
            raise _err(src, f"'{where}': {m!r} is not a {k}-mer of A, C, G, T")
        try:
            out.append((m, float(v)))
        except (TypeError, ValueError):
            raise _err(src, f"'{where}.{m}': score {v!r} is not a number") from None
    return tuple(out)


def _length_model(d: object, src: str, name: str) -> LengthModel:
    d = _check_keys(d, _LENGTH_KEYS, src, f"lengths.{name}")
    model = d.get("model")
    if model not in ("geometric", "lognormal"):
        raise _err(src, f"lengths.{name}.model must be 'geometric' or 'lognormal'")
    need = ("min", "mean") if model == "geometric" else ("min", "max", "median", "sigma")
    for key in need:
        if key not in d:
            raise _err(src, f"lengths.{name}.{key} is required for model {model}")
    try:
        lm = LengthModel(
            model=model,
            min=int(d["min"]),
            max=int(d["max"]) if d.get("max") is not None else None,
            table=int(d["table"]) if d.get("table") is not None else None,
            mean=float(d["mean"]) if d.get("mean") is not None else None,
            median=float(d["median"]) if d.get("median") is not None else None,
            sigma=float(d["sigma"]) if d.get("sigma") is not None else None,
        )
    except (TypeError, ValueError) as exc:
        raise _err(src, f"lengths.{name}: {exc}") from None
    if lm.min < 1:
        raise _err(src, f"lengths.{name}.min must be >= 1")
    if model == "geometric" and lm.mean <= lm.min - 1:
        raise _err(src, f"lengths.{name}.mean must be > min - 1")
    if model == "lognormal" and (lm.max < lm.min or lm.median <= 0 or lm.sigma <= 0):
        raise _err(src, f"lengths.{name}: need max >= min, median > 0, sigma > 0")
    return lm


def load_grammar(path: str | Path | None = None) -> Grammar:
    """Load a grammar YAML file (default: the packaged default grammar).

    Raises GenosegError naming the file and the key for unknown keys or bad values.
    """
    p = Path(path) if path is not None else default_grammar_path()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise GenosegError(f"{p}: grammar file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GenosegError(f"{p}: cannot read grammar: {exc}") from None
    return grammar_from_yaml(text, source=str(p))


def grammar_from_yaml(text: str, source: str = "<grammar>") -> Grammar:
    """Build a :class:`Grammar` from YAML text (see :func:`load_grammar`)."""
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _err(f"{source}{where}", f"invalid YAML: {problem}") from None
    d = _check_keys(d, _TOP_KEYS, source, "")
    if d.get("model", "protein_coding_phased") != "protein_coding_phased":
        raise _err(source, f"model: unknown grammar model {d['model']!r}")
    starts = _motifs(d.get("start_codons", {"ATG": 0.0}), 3, source, "start_codons")
    stops = tuple(
        m for m, _ in _motifs(d.get("stop_codons", ["TAA", "TAG", "TGA"]), 3, source, "stop_codons")
    )
    itypes_raw = d.get("intron_types")
    if not isinstance(itypes_raw, list) or not itypes_raw:
        raise _err(source, "intron_types must be a non-empty list")
    itypes = []
    for i, it in enumerate(itypes_raw):
        it = _check_keys(it, {"name", "donors", "acceptors"}, source, f"intron_types[{i}]")
        itypes.append(
            (
                str(it.get("name", "")),
                _motifs(it.get("donors"), 2, source, f"intron_types[{i}].donors"),
                _motifs(it.get("acceptors"), 2, source, f"intron_types[{i}].acceptors"),
            )
        )
    if len({n for n, _, _ in itypes}) != len(itypes):
        raise _err(source, "intron_types: names must be distinct")
    junction = d.get("junction_stops", True)
    if not isinstance(junction, bool):
        raise _err(source, "junction_stops must be true or false")
    lengths_raw = _check_keys(d.get("lengths"), set(_LENGTH_CLASSES), source, "lengths")
    lengths = {}
    for cls in _LENGTH_CLASSES:
        if cls not in lengths_raw:
            raise _err(source, f"lengths.{cls} is required")
        lengths[cls] = _length_model(lengths_raw[cls], source, cls)
    for cls in EXON_KINDS:
        if lengths[cls].model != "lognormal":
            raise _err(source, f"lengths.{cls}: exon lengths need model lognormal (no tail)")
    return build_protein_coding(
        name=str(d.get("name", "protein-coding-phased")),
        starts=starts,
        stops=stops,
        intron_types=itypes,
        junction_stops=junction,
        lengths=lengths,
        yaml_text=text,
        source=source,
    )


# --------------------------------------------------------------------------- builder


def _intron_variants(stops: tuple[str, ...], phase: int, junction: bool):
    """(variant suffix, extra start rules, extra end rules) of a plus-strand intron.

    For phase 1 / 2 the last 1 / 2 coding bases before the intron are x[s-1] / x[s-2:s];
    a variant named by those bases (a prefix of some stop codon) forbids the next exon
    from starting with the rest of that stop codon (x[e:e+3-phase]).
    """
    if not junction or phase == 0:
        return [("", (), ())]
    prefixes = sorted({s[:phase] for s in stops})
    out = [
        (
            "",
            (MotifRule("start", -phase, tuple((p, NEG_INF) for p in prefixes), 0.0),),
            (),
        )
    ]
    for p in prefixes:
        rest = sorted({s[phase:] for s in stops if s.startswith(p)})
        out.append(
            (
                p,
                (MotifRule("start", -phase, ((p, 0.0),), NEG_INF),),
                (MotifRule("end", 0, tuple((r, NEG_INF) for r in rest), 0.0),),
            )
        )
    return out


def build_protein_coding(
    *,
    name: str,
    starts: tuple[tuple[str, float], ...],
    stops: tuple[str, ...],
    intron_types: list[tuple[str, tuple, tuple]],
    junction_stops: bool,
    lengths: dict[str, LengthModel],
    yaml_text: str = "",
    source: str = "<grammar>",
) -> Grammar:
    """The phased protein-coding grammar (docs/grammar.md): intergenic, then per strand
    single, initial/p, internal/i/j, terminal/i exons and intron/p[variant] labels."""
    start_rule = MotifRule("start", 0, starts, NEG_INF)
    stop_rule = MotifRule("end", -3, tuple((s, 0.0) for s in stops), NEG_INF)
    plus: list[Label] = []

    def exon(kind: str, pin: int, pout: int) -> Label:
        nm = {
            "single": "single+",
            "initial": f"initial+/{pout}",
            "internal": f"internal+/{pin}/{pout}",
            "terminal": f"terminal+/{pin}",
        }[kind]
        residue = {
            "single": 0,
            "initial": pout % 3,
            "internal": (pout - pin) % 3,
            "terminal": (-pin) % 3,
        }[kind]
        # An internal 1->2 exon of length 1 would put an intron base inside the
        # junction-stop checks of both neighbouring introns: require length >= 4.
        min_len = 4 if (junction_stops and kind == "internal" and (pin, pout) == (1, 2)) else 0
        return Label(
            name=nm,
            kind=kind,
            strand=1,
            length_class=kind,
            phase_in=pin,
            phase_out=pout,
            residue=residue,
            min_length=min_len,
            start_rules=(start_rule,) if kind in ("single", "initial") else (),
            end_rules=(stop_rule,) if kind in ("single", "terminal") else (),
            frame=FrameRule(offset=pout, stops=stops, skip_last=kind in ("single", "terminal")),
        )

    plus.append(exon("single", 0, 0))
    plus += [exon("initial", 0, p) for p in range(3)]
    plus += [exon("internal", i, j) for i in range(3) for j in range(3)]
    plus += [exon("terminal", i, 0) for i in range(3)]
    for tname, donors, acceptors in intron_types:
        for p in range(3):
            for var, sx, ex in _intron_variants(stops, p, junction_stops):
                tag = f"{tname}:" if tname else ""
                plus.append(
                    Label(
                        name=f"intron+/{tag}{p}{var}",
                        kind="intron",
                        strand=1,
                        length_class="intron",
                        phase_in=p,
                        phase_out=p,
                        start_rules=(MotifRule("start", 0, donors, NEG_INF), *sx),
                        end_rules=(MotifRule("end", -2, acceptors, NEG_INF), *ex),
                        intron_type=tname,
                        variant=var,
                    )
                )

    def mirror(lab: Label) -> Label:
        frame = None
        if lab.frame is not None:
            frame = FrameRule(
                offset=(3 - lab.phase_in) % 3,
                stops=tuple(reverse_complement(s) for s in lab.frame.stops),
                allow_first=lab.frame.skip_last,
            )
        return Label(
            name=lab.name.replace("+", "-", 1),
            kind=lab.kind,
            strand=-1,
            length_class=lab.length_class,
            phase_in=lab.phase_in,
            phase_out=lab.phase_out,
            residue=lab.residue,
            min_length=lab.min_length,
            start_rules=tuple(r.mirrored() for r in lab.end_rules),
            end_rules=tuple(r.mirrored() for r in lab.start_rules),
            frame=frame,
            intron_type=lab.intron_type,
            variant=lab.variant,
        )

    ig = Label(name="intergenic", kind="intergenic", strand=0, length_class="intergenic")
    labels = [ig, *plus, *(mirror(lab) for lab in plus)]
    idx = {lab.name: i for i, lab in enumerate(labels)}
    n_plus = len(plus)

    # plus-strand transitions in forward order (= transcription order)
    pt: set[tuple[int, int]] = set()
    for i, a in enumerate(labels[1 : 1 + n_plus], start=1):
        for j, b in enumerate(labels[1 : 1 + n_plus], start=1):
            if a.is_exon and b.kind == "intron" and a.kind in ("initial", "internal"):
                if a.phase_out == b.phase_in:
                    pt.add((i, j))
            if a.kind == "intron" and b.kind in ("internal", "terminal"):
                if a.phase_out == b.phase_in:
                    pt.add((i, j))
        if a.kind in ("single", "initial"):
            pt.add((0, i))
        if a.kind in ("single", "terminal"):
            pt.add((i, 0))

    # minus strand: reversed order of the mirrored labels
    def m(i: int) -> int:
        return 0 if i == 0 else i + n_plus

    trans = set(pt) | {(m(b), m(a)) for a, b in pt}
    assert all(
        labels[m(i)].name == labels[i].name.replace("+", "-", 1)
        for i in idx.values()
        if labels[i].strand > 0
    )
    return Grammar(
        name=name,
        labels=labels,
        transitions=trans,
        lengths=lengths,
        init_labels=(0,),
        final_labels=(0,),
        yaml_text=yaml_text,
        source=source,
    )
