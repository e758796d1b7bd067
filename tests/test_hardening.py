"""Messages and options from the hardening audit (issue #15): logs after a resume, time-based
checkpoints, the Hub without network, markup in errors, flag metavars, redirected logs, zoo list."""

from __future__ import annotations

import io
import json
import socket

import pytest
import torch
from test_faults import _distill_args, _images, _one_line  # tests/ is on sys.path (pytest's rootdir import)

from dukd_cli.distill import config as C
from dukd_cli.distill.display import Display
from dukd_cli.distill.trainer import Trainer


@pytest.fixture
def env(tiny_plugin, tmp_path):
    return {"data": _images(tmp_path / "data"), "cache": tmp_path / "cache", "root": tmp_path}


def _cfg(env, iters=6, **train):
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = "tiny", 2, {"n_feats": 4}
    cfg.method.name = "scratch"
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = [str(env["data"])], str(env["cache"]), 0
    cfg.train.iters, cfg.train.batch_size, cfg.train.patch_size, cfg.train.seed = iters, 2, 8, 5
    cfg.train.log_every, cfg.train.save_every = 2, 100
    for k, v in train.items():
        setattr(cfg.train, k, v)
    cfg.val.every = 0
    return cfg


def _records(run):
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("it_s", None)  # speed differs between runs
        out.append(rec)
    return out


def _stop_at(k):
    def cb(trainer, it):
        if it == k:
            raise KeyboardInterrupt

    return cb


def test_metrics_after_a_resume_equal_an_uninterrupted_run(env):
    root = env["root"]
    Trainer(_cfg(env, iters=7, log_every=3), root / "one", display=Display(enabled=False)).fit()
    # Interrupted at 4, between log steps 3 and 6: iteration 4's loss must count in the mean at 6.
    cut = Trainer(
        _cfg(env, iters=7, log_every=3), root / "cut", callbacks=[_stop_at(4)], display=Display(enabled=False)
    )
    assert cut.fit().interrupted
    Trainer(C.DistillConfig(), root / "cut", resume=True, display=Display(enabled=False)).fit()
    one, two = _records(root / "one"), _records(root / "cut")
    assert [r["iteration"] for r in one] == [3, 6, 7]
    assert one == two


def test_save_every_min_checkpoints_on_the_clock(env, run_dukd):
    clock = {"now": 0.0}
    seen = {}

    def tick(trainer, it):
        seen[it] = (
            torch.load(trainer.paths.state, weights_only=True)["iteration"]
            if trainer.paths.state.exists()
            else None
        )
        if it == 3:
            clock["now"] += 61.0  # a minute passes during iteration 3

    tr = Trainer(_cfg(env, iters=6, save_every_min=1.0), env["root"] / "timed", callbacks=[tick],
                 display=Display(enabled=False))  # fmt: skip
    tr.clock = lambda: clock["now"]
    tr.fit()
    assert seen[3] is None and seen[4] == 3 and seen[6] == 3  # saved at 3 (on the clock), then at the end
    assert torch.load(tr.paths.state, weights_only=True)["iteration"] == 6
    code, out, err = run_dukd("distill", "--help")
    assert "--save-every-min" in out


def test_resume_conflict_message_keeps_brackets(env, run_dukd):
    run = env["root"] / "r"
    code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], run, iters=1))
    assert code == 0, err
    code, _, err = run_dukd("distill", "--resume", run, "--seed", "9")
    assert code == 1 and "([train] seed = 3)" in _one_line(err)


def test_flags_show_no_bool_metavar(run_dukd):
    for cmd in (("upscale",), ("evaluate",), ("distill",), ("export",), ("zoo", "list")):
        code, out, _ = run_dukd(*cmd, "--help")
        assert code == 0 and "--help" in out
        assert "<bool>" not in out, cmd
    code, out, _ = run_dukd("upscale", "--help")
    assert "--overwrite" in out and "<int>" in out  # options that take a value keep their metavar


