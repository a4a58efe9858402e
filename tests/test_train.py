"""`genoseg train`: a tiny run learns, resume is bit for bit, DDP on gloo, config errors."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genoseg.train.config import load_train_config, parse_overrides
from genoseg.train.train import EXIT_REQUEUE, Trainer, flank_unlabel
from tests.shared_data import prepare_kog_loci

REPO = Path(__file__).resolve().parents[1]
GENOSEG = [sys.executable, "-m", "genoseg.cli"]


@pytest.fixture(scope="module")
def h5(tmp_path_factory) -> Path:
    return prepare_kog_loci(tmp_path_factory.mktemp("train_data") / "kog3.h5", 3000, 60)


def _config(tmp: Path, h5: Path, **over) -> Path:
    cfg = {
        "model": {
            "encoder": {"width": 8, "kernel": 3, "stem_kernel": 5, "dilations": [1, 4],
                        "mlp_ratio": 1},
        },
        "data": {"train": [{"path": str(h5)}], "valid": [{"path": str(h5)}],
                 "valid_max_windows": 1},
        "optim": {"lr": 1e-2, "warmup_steps": 1},
        "steps": 6, "batch_size": 1, "max_window": 1500, "eval_every": 3,
        "checkpoint_every": 2, "log_every": 1, "out_dir": str(tmp / "run"), "threads": 1,
    }  # fmt: skip
    for k, v in over.items():
        cfg[k] = v
    p = tmp / "train.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_tiny_run_learns_and_writes_checkpoints(tmp_path, h5) -> None:
    cfg = load_train_config(_config(tmp_path, h5), ["steps=12", "eval_every=12"])
    tr = Trainer(cfg)
    assert tr.run() == 0
    losses = [r["train_nll_per_kb"] for r in tr.history]
    assert len(losses) == 12
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    run = tmp_path / "run"
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["format"] == "genoseg-checkpoint" and ck["train_state"]["step"] == 12
    assert ck["config"]["steps"] == 12  # the resolved config, overrides included
    assert "train_state" not in torch.load(run / "best.pt", weights_only=True)
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "exon_f1" in header and "train_nll_per_kb" in header
    assert not list(run.glob(".*tmp*"))


class _StopAt(Trainer):
    """Simulates a scheduler's SIGTERM arriving during step ``stop_at``."""

    stop_at = 3

    def _record(self, row: dict) -> None:
        super()._record(row)
        if self.step == self.stop_at:
            self._stop.append(signal.SIGTERM)


