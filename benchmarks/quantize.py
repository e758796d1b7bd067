"""Deployed precisions side by side: PSNR/SSIM (Y, as ``dukd evaluate``), CPU time per image, file size.

For each network (the shipped student, IMDN x4 with its authors' weights, ...) the script exports a
directory with ``dukd export --format onnx --quantize int8`` (kept in ``--work`` and reused), then
scores every *variant* of it on the benchmark sets and times it on the sets' LR images.

Variants are the columns of the table: ``VARIANTS`` maps a name to ``(loader, file)``; a loader takes
the exported directory and returns something ``dukd_cli.evaluate.protocol.evaluate`` runs (a torch module or
an ``OnnxModel``). Adding a row kind (e.g. int8 after teacher-guided QAT) is one entry.

Timing: each round runs every variant once over the same LR images, variants alternated (the order
rotates every round) so that load from other processes on a shared machine falls on all of them; the
figure is the median over rounds of the mean seconds per image, with ``--threads`` intra-op threads.

    python benchmarks/quantize.py --calib ../shared/data/train/bsd200        # student + IMDN x4
    python benchmarks/quantize.py --models imdn --sets set5,set14 --rounds 5
    python benchmarks/quantize.py --models imdn --qat imdn=runs/imdn-qat   # + rows after QAT
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHARED = Path(os.environ.get("DUKD_SHARED", ROOT.parent / "shared"))


def _torch(d: Path):
    from dukd_cli.models.factory import build, resolve_spec

    return build(resolve_spec(str(d)), device="cpu").float().eval()


def _onnx(filename: str) -> Callable[[Path], object]:
    def load(d: Path):
        from dukd_cli.export.runtimes import ONNX_RUNTIMES, load_onnx_runtime

        runtime = next(k for k, (f, _how) in ONNX_RUNTIMES.items() if f == filename)
        return load_onnx_runtime(d, runtime, threads=THREADS)

    return load


THREADS = 2
# name -> (loader(exported dir), file whose size is reported)
VARIANTS: dict[str, tuple[Callable[[Path], object], str]] = {
    "fp32 torch": (_torch, "model.safetensors"),
    "fp32 ORT": (_onnx("model.onnx"), "model.onnx"),
    "int8 PTQ ORT": (_onnx("model.int8.onnx"), "model.int8.onnx"),
}


# label -> dukd export arguments (model, weights, scale)
def _shipped_student() -> str:
    from zoo.shipped import STUDENT_NAME, weight_file

    return str(weight_file(STUDENT_NAME))


# Weights are named explicitly (a preset exports its declared weights by default; naming them
# keeps the table from ever measuring a random initialisation again).
MODELS = {
    "student": ("dukd-student-x4", _shipped_student(), 4),
    "imdn": ("imdn", str(SHARED / "models" / "imdn" / "IMDN_x4.pth"), 4),
}


def export_dir(
    label: str, work: Path, calib: list[str], max_drop: float, log, run_dir: str | None = None
) -> Path:
    """``work/LABEL``: MODELS[label] exported (fp32 + int8); with ``run_dir`` (a QAT run of that
    network), ``work/LABEL-qat``: the run's student exported the same way."""
    from dukd_cli.export.bundle import export_model

    model, weights, scale = MODELS[label]
    if run_dir is not None:
        model, weights, scale, label = run_dir, None, None, f"{label}-qat"
    out = work / label
    if (out / "model.int8.onnx").is_file():
        log(f"{label}: reusing {out}")
        return out
    t0 = time.perf_counter()
    export_model(
        model,
        out,
        scale=scale,
        weights=weights,
        formats="safetensors,onnx",
        quantize="int8",
        calib=calib,
        max_drop=max_drop,
        overwrite=True,
        log=log,
    )
    log(f"{label}: exported in {time.perf_counter() - t0:.0f} s")
    return out


def lr_images(sets: list[str], scale: int, data_dir) -> list[torch.Tensor]:
    from dukd_cli.data.benchmarks import find_set, load_pairs

    out = []
    for s in sets:
        for p in load_pairs(find_set(s, data_dir), scale):
            out.append(torch.from_numpy(np.array(p.lr)).permute(2, 0, 1)[None].float().div(255))
    return out


