"""README.md's code, run as written.

Every command of README's ``bash`` blocks and every ``python`` block is either executed (in a
scratch folder, through the installed ``dukd`` script) and must succeed, or is listed in
:data:`SKIP` with the reason it cannot run here (network, a GPU, a file this machine does not have,
hours of CPU). A command added to README that is in neither fails :func:`test_every_command_is_run_or_skipped_with_a_reason`.

The scratch folder holds what README's prose supposes a user has: ``photo.png`` / ``img.png`` (a
photo), and, where the shared data is present, ``path/to/benchmarks`` (the benchmark sets) and
``IMDN_x4.pth`` (IMDN's official x4 file). ``DUKD_DATA`` points at a folder with Set5 only, so that
a command evaluating "every set present" stays short.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_root
from PIL import Image
from test_journey import dukd_script

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

NETWORK = "needs the network (installs packages or downloads)"
SKIP: dict[str, str] = {
    # Install: what the test suite itself runs under.
    "./dev demo": "sets up .venv (downloads packages), then the full demo; tests/test_journey.py runs a short demo",
    "./dev test": "the test suite itself",
    "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu ./dev test": "the test suite itself, "
    + NETWORK,
    "pip install torch==2.13.0": NETWORK,
    'pip install -e ".[dev]"': NETWORK,
    'pip install -e ".[report]"': NETWORK,
    'pip install -e ".[onnx]"': NETWORK,
    "dukd distill --demo": "4 minutes on a 2-core CPU; tests/test_journey.py runs it with 12 iterations",
    # Files this machine does not have (and that are not public: see "The paper's data and teachers").
    "dukd distill --teacher edsr-l --student edsr-s --scale 4 --data DIV2K/ --out runs/edsr-s-x4": "needs DIV2K and the paper's EDSR file; hours",
    "dukd distill --teacher imdn --teacher-weights IMDN_x4.pth --student edsr --student-arg n_feats=32 --student-arg n_resblocks=4 --scale 4 --data train/t91 --data train/bsd200 --iters 20000 --batch-size 16 --seed 0 --val-every 1000 --val-bench set5 --data-dir benchmarks/ --out runs/tiny": "20000 iterations: hours on a CPU",
    "dukd distill --resume runs/tiny --iters 40000": "continues the run above",
    "dukd report runs/scratch runs/kd runs/dukd --bench set5,set14 --data-dir ../shared/data/benchmarks -o report.html": "needs the three runs of benchmarks/shipped/recipe.sh (hours)",
    "dukd evaluate --model swinir-l --weights 001_classicalSR_DIV2K_s48w8_SwinIR-M_x4.pth --scale 4 --bench urban100 --device cuda --tile 256 --self-ensemble": "needs a GPU and SwinIR's file, "
    + NETWORK,
    "dukd upscale photos/ 'more/*.jpg' -o out/ --model runs/tiny --ext png": "needs the runs/tiny run above",
    "dukd upscale big.tif --model exported/ --runtime onnx --tile 256 --outscale 3.5": "needs an export of runs/tiny",
    "dukd export --model runs/tiny --format safetensors,onnx -o exported/": "needs the runs/tiny run above",
    "dukd export --model imdn --weights IMDN_x4.pth --scale 4 -o imdn-x4/ --push-to-hub me/imdn-x4": "uploads to the Hub, "
    + NETWORK,
    "dukd evaluate --bench urban100": "downloads Urban100 (135 MB), " + NETWORK,
    "dukd zoo info RRDB_x4.pth": "needs an ESRGAN file (not on this machine)",
    "dukd distill --teacher RRDB_x4.pth --student edsr --student-arg n_feats=32 --student-arg n_resblocks=4 --scale 4 --data DIV2K/": "needs an ESRGAN file and DIV2K",
    "dukd evaluate --model 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth --scale 4": "needs SwinIR's lightweight file (not on this machine)",
    "dukd upscale photo.png --model RRDB_x4.pth": "needs an ESRGAN file (not on this machine)",
    # Benchmarks and recipes: long, and some need the network.
    "bash benchmarks/shipped/recipe.sh teacher": "66 min on 2 CPU cores",
    "bash benchmarks/shipped/recipe.sh students": "54 min on 2 CPU cores",
    "bash benchmarks/shipped/recipe.sh evaluate": "needs the runs of the two lines above",
    "python benchmarks/shipped/package.py": "rewrites zoo/weights/ from those runs",
    "python benchmarks/upscale_memory.py --cli --size 6000 --tmp /tmp": "a 6000 px image: minutes",
    "python benchmarks/upscale_memory.py --cli --size 3000 --code /path/to/old/checkout": "needs an old checkout",
    "pip install --target /tmp/cv2 opencv-python-headless": NETWORK,
    "python benchmarks/upscale_vs_loop.py --cv2-path /tmp/cv2 --rounds 3 [--code /path/to/old/checkout]": "needs OpenCV (the line above) and minutes",
}
SKIP[
    "dukd study runs/study --preset cpu-short -m scratch -m kd -m fakd -m at -m fitnet -m dukd -m dukd+at --seeds 0,1 --iters 100"
] = "14 training runs: 25 minutes here (README's table; tests/test_study.py runs a tiny grid)"
SKIP[
    "dukd export --model imdn --weights IMDN_x4.pth --scale 4 -o imdn-x4/ --format onnx --quantize int8 --calib ../shared/data/train/bsd200 --max-drop 0.25"
] = (
    "IMDN's int8 calibration and sensitivity pass take minutes; tests/test_quantize.py runs the same "
    "path on a tiny network"
)
SKIP["dukd evaluate --model imdn-x4/ --runtime onnx-int8 --bench set5,set14"] = (
    "needs the imdn-x4/ export above"
)
SKIP["dukd study runs/study"] = "continues the study above"
SKIP["dukd report runs/study -o study.html"] = "needs the study above"
SKIP_PYTHON = {
    "EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth": "needs the paper's EDSR file (not public: see 'The paper's data and teachers')",
}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), re.S | re.M)


def commands() -> list[str]:
    """Every command of README's bash blocks: continuations joined, comments dropped."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(" ".join(line.split()))
    return out