def test_resume_is_bit_for_bit(tmp_path, h5) -> None:
    (tmp_path / "a").mkdir()
    a = load_train_config(_config(tmp_path / "a", h5))
    assert Trainer(a).run() == 0
    (tmp_path / "b").mkdir()
    b = load_train_config(_config(tmp_path / "b", h5))
    assert _StopAt(b).run() == EXIT_REQUEUE
    assert torch.load(tmp_path / "b/run/last.pt", weights_only=True)["train_state"]["step"] == 3
    assert Trainer(b, resume=True).run() == 0
    wa, wb = _weights(tmp_path / "a/run/last.pt"), _weights(tmp_path / "b/run/last.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa = torch.load(tmp_path / "a/run/last.pt", weights_only=True)["train_state"]
    sb = torch.load(tmp_path / "b/run/last.pt", weights_only=True)["train_state"]
    assert [r["loss"] for r in sa["history"]] == [r["loss"] for r in sb["history"]]


def test_sigterm_checkpoints_and_exits_for_requeue(tmp_path, h5) -> None:
    cfg = _config(tmp_path, h5, steps=400, eval_every=400, checkpoint_every=400)
    proc = subprocess.Popen(
        [*GENOSEG, "train", "--config", str(cfg)], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "run" / "metrics.csv"
    deadline = time.monotonic() + 120
    while not metrics.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_REQUEUE, err
    assert "--resume" in err
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert 1 <= ck["train_state"]["step"] < 400
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_ddp_two_processes_gloo(tmp_path, h5) -> None:
    cfg = _config(tmp_path, h5, steps=3, eval_every=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(29500 + os.getpid() % 1000), "-m", "genoseg.cli", "train",
         "--config", str(cfg), "--device", "cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world size 2" in r.stderr
    assert "parameters identical on all 2 ranks" in r.stderr
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["train_state"]["world_size"] == 2 and ck["train_state"]["step"] == 3


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(stepz=3), "unknown key 'stepz'"),
        (lambda c: c.update(steps="many"), "'steps' must be an integer"),
        (lambda c: c["model"]["encoder"].update(kernel=4), "kernel must be odd"),
        (lambda c: c["data"]["train"][0].update(path="/nonexistent/x.h5"), "file not found"),
        (lambda c: c["optim"].update(lr=-1), "optim.lr must be > 0"),
        (lambda c: c.update(device="tpu"), "'device' must be"),
        (lambda c: c.update(out_dir=c["data"]["train"][0]["path"]), "is not a folder"),
        (lambda c: c.update(out_dir=c["data"]["train"][0]["path"] + "/run"), "is not a folder"),
        (lambda c: c.update(init_from="/nonexistent/best.pt"), "init_from: file not found"),
        (lambda c: c.update(init_from="/tmp"), "init_from: is a folder"),
    ],
)
def test_bad_config_is_one_line(tmp_path, h5, mutate, message) -> None:
    p = _config(tmp_path, h5)
    c = yaml.safe_load(p.read_text())
    mutate(c)
    p.write_text(yaml.safe_dump(c))
    r = subprocess.run([*GENOSEG, "train", "--config", str(p)], capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(p) in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_set_overrides_and_bad_set(tmp_path, h5) -> None:
    assert parse_overrides(["optim.lr=1e-3", "data.strands=[+]"]) == {
        "optim": {"lr": 1e-3}, "data": {"strands": ["+"]}
    }  # fmt: skip
    cfg = load_train_config(_config(tmp_path, h5), ["optim.lr=0.5", "model.centering=none"])
    assert cfg.optim.lr == 0.5 and cfg.model.centering == "none"
    r = subprocess.run(
        [*GENOSEG, "train", "--config", str(_config(tmp_path, h5)), "--set", "optim.lr"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 1 and "expected key=value" in r.stderr
    r = subprocess.run(
        [*GENOSEG, "train", "--config", str(_config(tmp_path, h5)), "--set", "optim.lrr=1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 1 and "unknown key 'optim.lrr'" in r.stderr


def test_relative_data_paths_are_relative_to_the_yaml(tmp_path, h5) -> None:
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "data.h5"
    link.symlink_to(h5)
    p = _config(tmp_path, h5)
    c = yaml.safe_load(p.read_text())
    c["data"]["train"] = [{"path": "sub/data.h5"}]
    p.write_text(yaml.safe_dump(c))
    cfg = load_train_config(p)
    assert cfg.data.train[0].path == tmp_path / "sub" / "data.h5"


def test_resume_without_checkpoint_is_clear(tmp_path, h5) -> None:
    r = subprocess.run(
        [*GENOSEG, "train", "--config", str(_config(tmp_path, h5)), "--resume"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 1 and "nothing to resume" in r.stderr


def test_flank_unlabel() -> None:
    ig, IGN = 0, 255
    lab = np.array([0] * 10 + [5] * 3 + [0] * 10)
    out = flank_unlabel(lab, ig, 4)
    assert list(out[:6]) == [IGN] * 6 and list(out[6:17]) == list(lab[6:17])
    assert list(out[17:]) == [IGN] * 6
    assert (flank_unlabel(np.zeros(5, dtype=int), ig, 2) == IGN).all()  # no gene at all


def test_temperature_calibration(tmp_path, h5) -> None:
    from genoseg.model.checkpoint import load_model
    from genoseg.train.calibrate import fit_temperature
    from genoseg.train.calibrate import main as calibrate_main
    from genoseg.train.train import Sources

    cfg_path = _config(tmp_path, h5)
    cfg = load_train_config(cfg_path, ["steps=4", "eval_every=4"])
    assert Trainer(cfg).run() == 0
    best = tmp_path / "run" / "best.pt"
    model = load_model(best)
    cal = fit_temperature(model, Sources(cfg.data.valid, ("+",), model.grammar), 1, iters=4)
    assert 0.25 <= cal["temperature"] <= 4.0
    assert cal["valid_nll_per_kb"] <= cal["valid_nll_per_kb_at_1"] + 1e-9
    calibrate_main([str(best), "--config", str(cfg_path)])
    ck = torch.load(best, weights_only=True)
    assert ck["calibration"]["temperature"] > 0 and "valid_nll_per_kb" in ck["calibration"]
    assert load_model(best).calibration["temperature"] == ck["calibration"]["temperature"]


def test_exon_calibration_with_strand_average_is_stored(tmp_path, h5) -> None:
    """`calibrate --exons ... --strand-average` fits T with both strands averaged and stores
    the setting beside T, which predict then uses; without --exons it is a usage error."""
    from genoseg.model.checkpoint import load_model
    from genoseg.train.calibrate import main as calibrate_main
    from tests.gold_paths import SAMPLE_FA, SAMPLE_GFF
    from tests.test_predict import make_model

    cfg_path = _config(tmp_path, h5)
    assert Trainer(load_train_config(cfg_path, ["steps=2", "eval_every=2"])).run() == 0
    untrained = tmp_path / "run" / "best.pt"  # 2 steps: no exon anywhere yet
    with pytest.raises(SystemExit, match="predicts no exon on Chr5: nothing to calibrate"):
        calibrate_main([str(untrained), "--config", str(cfg_path),
                        "--exons", str(SAMPLE_FA), str(SAMPLE_GFF), "Chr5"])  # fmt: skip
    best = make_model(tmp_path / "tiny.pt")  # biased towards calling genes
    with pytest.raises(SystemExit) as exc:
        calibrate_main([str(best), "--config", str(cfg_path), "--strand-average"])
    assert exc.value.code == 2
    calibrate_main([str(best), "--config", str(cfg_path), "--strand-average",
                    "--exons", str(SAMPLE_FA), str(SAMPLE_GFF), "Chr5"])  # fmt: skip
    cal = load_model(best).calibration
    assert cal["strand_average"] is True and cal["objective"] == "exon_log_loss"
    assert cal["temperature"] in (0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0)


def test_exon_calibration_scores_exon_posteriors(tmp_path):
    """The exon objective of `genoseg.train.calibrate --exons`: the log-loss and ECE of the
    predicted CDS parts' scores, a part being correct when it is a reference part."""

    from genoseg.train.calibrate import exon_calibration

    head = "##gff-version 3\n##sequence-region c1 1 10000\n"

    def gff(name, parts, scores):
        rows = [f"c1\tt\tgene\t100\t2000\t.\t+\t.\tID={name}g",
                f"c1\tt\tmRNA\t100\t2000\t.\t+\t.\tID={name}t;Parent={name}g"]  # fmt: skip
        for (s, e), p in zip(parts, scores):
            rows.append(f"c1\tt\tCDS\t{s}\t{e}\t{p}\t+\t0\tParent={name}t")
        path = tmp_path / f"{name}.gff3"
        path.write_text(head + "\n".join(rows) + "\n")
        return str(path)

    ref = gff("r", [(100, 399), (500, 799), (900, 2000)], [".", ".", "."])
    pred = gff("p", [(100, 399), (500, 801), (900, 2000)], [0.9, 0.3, 0.6])
    got = exon_calibration(pred, ref, ["c1"])
    assert got["n"] == 3
    want = -(math.log(0.9) + math.log(1 - 0.3) + math.log(0.6)) / 3
    assert got["log_loss"] == pytest.approx(want)
    # bins: 0.3 wrong (|0.3 - 0|), 0.6 right (|0.6 - 1|), 0.9 right (|0.9 - 1|)
    assert got["ece"] == pytest.approx((0.3 + 0.4 + 0.1) / 3)


def test_weight_average_is_what_validation_scores_and_best_holds(tmp_path, h5) -> None:
    """ema > 0: best.pt holds the moving average of the weights (after step 1:
    d * initial + (1 - d) * step-1 weights, d = min(ema, 2/11)), last.pt the raw weights,
    and a resumed run carries the average on bit for bit."""
    cfg = load_train_config(_config(tmp_path, h5, steps=1, eval_every=1, ema=0.5))
    tr = Trainer(cfg)
    w0 = {k: v.detach().double().clone() for k, v in tr.model.state_dict().items()}
    assert tr.run() == 0
    w1, best = _weights(tmp_path / "run/last.pt"), _weights(tmp_path / "run/best.pt")
    d = 2 / 11
    moved = 0
    for k in w0:
        want = (d * w0[k] + (1 - d) * w1[k].double()).to(w1[k].dtype)
        assert torch.allclose(best[k], want, rtol=1e-6, atol=1e-7), k
        moved += int(not torch.equal(w1[k], w0[k].to(w1[k].dtype)))
    assert moved > 0  # the step changed the weights, so average and raw differ
    runs = {}
    for name in ("a", "b"):  # b: stopped after step 3 (_StopAt), resumed
        (tmp_path / name).mkdir()
        c = load_train_config(_config(tmp_path / name, h5, steps=4, eval_every=2, ema=0.9))
        if name == "a":
            assert Trainer(c).run() == 0
        else:
            assert _StopAt(c).run() == EXIT_REQUEUE
            assert Trainer(c, resume=True).run() == 0
        runs[name] = _weights(tmp_path / name / "run/best.pt")
    for k in runs["a"]:
        assert torch.equal(runs["a"][k], runs["b"][k]), k


@pytest.mark.parametrize("both", [False, True])
def test_distillation_from_itself_has_no_gradient_and_init_from_loads(tmp_path, h5, both) -> None:
    """A model distilled from itself (weight 1) is at the minimum of the cross-entropy: the
    gradient (model marginals - teacher marginals) vanishes; with the gold NLL it does
    not. ``init_from`` starts from the checkpoint's weights. A teacher whose checkpoint
    averages both strands at prediction is read that way (``both``: the teacher's
    calibration says so and the student reads both strands)."""
    sa = [f"model.strand_average={str(both).lower()}"]
    cfg = load_train_config(_config(tmp_path, h5, steps=1, eval_every=1))
    assert Trainer(cfg).run() == 0
    ck = tmp_path / "run" / "best.pt"
    raw = torch.load(ck, weights_only=True)  # trained-looking, strand-asymmetric weights
    torch.manual_seed(5)
    raw["model"] = {k: v + 0.3 * torch.randn_like(v) if k.startswith(("encoder.", "head."))
                    else v for k, v in raw["model"].items()}  # fmt: skip
    raw["calibration"] = {"temperature": 1.0, "strand_average": both}
    torch.save(raw, ck)
    over = [f"init_from={ck}", f"distill.teacher={ck}", "distill.weight=1.0",
            f"out_dir={tmp_path / 'student'}", *sa]  # fmt: skip
    tr = Trainer(load_train_config(_config(tmp_path, h5), over))
    for k, v in _weights(ck).items():
        assert torch.equal(tr.model.state_dict()[k], v), k
    from genoseg.data.labels import IGNORE

    w = next(w for w in (tr.train_data.window(*item) for item in tr.train_data.all_items())
             if (w.labels[slice(*w.core)] != IGNORE).all()
             and len(set(w.labels[slice(*w.core)].tolist())) > 3)  # fmt: skip
    grads = {}
    for weight in (1.0, 0.0):
        tr.model.zero_grad()
        tr.loss_module.distill_weight = weight
        loss, stats = tr.loss_module([w])
        loss.backward()
        grads[weight] = torch.cat([p.grad.flatten() for p in tr.model.encoder.parameters()])
    assert grads[0.0].abs().max() > 1e-3
    assert grads[1.0].abs().max() < 1e-5 * grads[0.0].abs().max()  # float32 rounding
    assert stats["nll_per_kb"] > 0


@pytest.mark.parametrize(
    "over, message",
    [
        (["distill.weight=0.5"], "distill.weight > 0 needs distill.teacher"),
        (["distill.weight=2"], "distill.weight must be in [0, 1]"),
    ],
)
def test_bad_distill_config_is_one_line(tmp_path, h5, over, message) -> None:
    p = _config(tmp_path, h5)
    sets = [x for o in over for x in ("--set", o)]
    r = subprocess.run([*GENOSEG, "train", "--config", str(p), *sets], capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_init_from_a_model_of_another_shape_is_one_line(tmp_path, h5) -> None:
    cfg = load_train_config(_config(tmp_path, h5, steps=1, eval_every=1))
    assert Trainer(cfg).run() == 0
    p = _config(tmp_path, h5)
    r = subprocess.run(
        [*GENOSEG, "train", "--config", str(p), "--set", "model.encoder.width=12", "--set",
         f"init_from={tmp_path / 'run' / 'best.pt'}", "-o", str(tmp_path / "other")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "init_from" in lines[0] and "not a model of this" in lines[0]
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("option", ["strand_average", "rc_equivariant"])
def test_both_strands_training_scores_both_strands_alike(tmp_path, h5, option) -> None:
    """`model.strand_average: true` fits the mean of both strands' outputs, and
    `model.rc_equivariant: true` a network tied to score both alike: a window and its
    reverse complement then have the same loss (they do not without it), and the
    checkpoints hold a model that reads both strands by itself."""
    from dataclasses import replace

    from genoseg.data.labels import IGNORE
    from genoseg.model.checkpoint import load_model
    from genoseg.model.gene_model import GeneModel
    from genoseg.model.strands import reads_both_strands
    from genoseg.train.train import Sources, WindowLoss

    cfg = load_train_config(_config(tmp_path, h5), ["steps=3", "eval_every=3",
                                                    f"model.{option}=true"])  # fmt: skip
    tr = Trainer(cfg)
    assert tr.run() == 0
    for name in ("best.pt", "last.pt"):
        assert reads_both_strands(load_model(tmp_path / "run" / name))
    # fresh models: their structure tables are strand-symmetric (learned ones need not be)
    both = GeneModel(tr.model.grammar, cfg.model)
    with torch.no_grad():
        for p in both.encoder.parameters():  # asymmetric weights
            p.add_(0.5 * torch.randn_like(p))
    one = GeneModel(tr.model.grammar, replace(cfg.model, **{option: False}))
    one.load_state_dict(both.state_dict())
    src = Sources(cfg.data.train, ("+", "-"), both.grammar)
    n = src.sets[0].n_windows
    genic = [int(((w.labels > 0) & (w.labels != IGNORE)).sum()) for w in map(
        lambda i: src.window(0, i), range(n))]  # fmt: skip
    i = int(np.argmax(genic))
    fwd, rc = src.window(0, i), src.window(0, i + n)
    loss = {}
    assert genic[i] > 500
    for avg, model in ((False, one), (True, both)):
        mod = WindowLoss(model, 0.0, 0.0)
        with torch.no_grad():
            loss[avg] = [float(mod([w])[0]) for w in (fwd, rc)]
    assert loss[True][0] == pytest.approx(loss[True][1], rel=1e-5)
    assert loss[False][0] != pytest.approx(loss[False][1], rel=1e-3)


@pytest.mark.parametrize("boundary,position", [(0.7, 0.0), (0.0, 0.4), (1.3, 0.25)])
def test_margin_is_the_cost_augmented_log_partition(boundary, position):
    """Softmax-margin: nll on add_margin's inputs equals log sum_y exp(score(y) + cost(y,
    gold)) - score(gold) by enumeration, the cost counted from its definition (boundaries
    in one path but not the other, bases of the wrong content class)."""
    from genoseg import crf
    from genoseg.data.labels import IGNORE
    from genoseg.train.config import MarginConfig
    from genoseg.train.train import add_margin
    from tests.brute import brute_log_z, enumerate_scores

    rng = np.random.default_rng(7)
    T, C, K = 6, 3, 6
    f = torch.float64
    kw = dict(
        emissions=torch.tensor(rng.normal(size=(1, T, C)), dtype=f),
        transitions=torch.tensor(rng.normal(size=(C, C)), dtype=f),
        durations=torch.tensor(rng.normal(size=(C, K)), dtype=f),
        init=torch.tensor(rng.normal(size=C), dtype=f),
        final=torch.tensor(rng.normal(size=C), dtype=f),
        seg_start=torch.tensor(rng.normal(size=(1, T, C)), dtype=f),
        seg_end=torch.tensor(rng.normal(size=(1, T, C)), dtype=f),
    )
    aux_class = np.array([0, 1, 1])  # labels 1 and 2: one content class
    gold = [(0, 2, 1), (2, 3, 0), (3, 6, 2)]
    labels = torch.tensor([1, 1, 0, 2, 2, 2])
    margin = MarginConfig(boundary=boundary, position=position)
    aug = add_margin(kw, labels, aux_class, margin)

    def boundaries(segs, lab):
        def known(b, across):  # the base and the one across the boundary are labelled
            return lab[b] != IGNORE and (not 0 <= across < T or lab[across] != IGNORE)

        return {(k, b, c) for s, e, c in segs
                for k, b, x in (("start", s, s - 1), ("end", e - 1, e)) if known(b, x)}  # fmt: skip

    def cost(segs, lab):  # false and missed boundaries, wrong bases
        mine, ref = boundaries(segs, lab), boundaries(gold, lab)
        total = boundary * len(mine ^ ref)
        for s, e, c in segs:
            total += position * sum(
                1 for u in range(s, e) if lab[u] != IGNORE and aux_class[c] != aux_class[lab[u]]
            )
        return total

    one = {k: (v[0] if v.dim() == 3 else v) for k, v in kw.items() if k != "emissions"}
    scores = enumerate_scores(kw["emissions"][0], T, **one)
    gold_score = dict((tuple(s), v) for s, v in scores)[tuple(gold)]
    lab = labels.tolist()
    want = brute_log_z([(s, v + cost(s, lab)) for s, v in scores]) - gold_score
    h = aug.pop("emissions")
    got = crf.nll(h, None, **aug, gold_segments=[gold])
    assert float(got[0]) == pytest.approx(want, rel=1e-9)
    plain = {k: v for k, v in kw.items() if k != "emissions"}
    assert float(got[0]) > float(crf.nll(kw["emissions"], None, **plain, gold_segments=[gold])[0])
    # unlabelled positions cost nothing
    lab[1] = lab[4] = IGNORE
    aug = add_margin(kw, torch.tensor(lab), aux_class, margin)
    const = boundary * len(boundaries(gold, lab))  # the gold path's boundaries' -margin
    want = brute_log_z([(s, v + cost(s, lab)) for s, v in scores]) - const
    h = aug.pop("emissions")
    assert float(crf.log_partition(h, None, **aug)[0]) == pytest.approx(want, rel=1e-9)


def test_mutate_keeps_genes_and_their_motifs(tmp_path, h5) -> None:
    """Substitutions land only in intergenic and intron bases 3+ bases from any other
    label, at about the asked rate, and the gold path keeps a finite score (no start,
    stop, splice or frame rule is broken); a run with ``mutate`` trains."""
    from genoseg import crf
    from genoseg.data.labels import IGNORE, segments_from_labels
    from genoseg.model.gene_model import compile_rows
    from genoseg.train.train import Sources, mutate

    cfg = load_train_config(_config(tmp_path, h5), ["steps=2", "eval_every=2", "mutate=0.3"])
    tr = Trainer(cfg)
    src = Sources(cfg.data.train, ("+", "-"), tr.model.grammar)
    g = tr.model.grammar
    exon_rows = 0
    for i in range(len(src.sets[0])):
        w = src.window(0, i)
        m = mutate(w, 0.3, np.random.default_rng(i), tr.noncoding)
        changed = m.sequence != w.sequence
        lab = w.labels
        eligible = np.isin(lab, tr.noncoding) & (w.sequence < 4)
        assert not (changed & ~eligible).any()
        for k in range(1, 4):  # never within 3 bases of another label
            assert not (changed[k:] & (lab[k:] != lab[:-k])).any()
            assert not (changed[:-k] & (lab[:-k] != lab[k:])).any()
        assert 0.2 < changed.sum() / max(eligible.sum(), 1) < 0.35
        assert (m.sequence[w.sequence == 4] == 4).all()
        cs, ce = w.core
        if (lab[cs:ce] == IGNORE).any() or not any(g.labels[c].is_exon for c in lab[cs:ce]):
            continue
        exon_rows += 1
        L = len(w.sequence)
        st = compile_rows(g, m.sequence.astype(np.uint8), cs, L - ce)
        structural = {k: torch.from_numpy(v).unsqueeze(0) for k, v in st.items()}
        with torch.no_grad():
            out = tr.model.outputs(torch.from_numpy(m.sequence).unsqueeze(0),
                                   torch.from_numpy(m.softmask).unsqueeze(0), None)  # fmt: skip
            kw, _ = tr.model.crf_inputs(out[:, cs:ce], structural)
            h = kw.pop("emissions")
            nll = crf.nll(h, None, **kw, gold_segments=[segments_from_labels(lab[cs:ce])])
        assert torch.isfinite(nll).all()
    assert exon_rows > 0
    assert tr.run() == 0


@pytest.mark.parametrize("use", ["outputs", "inputs"])
def test_markov_chains_are_fitted_and_resumed(tmp_path, h5, use) -> None:
    """model.markov_order: a fresh run counts the chains on its training windows (finite,
    non-zero log-odds), its checkpoints hold them, and a resumed run has them."""
    from genoseg.model.checkpoint import load_model

    over = ["steps=2", "eval_every=2", "model.markov_order=2", f"model.markov_use={use}"]
    cfg = load_train_config(_config(tmp_path, h5), over)
    tr = Trainer(cfg)
    llr = tr.model.markov.llr.clone()
    assert llr.abs().sum() > 0 and torch.isfinite(llr).all()
    assert tr.run() == 0
    saved = load_model(tmp_path / "run" / "last.pt")
    torch.testing.assert_close(saved.markov.llr, llr)
    more = load_train_config(_config(tmp_path, h5), [*over, "steps=3"])
    again = Trainer(more, resume=True)
    torch.testing.assert_close(again.model.markov.llr, llr)
    assert again.run() == 0