def test_redirected_training_log_is_not_wrapped():
    from rich.console import Console

    buf = io.StringIO()
    d = Display(Console(file=buf, width=80, force_terminal=False))
    d.start(10, 0, "distill")
    long = (
        "it 5/10  loss 0.1234 ("
        + " ".join(f"term{i} 0.{i:04d}" for i in range(12))
        + ")  lr 1.00e-04  3.21 it/s"
    )
    assert len(long) > 120
    d.log(long)
    d.message("[yellow]note:[/] " + "x" * 150)
    lines = buf.getvalue().splitlines()
    assert lines[1] == long and lines[2] == "note: " + "x" * 150


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_hub_without_network_fails_fast_in_one_line(monkeypatch, tmp_path):
    import huggingface_hub

    from dukd_cli.errors import WeightsError
    from dukd_cli.models.weights import resolve
    from dukd_cli.runtime import hubnet

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for v in hubnet.PROXY_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(*a, **k):
        calls.append(k.get("local_files_only"))
        return real(*a, **k)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    with pytest.raises(WeightsError) as exc:
        resolve("hf://someone/repo/w.safetensors")
    msg = str(exc.value)
    assert "\n" not in msg and "cannot be reached" in msg and "Connection refused" in msg
    assert calls == [True]  # the Hub client was asked for the cache only: no retries
    # A file already in the cache is used without the network.
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--repo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "w.safetensors").write_bytes(b"cached")
    assert resolve("hf://someone/repo/w.safetensors").read_bytes() == b"cached"


def test_zoo_list_counts_once_then_reads_the_cache(monkeypatch, tmp_path, run_dukd):
    import dukd_cli.models.factory as models
    from dukd_cli.commands.zoo import zoo_rows

    monkeypatch.setenv("DUKD_CACHE", str(tmp_path / "cache"))
    first = zoo_rows()
    assert (tmp_path / "cache" / "zoo-params.json").is_file()

    def no_build(*a, **k):
        raise AssertionError("a network was built although the counts are cached")

    monkeypatch.setattr(models, "instantiate", no_build)
    assert zoo_rows() == first
    assert any(r["name"] == "edsr-l" and r["params"] == 43089923 for r in first)
    # A damaged cache file only costs the time.
    monkeypatch.undo()
    monkeypatch.setenv("DUKD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "zoo-params.json").write_text("{not json")
    assert zoo_rows() == first


def test_zoo_cache_follows_a_changed_plugin(tiny_plugin, monkeypatch, tmp_path):
    from dukd_cli import registry
    from dukd_cli.commands.zoo import zoo_rows

    monkeypatch.setenv("DUKD_CACHE", str(tmp_path / "cache"))
    row = next(r for r in zoo_rows("tiny4") if r["name"] == "tiny4")
    code = (tiny_plugin / "dukd_testplugin" / "__init__.py").read_text()
    (tiny_plugin / "dukd_testplugin" / "__init__.py").write_text(
        code.replace("nn.Conv2d(3, n_feats, 3, padding=1)", "nn.Conv2d(3, n_feats, 5, padding=2)")
    )
    import sys

    sys.modules.pop("dukd_testplugin", None)
    registry.refresh()
    row2 = next(r for r in zoo_rows("tiny4") if r["name"] == "tiny4")
    assert row2["params"] != row["params"]


def test_missing_tensorboard_is_said_before_anything_is_written(tmp_path, monkeypatch):
    import sys

    from dukd_cli.distill import config as C
    from dukd_cli.distill.trainer import Trainer
    from dukd_cli.errors import DukdError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were absent
    cfg = C.DistillConfig()
    cfg.train.tensorboard = True
    run = tmp_path / "run"
    with pytest.raises(DukdError, match=r"pip install 'dukd\[tensorboard\]'"):
        Trainer(cfg, run)
    assert not run.exists()