def test_every_command_is_run_or_skipped_with_a_reason():
    cmds = commands()
    assert len(cmds) > 20
    unknown = [c for c in cmds if c not in SKIP and not c.startswith("dukd ")]
    assert not unknown, f"README commands neither run nor skipped with a reason: {unknown}"
    stale = [c for c in SKIP if c not in cmds]
    assert not stale, f"SKIP lists commands README no longer has: {stale}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A user's folder: a photo, and (where the shared data is) the benchmarks and IMDN's file."""
    d = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(0)
    for name in ("photo.png", "img.png"):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(d / name)
    shared = shared_root()
    bench = shared / "data" / "benchmarks"
    (d / "path" / "to").mkdir(parents=True)
    (d / "set5-only").mkdir()
    if bench.is_dir():
        (d / "path" / "to" / "benchmarks").symlink_to(bench)
        (d / "set5-only" / "Set5").symlink_to(bench / "Set5")
    imdn = shared / "models" / "imdn" / "IMDN_x4.pth"
    if imdn.is_file():
        (d / "IMDN_x4.pth").symlink_to(imdn)
    return d


def _needs(cmd: str, scratch: Path) -> str | None:
    """Why ``cmd`` cannot run here (a shared file it names is absent), or None."""
    if "path/to/benchmarks" in cmd and not (scratch / "path" / "to" / "benchmarks").exists():
        pytest.skip("the shared benchmark sets are absent (DUKD_SHARED)")
    if "IMDN_x4.pth" in cmd and not (scratch / "IMDN_x4.pth").exists():
        pytest.skip("IMDN_x4.pth is absent from the shared data (DUKD_SHARED)")
    return None


RUN = [c for c in dict.fromkeys(commands()) if c not in SKIP]


@pytest.mark.parametrize("cmd", RUN)
def test_readme_command_runs_as_written(cmd, scratch, tmp_path):
    _needs(cmd, scratch)
    argv = shlex.split(cmd)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "DUKD_DATA": str(scratch / "set5-only"),
        "DUKD_CACHE": str(scratch / ".cache"),  # one user's cache across the commands, as in a shell
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [dukd_script(), *argv[1:]], cwd=scratch, env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
    assert "Traceback" not in proc.stderr


def test_readme_claims_of_the_commands(scratch, tmp_path):
    """What README's comments say the commands print."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DUKD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    info = subprocess.run([dukd_script(), "zoo", "info", "edsr-l", "--scale", "4"], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert "43.09 M" in info.stdout  # "dukd zoo info edsr-l --scale 4  # ..., parameters (43.09 M), ..."
    dry = subprocess.run(
        [dukd_script(), "distill", "--teacher", "edsr-l", "--student", "edsr-s", "--scale", "4", "--dry-run"],
        cwd=scratch, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert dry.returncode == 0 and not (scratch / "runs").exists()  # "downloads nothing", writes nothing


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_runs_as_written(index, scratch, tmp_path):
    code = blocks("python")[index]
    for marker, why in SKIP_PYTHON.items():
        if marker in code:
            pytest.skip(why)
    script = tmp_path / "block.py"
    script.write_text(code)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DUKD_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(script)], cwd=scratch, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
