"""benchmarks/gpu_suite.py runs on the CPU with --quick and writes its JSON and Markdown; the deadline holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.py"


def _run(tmp_path, *args):
    out = tmp_path / "suite.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), out.with_suffix(".md").read_text(), proc.stdout


def test_quick_run_shape(tmp_path):
    """Training eager and compiled (aot_eager under --quick), the authors' iteration, upscale; in
    one process (--quick's default) to keep the test short."""
    variants = ["eager", "channels_last+compile"]
    report, md, _ = _run(
        tmp_path,
        "--variants",
        ",".join(variants),
        "--methods",
        "dukd",
        "--upscale-models",
        "edsr-s",
        "--upscale-runtimes",
        "eager-fp32,eager-bf16",
        "--deadline",
        "500",  # --quick's 240 s would skip cells on a loaded machine; the deadline has its own test
    )
    assert report["benchmark"] == "gpu_suite" and report["quick"] is True
    assert report["compile_backend"] == "aot_eager" and report["elapsed_s"] <= report["deadline_s"]
    cells = report["cells"]
    keys = {c["key"] for c in cells}
    assert {f"train/edsr-tiny/dukd/{v}" for v in variants} | {"authors/edsr-tiny", "syncs/edsr-tiny"} <= keys
    assert {"upscale/edsr-s/eager-fp32", "upscale/edsr-s/eager-bf16"} <= keys
    ok = [c for c in cells if c["status"] == "ok"]
    train = [c for c in ok if c["section"] == "train"]
    assert {(c["method"], c["variant"], c["source"]) for c in train} == {
        ("dukd", v, s) for v in variants for s in ("synthetic", "data")
    }
    for c in train + [c for c in ok if c["section"] == "authors"]:
        assert c["it_s"] > 0 and c["measured_iters"] >= 1 and c["first_call_s"] >= 0
        assert c["peak_gpu_mib"] is None  # CPU: no GPU memory to report
    (authors,) = [c for c in ok if c["section"] == "authors"]
    assert authors["variant"].startswith("authors")
    ratio = report["summary"]["dukd_over_authors"]["edsr-tiny"]
    assert set(ratio) == set(variants) and all(r["ratio"] > 0 for r in ratio.values())
    (syncs,) = [c for c in cells if c["key"] == "syncs/edsr-tiny"]
    assert syncs["status"] == "skipped" and "CUDA" in syncs["reason"]
    up = {c["runtime"]: c for c in ok if c["section"] == "upscale"}
    assert set(up) == {"eager-fp32", "eager-bf16"} and all(
        c["fps"] > 0 and c["size"] == 16 for c in up.values()
    )
    assert "## Training (it/s)" in md and "## Upscale" in md and "dukd / the authors" in md
    assert "| edsr-tiny | dukd | eager | synthetic |" in md


def test_global_deadline_skips_and_says_so(tmp_path):
    report, md, out = _run(tmp_path, "--deadline", "0", "--sections", "train,authors", "--methods", "kd")
    assert report["cells"] and all(c["status"] == "skipped" for c in report["cells"])
    assert all("deadline" in c["reason"] for c in report["cells"])
    assert report["summary"]["cells_ok"] == 0 and "## Not measured" in md
    assert "global deadline" in out


def test_a_group_past_its_timeout_is_killed_and_reported(tmp_path):
    """Groups run in their own processes with a hard timeout: a hung compilation cannot overrun."""
    report, md, out = _run(tmp_path, "--isolate", "--sections", "authors", "--group-seconds", "0.2")
    (cell,) = report["cells"]
    assert (
        cell["key"] == "authors/edsr-tiny" and cell["status"] == "timeout" and "timed out" in cell["reason"]
    )
    assert "| authors/edsr-tiny | timeout |" in md and "timed out" in out
