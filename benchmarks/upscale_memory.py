"""Peak memory of upscaling a 2000x2000 image at x4 on the CPU with tiling (the issue's bound: 3 GB RSS).

The ``dukd upscale`` steps run in a fresh subprocess (``read_image``, tiled ``upscale_image``,
atomic ``write_image`` of the 8000x8000 PNG) and the peak resident set size is read with
``resource.getrusage`` (``ru_maxrss``) after each step, in the child and as seen by the parent
through RUSAGE_CHILDREN, so a step that dominates the peak is visible.

    python benchmarks/upscale_memory.py                    # edsr-s, --tile auto
    python benchmarks/upscale_memory.py --quick            # a 1-block EDSR (same widths, much faster)
    python benchmarks/upscale_memory.py --tile 256 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 3 * 1024


def make_input(path: Path, size: int) -> None:
    """A smooth random RGB image (PNG), made with Pillow and numpy only."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8))
    img = coarse.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-8, 9, (size, size, 3), dtype=np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)


def child(args) -> int:
    """Runs in the subprocess: the measured work."""
    sys.path.insert(0, str(ROOT))
    import torch

    from dukd_cli.imageio import read_image, write_image
    from dukd_cli.models import create_model, parse_model_args
    from dukd_cli.upscale import parse_tile, upscale_image

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, args.scale, **parse_model_args(args.arg)).eval()
    kb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    base = kb()
    t0 = time.perf_counter()
    # The steps of upscale_paths, measured one by one: read, tiled inference, atomic write.
    img = read_image(args.input)
    after_read = kb()
    res = upscale_image(model, img, tile=parse_tile(args.tile), tile_overlap=args.tile_overlap)
    after_infer = kb()
    t1 = time.perf_counter()
    del img
    write_image(args.output, res.rgb, alpha=res.alpha, mode=res.mode, bit_depth=res.bit_depth,
                icc_profile=res.icc_profile, exif=res.exif)
    seconds = time.perf_counter() - t0
    peak = kb()
    from PIL import Image

    with Image.open(args.output) as im:
        out_size = list(im.size)
    print(json.dumps({"peak_rss_kb": peak, "rss_after_model_kb": base, "peak_after_read_kb": after_read,
                      "peak_after_inference_kb": after_infer, "seconds": seconds, "inference_seconds": t1 - t0,
                      "output_size": out_size}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="preset or architecture (default edsr-s; --quick: a 1-block EDSR)")
    ap.add_argument("--arg", action="append", default=None, help="constructor argument key=value")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--tile-overlap", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "upscale_memory.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if args.model is None:
        if args.quick:
            args.model, args.arg = "edsr", (args.arg or []) + ["n_feats=64", "n_resblocks=1"]
        else:
            args.model = "edsr-s"

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "input.png", Path(tmp) / "output.png"
        make_input(src, args.size)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--input", str(src), "--output", str(dst),
               "--model", args.model, "--scale", str(args.scale), "--tile", str(args.tile),
               "--tile-overlap", str(args.tile_overlap)]
        for a in args.arg or []:
            cmd += ["--arg", a]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print("running:", " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        children_peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            return 1
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_mb = max(data["peak_rss_kb"], children_peak_kb) / 1024
    result = {
        "input": f"{args.size}x{args.size} RGB PNG",
        "scale": args.scale,
        "output_size": data["output_size"],
        "model": args.model,
        "arguments": args.arg or [],
        "tile": args.tile,
        "tile_overlap": args.tile_overlap,
        "peak_rss_mb": round(peak_mb, 1),
        "rss_after_model_load_mb": round(data["rss_after_model_kb"] / 1024, 1),
        "peak_rss_after_read_mb": round(data["peak_after_read_kb"] / 1024, 1),
        "peak_rss_after_inference_mb": round(data["peak_after_inference_kb"] / 1024, 1),
        "peak_rss_in_write_mb": round(data["peak_rss_kb"] / 1024, 1) if data["peak_rss_kb"] > data["peak_after_inference_kb"] else None,
        "limit_mb": LIMIT_MB,
        "within_limit": peak_mb <= LIMIT_MB,
        "upscale_seconds": round(data["seconds"], 1),
        "inference_seconds": round(data["inference_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"wrote {out}")
    return 0 if result["within_limit"] else 2


if __name__ == "__main__":
    raise SystemExit(main())
