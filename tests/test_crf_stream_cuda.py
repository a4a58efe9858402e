"""The streams' CUDA path (ForwardStream / ViterbiStream / PosteriorStream on the Triton
chunk kernels), checked without a GPU.

The streams pick the Triton kernels for CUDA tensors (``backend="auto"``); ``backend="triton"``
forces them, and on CPU tensors they run in the Triton interpreter (TRITON_INTERPRET=1,
which must be set before triton is imported: each case runs in a subprocess, this file with
``--worker``, that prints a JSON report). So the very code path CUDA tensors take -- the
dispatch in genoseg/crf/stream.py and the chunk entry points of triton_kernels.py -- runs
here on CPU tensors and is compared with the numba streams and with one whole-contig call.

Also: the Triton-side numerics of issue 8 (log Z in float64, float64 seg_start not rounded
to float32 emissions, chunk position checks) and the backend argument of the streams.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the worker runs this file as a script
    sys.path.insert(0, str(ROOT))

from tests.test_crf_triton import _chunk_args, _make, _stream_case  # noqa: E402

# chunkings of the 20-position contig of _stream_case: boundaries inside the long (tail)
# segments, a chunk given without label_mask (its rows are all True in the contig's mask:
# the run carry alone must keep segments off the previous chunk's forbidden positions), a
# one-row chunk, and chunks shorter than the ring (segments spanning three chunks)
CHUNKINGS = {
    "three": ([(0, 6), (6, 12), (12, 20)], {(6, 12)}),
    "one_row": ([(0, 10), (10, 11), (11, 20)], set()),
    "short": ([(0, 2), (2, 5), (5, 13), (13, 20)], set()),
}

# ----------------------------------------------------------------------------------------
# workers (subprocess, TRITON_INTERPRET=1)


class _Counter:
    """Counts the calls of the Triton chunk functions and of the numba engine's chunk
    functions made by genoseg.crf.stream (to prove which path ran)."""

    def __init__(self):
        from genoseg.crf import cpu
        from genoseg.crf import triton_kernels as tk

        self.calls: dict[str, int] = {}
        for mod, names in ((tk, ("forward_chunk", "viterbi_chunk", "posterior_chunk")),
                           (cpu, ("advance_chunk", "reverse_chunk"))):  # fmt: skip
            for name in names:
                self._wrap(mod, name)

    def _wrap(self, mod, name):
        fn = getattr(mod, name)

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        setattr(mod, name, counted)

    def take(self) -> dict[str, int]:
        out, self.calls = self.calls, {}
        return out


def _chains_of(path: list, C: int) -> list:
    """Chains for PosteriorStream(chains=...) as predict builds them: every segment of the
    best path, each pair of neighbours, the whole path, and one segment off the path."""
    chains = [[seg] for seg in path]
    chains += [[a, b] for a, b in zip(path, path[1:])]
    chains.append(list(path))
    s, e, c = path[0]
    chains.append([(s, e, (c + 1) % C)])
    return chains


def _worker_streams(name: str) -> dict:
    """ForwardStream, ViterbiStream and PosteriorStream(chains=...) on backend="triton"
    against backend="cpu" and against one whole-contig call, for one chunking."""
    import torch

    from genoseg.crf import api
    from genoseg.crf import triton_kernels as tk
    from genoseg.crf.stream import ForwardStream, PosteriorStream, ViterbiStream

    assert tk.interpreted(), "TRITON_INTERPRET=1 was not honoured"
    counter = _Counter()
    pieces, no_mask = CHUNKINGS[name]
    x = _stream_case(torch)
    params = (x.transitions, x.durations, x.init, x.final, x.tail)
    one = (x.emissions, None, *params, x.seg_start, x.seg_end, x.max_dur, x.label_mask)
    whole_logz = api.log_partition(*one, backend="cpu")
    whole_score, whole_paths = api.viterbi(*one, backend="cpu")
    whole = api.marginals(*one, backend="cpu")
    chains = [_chains_of(p, x.C) for p in whole_paths]
    whole_chains = api.chain_marginals(*one, chains=chains, backend="cpu")

    def chunks(order=1):
        for a, b in pieces[::order]:
            yield a, b, _chunk_args(x, a, b, no_mask)

    r: dict = {}
    counter.take()
    # log Z
    fs = {be: ForwardStream(*params, batch=2, backend=be) for be in ("triton", "cpu")}
    for be, s in fs.items():
        for _, _, args in chunks():
            s.update(*args)
        r[f"forward_calls_{be}"] = counter.take()
    r["backend"] = fs["triton"].backend
    lz = fs["triton"].log_z()
    r["logz_dtype"] = str(lz.dtype)
    r["logz_vs_cpu"] = float(((lz - fs["cpu"].log_z()) / whole_logz.abs()).abs().max())
    r["logz_vs_one_call"] = float(((lz - whole_logz) / whole_logz.abs()).abs().max())

    # Viterbi: pass 1, score, pass 2 chunk by chunk
    vs = {be: ViterbiStream(*params, batch=2, backend=be) for be in ("triton", "cpu")}
    for s in vs.values():
        for _, _, args in chunks():
            s.forward(*args)
    r["viterbi_pass1_calls"] = counter.take()
    r["score_vs_cpu"] = float((vs["triton"].score() - vs["cpu"].score()).abs().max())
    r["score_vs_one_call"] = float((vs["triton"].score() - whole_score).abs().max())
    same, ours = True, [[], []]
    for _, _, args in chunks(-1):
        segs = vs["triton"].backward(*args)
        same &= segs == vs["cpu"].backward(*args)
        ours = [segs[k] + ours[k] for k in range(2)]
    r["segments_equal_cpu_stream"] = bool(same)
    r["path_equals_one_call"] = ours == [list(p) for p in whole_paths]
    vk = ViterbiStream(*params, batch=2, backend="triton", keep_pointers=True)
    for _, _, args in chunks():
        vk.forward(*args)
    kept = [[], []]
    for _ in pieces:
        kept = [seg + prev for seg, prev in zip(vk.backward(), kept)]
    r["kept_pointers_path_equals_one_call"] = kept == [list(p) for p in whole_paths]
    cuts = {a for a, _ in pieces[1:]}
    r["tail_segment_across_boundary"] = any(
        e - s > 3 and any(s < c < e for c in cuts) for p in ours for s, e, _ in p
    )
    counter.take()

    # posteriors with chains
    ps = {be: PosteriorStream(*params, batch=2, backend=be, chains=chains, checkpoint=3)
          for be in ("triton", "cpu")}  # fmt: skip
    for _, _, args in chunks():
        for s in ps.values():
            s.forward(*args)
    r["posterior_pass1_calls"] = counter.take()
    worst = {"vs_cpu": 0.0, "vs_one_call": 0.0}
    for a, b, args in chunks(-1):
        mt = ps["triton"].backward(*args)
        mc = ps["cpu"].backward(*args)
        for k in ("position", "start", "end", "start_any", "end_any"):
            mine = getattr(mt, k).double()
            worst["vs_cpu"] = max(worst["vs_cpu"], float((mine - getattr(mc, k)).abs().max()))
            w = getattr(whole, k)[:, a:b].double()
            worst["vs_one_call"] = max(worst["vs_one_call"], float((mine - w).abs().max()))
        r["marg_log_z"] = float((mt.log_z - whole.log_z).abs().max())
        r["marg_dtypes"] = [str(mt.position.dtype), str(mt.log_z.dtype)]
    r.update(worst)
    r["posterior_pass2_calls"] = counter.take()
    cm_t, cm_c = ps["triton"].chain_marginals(), ps["cpu"].chain_marginals()
    r["n_chains"] = [len(c) for c in cm_t]
    r["chains_vs_cpu"] = max(float((a - b).abs().max()) for a, b in zip(cm_t, cm_c))
    r["chains_vs_one_call"] = max(float((a - b).abs().max()) for a, b in zip(cm_t, whole_chains))
    r["chain_max"] = max(float(c.max()) for c in cm_t)
    r["stream_log_z"] = float((ps["triton"].log_z() - whole.log_z).abs().max())
    return r


def _worker_numerics(which: str) -> dict:
    """Issue 8, Triton side: log Z float64 in every entry point (fp32 emissions whose log Z
    is beyond float32 resolution), float64 seg_start/seg_end not rounded to float32
    emissions, and a float32 stream's dtypes."""
    import torch

    from genoseg.crf import api
    from genoseg.crf import triton_kernels as tk
    from genoseg.crf.stream import PosteriorStream, ViterbiStream

    assert tk.interpreted(), "TRITON_INTERPRET=1 was not honoured"
    out: dict = {}

    def run(name, fn):
        try:
            out[name] = fn()
        except Exception:  # reported, asserted by the parent
            out[name] = {"error": traceback.format_exc()}

    # (1) |log Z| ~ 8e4 from fp32 emissions: one float32 ulp there is 0.0078
    def logz64():
        x = _make(torch, 2, 16, 2, 3, seed=41, tail=True, dtype=torch.float32, scale=2.0,
                  shift=5000.0, lengths=[16, 16])  # fmt: skip
        args = (x.emissions, None, x.transitions, x.durations, x.init, x.final, x.tail)
        truth = api.log_partition(*args, backend="cpu")  # float64 accumulation
        got = {
            "kernel": tk.log_partition(x),
            "api": api.log_partition(*args, backend="triton"),
            "marginals": tk.marginals(x).log_z,
        }
        h = x.emissions.clone().requires_grad_(True)  # the autograd Function's forward
        got["autograd"] = api.log_partition(h, *args[1:], backend="triton")
        got["autograd"].sum().backward()
        ps = PosteriorStream(*args[2:], batch=2, backend="triton")
        for a in range(0, 16, 6):
            ps.forward(x.emissions[:, a : a + 6])
        got["stream"] = ps.log_z()
        got["stream_backward"] = ps.backward(x.emissions[:, 12:16]).log_z
        return {
            "magnitude": float(truth.abs().min()),
            "fp32_rounding": float((truth.float().double() - truth).abs().max()),
            "dtypes": {k: str(v.dtype) for k, v in got.items()},
            "errors": {k: float((v.detach().double() - truth).abs().max()) for k, v in got.items()},
            "grad_dtype": str(h.grad.dtype),
        }

    # (2) float32 emissions, float64 seg_start/seg_end of magnitude 1e5 with fractional
    # parts float32 cannot hold (ulp 0.0078): the max semiring is exact, so the Viterbi
    # score must equal the CPU engine's, which reads them in float64
    def seg64():
        x = _make(torch, 2, 16, 3, 3, seed=42, tail=True, bnd=True, dtype=torch.float32,
                  lengths=[16, 16])  # fmt: skip
        g = torch.Generator().manual_seed(43)
        ss = 1e5 + torch.rand(2, 16, 3, generator=g, dtype=torch.float64)
        se = -1e5 + torch.rand(2, 16, 3, generator=g, dtype=torch.float64)
        assert not torch.equal(ss.float().double(), ss)  # really not float32 numbers
        args = (x.emissions, None, x.transitions, x.durations, x.init, x.final, x.tail, ss, se)
        sc, pc = api.viterbi(*args, backend="cpu")
        st, pt = api.viterbi(*args, backend="triton")
        vs = ViterbiStream(x.transitions, x.durations, x.init, x.final, x.tail, batch=2,
                           backend="triton")  # fmt: skip
        for a in (0, 8):
            vs.forward(x.emissions[:, a : a + 8], ss[:, a : a + 8], se[:, a : a + 8])
        lc = api.log_partition(*args, backend="cpu")
        lt = api.log_partition(*args, backend="triton")
        mc = api.marginals(*args, backend="cpu")
        mt = api.marginals(*args, backend="triton")
        return {
            "viterbi": float((st - sc).abs().max()),
            "paths_equal": pt == pc,
            "stream_score": float((vs.score() - sc).abs().max()),
            "logz": float((lt - lc).abs().max()),
            "position": float((mt.position.double() - mc.position.double()).abs().max()),
            "dtype": str(mt.position.dtype),
        }

    # a float32 contig streamed on the Triton backend: float32 posteriors, float64 log Z,
    # equal to the CPU stream
    def stream32():
        x = _stream_case(torch)
        params = (x.transitions, x.durations, x.init, x.final, x.tail)
        pieces = [(0, 7), (7, 20)]
        res = {}
        for be in ("triton", "cpu"):
            ps = PosteriorStream(*params, batch=2, backend=be)
            for a, b in pieces:
                ps.forward(*_float32(_chunk_args(x, a, b, set())))
            res[be] = [ps.backward(*_float32(_chunk_args(x, a, b, set())))
                       for a, b in reversed(pieces)]  # fmt: skip
        t, c = res["triton"], res["cpu"]
        return {
            "dtypes": [str(t[0].position.dtype), str(t[0].start_any.dtype), str(t[0].log_z.dtype)],
            "cpu_dtypes": [str(c[0].position.dtype), str(c[0].log_z.dtype)],
            "position": max(float((a.position - b.position).abs().max()) for a, b in zip(t, c)),
            "log_z": float((t[0].log_z - c[0].log_z).abs().max()),
        }

    run(which, {"logz64": logz64, "seg64": seg64, "stream32": stream32}[which])
    return out


