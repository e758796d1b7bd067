"""Start-up time of the ``dukd`` console script against importing torch.

Each measurement is a fresh process, timed from start to exit (wall clock, as a user waits for
it): the installed ``dukd`` script beside this Python with the given arguments (default
``--help``), and ``python -c "import torch"``. The commands alternate, ``--rounds`` times, so both
see the same background load on a shared machine; the medians and their ratio are printed and
written as JSON.

    python benchmarks/startup.py                          # dukd --help, 9 rounds
    python benchmarks/startup.py --rounds 5 -- zoo list   # another command
    python benchmarks/startup.py --json out.json          # default benchmarks/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dukd_script() -> str:
    here = Path(sys.executable).parent / "dukd"
    found = str(here) if here.is_file() else shutil.which("dukd")
    if not found:
        raise SystemExit("the dukd console script is not installed here (pip install -e .)")
    return found


def wall(cmd: list[str]) -> float:
    """Seconds from starting ``cmd`` to its exit (its output discarded); a failure stops the run."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9, help="alternated pairs of processes (default 9)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    ap.add_argument("args", nargs="*", help="dukd's arguments (default --help); put them after --")
    a = ap.parse_args(argv)
    dukd_args = a.args or ["--help"]
    commands = {
        "dukd": [dukd_script(), *dukd_args],
        "import torch": [sys.executable, "-c", "import torch"],
    }
    for cmd in commands.values():  # warm the file cache once, untimed
        wall(cmd)
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(a.rounds):
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["dukd"] / med["import torch"]
    result = {
        "command": "dukd " + " ".join(dukd_args),
        "rounds": a.rounds,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ratio": round(ratio, 3),
        "times_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    print(
        f"{result['command']}: median {med['dukd']:.3f} s; python -c 'import torch': median "
        f"{med['import torch']:.3f} s; ratio {ratio:.2f} ({a.rounds} alternated rounds)"
    )
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {a.json}")
    return result


if __name__ == "__main__":
    main()
