"""Issue 18, part B: one writer per run directory, nothing stale after a kill, bounds checked before
work, every value validated where it enters, no data lost at the fast exit, and honest messages.

Each test builds the attack (a second process, a kill inside a write, an absurd value) and asserts
what the user sees: one line, a non-zero exit, and nothing half-written or left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_faults import (  # tests/ is on sys.path (pytest's rootdir import)
    _distill_args,
    _images,
    _one_line,
    _subprocess_env,
    _wait_for,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tiny_plugin, tmp_path):
    return {
        "data": _images(tmp_path / "data"),
        "cache": tmp_path / "cache",
        "root": tmp_path,
        "plugin": tiny_plugin,
    }


def _start(env, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    e = _subprocess_env(env)
    e.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "dukd_cli", *map(str, args)], env=e, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _logged(run: Path, n: int = 1):
    def check() -> bool:
        m = run / "metrics.jsonl"
        return m.is_file() and len(m.read_text().splitlines()) >= n

    return check


# --------------------------------------------------------------------------------------------
# 1. One writer per run directory
# --------------------------------------------------------------------------------------------


def test_second_distill_on_a_busy_run_directory_is_refused(env, run_dukd):
    run = env["root"] / "run"
    args = _distill_args(env["data"], env["cache"], run, iters=100000, log_every=1, save_every=2)
    first = _start(env, args)
    try:
        _wait_for(lambda: (run / "state.pt").is_file(), first, "the first checkpoint")
        lines = (run / "metrics.jsonl").read_text().splitlines()
        # A second process on the same --out, and a --resume of it, while the first one runs.
        second = subprocess.run(
            [sys.executable, "-m", "dukd_cli", *args], env=_subprocess_env(env), text=True,
            capture_output=True, timeout=300,
        )  # fmt: skip
        line = _one_line(second.stderr)
        assert second.returncode == 1 and f"PID {first.pid}" in line and "in use" in line, line
        # (--iters 1: without the lock this resume would stop at once, "below the iterations done")
        code, _, err = run_dukd("distill", "--resume", run, "--iters", "1")
        line = _one_line(err)
        assert code == 1 and f"PID {first.pid}" in line and "in use" in line, line
        # The refused runs wrote nothing: the metrics still come from one process only.
        iters = [json.loads(x)["iteration"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert iters == sorted(set(iters)) and len(iters) >= len(lines)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # The kernel released the lock of the killed process: the run resumes.
    done = torch.load(run / "state.pt", weights_only=True)["iteration"]
    code, _, err = run_dukd("distill", "--resume", run, "--iters", str(done + 1))
    assert code == 0, err
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == done + 1


def test_refused_run_leaves_no_directory(env, run_dukd):
    from dukd_cli.runtime.runlock import RunLock

    run = env["root"] / "busy"
    with RunLock(run):
        code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], run, iters=1))
        assert code == 1 and f"PID {os.getpid()}" in _one_line(err)
    assert not run.exists()  # the lock's own directory went away with it


# --------------------------------------------------------------------------------------------
# 2. Nothing stale: temporary names carry the PID; a later run removes those of dead processes
# --------------------------------------------------------------------------------------------


def _kill_inside(env, args, point: str, root: Path) -> None:
    marker = root / f"paused-{point}"
    proc = _start(env, args, {"DUKD_TEST_PAUSE": point, "DUKD_TEST_PAUSE_FILE": str(marker)})
    _wait_for(marker.is_file, proc, f"the write to pause at '{point}'")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    marker.unlink()


def _dotted(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_upscale_killed_inside_the_write_leaves_nothing_after_the_next_run(env, tiny_x2, run_dukd):
    w, _ = tiny_x2
    img = _images(env["root"] / "in", n=1, size=16) / "0.png"
    out = env["root"] / "out"
    args = [
        "upscale",
        img,
        "--model",
        "tiny",
        "--arg",
        "n_feats=8",
        "--scale",
        "2",
        "--weights",
        w,
        "-o",
        out / "img07.png",
    ]
    _kill_inside(env, args, "atomic", env["root"])
    left = _dotted(out)
    assert len(left) == 1 and left[0].startswith(".img07.tmp-"), left  # what kill -9 leaves
    code, _, err = run_dukd(*args[:-1], out / "other.png")
    assert code == 0, err
    assert _dotted(out) == [] and sorted(p.name for p in out.iterdir()) == ["other.png"]


def test_export_killed_inside_the_write_leaves_nothing_after_the_next_run(env, tiny_x2, run_dukd):
    w, _ = tiny_x2
    dest = env["root"] / "exp" / "m"
    args = [
        "export",
        "--model",
        "tiny",
        "--arg",
        "n_feats=8",
        "--scale",
        "2",
        "--weights",
        w,
        "-o",
        dest,
        "--format",
        "safetensors",
    ]
    _kill_inside(env, args, "export", env["root"])
    left = _dotted(dest.parent)
    assert len(left) == 1 and left[0].startswith(".m.tmp-"), left
    code, _, err = run_dukd(*args[:-3], env["root"] / "exp" / "n", "--format", "safetensors")
    assert code == 0, err
    assert _dotted(dest.parent) == [] and sorted(p.name for p in dest.parent.iterdir()) == ["n"]


def test_a_living_writers_temporary_file_is_kept(tmp_path):
    from dukd_cli.runtime import stale

    ours = tmp_path / f"{stale.temp_prefix('a')}x.png"
    ours.write_bytes(b"in progress")
    foreign = tmp_path / ".b.tmp-abc.png"  # no PID: not provably dead, kept
    foreign.write_bytes(b"?")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".c.tmp-{dead.pid}-q.png"
    gone.write_bytes(b"partial")
    assert stale.sweep(tmp_path, once=False) == [gone.name]
    assert ours.exists() and foreign.exists()


# --------------------------------------------------------------------------------------------
# 4, 5. Every value validated once, where it enters (an option or a --config key)
# --------------------------------------------------------------------------------------------

BAD_CONFIG = [
    ("[train]\niters = true", "[train] iters must be an integer, got true"),
    ("[train]\niters = 2.7", "[train] iters must be an integer, got 2.7"),
    ('[train]\niters = "ten"', "[train] iters must be an integer"),
    ('[train]\nlr = "fast"', "[train] lr must be a positive finite number"),
    ("[train]\nlr = nan", "[train] lr must be a positive finite number"),
    ('[train]\nmilestones = "100,200"', "[train] milestones must be a list of integers"),
    ("[train]\nmilestones = [1.5]", "[train] milestones must be a list of integers"),
    ("[train]\nbetas = [0.9]", "[train] betas must be a pair of numbers in [0, 1)"),
    ("[train]\nbetas = [0.9, 1.0]", "[train] betas must be a pair of numbers in [0, 1)"),
    ("[train]\neps = -1", "[train] eps must be a positive finite number"),
    ('[train]\nseed = "abc"', "[train] seed must be an integer"),
    ("[train]\ngamma = -0.5", "[train] gamma must be a number in (0, 1]"),
    ("[train]\ngrad_clip = -1", "[train] grad_clip must be a finite number >= 0"),
    ('[train]\ncompile = "yes"', "[train] compile must be true or false"),
    ("[data]\nworkers = -2", "[data] workers must be an integer >= 0"),
    ("[method]\nname = 5", "[method] name must be a non-empty string"),
    ('[student]\nargs = "n_feats=4"', "[student] args must be a table"),
]


@pytest.mark.parametrize(("toml", "message"), BAD_CONFIG, ids=[b[0].split("\n")[1] for b in BAD_CONFIG])
def test_config_values_of_the_wrong_type_or_range(run_dukd, tmp_path, toml, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml + "\n")
    code, _, err = run_dukd("distill", "--config", cfg, "--student", "edsr-s", "--scale", "2", "--dry-run")
    line = _one_line(err)
    assert code == 1 and message in line, line


BAD_OPTIONS = [
    (["--lr", "-1"], "--lr must be a positive finite number, got -1.0"),
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--workers", "-2"], "--workers must be an integer >= 0, got -2"),
    (["--gamma", "-0.1"], "--gamma must be a number in (0, 1], got -0.1"),
    (["--gamma", "1.5"], "--gamma must be a number in (0, 1]"),
    (["--grad-clip", "-1"], "--grad-clip must be a finite number >= 0, got -1.0"),
    (["--milestones", "10,-5"], "--milestones must be a list of integers >= 0"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--aug-prob", "2"], "--aug-prob must be a number in [0, 1]"),
]


@pytest.mark.parametrize(("opts", "message"), BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_option_values_out_of_range(run_dukd, tmp_path, opts, message):
    out = tmp_path / "run"
    code, _, err = run_dukd("distill", "--student", "edsr-s", "--scale", "2", "--out", out, *opts)
    line = _one_line(err)
    assert code == 1 and message in line, line
    assert not out.exists()


def test_resume_conflicts_name_real_options(env, run_dukd):
    from test_faults import _distill_args as args_of

    run = env["root"] / "run"
    code, _, err = run_dukd(*args_of(env["data"], env["cache"], run, iters=2))
    assert code == 0, err
    for opts, flag in (
        (["--student", "edsr-s"], "--student 'edsr-s' disagrees"),
        (["--student-arg", "n_feats=6"], "--student-arg {'n_feats': 6} disagrees"),
        (["--data", "builtin"], "--data ['builtin'] disagrees"),
    ):
        code, _, err = run_dukd("distill", "--resume", run, *opts)
        line = _one_line(err)
        assert code == 1 and flag in line, line


def test_resume_with_a_state_of_another_architecture(env, run_dukd):
    from test_faults import _distill_args as args_of

    a, b = env["root"] / "a", env["root"] / "b"
    assert run_dukd(*args_of(env["data"], env["cache"], a, iters=2))[0] == 0
    code, _, err = run_dukd(*args_of(env["data"], env["cache"], b, iters=2)[:4], "n_feats=6",
                            *args_of(env["data"], env["cache"], b, iters=2)[5:])  # fmt: skip
    assert code == 0, err
    (a / "state.pt").write_bytes((b / "state.pt").read_bytes())  # b's 6-feature state in a's 4-feature run
    before = (a / "student.safetensors").read_bytes()
    code, _, err = run_dukd("distill", "--resume", a, "--iters", "4")
    line = _error_line_of(err)
    assert code == 1 and "does not fit the student" in line and "another architecture" in line, line
    assert (a / "student.safetensors").read_bytes() == before


def _error_line_of(err: str) -> str:
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# --------------------------------------------------------------------------------------------
# 5. --suffix is a name fragment; 4. evaluate skips images too small for the scale; 7. --tile 0
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/../../escaped", "_x/sub", "..", "a\nb"])
def test_suffix_with_path_separators_is_refused(tiny_x2, run_dukd, tmp_path, suffix):
    w, _ = tiny_x2
    src = _images(tmp_path / "deep" / "in", n=1, size=12) / "0.png"
    code, _, err = run_dukd("upscale", src, "--model", "tiny", "--arg", "n_feats=8", "--scale", "2",
                            "--weights", w, "--suffix", suffix)  # fmt: skip
    line = _one_line(err)
    assert code == 1 and "--suffix must be a plain file-name fragment" in line
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png")) == ["deep/in/0.png"]


def _sized(folder: Path, sides: list[int]) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for n in sides:
        Image.fromarray(rng.integers(0, 256, (n, n, 3), dtype=np.uint8)).save(folder / f"s{n}.png")
    return folder


def test_evaluate_skips_images_too_small_for_the_scale(run_dukd, tmp_path):
    bench = _sized(tmp_path / "b", [8, 11, 19, 24])
    code, _, err = run_dukd("evaluate", "--model", "bicubic", "--scale", "4", "--bench", bench,
                            "--json", tmp_path / "r.json", "--tile", "0")  # fmt: skip
    assert code == 0, err
    assert (
        "skipped 3 image(s) too small for x4 (each side needs at least 20 px)" in err
        and "Traceback" not in err
    )
    r = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert r["n_images"] == 1 and r["skipped_too_small"] == 3
    tiny = _sized(tmp_path / "t", [11])
    code, _, err = run_dukd("evaluate", "--model", "bicubic", "--scale", "4", "--bench", tiny)
    line = _one_line(err)
    assert code == 1 and "every image is too small for x4" in line


@pytest.mark.parametrize(("tile", "ok"), [("0", True), ("32", True), ("8", False), ("-1", False)])
def test_evaluate_tile_zero_means_whole_images(tiny_x2, run_dukd, tmp_path, tile, ok):
    w, _ = tiny_x2
    bench = _sized(tmp_path / "b", [24])
    code, out, err = run_dukd("evaluate", "--model", "tiny", "--arg", "n_feats=8", "--weights", w,
                              "--scale", "2", "--bench", bench, "--tile", tile)  # fmt: skip
    if ok:
        assert code == 0, err
    else:
        assert code == 1 and "--tile must be 0 (whole images) or a size of at least 16" in _one_line(err)


# --------------------------------------------------------------------------------------------
# 6. The fast exit does not lose a plugin's data
# --------------------------------------------------------------------------------------------

LOG_PLUGIN = """
import os
from torch import nn

