"""The fault matrix of the hardening audit (issue #15), through the CLI: each fault is one line on
stderr, a non-zero exit, nothing half-written, and a run that can be resumed where it should.

Run as root, chmod-based read-only tests would pass for the wrong reason (root writes anyway), so
unwritable outputs are a path below a regular file (ENOTDIR) and, for EROFS / ENOSPC, a monkeypatched
write that raises the errno a read-only or full disk gives.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dukd_cli.distill import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int = 3, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        y, x = np.mgrid[0:size, 0:size]
        img = np.stack([(x * 7 + i * 30) % 256, (y * 5) % 256, ((x + y) * 3) % 256], -1).astype(np.float64)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


def _distill_args(data: Path, cache: Path, out: Path, iters: int = 4, **extra) -> list[str]:
    args = [
        "distill", "--student", "tiny", "--student-arg", "n_feats=4", "--scale", "2", "--method", "scratch",
        "--data", str(data), "--cache-dir", str(cache), "--iters", str(iters), "--batch-size", "2",
        "--patch-size", "8", "--val-every", "0", "--seed", "3", "--out", str(out),
    ]  # fmt: skip
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _error_line(err: str) -> str:
    """The one error line of a command that had started work (its progress lines come first)."""
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.fixture
def env(tiny_plugin, tmp_path):
    """Training images and a data cache for tiny distills (the test plugin's 'tiny' architecture)."""
    return {
        "data": _images(tmp_path / "data"),
        "cache": tmp_path / "cache",
        "root": tmp_path,
        "plugin": tiny_plugin,
    }


@pytest.fixture
def run_dir(env, run_dukd):
    """A real run directory made by a tiny `dukd distill` (x2)."""
    run = env["root"] / "run"
    code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], run, iters=2))
    assert code == 0, err
    return run


def _subprocess_env(env) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(env["plugin"]), str(ROOT), e.get("PYTHONPATH", "")])
    e["HF_HUB_OFFLINE"] = "1"
    return e