def _float32(args: tuple) -> tuple:
    em, ss, se, md, lm = args
    f = lambda t: None if t is None else t.float()  # noqa: E731
    return (f(em), f(ss), f(se), md, lm)


# ----------------------------------------------------------------------------------------
# pytest side


def _run_worker(*which: str, timeout: int = 120) -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *which], env=env, capture_output=True,
        text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHUNKINGS))
def test_triton_streams_match_cpu_streams(name):
    """One chunking: the three streams on backend="triton" (the path CUDA tensors take)
    against the numba streams and one whole-contig call."""
    r = _run_worker("streams", name)
    assert r["backend"] == "triton"
    # the Triton path really ran, and without the numba engine
    n = len(CHUNKINGS[name][0])
    assert r["forward_calls_triton"] == {"forward_chunk": n}
    assert r["forward_calls_cpu"] == {"advance_chunk": n}
    assert r["viterbi_pass1_calls"] == {"viterbi_chunk": n, "advance_chunk": n}
    # with chains, pass 1 also runs the numba forward for the chain probes
    assert r["posterior_pass1_calls"] == {"forward_chunk": n, "advance_chunk": 2 * n}
    assert r["posterior_pass2_calls"] == {"posterior_chunk": n, "reverse_chunk": n}
    assert r["logz_dtype"] == "torch.float64"
    assert r["logz_vs_cpu"] < 1e-7 and r["logz_vs_one_call"] < 1e-7
    assert r["score_vs_cpu"] < 1e-9 and r["score_vs_one_call"] < 1e-9
    assert r["segments_equal_cpu_stream"]
    assert r["path_equals_one_call"]
    assert r["kept_pointers_path_equals_one_call"]
    assert r["tail_segment_across_boundary"]
    assert r["vs_cpu"] < 1e-6 and r["vs_one_call"] < 1e-6
    assert r["marg_log_z"] < 1e-6 and r["stream_log_z"] < 1e-6
    assert r["marg_dtypes"] == ["torch.float64", "torch.float64"]
    assert min(r["n_chains"]) >= 5
    assert r["chain_max"] > 0.05  # not a comparison of zeros
    assert r["chains_vs_cpu"] < 1e-6 and r["chains_vs_one_call"] < 1e-6


