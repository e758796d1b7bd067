"""The fast step is the plain step: batches one ahead, --compile, and the thread budget change no number."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from dukd_cli.distill import config as C
from dukd_cli.distill import fast
from dukd_cli.distill.trainer import Trainer
from dukd_cli.errors import DukdError
from dukd_cli.runtime import threads


@pytest.fixture
def setup(tiny_plugin, tmp_path):
    from dukd_cli.models.factory import create_model

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"{i}.png")
    torch.manual_seed(123)
    teacher = create_model("tiny", 2, n_feats=8)
    w = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(w))
    return {"data": data, "teacher_weights": w, "cache": tmp_path / "cache", "root": tmp_path}


def _cfg(s, method="dukd", iters=5, update="two-step", **train):
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = "tiny", 2, {"n_feats": 4}
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = (
        "tiny",
        str(s["teacher_weights"]),
        {"n_feats": 8},
    )
    cfg.method.name, cfg.method.update = method, update
    cfg.method.options = {"aug_prob": 0.5} if method == "dukd" else {}
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = [str(s["data"])], str(s["cache"]), 0
    cfg.train.iters, cfg.train.batch_size, cfg.train.patch_size = iters, 2, 8
    cfg.train.log_every, cfg.train.save_every, cfg.train.seed = 1, 100, 7
    for k, v in train.items():
        setattr(cfg.train, k, v)
    cfg.val.every = 0
    return cfg


def _losses(run):
    return [json.loads(x)["losses"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run, name="student.safetensors"):
    return load_file(str(run / name))


def _fit(cfg, run, prefetch=None, callbacks=()):
    tr = Trainer(cfg, run, callbacks=list(callbacks))
    tr.setup()
    tr._prefetch = prefetch
    return tr, tr.fit()


def test_batches_one_ahead_change_nothing(setup):
    root = setup["root"]
    _fit(_cfg(setup), root / "plain")
    _fit(_cfg(setup), root / "ahead", prefetch=True)  # the CUDA path's look-ahead, forced on the CPU
    assert _losses(root / "plain") == _losses(root / "ahead")
    a, b = _weights(root / "plain"), _weights(root / "ahead")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    st = torch.load(root / "ahead" / "state.pt", weights_only=True)
    assert st["iteration"] == 5


def test_prefetcher_keeps_the_order_and_the_iteration_numbers():
    src = iter(
        [
            (torch.full((1,), i, dtype=torch.uint8), torch.full((1,), 10 + i, dtype=torch.uint8))
            for i in range(4)
        ]
    )
    seen = []

    def to_device(lr, hr):
        seen.append(int(lr))
        return lr.float(), hr.float()

    it = fast.DevicePrefetcher(src, to_device, torch.device("cpu"), ahead=True)
    lr, hr = next(it)
    assert (float(lr), float(hr)) == (0.0, 10.0) and seen == [0, 1]  # batch 1 already loaded
    assert [float(next(it)[0]) for _ in range(2)] == [1.0, 2.0]
    plain = fast.DevicePrefetcher(
        iter([(torch.zeros(1), torch.ones(1))]), lambda a, b: (a, b), torch.device("cpu")
    )
    assert plain.ahead is False and plain.stream is None and float(next(plain)[1]) == 1.0


@pytest.mark.parametrize(("method", "update"), [("dukd", "two-step"), ("dukd", "single"), ("kd", "two-step")])
def test_compile_trains_the_same_network(setup, monkeypatch, method, update):
    """--compile (through AOTAutograd with eager kernels here: inductor's C++ build is too slow for
    a unit test on 2 shared cores) gives the plain run's losses and weights."""
    monkeypatch.setattr(fast, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    root = setup["root"]
    _fit(_cfg(setup, method=method, update=update), root / "plain")
    tr, res = _fit(_cfg(setup, method=method, update=update, compile=True), root / "compiled")
    assert res.iteration == 5
    assert fast.is_compiled(tr.session.student_module) and fast.is_compiled(tr.session.teacher)
    assert not fast.is_compiled(tr.session.ema.model)  # the EMA (validated, saved) is the plain module
    la, lb = _losses(root / "plain"), _losses(root / "compiled")
    assert [sorted(x) for x in la] == [sorted(x) for x in lb]
    for x, y in zip(la, lb, strict=True):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), k
    a, b = _weights(root / "plain"), _weights(root / "compiled")
    assert a.keys() == b.keys()  # no "_orig_mod." prefixes: the checkpoint is the plain module's
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    st = torch.load(root / "compiled" / "state.pt", weights_only=True)
    assert st["student"].keys() == st["ema"].keys() == a.keys()
    assert C.load(root / "compiled" / "config.toml").train.compile is True


