"""The trainer and `dukd distill`: exact resume, Ctrl-C, NaN stop, config, the CLI's errors."""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from dukd_cli import registry
from dukd_cli.distill import config as C
from dukd_cli.distill.trainer import NonFiniteLossError, Trainer
from dukd_cli.errors import DukdError

NAN_PLUGIN = '''
import torch
from dukd_cli.distill.methods import Scratch


class NaNAfter3(Scratch):
    """A third-party method: plain L1, but NaN from the 4th iteration on."""

    name = "nanmethod"

    def losses(self, batch):
        for group in super().losses(batch):
            if batch.iteration >= 3:
                group = {k: v * float("nan") for k, v in group.items()}
            yield group
'''

HF_PRESET_PLUGIN = """
from dukd_cli.registry import Preset

HFTEACH = Preset(arch="tiny", kwargs={"n_feats": 8}, scales=(2, 4),
                 weights={4: "hf://nobody/none/w.safetensors"}, description="weights on the Hub only")
"""


def _dist(root, name, module, code, entry_points):
    pkg = root / module
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(code)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


@pytest.fixture
def extra_plugins(tiny_plugin, tmp_path_factory, monkeypatch):
    """A third-party method (NaN after 3 iterations) and a preset whose weights live only on the Hub."""
    root = tmp_path_factory.mktemp("plugins2")
    _dist(
        root,
        "dukd-nanplugin",
        "dukd_nanplugin",
        NAN_PLUGIN,
        "[dukd.methods]\nnanmethod = dukd_nanplugin:NaNAfter3\n",
    )
    _dist(
        root,
        "dukd-hfplugin",
        "dukd_hfplugin",
        HF_PRESET_PLUGIN,
        "[dukd.presets]\nhfteach = dukd_hfplugin:HFTEACH\n",
    )
    monkeypatch.syspath_prepend(str(root))
    registry.refresh()
    yield root
    for m in ("dukd_nanplugin", "dukd_hfplugin"):
        sys.modules.pop(m, None)
    registry.refresh()


def _images(folder, n=3, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        y, x = np.mgrid[0:size, 0:size]
        img = np.stack([(x * 7 + i * 30) % 256, (y * 5) % 256, ((x + y) * 3) % 256], -1).astype(np.float64)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def setup(tiny_plugin, tmp_path):
    """Training data and a 'trained' tiny teacher (random weights saved to a file) at x2."""
    from dukd_cli.models.factory import create_model

    data = _images(tmp_path / "data")
    torch.manual_seed(123)
    teacher = create_model("tiny", 2, n_feats=8)
    w = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(w))
    return {"data": data, "teacher_weights": w, "cache": tmp_path / "cache", "root": tmp_path}


def _cfg(s, method="dukd", iters=6, workers=0, **train):
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = "tiny", 2, {"n_feats": 4}
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = (
        "tiny",
        str(s["teacher_weights"]),
        {"n_feats": 8},
    )
    cfg.method.name = method
    cfg.method.options = {"aug_prob": 0.5} if method == "dukd" else {}
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = [str(s["data"])], str(s["cache"]), workers
    cfg.train.iters, cfg.train.batch_size, cfg.train.patch_size = iters, 2, 8
    cfg.train.log_every, cfg.train.save_every, cfg.train.seed = 2, 100, 7
    for k, v in train.items():
        setattr(cfg.train, k, v)
    cfg.val.every = 0
    return cfg


class _StopAt:
    def __init__(self, k, how="raise"):
        self.k, self.how = k, how

    def __call__(self, trainer, it):
        if it == self.k:
            if self.how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: handled, finishes the iteration


