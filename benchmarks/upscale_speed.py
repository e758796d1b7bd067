"""Upscaling speed: frames/s at a 256x256 input, x4, for edsr-s, rcan-s and swinir-s (random weights).

Rows: PyTorch eager and ONNX Runtime on the CPU; on a CUDA machine also PyTorch eager (fp32, bf16)
and ``torch.compile``d. SwinIR-S is also timed with its reference (non-SDPA) attention to show
what the fused attention buys (outputs are the same). Timing: warm-up runs first, then the mean
of ``--iters`` runs, CUDA synchronised around each.

    python benchmarks/upscale_speed.py --quick                 # CPU: a couple of runs each
    python benchmarks/upscale_speed.py --json results.json      # default benchmarks/results/upscale_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dukd_cli.models.factory import count_parameters, create_model  # noqa: E402

MODELS = ("edsr-s", "rcan-s", "swinir-s")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device: torch.device, warmup: int, iters: int) -> tuple[float, list[float]]:
    """Mean seconds per call after ``warmup`` calls, and every timed call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times), times


@contextlib.contextmanager
def reference_attention(model: torch.nn.Module):
    touched = [m for m in model.modules() if hasattr(m, "use_sdpa")]
    for m in touched:
        m.use_sdpa = False
    try:
        yield bool(touched)
    finally:
        for m in touched:
            del m.use_sdpa


def row(
    model: str, runtime: str, device: str, precision: str, sec: float, times: list[float], **extra
) -> dict:
    r = {
        "model": model,
        "runtime": runtime,
        "device": device,
        "precision": precision,
        "fps": round(1.0 / sec, 3),
        "ms_per_frame": round(sec * 1000, 2),
        "iters": len(times),
        "times_s": [round(t, 4) for t in times],
        **extra,
    }
    print(
        f"{model:10s} {runtime:22s} {device:6s} {precision:5s} {r['fps']:9.3f} frames/s  ({r['ms_per_frame']:.1f} ms)",
        flush=True,
    )
    return r


def bench_cpu(name: str, args, results: list[dict], tmp: Path) -> None:
    dev = torch.device("cpu")
    torch.manual_seed(0)
    model = create_model(name, args.scale).eval()
    x = torch.rand(1, 3, args.size, args.size)
    with torch.inference_mode():
        sec, times = time_fn(lambda: model(x), dev, args.warmup, args.iters)
    results.append(row(name, "torch-eager", "cpu", "fp32", sec, times, params=count_parameters(model)))
    if name.startswith("swinir") and not args.quick:
        with reference_attention(model) as ok, torch.inference_mode():
            if ok:
                sec, times = time_fn(lambda: model(x), dev, args.warmup, args.iters)
                results.append(row(name, "torch-eager-naive-attn", "cpu", "fp32", sec, times))
    if args.no_onnx:
        return
    try:
        from dukd_cli.export.onnx import OnnxModel, export_onnx

        path = tmp / f"{name}.onnx"
        t0 = time.perf_counter()
        info = export_onnx(model, path, log=lambda m: print("  " + m, flush=True))
        export_s = time.perf_counter() - t0
        om = OnnxModel(
            path,
            args.scale,
            window_size=getattr(model, "window_size", None),
            fixed_input_size=info.fixed_input_size,
            threads=args.threads,
        )
        sec, times = time_fn(lambda: om(x), dev, args.warmup, args.iters)
        results.append(
            row(
                name,
                "onnxruntime",
                "cpu",
                "fp32",
                sec,
                times,
                export_s=round(export_s, 1),
                parity_max_abs_diff=info.max_abs_diff,
                dynamic_hw=info.dynamic_hw,
            )
        )
    except Exception as exc:  # a benchmark reports, it does not stop
        print(f"  {name}: ONNX Runtime row failed: {exc}", flush=True)
        results.append({"model": name, "runtime": "onnxruntime", "device": "cpu", "error": str(exc)[:300]})


def bench_cuda(name: str, args, results: list[dict]) -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model(name, args.scale).eval().to(dev)
    x = torch.rand(1, 3, args.size, args.size, device=dev)
    warm, iters = args.warmup + 2, args.iters * 4
    with torch.inference_mode():
        sec, times = time_fn(lambda: model(x), dev, warm, iters)
        results.append(row(name, "torch-eager", "cuda", "fp32", sec, times))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            sec, times = time_fn(lambda: model(x), dev, warm, iters)
        results.append(row(name, "torch-eager", "cuda", "bf16", sec, times))
        if name.startswith("swinir"):
            with reference_attention(model) as ok:
                if ok:
                    sec, times = time_fn(lambda: model(x), dev, warm, iters)
                    results.append(row(name, "torch-eager-naive-attn", "cuda", "fp32", sec, times))
    if args.no_compile:
        return
    try:
        compiled = torch.compile(model, mode=args.compile_mode)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
            sync(dev)
            compile_s = time.perf_counter() - t0
            sec, times = time_fn(lambda: compiled(x), dev, warm, iters)
        results.append(
            row(
                name,
                f"torch-compile({args.compile_mode})",
                "cuda",
                "fp32",
                sec,
                times,
                compile_s=round(compile_s, 1),
            )
        )
    except Exception as exc:
        print(f"  {name}: torch.compile row failed: {exc}", flush=True)
        results.append({"model": name, "runtime": "torch-compile", "device": "cuda", "error": str(exc)[:300]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated presets")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="input side")
    ap.add_argument("--iters", type=int, default=None, help="timed runs per row (default 5; 2 with --quick)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="few CPU iterations, no reference-attention row")
    ap.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime intra-op threads")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument(
        "--no-cpu", action="store_true", help="skip the CPU rows (e.g. on a GPU machine in a hurry)"
    )
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "upscale_speed.json"))
    args = ap.parse_args(argv)
    args.iters = args.iters or (2 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]

    info = {
        "input": f"1x3x{args.size}x{args.size}",
        "scale": args.scale,
        "weights": "random initialisation (speed does not depend on the values)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "quick": args.quick,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    print(json.dumps(info), flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if not args.no_cpu:
                bench_cpu(name, args, results, Path(tmp))
            if torch.cuda.is_available():
                bench_cuda(name, args, results)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_text(json.dumps({"info": info, "results": results}, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