def test_compiled_run_resumes_exactly_and_compile_may_change_on_resume(setup, monkeypatch):
    monkeypatch.setattr(fast, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    root = setup["root"]
    _fit(_cfg(setup, compile=True), root / "one")

    def stop(trainer, it):
        if it == 3:
            raise KeyboardInterrupt

    _, cut = _fit(_cfg(setup, compile=True), root / "cut", callbacks=[stop])
    assert cut.interrupted and cut.iteration == 3
    Trainer(C.DistillConfig(), root / "cut", resume=True).fit()
    a, b = _weights(root / "one"), _weights(root / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # --compile is how a run computes, not what: a compiled run may be resumed without it.
    _, cut2 = _fit(_cfg(setup, compile=True), root / "cut2", callbacks=[stop])
    res = Trainer(C.DistillConfig(), root / "cut2", resume=True, overrides={"train.compile": False}).fit()
    assert res.iteration == 5
    c = _weights(root / "cut2")
    assert all(torch.allclose(a[k], c[k], rtol=1e-5, atol=1e-7) for k in a)


def test_fakd_feature_taps_survive_compile(monkeypatch):
    """FAKD's forward hooks sit on submodules: compiling in place keeps their names and calls them."""
    from dukd_cli.distill.feature_methods import FAKD

    class Tapped(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.a = torch.nn.Conv2d(3, n, 3, padding=1)
            self.b = torch.nn.Conv2d(n, 3, 3, padding=1)

        def feature_taps(self):
            return ["a", "b"]

        def forward(self, x):
            return torch.nn.functional.interpolate(self.b(torch.relu(self.a(x))), scale_factor=2)

    monkeypatch.setattr(fast, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    from dukd_cli.distill.methods import Batch, MethodContext

    torch.manual_seed(0)
    s, t = Tapped(4), Tapped(6).eval().requires_grad_(False)
    batch = Batch(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16))
    ctx = MethodContext(device=torch.device("cpu"), scale=2)
    opts = FAKD.resolve_options({}, family=None, scale=2)
    (plain,) = list(FAKD(s, t, opts, ctx).losses(batch))
    fast.compile_module(s)
    fast.compile_module(t)
    m = FAKD(s, t, opts, ctx)
    (comp,) = list(m.losses(batch))
    m.close()
    assert plain.keys() == comp.keys()
    for k in plain:
        assert float(plain[k].detach()) == pytest.approx(float(comp[k].detach()), rel=1e-5), k
    assert float(comp["feat"].detach()) > 0


def test_augmented_inputs_compile_once(monkeypatch):
    """DUKD's flipped/transposed inputs change strides with every random plan; compile_module makes
    them dense first, so the number of compiled graphs stops growing after the first iteration."""
    from torch._dynamo.utils import counters

    from dukd_cli.distill.methods import DUKD, Batch, MethodContext
    from dukd_cli.models.factory import create_model

    monkeypatch.setattr(fast, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    s = create_model("edsr", 4, n_feats=8, n_resblocks=1)
    t = create_model("edsr", 4, n_feats=8, n_resblocks=1).eval().requires_grad_(False)
    fast.compile_module(s)
    fast.compile_module(t)
    ctx = MethodContext(device=torch.device("cpu"), scale=4, generator=torch.Generator().manual_seed(0))
    m = DUKD(s, t, DUKD.resolve_options({"aug_prob": 0.5}, family="edsr", scale=4), ctx)
    batch = Batch(torch.rand(4, 3, 12, 12), torch.rand(4, 3, 48, 48))
    graphs = []
    for _ in range(6):
        for group in m.losses(batch):
            sum(group.values()).backward()
        graphs.append(counters["stats"]["unique_graphs"])
    # student: LR/zoom-in size and zoom-out size; teacher: the fused LR+zoom-in batch and zoom-out
    assert graphs[0] == graphs[-1] == 4, graphs


# ---------------------------------------------------------------------------------------------
# The thread budget
# ---------------------------------------------------------------------------------------------


def test_budget_never_exceeds_the_cores(monkeypatch):
    b = threads.plan(None, cores=4)
    assert (b.threads, b.intra, b.interop, b.workers, b.note) == (4, 4, 1, 0, None)
    b = threads.plan(16, workers=1, cores=4)
    assert b.threads == 4 and b.intra == 3 and "lowered to 4" in b.note
    assert threads.plan(2, workers=5, cores=8).intra == 1  # at least one torch thread
    with pytest.raises(DukdError, match="at least 1"):
        threads.plan(0, cores=4)
    assert threads.default_workers("cpu") == 0
    assert threads.default_workers("cuda", 16) == 8 and threads.default_workers("cuda", 2) == 1
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(threads, "_cgroup_quota", lambda root=None: 1.5)
    assert threads.available_cores() == 2  # a 1.5-core quota: 2 threads, never the 3 of the affinity
    monkeypatch.setattr(threads, "_cgroup_quota", lambda root=None: None)
    assert threads.available_cores() == 3


def test_cgroup_quota_files(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads._cgroup_quota(v1) == 2.0
    assert threads._cgroup_quota(tmp_path / "none") is None


def test_apply_sets_torch_and_children_and_keeps_a_users_wait_policy():
    old = torch.get_num_threads()
    env: dict[str, str] = {}
    try:
        threads.apply(threads.Budget(cores=2, threads=1, intra=1, interop=1, workers=0), environ=env)
        assert torch.get_num_threads() == 1
        assert env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    finally:
        torch.set_num_threads(old)
    env = {}
    threads.configure_environment(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.configure_environment(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"


def test_cli_threads_option(setup, run_dukd):
    old = torch.get_num_threads()
    base = [
        "distill",
        "--student",
        "tiny",
        "--student-arg",
        "n_feats=4",
        "--scale",
        "2",
        "--method",
        "scratch",
        "--data",
        setup["data"],
        "--cache-dir",
        setup["cache"],
        "--batch-size",
        "2",
        "--patch-size",
        "8",
        "--val-every",
        "0",
        "--iters",
        "1",
    ]
    try:
        code, out, err = run_dukd(*base, "--threads", "999", "--out", setup["root"] / "t1")
        assert code == 0, err
        assert "--threads 999 lowered to" in out
        code, _, err = run_dukd(*base, "--threads", "0", "--out", setup["root"] / "t0")
        assert code == 1 and "--threads must be at least 1" in err and "Traceback" not in err
        assert not (setup["root"] / "t0").exists()
    finally:
        torch.set_num_threads(old)


def test_filling_the_cache_returns_freed_heap_memory_once(setup, monkeypatch):
    from dukd_cli.distill import data as D

    real, calls = D._trim_heap, []
    monkeypatch.setattr(D, "_trim_heap", lambda: calls.append(1))
    first = D.prepare([str(setup["data"])], 2, 8, setup["cache"])
    assert calls == [1]  # images were decoded: the freed heap goes back to the OS
    again = D.prepare([str(setup["data"])], 2, 8, setup["cache"])
    assert calls == [1] and again.items == first.items  # a warm cache decodes nothing
    real()  # the real call is harmless wherever it runs
