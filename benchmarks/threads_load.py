"""CPU training throughput with other processes competing for the cores: before and after the thread budget.

Each measurement is a fresh process running the trainer's own iteration (``Trainer.train_step`` on
batches from its loader) for a DUKD (or --method) step on the CPU, EDSR 64x16 -> 32x4, x4, batch 4,
24 px LR patches, random weights, built-in photos:

* ``before``: torch is imported before dukd, so OpenMP starts with its default wait policy
  (threads spin a long time at every barrier) -- what dukd did before :mod:`dukd_cli.runtime.threads`;
* ``after``: dukd is imported first (it sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set one)
  and the process applies ``threads.plan()`` (the CLI does both).

While they run, ``--load N`` busy processes (a Python loop each) compete for the cores. The two
variants alternate, ``--rounds`` times, so both see the same background load. Reported: it/s,
CPU seconds per iteration, and the slowest and fastest iteration.

    python benchmarks/threads_load.py                     # 1 busy process, 3 rounds
    python benchmarks/threads_load.py --load 0 --rounds 2
    python benchmarks/threads_load.py --json out.json     # default benchmarks/results/threads_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("before", "after")


def _busy() -> None:  # pragma: no cover - the load process
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def child(args) -> int:
    import resource

    if args.variant == "before":
        import torch  # the OpenMP runtime starts with its defaults

        sys.path.insert(0, str(ROOT))
        from dukd_cli.runtime import threads
    else:
        sys.path.insert(0, str(ROOT))
        from dukd_cli.runtime import threads  # noqa: I001  (first: it sets the wait policy before torch loads)

        import torch

        threads.apply(threads.plan(None))
    from safetensors.torch import save_file

    from dukd_cli.distill import config as C
    from dukd_cli.distill.display import Display
    from dukd_cli.distill.trainer import Trainer
    from dukd_cli.models.factory import create_model

    tmp = Path(args.tmp)
    w = tmp / "teacher.safetensors"
    if not w.is_file():
        torch.manual_seed(0)
        t = create_model("edsr", 4, n_feats=64, n_resblocks=16)
        save_file({k: v.contiguous() for k, v in t.state_dict().items()}, str(w))
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = "edsr", 4, {"n_feats": 32, "n_resblocks": 4}
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = (
        "edsr",
        str(w),
        {"n_feats": 64, "n_resblocks": 16},
    )
    cfg.method.name = args.method
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = ["builtin"], str(tmp / "cache"), 0
    cfg.train.iters, cfg.train.batch_size, cfg.train.patch_size = 10**9, 4, 24
    cfg.train.device, cfg.val.every = "cpu", 0
    tr = Trainer(cfg, tmp / f"run-{os.getpid()}", display=Display(enabled=False))
    tr.setup()
    it = iter(tr.make_loader(start_iter=0))
    for _ in range(args.warmup):
        tr.train_step(tr.device_batch(*next(it)))
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    t_all = time.perf_counter()
    for _ in range(args.iters):
        t0 = time.perf_counter()
        tr.train_step(tr.device_batch(*next(it)))
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_all
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = {
        "variant": args.variant,
        "it_s": round(args.iters / wall, 4),
        "cpu_s_per_it": round(cpu / args.iters, 4),
        "slowest_it_s": round(max(times), 4),
        "fastest_it_s": round(min(times), 4),
        "torch_threads": torch.get_num_threads(),
        "cores": threads.available_cores(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    print(json.dumps(out))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="dukd")
    ap.add_argument("--load", type=int, default=1, help="busy processes competing for the cores (default 1)")
    ap.add_argument("--rounds", type=int, default=3, help="before/after pairs, alternated (default 3)")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "threads_load.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="after", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    import multiprocessing as mp

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
    }
    busy = [mp.Process(target=_busy, daemon=True) for _ in range(args.load)]
    for p in busy:
        p.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as d:
            for r in range(args.rounds):
                for v in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                    cmd = [
                        sys.executable,
                        __file__,
                        "--child",
                        "--variant",
                        v,
                        "--tmp",
                        d,
                        "--method",
                        args.method,
                        "--iters",
                        str(args.iters),
                        "--warmup",
                        str(args.warmup),
                    ]
                    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
                    row = {"round": r, **json.loads(res.stdout.strip().splitlines()[-1])}
                    rows.append(row)
                    print(
                        f"round {r} {v:6s} {row['it_s']:7.3f} it/s  {row['cpu_s_per_it']:6.3f} CPU s/it  "
                        f"iteration {row['fastest_it_s']:.2f}-{row['slowest_it_s']:.2f} s",
                        flush=True,
                    )
    finally:
        for p in busy:
            p.terminate()
            p.join()
    summary = {}
    for v in VARIANTS:
        sel = [x for x in rows if x["variant"] == v]
        summary[v] = {
            "median_it_s": statistics.median(x["it_s"] for x in sel),
            "median_cpu_s_per_it": statistics.median(x["cpu_s_per_it"] for x in sel),
        }
    summary["after_over_before_it_s"] = round(
        summary["after"]["median_it_s"] / summary["before"]["median_it_s"], 3
    )
    print(json.dumps(summary))
    try:
        load_avg = os.getloadavg()
    except OSError:
        load_avg = None
    report = {
        "benchmark": "threads_load",
        "python": platform.python_version(),
        "method": args.method,
        "pair": "edsr 64x16 -> edsr 32x4, x4, batch 4, patch 24, builtin data, cpu",
        "busy_processes": args.load,
        "iters": args.iters,
        "warmup": args.warmup,
        "load_average_at_end": load_avg,
        "rows": rows,
        "summary": summary,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