def time_rounds(models: dict[str, object], images: list[torch.Tensor], rounds: int) -> dict[str, dict]:
    """Median (over rounds) of mean seconds per image; variants alternate, order rotated per round."""
    from dukd_cli.upscale.inference import run_model

    names = list(models)
    per: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:  # warm-up
            run_model(models[n], images[0])
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                t0 = time.perf_counter()
                for x in images:
                    run_model(models[n], x)
                per[n].append((time.perf_counter() - t0) / len(images))
    return {n: {"median_s": statistics.median(v), "rounds_s": v} for n, v in per.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="student,imdn", help=f"comma-separated: {', '.join(MODELS)}")
    ap.add_argument("--sets", default="set5,set14,bsd100")
    ap.add_argument("--time-sets", default="set5,set14", help="sets whose LR images are timed")
    ap.add_argument("--data-dir", default=str(SHARED / "data" / "benchmarks"))
    ap.add_argument(
        "--calib", default=str(SHARED / "data" / "train" / "bsd200"), help="HR images to calibrate on"
    )
    ap.add_argument("--max-drop", type=float, default=0.1)
    ap.add_argument(
        "--qat",
        action="append",
        default=[],
        metavar="LABEL=RUN_DIR",
        help="a `dukd distill --quantize int8` run of LABEL's network: its fp32 and int8 exports are "
        "two more rows of LABEL (repeatable)",
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "quantize-exports"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "quantize.json"))
    args = ap.parse_args(argv)

    global THREADS
    THREADS = args.threads
    torch.set_num_threads(args.threads)
    from dukd_cli.evaluate.protocol import evaluate

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    sets = [s for s in args.sets.split(",") if s]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"{args.threads} threads",
        "torch": torch.__version__,
        "timing": f"median over {args.rounds} alternated rounds of mean s/image on "
        f"{args.time_sets} LR images",
        "models": {},
    }
    qat = dict(q.split("=", 1) for q in args.qat)
    for label in [m for m in args.models.split(",") if m]:
        d = export_dir(label, work, [args.calib], args.max_drop, log)
        cfg = json.loads((d / "config.json").read_text())
        scale = int(cfg["scale"])
        loaded = {n: loader(d) for n, (loader, _f) in VARIANTS.items() if (d / VARIANTS[n][1]).is_file()}
        files = {n: d / VARIANTS[n][1] for n in loaded}
        if label in qat:  # the same network after teacher-guided QAT, exported the same way
            qd = export_dir(label, work, [args.calib], args.max_drop, log, run_dir=qat[label])
            for n, f in (("fp32 ORT after QAT", "model.onnx"), ("int8 after QAT", "model.int8.onnx")):
                loaded[n], files[n] = _onnx(f)(qd), qd / f
        rows: dict[str, dict] = {}
        for n, m in loaded.items():
            res = evaluate(m, scale, sets, data_dir=args.data_dir, device="cpu")
            rows[n] = {
                "bytes": files[n].stat().st_size,
                "scores": {r.bench: {"psnr": round(r.psnr, 4), "ssim": round(r.ssim, 5)} for r in res},
            }
            log(f"{label} {n}: " + ", ".join(f"{r.bench} {r.psnr:.3f}/{r.ssim:.4f}" for r in res))
        times = time_rounds(loaded, lr_images(args.time_sets.split(","), scale, args.data_dir), args.rounds)
        for n, t in times.items():
            rows[n]["time_s_per_image"] = round(t["median_s"], 5)
            rows[n]["time_rounds_s"] = [round(v, 5) for v in t["rounds_s"]]
        results["models"][label] = {"export": cfg.get("onnx_int8"), "rows": rows}

    print_table(results, sets)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.json}")
    return 0


def print_table(results: dict, sets: list[str]) -> None:
    head = "| network | variant | " + " | ".join(s for s in sets) + " | s/image | vs fp32 ORT | file |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label, m in results["models"].items():
        rows = m["rows"]
        ref = rows.get("fp32 ORT", {})
        for n, r in rows.items():
            cells = []
            for s in sets:
                sc = next((v for k, v in r["scores"].items() if k.lower() == s.lower()), None)
                cells.append(f"{sc['psnr']:.2f} / {sc['ssim']:.4f}" if sc else "-")
            t = r.get("time_s_per_image")
            ratio = t / ref["time_s_per_image"] if t and ref.get("time_s_per_image") else None
            size = r["bytes"] / ref["bytes"] if ref.get("bytes") else None
            print(
                f"| {label} | {n} | "
                + " | ".join(cells)
                + f" | {t:.3f} | {ratio:.2f}x | {r['bytes'] / 1e6:.2f} MB ({size:.2f}x) |"
            )


if __name__ == "__main__":
    raise SystemExit(main())