def _numerics(name: str) -> dict:
    r = _run_worker("numerics", name)[name]
    assert "error" not in r, r.get("error")
    return r


def test_triton_log_z_is_float64_everywhere():
    """Issue 8 item 4 on the Triton side: log Z came back rounded to float32 emissions'
    dtype (an error up to 0.004 nats at |log Z| = 7e4, 1 nat on a chromosome)."""
    r = _numerics("logz64")
    assert r["magnitude"] > 5e4
    assert r["fp32_rounding"] > 1e-3  # rounding to float32 would fail the test below
    assert set(r["dtypes"].values()) == {"torch.float64"}, r["dtypes"]
    for k, v in r["errors"].items():
        assert v < 2e-4, (k, v)  # float32 ulp at this magnitude is 0.0039
    assert r["grad_dtype"] == "torch.float32"


def test_triton_reads_float64_seg_scores_in_float64():
    """A float64 seg_start/seg_end is not rounded to float32 emissions' dtype (the CPU
    engine's api.position_dtype rule): Viterbi scores exact, log Z and posteriors equal."""
    r = _numerics("seg64")
    assert r["viterbi"] < 1e-9, r
    assert r["paths_equal"]
    assert r["stream_score"] < 1e-9
    assert r["logz"] < 1e-6
    assert r["position"] < 1e-5
    assert r["dtype"] == "torch.float32"  # posteriors follow the emissions


