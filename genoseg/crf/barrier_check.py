"""Static check of compiled Triton kernels for unordered scratch-memory accesses.

A ``(BC,)`` vector in an 8-warp program is *replicated*: several threads hold the same
element. In the generated code a global load of it runs in every replica, while a store is
predicated to one owner per element. So ``v = load(p); store(p, 0)`` with no barrier in
between is a race: a replica in another warp can load after the owner stored (and read 0);
``store(p, x); v = load(p)`` is one too (a replica can load before the owner stored). The
interpreter runs programs sequentially and cannot see either; this module finds them in the
kernel's TTGIR (the last IR where pointers are still whole tensors):

* every ``tt.load`` / ``tt.store`` gets an *address key*: its pointer operand's expression
  tree, with layouts and SSA names erased (``ttg.convert_layout`` is transparent, and the
  layout pass's per-layout copies of one source expression get the same key) down to
  values that are not pure arithmetic (kernel arguments, loaded values, loop variables,
  results of loops, branches and reductions);
* a forward dataflow over the nested regions (``scf.for``/``scf.while`` bodies iterated to
  a fixed point, both ``scf.if`` branches) tracks the accesses made since the last
  ``ttg.barrier``/``gpu.barrier`` on some path;
* a load whose key matches a store in that set, or a store whose key matches such a load,
  is a hazard. Exempt is the owner read-modify-write ``store(p, f(load(p)))`` where the
  loaded value feeds nothing but that store's value: only the owner's copy is stored, so
  the replicas' loads do not matter. Across a loop back-edge, accesses whose key depends
  on the loop's own variables are dropped (they address other positions in the next
  iteration).

What it does not prove: two *different* expressions that alias (e.g. ring rows of two
positions) are not compared; docs/kernels.md argues those per buffer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BARRIERS = ("ttg.barrier", "gpu.barrier")
_LOOPS = ("scf.for", "scf.while")
# ops whose value is a pure function of their operands (and attributes)
_PURE_PREFIXES = ("arith.", "math.")
_PURE_OPS = {
    "tt.addptr", "tt.splat", "tt.broadcast", "tt.expand_dims", "tt.make_range",
    "tt.get_program_id", "tt.get_num_programs", "tt.int_to_ptr", "tt.ptr_to_int",
    "tt.bitcast", "tt.reshape", "tt.trans", "ttg.convert_layout",
}  # fmt: skip

_SSA = re.compile(r"%[\w.$-]+(?:#\d+)?")
_LOC_TAIL = re.compile(r"\s+loc\((?:[^()]|\([^()]*\))*\)\s*$")
_LOC_DEF = re.compile(r"^#(loc\d*)\s*=\s*loc\((.*)\)\s*$")


@dataclass(eq=False)
class _Op:
    name: str
    line: int  # 1-based line in the TTGIR text
    text: str  # the op's line, loc stripped
    results: list[str]
    operands: list[str]
    loc: str | None
    regions: list[list[_Op]] = field(default_factory=list)
    region_args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Hazard:
    """A load/store pair of one address: ``kind`` is ``"load after store"`` or ``"store
    after load"``; lines are 1-based in the TTGIR; ``first_source``/``second_source`` the
    Python source locations (``file:line``) of the two accesses when the TTGIR has them."""

    kind: str
    first_line: int
    second_line: int
    pointer: str
    first_source: str
    second_source: str

    def __str__(self) -> str:
        return (
            f"{self.kind} without a barrier in between: TTGIR lines {self.first_line} and "
            f"{self.second_line} ({self.first_source} -> {self.second_source}), pointer "
            f"{self.pointer}"
        )


def _strip_layouts(text: str) -> str:
    prev = None
    while prev != text:
        prev = text
        text = re.sub(r"#ttg\.\w+<\{[^{}]*\}>", "#L", text)
    return re.sub(r"#[A-Za-z_][\w.]*", "#L", text)


def _parse(ttgir: str) -> tuple[list[_Op], dict[str, str]]:
    """Op tree of the (single) kernel function and the loc table (alias -> file:line)."""
    locs: dict[str, str] = {}
    lines = ttgir.splitlines()
    for ln in lines:
        m = _LOC_DEF.match(ln)
        if m:
            locs[m.group(1)] = m.group(2)
    root: list[_Op] = []
    stack: list[list[_Op]] = [root]
    owners: list[_Op | None] = [None]
    for i, raw in enumerate(lines, 1):
        ln = raw.strip()
        if not ln or ln.startswith("#") or ln.startswith("//"):
            continue
        loc_m = re.search(r"loc\((#loc\d*)\)\s*$", ln)
        loc = loc_m.group(1)[1:] if loc_m else None
        body = _LOC_TAIL.sub("", ln)
        if body.startswith("}"):
            # close the current region; "} else {" / "} do {" open the next one
            stack.pop()
            owner = owners.pop()
            if body.rstrip().endswith("{") and owner is not None:
                region: list[_Op] = []
                owner.regions.append(region)
                stack.append(region)
                owners.append(owner)
            continue
        results: list[str] = []
        rest = body
        m = re.match(r"^((?:%[\w.$-]+(?::\d+)?)(?:\s*,\s*%[\w.$-]+(?::\d+)?)*)\s*=\s*(.*)$", body)
        if m:
            for r in m.group(1).split(","):
                r = r.strip()
                if ":" in r:
                    base, n = r.split(":")
                    results += [f"{base}#{k}" for k in range(int(n))] + [base]
                else:
                    results.append(r)
            rest = m.group(2)
        nm = re.match(r'^"?([\w.]+)"?', rest)
        name = nm.group(1) if nm else rest.split()[0]
        opens = body.rstrip().endswith("{")
        head = rest
        region_args: list[str] = []
        if name in ("scf.for", "scf.while"):
            # block arguments: induction variable and iter_args (``%iv = ...``)
            region_args = re.findall(r"(%[\w.$-]+)\s*=", rest)
            head = re.sub(r"(%[\w.$-]+)\s*=", "", rest)
        elif name == "tt.func":
            region_args = re.findall(r"(%[\w.$-]+)\s*:", rest)
            head = ""
        elif rest.startswith("^"):  # block label with arguments: ^bb0(%a: type, ...):
            name = "block.args"
            results = re.findall(r"(%[\w.$-]+)\s*:", rest)
            head = ""
        operands = [o for o in _SSA.findall(head)]
        op = _Op(name, i, body, results, operands, loc, [], region_args)
        stack[-1].append(op)
        if opens:
            region = []
            op.regions.append(region)
            stack.append(region)
            owners.append(op)
    funcs = [op for op in root if op.name == "tt.func"] or [
        op for top in root for r in top.regions for op in r if op.name == "tt.func"
    ]
    if not funcs:
        raise ValueError("no tt.func in this TTGIR")
    return funcs[0].regions[0], locs


def _source(loc: str | None, locs: dict[str, str], depth: int = 0) -> str:
    if loc is None or depth > 20 or loc not in locs:
        return "?"
    v = locs[loc]
    m = re.match(r'^"([^"]+)":(\d+):\d+$', v)
    if m:
        return f"{m.group(1).rsplit('/', 1)[-1]}:{m.group(2)}"
    inner = re.search(r"#(loc\d*)", v)
    return _source(inner.group(1) if inner else None, locs, depth + 1)


class _Analysis:
    def __init__(self, body: list[_Op], locs: dict[str, str], barriers: bool = True):
        self.locs = locs
        self.barriers = barriers  # False: list every same-address pair, ordered or not
        self.defs: dict[str, _Op] = {}
        self.users: dict[str, list[_Op]] = {}
        self.scope: dict[str, tuple[int, ...]] = {}  # value -> ids of enclosing loops
        self._index(body, (), [{}])
        self._keys: dict[str, object] = {}
        self.hazards: dict[tuple[int, int], Hazard] = {}

    def _index(self, ops: list[_Op], loops: tuple[int, ...], names: list[dict]) -> None:
        """Resolve SSA names to unique ids (``name@line``: MLIR reuses names in sibling
        regions), record definitions, users and the loops enclosing each value."""
        for op in ops:
            op.operands = [self._resolve(o, names) for o in op.operands]
            for o in op.operands:
                self.users.setdefault(o, []).append(op)
            inner = loops + (id(op),) if op.name in _LOOPS else loops
            if op.regions:
                args = {a: f"{a}@{op.line}" for a in op.region_args}
                for a in args.values():
                    self.scope[a] = inner
                for region in op.regions:
                    self._index(region, inner, names + [dict(args)])
            uids = []
            for r in op.results:
                uid = f"{r}@{op.line}"
                names[-1][r] = uid
                self.defs[uid] = op
                self.scope[uid] = loops
                uids.append(uid)
            op.results = uids

    @staticmethod
    def _resolve(name: str, names: list[dict]) -> str:
        for scope in reversed(names):
            if name in scope:
                return scope[name]
        return name  # a kernel argument or a value the parser did not see defined

    def key(self, value: str):
        """Address key: layout-free expression tree of ``value``."""
        if value in self._keys:
            return self._keys[value]
        op = self.defs.get(value)
        if op is None or not self._pure(op) or len(op.results) != 1:
            k: object = ("leaf", value)
        elif op.name == "ttg.convert_layout":
            k = self.key(op.operands[0])
        else:
            template = _strip_layouts(_SSA.sub("%", op.text.split("=", 1)[1]))
            k = (template, tuple(self.key(o) for o in op.operands))
        self._keys[value] = k
        return k

    @staticmethod
    def _pure(op: _Op) -> bool:
        return op.name in _PURE_OPS or op.name.startswith(_PURE_PREFIXES)

    def leaves(self, k) -> set[str]:
        if k[0] == "leaf":
            return {k[1]}
        out: set[str] = set()
        for sub in k[1]:
            out |= self.leaves(sub)
        return out

    def varies_in(self, k, loop: int) -> bool:
        return any(loop in self.scope.get(v, ()) for v in self.leaves(k))

    def only_feeds(self, value: str, store: _Op, seen=None) -> bool:
        """True if ``value`` is used only (through pure ops) as ``store``'s stored value."""
        seen = seen if seen is not None else set()
        if value in seen:
            return True
        seen.add(value)
        for user in self.users.get(value, []):
            if user is store:
                if store.operands.index(value) != 1 or store.operands.count(value) != 1:
                    return False
                continue
            if not self._pure(user) or not all(
                self.only_feeds(r, store, seen) for r in user.results
            ):
                return False
        return True

    def _report(self, kind: str, first: _Op, second: _Op) -> None:
        ptr = second.operands[0]
        self.hazards[(first.line, second.line)] = Hazard(
            kind, first.line, second.line, ptr, _source(first.loc, self.locs),
            _source(second.loc, self.locs),
        )  # fmt: skip

    def run(self, ops: list[_Op], state: frozenset) -> frozenset:
        """Accesses (kind, key, op) since the last barrier after ``ops``, from ``state``."""
        cur = set(state)
        for op in ops:
            if op.name in _BARRIERS:
                if self.barriers:
                    cur = set()
            elif op.name == "tt.load":
                k = self.key(op.operands[0])
                for kind, k2, other in cur:
                    if kind == "S" and k2 == k:
                        self._report("load after store", other, op)
                cur.add(("L", k, op))
            elif op.name == "tt.store":
                k = self.key(op.operands[0])
                for kind, k2, other in cur:
                    if kind == "L" and k2 == k and not self.only_feeds(other.results[0], op):
                        self._report("store after load", other, op)
                cur.add(("S", k, op))
            elif op.name in _LOOPS:
                entry = frozenset(cur)
                carried: frozenset = frozenset()
                out = entry
                for _ in range(8):
                    s = entry | carried
                    for region in op.regions:
                        s = self.run(region, s)
                    out = s
                    nxt = frozenset(a for a in s if not self.varies_in(a[1], id(op)))
                    if nxt <= carried:
                        break
                    carried = carried | nxt
                cur = set(entry | out)
            elif op.name == "scf.if":
                entry = frozenset(cur)
                merged = set()
                for region in op.regions:
                    merged |= self.run(region, entry)
                if len(op.regions) < 2:
                    merged |= entry
                cur = merged
            # other ops with regions (tt.reduce, ...) hold no memory accesses
        return frozenset(cur)


def scratch_hazards(ttgir: str, barriers: bool = True) -> list[Hazard]:
    """Unordered load/store pairs of one address in a compiled kernel's TTGIR (see the
    module docstring); empty when every such pair is separated by a barrier.
    ``barriers=False`` ignores the barriers: every same-address pair the check compares
    (so a test can see that a pair exists and that only a barrier orders it)."""
    body, locs = _parse(ttgir)
    an = _Analysis(body, locs, barriers)
    an.run(body, frozenset())
    return sorted(an.hazards.values(), key=lambda h: (h.second_line, h.first_line))


__all__ = ["Hazard", "scratch_hazards"]
