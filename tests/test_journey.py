"""A new user's first minutes, through the real console script.

Every test here runs the installed ``dukd`` (the script beside this Python, as a user's shell finds
it) in a subprocess, not the app through a test runner: what argument parsing, start-up and exit
codes do in a real process is what is asserted (``-h`` once worked under the test runner only).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dukd_script() -> str:
    """The ``dukd`` console script of this environment (beside ``sys.executable``)."""
    here = Path(sys.executable).parent / ("dukd.exe" if os.name == "nt" else "dukd")
    found = str(here) if here.is_file() else shutil.which("dukd")
    if not found:
        pytest.skip("the dukd console script is not installed (pip install -e .)")
    return found


def run(*args, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    """``(exit code, stdout, stderr)`` of ``dukd ARGS`` in a fresh process (offline by default)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    proc = subprocess.run(
        [dukd_script(), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [
        (),
        ("upscale",),
        ("evaluate",),
        ("distill",),
        ("export",),
        ("report",),
        ("zoo",),
        ("zoo", "list"),
        ("zoo", "info"),
        ("data",),
        ("data", "list"),
        ("data", "fetch"),
    ],
    ids=lambda c: " ".join(c) or "dukd",
)
def test_dash_h_is_help_everywhere(command):
    code, out, err = run(*command, "-h")
    assert code == 0, err
    assert "Usage: dukd" in out and "--help" in out and "-h" in out
    assert "No such option" not in out + err


def test_an_unknown_option_suggests_only_help_that_works():
    code, out, err = run("--no-such-option")
    assert code == 2
    assert "No such option: --no-such-option" in err
    for suggested in ("dukd -h", "dukd --help"):
        if suggested in err:
            assert run(*suggested.split()[1:])[0] == 0


@pytest.mark.parametrize(
    "command",
    [
        ("--help",),
        ("--version",),
        ("-h",),
        ("upscale", "--help"),
        ("distill", "--help"),
        ("evaluate", "--help"),
        ("export", "--help"),
        ("zoo", "info", "--help"),
        ("data", "list"),
        ("zoo", "list"),
    ],
    ids=lambda c: " ".join(c),
)
def test_start_up_without_torch(command, tmp_path):
    """Help, the version and the listings answer without importing torch (it costs seconds)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DUKD_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-X", "importtime", dukd_script(), *command]
    if command == ("zoo", "list"):  # the first listing counts parameters (builds networks); then cached
        subprocess.run([dukd_script(), *command], env=env, capture_output=True, check=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "typer" in imported  # the measurement saw the imports
    assert "torch" not in imported
    assert "numpy" not in imported or command == ("data", "list")


def test_upscale_png_level_default_is_the_writers():
    from dukd_cli.commands.upscale import DEFAULT_PNG_LEVEL
    from dukd_cli.images.pngstream import DEFAULT_PNG_LEVEL as WRITER_DEFAULT

    assert DEFAULT_PNG_LEVEL == WRITER_DEFAULT


def _options_of(*command) -> str:
    code, out, err = run(*command, "--help")
    assert code == 0, err
    return out


def test_a_mistyped_checkpoint_path_says_the_file_does_not_exist(tmp_path):
    (tmp_path / "IMDN_x4.pth").write_bytes(b"not read")
    typo = tmp_path / "IMDN_X4.pth"
    code, out, err = run("evaluate", "--model", typo)
    assert code == 1 and err.count("\n") == 1, err
    assert f"{typo}: no such file; did you mean {tmp_path / 'IMDN_x4.pth'}?" in err
    assert "unknown architecture" not in err
    out_dir = tmp_path / "run"
    code, out, err = run(
        "distill", "--teacher", tmp_path / "nowhere" / "t.pth", "--student", "edsr-s", "--scale", "4",
        "--data", "builtin", "--out", out_dir,
    )  # fmt: skip
    assert code == 1 and "t.pth: no such file" in err and "unknown architecture" not in err
    assert not out_dir.exists()
    code, out, err = run("upscale", tmp_path / "photo.png", "--model", "teacher.safetensors")
    assert code == 1 and "teacher.safetensors: no such file" in err


def _unreachable_hub(tmp_path) -> dict:
    """The Hub at a closed local port, not HF_HUB_OFFLINE: what a machine without network sees."""
    return {
        "HF_HUB_OFFLINE": None,
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": None,
        "DUKD_CACHE": str(tmp_path / "cache"),
        "DUKD_DATA": str(tmp_path / "no-data"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "HOME": str(tmp_path / "home"),
        **{
            v: None
            for v in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
        },
    }


def test_offline_advice_names_options_the_command_has(tmp_path):
    env = _unreachable_hub(tmp_path)
    code, out, err = run("evaluate", "--bench", "urban100", env=env)
    assert code == 1 and "cannot be reached" in err
    assert "--data-dir DIR holding Urban100/HR/" in err and "'dukd data fetch urban100 --source" in err
    assert "pass a local file" not in err
    assert "--data-dir" in _options_of("evaluate") and "--source" in _options_of("data", "fetch")

    out_dir = tmp_path / "run"
    code, out, err = run("distill", "--teacher", "dukd-teacher-x4", "--student", "edsr-s", "--scale", "4",
                         "--out", out_dir, env=env)  # fmt: skip
    assert code == 1 and "cannot be reached" in err and "--data FOLDER" in err
    assert "--data" in _options_of("distill") and not out_dir.exists()

    code, out, err = run("data", "fetch", "set14", env=env)
    assert code == 1 and "'dukd data fetch set14 --source ARCHIVE_OR_FOLDER'" in err

    code, out, err = run("upscale", tmp_path / "x.png", "--weights", "hf://someone/repo/x.safetensors",
                         "--model", "edsr-s", "--scale", "4", env=env)  # fmt: skip
    assert code == 1 and "pass --weights PATH with a local copy" in err


def test_python_api_errors_name_arguments_not_options(tmp_path, monkeypatch):
    from dukd_cli.errors import DukdError
    from dukd_cli.models.factory import create_model

    for key, value in _unreachable_hub(tmp_path).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    for name, kwargs, says in (
        ("edsr-s", {"weights": "hf://someone/repo/x.safetensors"}, 'pass weights="PATH"'),
        ("edsr-l", {"pretrained": True}, 'pass weights="PATH/EDSR_Lx4'),
        ("edsr", {"pretrained": True}, 'pass weights="SOURCE"'),
    ):
        with pytest.raises(DukdError) as err:
            create_model(name, 4, **kwargs)
        assert says in str(err.value) and "--" not in str(err.value)


def test_bare_distill_is_one_line_not_the_demo(tmp_path):
    code, out, err = run("distill", cwd=tmp_path, timeout=60)
    assert code == 1 and err.count("\n") == 1 and "'dukd distill --demo'" in err
    assert not any(tmp_path.iterdir())  # no runs/ folder: nothing started


def test_zoo_list_claims_pretrained_only_where_a_file_can_be_had():
    code, out, err = run("zoo", "list")
    assert code == 0, err
    pretrained = {line.split("\t")[0]: line.split("\t")[-1] for line in out.splitlines()[1:]}
    assert pretrained["dukd-student-x4"] == "x4" and pretrained["swinir-l"] == "x2,x3,x4"
    assert pretrained["edsr-l"] == "-" and pretrained["rcan-l"] == "-"  # no source known for their files


def test_zoo_info_with_a_scale_shows_that_scale():
    code, out, err = run("zoo", "info", "edsr-l", "--scale", "4", "--json")
    assert code == 0, err
    import json

    assert list(json.loads(out)["weights"]) == ["x4"]
    code, out, err = run("zoo", "info", "edsr-l", "--scale", "4")
    assert "EDSR_Lx4_" in out and "EDSR_Lx2_" not in out and "EDSR_Lx3_" not in out


SHIPPED = ROOT / "zoo" / "weights"


def test_dry_run_checks_the_teacher_file_and_the_sizes(tmp_path):
    small = ("--student", "edsr", "--student-arg", "n_feats=16", "--student-arg", "n_resblocks=2")
    code, out, err = run(
        "distill", "--teacher", "edsr-baseline", "--teacher-weights", SHIPPED / "dukd-student-x4.safetensors",
        *small, "--scale", "4", "--data", "builtin", "--dry-run", "--out", tmp_path / "r",
    )  # fmt: skip
    assert (
        code == 1 and "does not match" in err and "--teacher dukd-student-x4" in err
    )  # what the run would say
    code, out, err = run(
        "distill", "--teacher", "edsr-baseline", "--teacher-weights", SHIPPED / "dukd-teacher-x4.safetensors",
        *small, "--scale", "4", "--data", "builtin", "--dry-run", "--out", tmp_path / "r",
    )  # fmt: skip
    assert code == 0, err
    assert "teacher file checked" in out and "larger than the teacher" not in err
    code, out, err = run(
        "distill", "--teacher", "dukd-teacher-x4", "--student", "edsr-s", "--data", "builtin", "--dry-run"
    )
    assert code == 0, err
    assert "warning: the student (2,699,267 parameters) is larger than the teacher (1,517,571)" in err
    assert not (tmp_path / "r").exists()


def test_distill_takes_the_scale_of_a_one_scale_preset(tmp_path):
    code, out, err = run("distill", "--student", "dukd-student-x4", "--method", "scratch", "--data", "builtin",
                         "--dry-run")  # fmt: skip
    assert code == 0, err
    assert "\nscale = 4\n" in out and "(random init)" in out  # the preset's architecture, not its weights


def test_upscale_onnx_without_an_export_names_the_export_command(tmp_path):
    code, out, err = run("upscale", tmp_path / "photo.png", "--runtime", "onnx")
    assert code == 1 and "'dukd export --model dukd-student-x4 --output DIR'" in err
    assert "--output" in _options_of("export") and "--runtime" in _options_of("upscale")


def test_a_checkpoint_for_another_scale_reads_as_english(imdn_dir):
    code, out, err = run("evaluate", "--model", imdn_dir / "IMDN_x4.pth", "--scale", "2")
    assert code == 1 and "is an IMDN 64 ch, 6 blocks x4 checkpoint" in err and "is a IMDN" not in err


def _table_rows(out: str) -> dict[str, float]:
    """``{row name: PSNR}`` of the demo's table as printed."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃| ").split("│")]
        if len(cells) == 5 and cells[0] and cells[3].replace(".", "", 1).isdigit():
            rows[cells[0]] = float(cells[3])
    return rows


def test_the_demo_shows_a_random_student_learning(tmp_path):
    """The headline of the Quickstart: before, a random network (far below bicubic); after a few
    iterations, several dB better. Issue 19: the 'random' student was the shipped, trained one
    (both rows 30.15 dB), and no test noticed because none compared with what random scores."""
    env = {"DUKD_CACHE": str(tmp_path / "cache"), "DUKD_DATA": str(tmp_path / "no-benchmarks")}
    run_dir = tmp_path / "demo"
    code, out, err = run(
        "distill", "--demo", "--iters", "12", "--batch-size", "2", "--lr", "3e-3", "--out", run_dir,
        env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert code == 0, err
    rows = _table_rows(out)
    assert set(rows) >= {"bicubic", "student, before", "student, after", "teacher", "shipped student"}, out
    assert rows["student, before"] < rows["bicubic"] - 8  # random: far below bicubic
    assert rows["student, after"] > rows["student, before"] + 3  # it learned
    assert rows["shipped student"] > rows["bicubic"] and rows["teacher"] > rows["shipped student"]
    # what the table says the student scores is what `dukd evaluate` measures on those photos
    code, out, err = run("evaluate", "--model", run_dir, "--bench", run_dir / "holdout", env=env)
    assert code == 0, err
    assert f"{rows['student, after']:.2f} / " in out
