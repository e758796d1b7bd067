"""Distillation speed: iterations/s of scratch, kd and dukd, on synthetic tensors and through the
real data pipeline, for the paper's EDSR pair (edsr-l -> edsr-s, x4) and a small pair.

Every number goes through the trainer's own iteration (``Trainer.train_step``: autocast, the
method's loss groups, backward, optimiser step(s), EMA), so it measures what ``dukd distill`` runs.
Synthetic: one fixed batch already on the device. Real data: the trainer's DataLoader (worker
processes, memory-mapped decode cache, uint8 transfer, conversion on the device). On a GPU every
timed span is bracketed by ``torch.cuda.synchronize()``.

    python benchmarks/distill_speed.py                 # both pairs (use a GPU for the EDSR pair)
    python benchmarks/distill_speed.py --quick         # CPU-sized: small pair, small batches
    python benchmarks/distill_speed.py --json out.json

Weights are random (speed does not depend on them); the teacher's are written to a temporary file
because the trainer loads its teacher from a weight source.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dukd_cli.distill import config as C  # noqa: E402
from dukd_cli.distill.display import Display  # noqa: E402
from dukd_cli.distill.trainer import Trainer  # noqa: E402
from dukd_cli.models.factory import create_model, resolve_spec  # noqa: E402

PAIRS = {
    # name: (teacher, teacher kwargs, student, student kwargs, scale)
    "edsr": ("edsr-l", {}, "edsr-s", {}, 4),
    "small": ("edsr", {"n_feats": 32, "n_resblocks": 8}, "edsr", {"n_feats": 16, "n_resblocks": 4}, 4),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _teacher_file(pair: str, tmp: Path) -> str:
    from safetensors.torch import save_file

    t, tk, _, _, s = PAIRS[pair]
    spec = resolve_spec(t, s, kwargs=tk)
    torch.manual_seed(0)
    model = create_model(spec.arch, s, **spec.kwargs)
    path = tmp / f"{pair}-teacher.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def bench_one(pair, method, args, teacher_w, tmp) -> list[dict]:
    t, tk, st, sk, s = PAIRS[pair]
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = st, s, sk
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = t, teacher_w, tk
    cfg.method.name, cfg.method.update = method, args.update
    cfg.data.paths, cfg.data.workers = args.data, args.workers
    cfg.train.batch_size, cfg.train.patch_size, cfg.train.device = (
        args.batch_size,
        args.patch_size,
        args.device,
    )
    cfg.train.iters = 10**9
    cfg.val.every = 0
    tr = Trainer(cfg, tmp / f"run-{pair}-{method}", display=Display(enabled=False))
    tr.setup()
    dev = tr.session.device
    out = []
    # Synthetic: one batch on the device.
    g = torch.Generator().manual_seed(0)
    p = args.patch_size
    lr_u8 = torch.randint(0, 256, (args.batch_size, 3, p, p), generator=g, dtype=torch.uint8)
    hr_u8 = torch.randint(0, 256, (args.batch_size, 3, p * s, p * s), generator=g, dtype=torch.uint8)
    batch = tr.device_batch(lr_u8, hr_u8)
    for _ in range(args.warmup):
        tr.train_step(batch)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        tr.train_step(batch)
    _sync(dev)
    syn = args.iters / (time.perf_counter() - t0)
    out.append({"pair": pair, "method": method, "source": "synthetic", "it_s": syn})
    # Real data: the trainer's loader (workers), transfer and conversion included.
    it = iter(tr.make_loader(start_iter=0))
    for _ in range(args.warmup):
        tr.train_step(tr.device_batch(*next(it)))
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        tr.train_step(tr.device_batch(*next(it)))
    _sync(dev)
    real = args.iters / (time.perf_counter() - t0)
    out.append(
        {"pair": pair, "method": method, "source": "data", "it_s": real, "data_over_synthetic": real / syn}
    )
    del it
    tr.session.method.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--pairs", default=None, help="comma list of: " + ", ".join(PAIRS) + " (default: all; --quick: small)"
    )
    ap.add_argument("--methods", default="scratch,kd,dukd")
    ap.add_argument("--update", default="two-step", choices=["two-step", "single"])
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--patch-size", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None, help="data workers (default: the trainer's default)")
    ap.add_argument("--data", action="append", default=None, help="training data (default: builtin)")
    ap.add_argument(
        "--quick", action="store_true", help="CPU-sized run: small pair, batch 4, patch 24, few iterations"
    )
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "distill_speed.json"))
    args = ap.parse_args(argv)
    q = args.quick
    args.pairs = (args.pairs or ("small" if q else "edsr,small")).split(",")
    args.iters = args.iters or (5 if q else 50)
    args.warmup = args.warmup if args.warmup is not None else (2 if q else 10)
    args.batch_size = args.batch_size or (4 if q else 16)
    args.patch_size = args.patch_size or (24 if q else 48)
    args.data = args.data or ["builtin"]
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for pair in args.pairs:
            if pair not in PAIRS:
                ap.error(f"unknown pair {pair}")
            w = _teacher_file(pair, tmp)
            for method in args.methods.split(","):
                rows = bench_one(pair, method, args, w, tmp)
                for r in rows:
                    r.update(batch_size=args.batch_size, patch_size=args.patch_size, update=args.update)
                    print(
                        f"{r['pair']:6s} {r['method']:8s} {r['source']:9s} {r['it_s']:8.2f} it/s"
                        + (
                            f"  (data/synthetic {r['data_over_synthetic']:.2f})"
                            if "data_over_synthetic" in r
                            else ""
                        ),
                        flush=True,
                    )
                results.append(rows)
    dev = "cpu"
    if torch.cuda.is_available() and args.device in ("auto", "cuda") or args.device.startswith("cuda"):
        dev = torch.cuda.get_device_name(0)
    report = {
        "benchmark": "distill_speed",
        "device": dev,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "quick": q,
        "iters": args.iters,
        "warmup": args.warmup,
        "results": [r for rows in results for r in rows],
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