_LOG = []


def logger(scale, n_feats=4):
    log = open(os.environ["LOGPLUGIN_FILE"], "a")  # never closed, never flushed: a buffered log
    log.write(f"built x{scale}\\n")
    _LOG.append(log)
    return nn.Sequential(nn.Conv2d(3, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
"""


def test_fast_exit_keeps_a_plugins_unflushed_file(tmp_path):
    root = tmp_path / "site"
    (root / "dukd_logplugin").mkdir(parents=True)
    (root / "dukd_logplugin" / "__init__.py").write_text(LOG_PLUGIN)
    info = root / "dukd_logplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dukd-logplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dukd.architectures]\nlogger = dukd_logplugin:logger\n")
    dukd = Path(sys.executable).parent / "dukd"  # the installed console script
    assert dukd.is_file()
    env = {k: v for k, v in os.environ.items() if k != "DUKD_FULL_EXIT"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(ROOT)])
    for full in ("0", "1"):
        log = tmp_path / f"log-{full}.txt"
        e = {**env, "LOGPLUGIN_FILE": str(log), "DUKD_FULL_EXIT": full}
        res = subprocess.run([str(dukd), "zoo", "info", "logger", "--scale", "4"], env=e, text=True,
                             capture_output=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert log.read_text() == "built x4\n", (full, res.stderr)


# --------------------------------------------------------------------------------------------
# 4, 7. report: malformed metrics lines skipped with a count, a damaged student, --overwrite
# --------------------------------------------------------------------------------------------


@pytest.fixture
def small_run(env, run_dukd):
    run = env["root"] / "run"
    code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], run, iters=3, log_every=1))
    assert code == 0, err
    return run


def test_report_skips_malformed_metrics_lines_with_a_count(small_run, run_dukd, tmp_path):
    pytest.importorskip("matplotlib")
    good = (small_run / "metrics.jsonl").read_bytes()
    bad = [
        b'{"iteration": "nine", "loss": 0.5}',
        b'{"iteration": null, "loss": 0.5}',
        b'{"iteration": 4, "loss": "x"}',
        b'{"iteration": 5, "loss": 0.5, "losses": {"\xff\xfe": 0.1}}',  # not UTF-8
        b'{"iteration": 6, "loss": 0.5, "losses": {"$\\\\frac{$": 0.1}}',  # breaks matplotlib mathtext
        b'{"iteration": 7, "loss": true}',
    ]
    (small_run / "metrics.jsonl").write_bytes(good + b"\n".join(bad) + b"\n")
    out = tmp_path / "r.html"
    code, o, err = run_dukd("report", small_run, "-o", out, "--device", "cpu")
    assert code == 0, err
    assert f"skipped {len(bad)} malformed line(s)" in o and "Traceback" not in err
    rep = json.loads(out.with_suffix(".json").read_text())
    assert [p[0] for p in rep["runs"][0]["losses"]["loss"]] == [1, 2, 3]


def test_report_refuses_a_damaged_student(small_run, run_dukd, tmp_path):
    pytest.importorskip("matplotlib")
    w = small_run / "student.safetensors"
    data = w.read_bytes()
    for damaged in (data[: len(data) // 2], b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", b""):
        w.write_bytes(damaged)
        out = tmp_path / "r.html"
        code, _, err = run_dukd("report", small_run, "-o", out, "--device", "cpu")
        line = _one_line(err)
        assert code == 1 and str(w) in line and "damaged" in line, line
        assert not out.exists()


def test_report_does_not_replace_a_page_without_overwrite(small_run, run_dukd, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.html"
    out.write_text("my notes")
    code, _, err = run_dukd("report", small_run, "-o", out, "--device", "cpu")
    assert code == 1 and "--overwrite" in _one_line(err) and out.read_text() == "my notes"
    code, _, err = run_dukd("report", small_run, "-o", out, "--device", "cpu", "--overwrite")
    assert code == 0, err
    assert out.read_text() != "my notes"


# --------------------------------------------------------------------------------------------
# 3. Bounds checked before work: output pixels, constructor sizes, batch size
# --------------------------------------------------------------------------------------------


def test_upscale_refuses_an_absurd_output_size_before_computing(tiny_x2, run_dukd, tmp_path, monkeypatch):
    import dukd_cli.upscale.image as up  # where upscale_image lives (the job imports it at call time)

    def never(*a, **k):
        raise AssertionError("the image was computed before its size was checked")

    monkeypatch.setattr(up, "upscale_image", never)
    w, _ = tiny_x2
    src = _images(tmp_path / "in", n=1, size=40) / "0.png"
    out = tmp_path / "big.png"
    base = [
        "upscale",
        src,
        "--model",
        "tiny",
        "--arg",
        "n_feats=8",
        "--scale",
        "2",
        "--weights",
        w,
        "-o",
        out,
    ]
    code, _, err = run_dukd(*base, "--outscale", "1000")  # 40,000 x 40,000: 1.6 gigapixels
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert "1,600 megapixels" in errors[0] and "--max-pixels 1600000000" in errors[0]
    assert not out.exists() and _dotted(tmp_path) == []
    code, _, err = run_dukd(*base, "--max-pixels", "1000")  # 80 x 80 = 6,400 > 1,000
    assert code == 1 and "above the limit of 0 megapixels" in err
    code, _, err = run_dukd(*base, "--max-pixels", "0")
    assert code == 1 and "--max-pixels must be a positive whole number" in _one_line(err)


def test_evaluate_refuses_outputs_above_max_pixels(run_dukd, tmp_path):
    bench = _sized(tmp_path / "b", [24])
    code, _, err = run_dukd(
        "evaluate", "--model", "bicubic", "--scale", "2", "--bench", bench, "--max-pixels", "500"
    )
    line = _one_line(err)
    assert code == 1 and "b/s24: the output would be 24 x 24" in line and "--max-pixels 576" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--arg", "n_feats=99999999"], "is too large for this machine"),
        (["--arg", "n_resgroups=100000", "--arg", "n_resblocks=100000"], "creates more than 10,000 tensors"),
    ],
    ids=["n_feats", "depth"],
)
def test_absurd_constructor_sizes_are_refused_while_building(run_dukd, args, words, monkeypatch):
    from dukd_cli.models import sizeguard

    monkeypatch.setattr(sizeguard, "MAX_TENSORS", 2_000)  # RCAN's default holds 1,634: still fits
    monkeypatch.setattr(sizeguard, "available_ram", lambda: 8 << 30)
    words = words.replace("10,000", "2,000")
    code, out, err = run_dukd("zoo", "info", "rcan", "--scale", "4", *args)
    line = _one_line(err)
    assert code == 1 and words in line and "'rcan' at x4" in line, line
    code, out, err = run_dukd("zoo", "info", "rcan", "--scale", "4")  # the real network still builds
    assert code == 0, err


def test_build_budget_stops_before_the_allocation():
    import torch
    from torch import nn

    from dukd_cli.models.sizeguard import BuildBudget, TooLargeError

    with (
        pytest.raises(TooLargeError, match="too large for this machine"),
        BuildBudget("huge", limit_bytes=1 << 20),
    ):
        nn.Linear(1 << 16, 1 << 16)  # 16 GB of float32, refused before it is allocated
    with BuildBudget("small", limit_bytes=1 << 20):
        assert isinstance(nn.Linear(8, 8).weight, torch.Tensor)


def test_batch_size_beyond_memory_is_refused_before_training(env, run_dukd, monkeypatch):
    from dukd_cli.models import sizeguard

    monkeypatch.setattr(sizeguard, "available_ram", lambda: 1 << 30)
    run = env["root"] / "run"
    args = _distill_args(env["data"], env["cache"], run, iters=1)
    args[args.index("--batch-size") + 1] = "100000"
    code, _, err = run_dukd(*args)
    line = _one_line(err)
    assert code == 1 and "--batch-size 100000 needs about" in line and "at most about" in line, line
    assert not (run / "state.pt").exists() and not (run / "metrics.jsonl").exists()


# --------------------------------------------------------------------------------------------
# 7. Animated inputs say "first frame only"
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gif", "png", "webp"])
def test_animated_input_says_first_frame_only(tiny_x2, run_dukd, tmp_path, fmt):
    from PIL import Image

    w, _ = tiny_x2
    frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    src = tmp_path / f"anim.{fmt}"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0)
    code, _, err = run_dukd("upscale", src, "--model", "tiny", "--arg", "n_feats=8", "--scale", "2",
                            "--weights", w, "-o", tmp_path / "o.png")  # fmt: skip
    assert code == 0, err
    assert "3 frames); first frame only" in err and "anim" in err
