"""Wall time of two audit findings (issue #15), each as an A/B alternated in one run:

* ``dukd zoo list`` with a cold parameter cache (a fresh ``$DUKD_CACHE``: every network is built on
  the meta device, as before the cache existed) against a warm one;
* resolving an ``hf://`` source that is not cached while the Hub is unreachable (``HF_ENDPOINT``
  pointing at a closed 127.0.0.1 port, ``HF_HUB_OFFLINE`` unset), through dukd's resolver (one TCP
  probe, then the cache only) against a bare ``huggingface_hub.hf_hub_download`` (what dukd called
  before: the Hub client's retries).

Each sample is a fresh ``python`` process (imports included), run alternately. Prints a table and
writes JSON (``--json``, default ``benchmarks/results/cli_faults_speed.json``).

    python benchmarks/cli_faults_speed.py [--repeats 3] [--json out.json] [--no-hub]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HUB_DUKD = "from dukd_cli.models.weights import resolve\ntry:\n    resolve('hf://o/r/w.safetensors')\nexcept Exception as e:\n    print(type(e).__name__)"
HUB_BARE = (
    "import os\nfrom huggingface_hub import hf_hub_download\ntry:\n"
    "    hf_hub_download('o/r', 'w.safetensors', cache_dir=os.environ['HF_HUB_CACHE'])\n"
    "except Exception as e:\n    print(type(e).__name__)"
)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cli_faults_speed.json")
    ap.add_argument("--no-hub", action="store_true", help="Skip the Hub timing (~30 s per bare sample).")
    a = ap.parse_args()
    base = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    results: dict[str, list[float]] = {
        "zoo_list_cold": [],
        "zoo_list_warm": [],
        "hub_down_dukd": [],
        "hub_down_bare": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        warm = dict(base, DUKD_CACHE=str(Path(tmp) / "warm"))
        _time([sys.executable, "-m", "dukd_cli", "zoo", "list"], warm)  # fill the warm cache
        hub = dict(
            base, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HUB_CACHE=str(Path(tmp) / "hub")
        )
        hub.pop("HF_HUB_OFFLINE", None)
        for i in range(a.repeats):
            cold = dict(base, DUKD_CACHE=str(Path(tmp) / f"cold{i}"))
            results["zoo_list_cold"].append(_time([sys.executable, "-m", "dukd_cli", "zoo", "list"], cold))
            results["zoo_list_warm"].append(_time([sys.executable, "-m", "dukd_cli", "zoo", "list"], warm))
            if not a.no_hub:
                results["hub_down_dukd"].append(_time([sys.executable, "-c", HUB_DUKD], hub))
                results["hub_down_bare"].append(_time([sys.executable, "-c", HUB_BARE], hub))
    rows = {k: {"median_s": round(statistics.median(v), 3), "samples_s": [round(x, 3) for x in v]}
            for k, v in results.items() if v}  # fmt: skip
    print(f"{'case':<16} {'median s':>9}  samples")
    for k, r in rows.items():
        print(f"{k:<16} {r['median_s']:>9.2f}  {r['samples_s']}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(
        json.dumps({"repeats": a.repeats, "cpu_count": os.cpu_count(), "results": rows}, indent=2) + "\n"
    )
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
