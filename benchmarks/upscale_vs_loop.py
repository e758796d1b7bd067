"""`dukd upscale` against a plain read-forward-write loop (the IMDN authors' test loop), whole processes.

Makes ``--count`` LR images (default 30) from BSD100 HR (mod-cropped, MATLAB-exact bicubic x1/4,
``dukd_cli.data.imresize``), then runs, alternating the order every round:

- ``dukd``: ``python -m dukd_cli upscale LR -o OUT --model imdn --weights IMDN_x4.pth --scale 4``
  (this checkout; ``--code DIR`` adds another checkout, e.g. the previous release, as ``dukd@DIR``);
- ``loop``: a script written here that does what ``test_IMDN.py`` does per image, minus the metrics:
  ``cv2.imread`` -> float tensor -> ``model(x)`` under ``torch.no_grad`` -> clamp, round ->
  ``cv2.imwrite`` (OpenCV's PNG defaults: level 1, RLE strategy). The network is dukd's IMDN with
  the same weights. OpenCV is not a dependency: install it anywhere (``pip install --target DIR
  opencv-python-headless``) and pass ``--cv2-path DIR``; without it the loop uses Pillow (level 1).

Each run is a whole process (imports, model load, all images, exit); the wall time of each is
recorded and the median per variant reported. Other processes on the machine slow all variants
alike only on average: compare medians of alternated runs, never single runs.

    python benchmarks/upscale_vs_loop.py --cv2-path /tmp/cv2 --code /tmp/before --rounds 3
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
SHARED = Path(os.environ.get("DUKD_SHARED", ROOT.parent / "shared"))

LOOP = r"""
import sys, time
from pathlib import Path
import numpy as np
import torch
lr_dir, out_dir, weights, use_cv2 = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
if use_cv2:
    import cv2
else:
    from PIL import Image
from dukd_cli.models.factory import build, resolve_spec
model = build(resolve_spec("imdn", 4, weights=weights, pretrained=True), device=torch.device("cpu")).eval()
out_dir.mkdir(parents=True, exist_ok=True)
for p in sorted(lr_dir.glob("*.png")):
    if use_cv2:
        im = cv2.imread(str(p), cv2.IMREAD_COLOR)[:, :, [2, 1, 0]]
    else:
        im = np.asarray(Image.open(p).convert("RGB"))
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(im / 255.0, (2, 0, 1)))[None]).float()
    with torch.no_grad():
        y = model(x)
    out = (y[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    if use_cv2:
        cv2.imwrite(str(out_dir / p.name), out[:, :, [2, 1, 0]])
    else:
        Image.fromarray(out).save(out_dir / p.name, compress_level=1)
"""


def make_lr(hr_dir: Path, lr_dir: Path, count: int, scale: int = 4) -> list[str]:
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from dukd_cli.data.imresize import imresize_np

    names = sorted(p.name for p in hr_dir.glob("*.png"))[:count]
    lr_dir.mkdir(parents=True, exist_ok=True)
    for n in names:
        hr = np.asarray(Image.open(hr_dir / n).convert("RGB"))
        h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
        lr = imresize_np(np.ascontiguousarray(hr[:h, :w]), 1 / scale)
        Image.fromarray(lr).save(lr_dir / n)
    return names


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode, proc.stderr[-400:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--weights", default=str(SHARED / "models" / "imdn" / "IMDN_x4.pth"))
    ap.add_argument("--hr", default=str(SHARED / "data" / "benchmarks" / "BSD100" / "HR"))
    ap.add_argument("--cv2-path", default=None, help="a folder holding an installed opencv-python-headless")
    ap.add_argument(
        "--code", default=None, help="another checkout to time as dukd@DIR (its dukd_cli on PYTHONPATH)"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="OMP/torch threads for every variant (default: torch's)"
    )
    ap.add_argument("--extra", default="", help="extra options for dukd upscale (e.g. '--png-level 6')")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "upscale_vs_loop.json"))
    args = ap.parse_args(argv)
    if not Path(args.weights).is_file() or not Path(args.hr).is_dir():
        print(f"needs {args.weights} and {args.hr} (set DUKD_SHARED)", file=sys.stderr)
        return 1
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if args.threads:
        base_env["OMP_NUM_THREADS"] = str(args.threads)
    use_cv2 = False
    if args.cv2_path:
        check = subprocess.run(
            [sys.executable, "-c", "import cv2"], env={**base_env, "PYTHONPATH": args.cv2_path}
        )
        use_cv2 = check.returncode == 0
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        names = make_lr(Path(args.hr), tmp / "lr", args.count)
        loop_py = tmp / "plain_loop.py"
        loop_py.write_text(LOOP)
        variants: list[tuple[str, list[str], dict, Path]] = []
        loop_path = os.pathsep.join([str(ROOT)] + ([args.cv2_path] if use_cv2 else []))
        variants.append(
            (
                "loop (cv2)" if use_cv2 else "loop (PIL level 1)",
                [
                    sys.executable,
                    str(loop_py),
                    str(tmp / "lr"),
                    str(tmp / "out_loop"),
                    args.weights,
                    "1" if use_cv2 else "0",
                ],
                {**base_env, "PYTHONPATH": loop_path},
                ROOT,
            )
        )
        for label, code in [("dukd", ROOT)] + (
            [(f"dukd@{args.code}", Path(args.code).resolve())] if args.code else []
        ):
            out = tmp / f"out_{len(variants)}"
            cmd = [
                sys.executable,
                "-m",
                "dukd_cli",
                "upscale",
                str(tmp / "lr"),
                "-o",
                str(out),
                "--model",
                "imdn",
                "--weights",
                args.weights,
                "--scale",
                "4",
                "--overwrite",
                "-q",
                *args.extra.split(),
            ]
            variants.append((label, cmd, {**base_env, "PYTHONPATH": str(code)}, code))
        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for label, cmd, env, cwd in order:
                sec, rc, err = timed(cmd, env, cwd)
                if rc != 0:
                    print(f"{label} failed: {err}", file=sys.stderr)
                    return 1
                results.setdefault(label, []).append(round(sec, 2))
                print(f"round {r + 1} {label:40s} {sec:7.2f} s", flush=True)
        outs = sorted(p for p in tmp.iterdir() if p.name.startswith("out_"))
        counts = {p.name: len(list(p.glob("*.png"))) for p in outs}
    summary = {k: {"median_s": statistics.median(v), "runs_s": v} for k, v in results.items()}
    loop_key = variants[0][0]
    for k, v in summary.items():
        v["vs_loop"] = round(v["median_s"] / summary[loop_key]["median_s"], 3)
        print(f"{k:40s} median {v['median_s']:7.2f} s   x{v['vs_loop']:.3f} of the loop")
    payload = {
        "images": len(names),
        "input": "BSD100 HR, mod-cropped, MATLAB-exact bicubic x1/4 (PNG)",
        "model": "IMDN x4 (IMDN_x4.pth), CPU",
        "outputs_per_variant": counts,
        "results": summary,
        "rounds": args.rounds,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "note": "whole processes, alternated; the machine may be shared: compare medians",
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
