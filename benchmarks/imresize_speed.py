"""Speed of the MATLAB-exact imresize and of a full bicubic evaluation.

Measures, on a synthetic 2040x1356 RGB image (DIV2K's typical size: width 2040, height 1356):

* downscale x4 (to 510x339), upscale x4 (to 8160x5424) and, for reference, upscale x4 of the
  510x339 result back to 2040x1356 (the bicubic baseline's step), in uint8 mode (MATLAB-exact, float64 with per-pass rounding)
  and float mode (float32), on the CPU and, when available, on CUDA (synchronised timing);
  throughput is reported in **output** megapixels per second (H x W of the result, all 3
  channels per pixel) and also in input megapixels per second;
* the wall time of a full bicubic-baseline evaluation (read, modcrop, down, up, PSNR + SSIM on Y)
  of Set5 + Set14 + BSD100 at x4 on the CPU. The data is found under ``$DUKD_SHARED`` (default
  ``../shared`` beside the project root); the step is skipped when it is absent.

Prints a table and writes JSON (``--json``, default ``benchmarks/results/imresize_speed.json``).

    python benchmarks/imresize_speed.py [--repeats 5] [--json out.json] [--no-eval]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dukd_cli.data.imresize import imresize, modcrop  # noqa: E402
from dukd_cli.evaluate.metrics import psnr_y, ssim_y  # noqa: E402
from dukd_cli.images.imageio import read_rgb_uint8  # noqa: E402

WIDTH, HEIGHT = 2040, 1356


def _time(fn, repeats: int, sync) -> list[float]:
    fn()  # warm-up: builds and caches the weight tables, allocator warm
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def bench_resize(device: str, repeats: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8, generator=gen).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    lr = imresize(base, 0.25)
    cases = (
        ("down x4", base, 0.25, repeats),  # 2040x1356 -> 510x339
        ("up x4", base, 4.0, max(1, min(repeats, 3))),  # 2040x1356 -> 8160x5424
        ("up x4 LR", lr, 4.0, repeats),  # 510x339 -> 2040x1356 (the bicubic baseline's step)
    )
    rows = []
    for label, src, scale, reps in cases:
        for mode, x in (("uint8", src), ("float32", src.float() / 255)):
            out = imresize(x, scale)
            times = _time(lambda x=x, scale=scale: imresize(x, scale), reps, sync)
            del out
            best, med = min(times), float(np.median(times))
            out_h, out_w = math.ceil(x.shape[-2] * scale), math.ceil(x.shape[-1] * scale)
            rows.append(
                {
                    "device": device,
                    "op": label,
                    "mode": mode,
                    "input": f"{x.shape[-1]}x{x.shape[-2]}",
                    "output": f"{out_w}x{out_h}",
                    "repeats": reps,
                    "best_s": best,
                    "median_s": med,
                    "output_mpix_per_s": out_h * out_w / 1e6 / best,
                    "input_mpix_per_s": x.shape[-2] * x.shape[-1] / 1e6 / best,
                }
            )
    return rows


def bench_eval(shared: Path, scale: int = 4) -> dict | None:
    bench = shared / "data" / "benchmarks"
    sets = ("Set5", "Set14", "BSD100")
    if not all((bench / s / "HR").is_dir() for s in sets):
        return None
    t0 = time.perf_counter()
    result = {}
    n_images = 0
    for name in sets:
        ps, ss = [], []
        for path in sorted((bench / name / "HR").iterdir()):
            hr = modcrop(read_rgb_uint8(path), scale)
            t = torch.from_numpy(hr).permute(2, 0, 1)
            sr = imresize(imresize(t, 1 / scale), scale).permute(1, 2, 0).numpy()
            ps.append(psnr_y(sr, hr, scale))
            ss.append(ssim_y(sr, hr, scale))
        n_images += len(ps)
        result[name] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "images": len(ps)}
    return {"scale": scale, "images": n_images, "wall_s": time.perf_counter() - t0, "sets": result}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "imresize_speed.json")
    ap.add_argument("--no-eval", action="store_true", help="skip the full bicubic evaluation")
    args = ap.parse_args(argv)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [r for d in devices for r in bench_resize(d, args.repeats)]
    shared = Path(os.environ.get("DUKD_SHARED", ROOT.parent / "shared")).resolve()
    evaluation = None if args.no_eval else bench_eval(shared)

    print(
        f"imresize on a {WIDTH}x{HEIGHT} RGB image; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(
        f"{'device':<6} {'op':<9} {'mode':<8} {'input':>10} {'output':>10} {'best s':>8} {'out MP/s':>9} {'in MP/s':>8}"
    )
    for r in rows:
        print(
            f"{r['device']:<6} {r['op']:<9} {r['mode']:<8} {r['input']:>10} {r['output']:>10} "
            f"{r['best_s']:>8.4f} {r['output_mpix_per_s']:>9.1f} {r['input_mpix_per_s']:>8.1f}"
        )
    if evaluation is None:
        print(f"full evaluation: skipped (no benchmark data under {shared})" if not args.no_eval else "")
    else:
        figures = ", ".join(f"{k} {v['psnr']:.4f}/{v['ssim']:.4f}" for k, v in evaluation["sets"].items())
        print(
            f"full bicubic evaluation x{evaluation['scale']} (read, modcrop, down, up, PSNR+SSIM), "
            f"{evaluation['images']} images on CPU: {evaluation['wall_s']:.2f} s  [{figures}]"
        )

    payload = {
        "benchmark": "imresize_speed",
        "throughput_unit": "output megapixels per second (H x W of the result, 3 channels each); input_mpix_per_s also given",
        "image": f"{WIDTH}x{HEIGHT} RGB",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "resize": rows,
        "evaluation_x4_cpu": evaluation,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