def test_triton_stream_float32_dtypes():
    """A float32 contig on the Triton stream: float32 posteriors, float64 log Z, equal to
    the numba stream."""
    r = _numerics("stream32")
    assert r["dtypes"] == ["torch.float32", "torch.float32", "torch.float64"]
    assert r["cpu_dtypes"] == ["torch.float32", "torch.float64"]
    assert r["position"] < 1e-5 and r["log_z"] < 1e-6


# --- without the interpreter: checks that run before any kernel launch


def _chunk(torch, T, offset, B=1, C=2, K=3):
    from genoseg.crf.inputs import check_inputs

    z = torch.zeros(C)
    return check_inputs(torch.zeros(B, T, C), None, torch.zeros(C, C), torch.zeros(C, K), z, z,
                        position_offset=offset)  # fmt: skip


def test_chunk_functions_check_the_position():
    """Issue 8 item 6: every chunk entry point refuses a chunk checked for another position
    than its state's (inputs.check_position), before any launch."""
    torch = pytest.importorskip("torch")
    from genoseg.crf import triton_kernels as tk

    x = _chunk(torch, 4, 3)
    for call in (
        lambda: tk.forward_chunk(x, None),
        lambda: tk.viterbi_chunk(x, None),
        lambda: tk.posterior_chunk(x, None, None),
    ):
        with pytest.raises(ValueError, match="position_offset=3, but the stream is at position 0"):
            call()
    p = tk._prepare(x)
    f64 = torch.float64
    for semiring in ("log", "max"):
        state = tk.ChunkState(
            torch.zeros(1, 2 * p.R, p.BC, dtype=f64), torch.zeros(1, 3, p.BC, dtype=f64), 5,
            torch.zeros(1, 2, dtype=torch.int64),
            torch.zeros(1, p.BC, dtype=torch.int32) if semiring == "max" else None, semiring,
        )  # fmt: skip
        calls = (
            [tk.forward_chunk, lambda x, s: tk.posterior_chunk(x, s, None)]
            if semiring == "log"
            else [tk.viterbi_chunk]
        )
        for call in calls:
            with pytest.raises(ValueError, match=r"check_inputs\(\.\.\., position_offset=5\)"):
                call(x, state)