def _wait_for(predicate, proc: subprocess.Popen, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Fixes 1 and 2: run directories everywhere, a preset exported without --weights
# --------------------------------------------------------------------------------------------


def test_export_of_a_preset_without_weights(run_dukd, tmp_path):
    out = tmp_path / "exp"
    code, _, err = run_dukd("export", "--model", "dukd-student-x4", "-o", out, "--format", "safetensors")
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["scale"] == 4
    shipped = load_file(str(ROOT / "zoo" / "weights" / "dukd-student-x4.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    assert exported.keys() == shipped.keys() and all(torch.equal(exported[k], shipped[k]) for k in shipped)


def test_upscale_and_evaluate_a_run_directory(run_dir, run_dukd, tmp_path):
    from dukd_cli.models.factory import build, resolve_spec

    spec = resolve_spec(str(run_dir))  # the run knows its student, scale and weights
    assert (spec.arch, spec.scale, spec.kwargs["n_feats"]) == ("tiny", 2, 4)
    assert spec.weights == str(run_dir / "student.safetensors")
    img = _images(tmp_path / "in", n=1, size=20) / "0.png"
    code, _, err = run_dukd("upscale", img, "--model", run_dir, "-o", tmp_path / "sr.png")
    assert code == 0, err
    assert Image.open(tmp_path / "sr.png").size == (40, 40)
    bench = _images(tmp_path / "bench", n=2, size=24)
    code, _, err = run_dukd(
        "evaluate", "--model", run_dir, "--scale", "2", "--bench", bench, "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["weights"] == str(run_dir / "student.safetensors") and r["results"][0]["n_images"] == 2
    # The same network as the run's student file.
    net = build(spec)
    sd = load_file(str(run_dir / "student.safetensors"))
    assert all(torch.equal(net.state_dict()[k], sd[k]) for k in sd)
    code, _, err = run_dukd("upscale", img, "--model", run_dir, "--scale", "4", "-o", tmp_path / "x.png")
    assert code == 1 and "x2 student" in _one_line(err)


def test_a_run_directory_as_the_next_teacher(run_dir, run_dukd):
    code, out, err = run_dukd(
        "distill", "--teacher", run_dir, "--student", "tiny", "--student-arg", "n_feats=2", "--method", "kd",
        "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "scale = 2" in out and str(run_dir / "student.safetensors") in out


def test_run_directory_before_its_first_checkpoint(run_dir, run_dukd, tmp_path):
    (run_dir / "student.safetensors").unlink()
    code, _, err = run_dukd("upscale", tmp_path / "nothing.png", "--model", run_dir)
    assert code == 1 and "no student.safetensors yet" in _one_line(err)


def test_unknown_model_without_scale_is_unknown(run_dukd, tmp_path):
    code, _, err = run_dukd("upscale", tmp_path / "a.png", "--model", "edsr-ss")
    line = _one_line(err)
    assert code == 1 and "unknown architecture 'edsr-ss'" in line and "scale is needed" not in line
    folder = tmp_path / "plain"
    folder.mkdir()
    code, _, err = run_dukd("upscale", tmp_path / "a.png", "--model", folder)
    assert code == 1 and "neither an exported model" in _one_line(err)


# --------------------------------------------------------------------------------------------
# SIGTERM, kills inside a checkpoint, stale temporary files
# --------------------------------------------------------------------------------------------


def test_sigterm_saves_and_resumes(env, run_dukd):
    run = env["root"] / "term"
    args = _distill_args(env["data"], env["cache"], run, iters=100000, log_every=1, save_every=100000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dukd_cli", *args], env=_subprocess_env(env), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    def logged() -> bool:
        m = run / "metrics.jsonl"
        return m.is_file() and len(m.read_text().splitlines()) >= 2

    _wait_for(logged, proc, "two logged iterations")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM: stopping after this iteration and saving" in err and "Traceback" not in err
    done = torch.load(run / "state.pt", weights_only=True)["iteration"]
    assert done >= 2 and f"interrupted by SIGTERM at iteration {done}; saved" in err
    assert ckpt.student_iteration(run / "student.safetensors") == done
    code, _, err = run_dukd("distill", "--resume", run, "--iters", str(done + 2))
    assert code == 0, err
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == done + 2


@pytest.mark.parametrize("phase", ["written", "committed"])
def test_kill_inside_a_checkpoint_write(env, run_dukd, phase):
    """SIGKILL with both files written but nothing committed, or between the two renames: the resume
    cleans up and ends byte-identical to an uninterrupted run."""
    ref = env["root"] / "ref"
    code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], ref, iters=6, save_every=2))
    assert code == 0, err
    run = env["root"] / "killed"
    marker = env["root"] / "paused"
    e = _subprocess_env(env)
    e.update({ckpt.PAUSE_ENV: f"{phase}@4", f"{ckpt.PAUSE_ENV}_FILE": str(marker)})
    args = _distill_args(env["data"], env["cache"], run, iters=6, save_every=2)
    proc = subprocess.Popen([sys.executable, "-m", "dukd_cli", *args], env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for(marker.is_file, proc, f"the checkpoint of iteration 4 to pause ({phase})")
    proc.kill()
    proc.communicate(timeout=60)
    stale = sorted(p.name for p in run.glob(".*.tmp-*"))
    want_state, want_student = (2, 2) if phase == "written" else (4, 2)
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == want_state
    assert ckpt.student_iteration(run / "student.safetensors") == want_student
    assert any(s.startswith(".student.tmp-") for s in stale), stale
    code, _, err = run_dukd("distill", "--resume", run)
    assert code == 0, err
    assert "temporary file(s) of an interrupted write" in err
    if phase == "committed":
        assert "student.safetensors was behind state.pt" in err
    assert not list(run.glob(".*.tmp-*"))
    assert (run / "student.safetensors").read_bytes() == (ref / "student.safetensors").read_bytes()


def test_stale_temp_files_removed_on_start(env, run_dukd):
    run = env["root"] / "fresh"
    run.mkdir()
    for name in (".state.tmp-abc.pt", ".student.tmp-def.safetensors", ".metrics.tmp-x.jsonl"):
        (run / name).write_bytes(b"partial")
    (run / "keep.txt").write_text("not ours")
    code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], run, iters=1))
    assert code == 0, err
    assert "removed 3 temporary file(s)" in err
    assert not list(run.glob(".*.tmp-*")) and (run / "keep.txt").is_file()


# --------------------------------------------------------------------------------------------
# Bad states, unwritable outputs, full disks: one line each
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"not a pickle at all \x00\x01", b"PK\x03\x04garbage"])
def test_empty_or_garbage_state(run_dir, run_dukd, content):
    (run_dir / "state.pt").write_bytes(content)
    code, _, err = run_dukd("distill", "--resume", run_dir, "--iters", "5")
    line = _one_line(err)
    assert code == 1 and str(run_dir / "state.pt") in line
    assert ("empty (0 bytes)" if not content else "damaged or not a training state") in line
    assert "weights_only" not in line and "IndexError" not in line