def _weights(run):
    return load_file(str(run / "student.safetensors"))


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_exact(setup, workers):
    root = setup["root"]
    one = Trainer(_cfg(setup, workers=workers), root / "one").fit()
    assert one.iteration == 6 and not one.interrupted
    # K + (N - K) by Ctrl-C at K = 3, then --resume.
    cut = Trainer(_cfg(setup, workers=workers), root / "cut", callbacks=[_StopAt(3)]).fit()
    assert cut.interrupted and cut.iteration == 3
    st = torch.load(root / "cut" / "state.pt", weights_only=True)
    assert st["iteration"] == 3
    Trainer(C.DistillConfig(), root / "cut", resume=True).fit()
    # K + (N - K) by --iters K, then --resume --iters N.
    Trainer(_cfg(setup, iters=4, workers=workers), root / "grow").fit()
    Trainer(C.DistillConfig(), root / "grow", resume=True, overrides={"train.iters": 6}).fit()
    ref = _weights(root / "one")
    assert _same(ref, _weights(root / "cut")) and _same(ref, _weights(root / "grow"))
    assert (root / "one" / "student.safetensors").read_bytes() == (
        root / "cut" / "student.safetensors"
    ).read_bytes()
    # metrics.jsonl: one record per log step, none duplicated by the resume.
    its = [json.loads(x)["iteration"] for x in (root / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert its == [2, 4, 6]
    saved = C.load(root / "grow" / "config.toml")
    assert saved.train.iters == 6 and saved.method.options["aug_prob"] == 0.5


def test_sigint_saves_and_exits_cleanly(setup):
    run = setup["root"] / "run"
    res = Trainer(_cfg(setup, method="kd", iters=50), run, callbacks=[_StopAt(4, how="signal")]).fit()
    assert res.interrupted and res.iteration == 4
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 4
    assert (run / "student.safetensors").is_file()
    assert signal.getsignal(signal.SIGINT) is not None  # the previous handler is back
    res2 = Trainer(C.DistillConfig(), run, resume=True, overrides={"train.iters": 6}).fit()
    assert res2.iteration == 6 and not res2.interrupted


def test_nan_loss_stops_and_keeps_last_good_checkpoint(setup, extra_plugins):
    run = setup["root"] / "nan"
    cfg = _cfg(setup, method="nanmethod", iters=10, save_every=2, log_every=5)
    with pytest.raises(
        NonFiniteLossError, match=r"NaN/inf at iteration 4.*last good checkpoint \(iteration 2\)"
    ):
        Trainer(cfg, run).fit()
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 2
    w = _weights(run)
    assert all(torch.isfinite(v).all() for v in w.values())


def test_third_party_method_and_nan_via_cli(setup, extra_plugins, run_dukd):
    code, out, err = run_dukd(
        "distill",
        "--student",
        "tiny",
        "--student-arg",
        "n_feats=4",
        "--scale",
        "2",
        "--method",
        "nanmethod",
        "--data",
        setup["data"],
        "--cache-dir",
        setup["cache"],
        "--iters",
        "8",
        "--batch-size",
        "2",
        "--patch-size",
        "8",
        "--val-every",
        "0",
        "--out",
        setup["root"] / "cli-nan",
        "--save-every",
        "2",
    )
    assert code == 1 and "Traceback" not in err
    assert "NaN/inf" in err and "last good checkpoint (iteration 2)" in err


def test_cli_run_dry_run_and_resume_checks(setup, run_dukd):
    base = [
        "distill",
        "--teacher",
        "tiny",
        "--teacher-arg",
        "n_feats=8",
        "--teacher-weights",
        setup["teacher_weights"],
        "--student",
        "tiny",
        "--student-arg",
        "n_feats=4",
        "--scale",
        "2",
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
    ]
    code, out, err = run_dukd(*base, "--dry-run", "--w-pix", "3")
    assert code == 0, err
    assert "[method]" in out and "w_pix = 3.0" in out and "aug_prob = 0.3" in out and "parameters" in out
    assert "[teacher]" in out and "tiny" in out
    conf = setup["root"] / "c.toml"
    conf.write_text('[train]\nbatch_size = 3\nseed = 9\n[method]\nname = "kd"\nw_kd = 2\n')
    code, out, err = run_dukd(*base, "--dry-run", "--config", conf)  # the CLI's --batch-size 2 wins
    assert code == 0, err
    assert "batch_size = 2" in out and "seed = 9" in out and 'name = "kd"' in out and "w_kd = 2.0" in out
    run = setup["root"] / "cli"
    code, out, err = run_dukd(*base, "--iters", "3", "--seed", "1", "--out", run)
    assert code == 0, err
    for f in ("config.toml", "state.pt", "student.safetensors", "metrics.jsonl"):
        assert (run / f).is_file(), f
    cfg = C.load(run / "config.toml")
    assert cfg.student.name == "tiny" and cfg.student.scale == 2 and cfg.teacher.args == {"n_feats": 8}
    assert cfg.method.name == "dukd" and cfg.method.update == "two-step" and cfg.train.seed == 1
    # Reusing the directory without --resume, disagreeing options, lowering --iters: one-line errors.
    code, _, err = run_dukd(*base, "--iters", "3", "--out", run)
    assert code == 1 and "--resume" in err
    code, _, err = run_dukd("distill", "--resume", run, "--seed", "2")
    assert code == 1 and "--seed 2 disagrees" in err
    code, _, err = run_dukd("distill", "--resume", run, "--iters", "2")
    assert code == 1 and "below the 3 iterations" in err
    code, out, err = run_dukd("distill", "--resume", run, "--iters", "5", "--seed", "1", "--workers", "0")
    assert code == 0, err
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 5


def test_offline_hub_teacher_fails_with_one_line(setup, extra_plugins, run_dukd, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    code, out, err = run_dukd(
        "distill",
        "--teacher",
        "hfteach",
        "--student",
        "tiny",
        "--scale",
        "4",
        "--data",
        setup["data"],
        "--cache-dir",
        setup["cache"],
        "--iters",
        "1",
        "--out",
        tmp_path / "r",
    )
    assert code == 1
    assert "Traceback" not in err and "--teacher-weights" in err
    assert "hf://nobody/none/w.safetensors" in err
    assert len([ln for ln in err.strip().splitlines() if ln.strip()]) == 1


def test_teacher_without_weights_and_scale_mismatch(setup, run_dukd, tmp_path):
    # A dry run needs no weights: it says that none are declared; a real run stops with one line.
    code, out, err = run_dukd(
        "distill", "--teacher", "tiny", "--student", "tiny", "--scale", "2", "--dry-run"
    )
    assert code == 0 and "teacher file: none declared: pass --teacher-weights FILE" in out
    code, _, err = run_dukd(
        "distill",
        "--teacher",
        "tiny",
        "--student",
        "tiny",
        "--scale",
        "2",
        "--iters",
        "1",
        "--out",
        tmp_path / "no-teacher",
    )
    assert code == 1 and "--teacher-weights" in err and not (tmp_path / "no-teacher").exists()
    # An exported x2 teacher with an x4 student.
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.json").write_text(
        json.dumps({"architecture": "tiny", "scale": 2, "arguments": {"n_feats": 8}})
    )
    save_file(load_file(str(setup["teacher_weights"])), str(exp / "model.safetensors"))
    code, _, err = run_dukd("distill", "--teacher", exp, "--student", "tiny", "--scale", "4", "--dry-run")
    assert code == 1 and "teacher is x2 but the student is x4" in err


def test_config_toml_round_trip_and_overrides(tmp_path):
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = (
        "edsr-s",
        4,
        {"n_feats": 32, "rgb_mean": [0.4, 0.5, 0.6]},
    )
    cfg.teacher.name, cfg.teacher.weights = "edsr-l", 'C:\\w "x".pth'
    cfg.method.options = {"w_pix": 5.0, "aug_ops": ["hflip", "invert"], "zoom_out": False, "zoom_in_tiles": 1}
    cfg.data.paths = ["builtin", "/data/DIV2K"]
    cfg.train.lr = 2e-4
    text = C.to_toml(cfg, "header\nline two")
    (tmp_path / "c.toml").write_text(text)
    back = C.load(tmp_path / "c.toml")
    assert back.to_dict() == cfg.to_dict()
    # A config file under CLI overrides; unknown keys are one-line errors.
    (tmp_path / "d.toml").write_text('[train]\niters = 10\nlr = 0.001\n[method]\nname = "kd"\nw_kd = 2\n')
    d = C.load(tmp_path / "d.toml")
    d.set("train.lr", 0.5)
    assert (
        d.train.iters == 10
        and d.train.lr == 0.5
        and d.method.name == "kd"
        and d.method.options == {"w_kd": 2}
    )
    (tmp_path / "e.toml").write_text("[train]\nitres = 10\n")
    with pytest.raises(DukdError, match="unknown configuration key"):
        C.load(tmp_path / "e.toml")
    with pytest.raises(DukdError, match="disagrees"):
        C.check_resume(cfg, {"train.lr": 1.0}, done=0)
    ok = C.check_resume(cfg, {"train.lr": 2e-4, "train.iters": 300000, "data.workers": 3}, done=10)
    assert ok.train.iters == 300000 and ok.data.workers == 3


def test_validation_benchmark_missing(setup, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DUKD_DATA", raising=False)
    cfg = _cfg(setup, method="scratch", iters=2)
    cfg.val.every = 1
    res = Trainer(cfg, tmp_path / "noval").fit()  # default lookup finds nothing: a note, no validation
    assert res.iteration == 2 and res.last_val is None
    assert any("validation off" in n for n in res.notes)
    cfg.val.data_dir = str(tmp_path / "no-such-dir")  # named explicitly: an error before training
    with pytest.raises(DukdError):
        Trainer(cfg, tmp_path / "noval2").fit()
    assert not (tmp_path / "noval2" / "state.pt").exists()


def test_student_initialised_non_strictly_from_another_scale(setup, tmp_path):
    from dukd_cli.models.factory import create_model

    x2 = create_model("tiny", 2, n_feats=4)
    w = tmp_path / "x2.safetensors"
    save_file({k: v.contiguous() for k, v in x2.state_dict().items()}, str(w))
    cfg = _cfg(setup, method="scratch", iters=1)
    cfg.student.scale, cfg.student.weights = 4, str(w)
    with pytest.raises(DukdError, match="non-strict"):
        Trainer(cfg, tmp_path / "strict").fit()
    cfg.student.strict = False
    tr = Trainer(cfg, tmp_path / "loose")
    tr.setup()
    # the shared layer loaded
    assert torch.equal(tr.session.student_module.conv_first.weight, x2.conv_first.weight)
    assert any("non-strictly" in n for n in tr.notes)
    assert tr.fit().iteration == 1


def test_local_paths_are_recorded_absolute(tmp_path, monkeypatch):
    """config.toml keeps absolute paths, so `--resume RUN_DIR` works from any directory."""
    from dukd_cli.commands.distill import _overrides

    (tmp_path / "imgs").mkdir()
    (tmp_path / "w.pth").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    out = _overrides(data=["imgs", "builtin"], teacher_weights="w.pth", student_weights="hf://o/r/f.pth")
    assert out["data.paths"] == [str(tmp_path / "imgs"), "builtin"]
    assert out["teacher.weights"] == str(tmp_path / "w.pth")
    assert out["student.weights"] == "hf://o/r/f.pth"


def test_channels_last_trains_the_same_network_and_resumes_exactly(setup):
    root = setup["root"]
    Trainer(_cfg(setup, method="kd"), root / "nchw").fit()
    Trainer(_cfg(setup, method="kd", channels_last=True), root / "nhwc").fit()
    a, b = _weights(root / "nchw"), _weights(root / "nhwc")
    assert a.keys() == b.keys()
    # Same arithmetic in another memory order: equal up to float rounding, not bit for bit.
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert C.load(root / "nhwc" / "config.toml").train.channels_last is True
    cut = Trainer(_cfg(setup, method="kd", channels_last=True), root / "cut", callbacks=[_StopAt(3)]).fit()
    assert cut.interrupted
    Trainer(C.DistillConfig(), root / "cut", resume=True).fit()
    assert _same(b, _weights(root / "cut"))


def test_teacher_is_resolved_once(setup, monkeypatch, tmp_path):
    """A Resolved given to the trainer is used as is; a DistillConfig is resolved once, in setup()."""
    from dukd_cli.distill import trainer as trainer_mod
    from dukd_cli.distill.resolve import resolve as real

    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0].teacher.name)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "resolve", counting)
    res = real(_cfg(setup, iters=2))
    given = Trainer(res, tmp_path / "given")
    result = given.fit()
    assert result.iteration == 2 and calls == []
    assert given.session.resolved is res and given.cfg is res.cfg
    Trainer(_cfg(setup, iters=2), tmp_path / "library").fit()
    assert calls == ["tiny"]