def _params(torch, C=2, K=3):
    z = torch.zeros(C)
    return (torch.zeros(C, C), torch.zeros(C, K), z, z)


def test_stream_backend_argument():
    torch = pytest.importorskip("torch")
    from genoseg.crf.stream import ForwardStream, PosteriorStream, ViterbiStream

    for cls in (ForwardStream, ViterbiStream, PosteriorStream):
        assert cls(*_params(torch)).backend == "cpu"  # auto on CPU tensors
        assert cls(*_params(torch), backend="cpu").backend == "cpu"
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            cls(*_params(torch), backend="triton")  # CPU tensors, no interpreter
        with pytest.raises(ValueError, match="not 'reference'"):
            cls(*_params(torch), backend="reference")
        with pytest.raises(ValueError, match="backend must be one of"):
            cls(*_params(torch), backend="gpu")


def test_refused_chunks_can_be_given_again():
    """A chunk refused by forward() leaves no state behind, and one refused by backward()
    is still pending: the streams then give the one-call results."""
    torch = pytest.importorskip("torch")
    from genoseg.crf import api
    from genoseg.crf.stream import PosteriorStream, ViterbiStream

    g = torch.Generator().manual_seed(5)
    C, K, T = 3, 4, 30
    h = torch.randn(1, T, C, generator=g, dtype=torch.float64)
    A, D = torch.randn(C, C, generator=g), torch.randn(C, K, generator=g)
    init, final, tail = torch.zeros(C), torch.zeros(C), torch.full((C,), -0.3)
    params = (A, D, init, final, tail)
    whole = api.marginals(h, None, *params)
    _, paths = api.viterbi(h, None, *params)
    for cls in (PosteriorStream, ViterbiStream):
        s = cls(*params)
        with pytest.raises(ValueError, match="batch size 2"):
            s.forward(h[:, :10].expand(2, -1, -1))
        with pytest.raises(ValueError, match="contains NaN"):
            s.forward(torch.full((1, 10, C), math.nan, dtype=torch.float64))
        assert s.position == 0 and s._saved == []
        for a in (0, 10, 20):
            s.forward(h[:, a : a + 10])
        with pytest.raises(ValueError, match="has 5 rows"):
            s.backward(h[:, 25:30])
        out = [s.backward(h[:, a : a + 10]) for a in (20, 10, 0)]
        if cls is PosteriorStream:
            pos = torch.cat([m.position for m in reversed(out)], dim=1)
            assert torch.allclose(pos, whole.position, atol=1e-10)
        else:
            assert [seg for o in reversed(out) for seg in o[0]] == paths[0]


if __name__ == "__main__" and "--worker" in sys.argv:
    _args = sys.argv[sys.argv.index("--worker") + 1 :]
    if _args[0] == "streams":
        print(json.dumps(_worker_streams(_args[1])))
    else:
        print(json.dumps(_worker_numerics(_args[1])))
