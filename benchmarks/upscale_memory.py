"""Peak memory of upscaling a large image at x4 on the CPU with tiling (the bound: 3 GB peak RSS).

``--cli`` (the issue's check): the whole ``dukd upscale big.png -o out.png`` process, defaults (the
shipped student, ``--tile auto``), peak RSS from ``wait4`` and wall time; ``--code DIR`` runs another
checkout's ``dukd_cli`` the same way (e.g. the previous release, for a before/after), alternating
with this one when ``--repeat`` > 1. The output PNG (24000 x 24000 for a 6000 x 6000 input) goes to
a temporary folder (``--tmp``, default the system's) and is deleted after its size is checked.

    python benchmarks/upscale_memory.py --cli --size 6000            # the issue's 6000x6000 x4 check
    python benchmarks/upscale_memory.py --cli --size 3000 --code /tmp/before

Without ``--cli``, the steps of ``dukd upscale`` for one file run in a fresh subprocess
(``read_image``, then ``upscale_to_file``: tiles computed and the PNG written band by band) with a
given model (random weights), and the peak resident set size is read with ``resource.getrusage``
(``ru_maxrss``) after each step, in the child and as seen by the parent through RUSAGE_CHILDREN.

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
import struct
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

    from dukd_cli.images.imageio import read_image
    from dukd_cli.models.factory import create_model
    from dukd_cli.models.spec import parse_model_args
    from dukd_cli.upscale.image import parse_tile, resolve_overlap, resolve_tile
    from dukd_cli.upscale.job import upscale_to_file

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, args.scale, **parse_model_args(args.arg)).eval()
    kb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    base = kb()
    t0 = time.perf_counter()
    # What upscale_paths does for one file: read, then tiles computed and written band by band.
    img = read_image(args.input)
    after_read = kb()
    h, w = img.rgb.shape[:2]
    tile = resolve_tile(parse_tile(args.tile), model, h, w, overlap=args.tile_overlap)
    upscale_to_file(model, img, args.output, tile=tile, tile_overlap=resolve_overlap(tile, args.tile_overlap))
    after_infer = kb()
    t1 = time.perf_counter()
    seconds = time.perf_counter() - t0
    peak = kb()
    from PIL import Image

    with Image.open(args.output) as im:
        out_size = list(im.size)
    print(
        json.dumps(
            {
                "peak_rss_kb": peak,
                "rss_after_model_kb": base,
                "peak_after_read_kb": after_read,
                "peak_after_inference_kb": after_infer,
                "seconds": seconds,
                "inference_seconds": t1 - t0,
                "output_size": out_size,
            }
        )
    )
    return 0


def run_cli(code_dir: Path, src: Path, dst: Path, extra: list[str]) -> dict:
    """One whole ``python -m dukd_cli upscale`` process: wall seconds, its own peak RSS (wait4), exit code."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    cmd = [sys.executable, "-m", "dukd_cli", "upscale", str(src), "-o", str(dst), "--overwrite", *extra]
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        # cwd: `python -m` puts the working directory first on sys.path, so run inside the checkout.
        proc = subprocess.Popen(cmd, env=env, cwd=code_dir, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-300:]
    return {
        "returncode": proc.returncode,
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stderr_tail": tail,
    }


def main_cli(args) -> int:

    codes = [("this checkout", ROOT)] + ([("--code", Path(args.code).resolve())] if args.code else [])
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        src = Path(tmp) / "big.png"
        make_input(src, args.size)
        extra = ["--tile", str(args.tile)] if args.tile != "auto" else []
        for rep in range(args.repeat):
            for label, code_dir in codes if rep % 2 == 0 else codes[::-1]:
                dst = Path(tmp) / "out.png"
                print(f"running {label}: {code_dir} (repeat {rep + 1})", flush=True)
                r = run_cli(code_dir, src, dst, extra)
                if r["returncode"] == 0:
                    with open(dst, "rb") as f:  # the PNG header (Pillow refuses to open > 179 MP)
                        head = f.read(24)
                    r["output_size"] = list(struct.unpack(">II", head[16:24]))
                    dst.unlink()
                r.update(code=label, code_dir=str(code_dir), repeat=rep + 1)
                print(json.dumps(r), flush=True)
                rows.append(r)
    result = {
        "input": f"{args.size}x{args.size} RGB PNG",
        "command": "dukd upscale big.png -o out.png (defaults)",
        "limit_mb": LIMIT_MB,
        "runs": rows,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "note": "whole process; runs alternate between checkouts; other processes may load the machine",
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    mine = [r for r in rows if r["code"] == "this checkout"]
    return 0 if all(r["returncode"] == 0 and r["peak_rss_mb"] <= LIMIT_MB for r in mine) else 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default=None, help="preset or architecture (default edsr-s; --quick: a 1-block EDSR)"
    )
    ap.add_argument("--arg", action="append", default=None, help="constructor argument key=value")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--tile-overlap", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "upscale_memory.json"))
    ap.add_argument(
        "--cli", action="store_true", help="time the whole `dukd upscale` process (shipped student)"
    )
    ap.add_argument(
        "--code", default=None, help="with --cli: another checkout to compare (its dukd_cli on PYTHONPATH)"
    )
    ap.add_argument("--repeat", type=int, default=1, help="with --cli: runs per checkout (alternated)")
    ap.add_argument("--tmp", default=None, help="where the input and the output PNG are made (deleted after)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if args.cli:
        if args.json.endswith("upscale_memory.json"):
            args.json = str(Path(args.json).with_name(f"upscale_memory_cli_{args.size}.json"))
        return main_cli(args)
    if args.model is None:
        if args.quick:
            args.model, args.arg = "edsr", (args.arg or []) + ["n_feats=64", "n_resblocks=1"]
        else:
            args.model = "edsr-s"

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "input.png", Path(tmp) / "output.png"
        make_input(src, args.size)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--input",
            str(src),
            "--output",
            str(dst),
            "--model",
            args.model,
            "--scale",
            str(args.scale),
            "--tile",
            str(args.tile),
            "--tile-overlap",
            str(args.tile_overlap),
        ]
        for a in args.arg or []:
            cmd += ["--arg", a]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print("running:", " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
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
        "peak_rss_in_write_mb": round(data["peak_rss_kb"] / 1024, 1)
        if data["peak_rss_kb"] > data["peak_after_inference_kb"]
        else None,
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
