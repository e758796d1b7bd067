"""Peak memory (RSS) of a distillation run, stage by stage: where a KD/scratch run's memory goes.

Each method runs in a fresh process (``--child``) that reports ``VmRSS`` and ``VmHWM`` (peak RSS)
from ``/proc/self/status`` after: the imports, ``Trainer.setup()`` (models, optimiser, EMA, data
cache), the first iteration, and the last one. For scratch and kd the same networks also run in
a plain PyTorch loop (no dukd code: the floor any trainer pays, BasicSR's included). The pair is
the issue's CPU pair: EDSR 64x16 -> 32x4, x4, batch 4, 24 px LR patches, built-in photos,
random weights.

    python benchmarks/distill_memory.py                      # scratch, kd, dukd
    python benchmarks/distill_memory.py --methods kd --iters 20
    python benchmarks/distill_memory.py --json out.json      # default benchmarks/results/distill_memory.json

Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def status_mib() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MiB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def child(args) -> int:
    stages = [{"stage": "python", **status_mib()}]
    sys.path.insert(0, str(ROOT))
    import torch

    stages.append({"stage": "import torch", **status_mib()})
    from safetensors.torch import save_file

    from dukd_cli.distill import config as C
    from dukd_cli.distill.display import Display
    from dukd_cli.distill.trainer import Trainer
    from dukd_cli.models.factory import create_model

    stages.append({"stage": "import dukd trainer", **status_mib()})
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.tmp)
    w = tmp / "teacher.safetensors"
    if not w.is_file():
        torch.manual_seed(0)
        t = create_model("edsr", 4, n_feats=64, n_resblocks=16)
        save_file({k: v.contiguous() for k, v in t.state_dict().items()}, str(w))
        del t
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = "edsr", 4, {"n_feats": 32, "n_resblocks": 4}
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = (
        "edsr",
        str(w),
        {"n_feats": 64, "n_resblocks": 16},
    )
    cfg.method.name = args.method
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = ["builtin"], str(tmp / "cache"), 0
    cfg.train.iters, cfg.train.batch_size, cfg.train.patch_size = args.iters, 4, 24
    cfg.train.device, cfg.train.log_every, cfg.train.save_every = "cpu", 10, 10**9
    cfg.val.every = 0
    tr = Trainer(cfg, tmp / f"run-{args.method}-{os.getpid()}", display=Display(enabled=False))
    tr.setup()
    stages.append({"stage": "setup", **status_mib()})
    seen = {}

    def cb(trainer, it):
        if it == 1:
            stages.append({"stage": "iteration 1", **status_mib()})
        seen["it"] = it

    tr.callbacks.append(cb)
    tr.fit()
    stages.append({"stage": f"iteration {seen.get('it')} (end)", **status_mib()})
    print(json.dumps({"method": args.method, "stages": stages}))
    return 0


def floor(args) -> int:
    """The same networks and batch sizes in a plain PyTorch loop (no dukd): the floor to compare with."""
    stages = [{"stage": "python", **status_mib()}]
    sys.path.insert(0, str(ROOT))
    import copy

    import torch
    import torch.nn.functional as F

    from zoo.edsr import EDSR

    stages.append({"stage": "import torch + zoo.edsr", **status_mib()})
    torch.manual_seed(0)
    teacher = EDSR(4, n_feats=64, n_resblocks=16).eval().requires_grad_(False)
    student = EDSR(4, n_feats=32, n_resblocks=4)
    ema = copy.deepcopy(student)
    opt = torch.optim.Adam(student.parameters(), lr=1e-4, betas=(0.9, 0.99))
    stages.append({"stage": "setup", **status_mib()})
    g = torch.Generator().manual_seed(0)
    for i in range(args.iters):
        lr, hr = torch.rand(4, 3, 24, 24, generator=g), torch.rand(4, 3, 96, 96, generator=g)
        out = student(lr)
        loss = F.l1_loss(out, hr)
        if args.method != "scratch":
            with torch.no_grad():
                t = teacher(lr)
            loss = loss + F.l1_loss(out, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), student.parameters(), strict=True):
                e.lerp_(p, 0.001)
        if i == 0:
            stages.append({"stage": "iteration 1", **status_mib()})
    stages.append({"stage": f"iteration {args.iters} (end)", **status_mib()})
    print(json.dumps({"method": f"{args.method} (plain torch loop)", "stages": stages}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="scratch,kd,dukd")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the child (0: default)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per method (the table shows the last)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "distill_memory.json"))
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the plain-PyTorch loop rows")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="kd", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if args.floor_child:
        return floor(args)
    results = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeat):
            runs = [(m, "--child") for m in args.methods.split(",")]
            if args.floor:
                runs += [(m, "--floor-child") for m in args.methods.split(",") if m in ("scratch", "kd")]
            for m, mode in runs:
                cmd = [
                    sys.executable,
                    __file__,
                    mode,
                    "--method",
                    m,
                    "--tmp",
                    d,
                    "--iters",
                    str(args.iters),
                    "--threads",
                    str(args.threads),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                results.append(r)
                print(f"{r['method']}:")
                for s in r["stages"]:
                    print(f"  {s['stage']:24s} RSS {s['VmRSS']:8.1f} MiB   peak {s['VmHWM']:8.1f} MiB")
    report = {
        "benchmark": "distill_memory",
        "python": platform.python_version(),
        "iters": args.iters,
        "pair": "edsr 64x16 -> edsr 32x4, x4, batch 4, patch 24, builtin data, cpu",
        "results": results,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