def test_evaluate_json_to_an_unwritable_path_fails_before_evaluating(run_dukd, monkeypatch, tmp_path):
    import dukd_cli.evaluate.protocol as ev  # the command imports it when it runs (start-up without torch)

    def never(*a, **k):
        raise AssertionError("the evaluation ran before the output was checked")

    monkeypatch.setattr(ev, "evaluate", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_dukd("evaluate", "--model", "bicubic", "--scale", "2", "--json", blocker / "r.json")
    assert code == 1 and "is a file, not a folder" in _one_line(err)
    code, _, err = run_dukd("evaluate", "--model", "bicubic", "--scale", "2", "--csv", tmp_path)
    assert code == 1 and "is a folder" in _one_line(err)
    # A read-only disk (EROFS), simulated: root ignores permission bits.
    import dukd_cli.runtime.fsutil as fsutil

    def erofs(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", erofs)
    code, _, err = run_dukd("evaluate", "--model", "bicubic", "--scale", "2", "--json", tmp_path / "r.json")
    assert code == 1 and "Read-only file system" in _one_line(err)


def test_evaluate_refuses_to_overwrite_like_upscale(run_dukd, tmp_path):
    bench = _images(tmp_path / "bench", n=1, size=24)
    out = tmp_path / "r.json"
    out.write_text("old")
    base = ["evaluate", "--model", "bicubic", "--scale", "2", "--bench", bench, "--json", out]
    code, _, err = run_dukd(*base)
    assert code == 1 and "--overwrite" in _one_line(err) and out.read_text() == "old"
    code, _, err = run_dukd(*base, "--overwrite")
    assert code == 0, err
    assert json.loads(out.read_text())["model"] == "bicubic"


def test_read_only_out_fails_before_data_preparation(env, run_dukd, monkeypatch):
    blocker = env["root"] / "a-file"
    blocker.write_text("x")
    code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], blocker / "run"))
    assert code == 1 and "cannot write to" in _one_line(err)
    assert not env["cache"].exists()  # stopped before the training data was prepared
    import dukd_cli.runtime.fsutil as fsutil

    def erofs(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", erofs)
    code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], env["root"] / "ro" / "run"))
    assert code == 1 and "Read-only file system" in _one_line(err)
    assert not (env["root"] / "ro").exists() and not env["cache"].exists()


@pytest.mark.parametrize("how", ["oserror", "torch"])
def test_full_disk_during_a_checkpoint(env, run_dukd, monkeypatch, how):
    calls = {"n": 0}
    real = ckpt._save_state

    def flaky(state, path):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint (iteration 4)
            Path(path).write_bytes(b"half")  # a partial file, as a full disk leaves
            if how == "oserror":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise RuntimeError(
                "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file"
            )
        real(state, path)

    monkeypatch.setattr(ckpt, "_save_state", flaky)
    run = env["root"] / "full"
    code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], run, iters=6, save_every=2))
    line = _error_line(err)
    assert (
        code == 1
        and "checkpoint of iteration 4" in line
        and "previous checkpoint (iteration 2) is kept" in line
    )
    assert ("No space left on device" if how == "oserror" else "is the disk full?") in line
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 2
    assert ckpt.student_iteration(run / "student.safetensors") == 2
    assert not list(run.glob(".*.tmp-*"))
    monkeypatch.setattr(ckpt, "_save_state", real)
    code, _, err = run_dukd("distill", "--resume", run)
    assert code == 0, err
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 6
