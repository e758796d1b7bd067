"""The GPU benchmark in one go: training it/s, the authors' iteration for the ratio, upscale frames/s.

Run once on a CUDA machine (about 7 minutes on one H100/H200, compilation included; never more
than ``--deadline``)::

    python benchmarks/gpu_suite.py                       # writes benchmarks/results/gpu_suite.{json,md}
    python benchmarks/gpu_suite.py --deadline 300 --data /path/to/DIV2K
    python benchmarks/gpu_suite.py --quick               # CPU, tiny sizes, one process: checks the script

What it measures (random weights; speed does not depend on them):

* **training**: it/s of DUKD, KD and scratch through the trainer's own iteration
  (``Trainer.train_step``: autocast, the method's loss groups, backward, optimiser, EMA) for
  EDSR-L -> EDSR-S and RCAN-L -> RCAN-S at x4, batch 16, 48 px LR patches, on a synthetic batch
  already on the device and on real batches (the trainer's loader and device prefetcher), each
  eager / channels-last / ``torch.compile`` / both; peak GPU memory per cell; the compilation time.
* **the authors' iteration** re-created (our code, their recipe: fp32, the teacher in train mode
  with autograd on, zoom-out resized on the CPU one image at a time, two optimiser steps without
  zeroing the gradients between them, every loss read back with ``.item()``, a per-parameter EMA
  loop), on the same synthetic batch, for the dukd/authors ratio in the same run. Our MATLAB
  resize stands in for BasicSR's (ours is not slower), so the ratio is if anything conservative.
* **host syncs**: CUDA synchronisations per DUKD iteration (``torch.cuda.set_sync_debug_mode``),
  synthetic and real-data batches.
* **upscale**: frames/s of edsr-s, rcan-s, swinir-s on one 256x256 input at x4: eager fp32,
  eager bf16, compiled bf16, and ONNX Runtime's CUDA provider when installed.

Time is budgeted: every cell has a fixed warm-up and a fixed number of measured iterations, also
capped in seconds (``--cell-seconds``); the cells run in groups, each in its own process with a
hard timeout, cheap groups first; a global ``--deadline`` skips what no longer fits and says so
(``status: skipped``, with the reason) in the JSON and the table. Completed cells survive a
group that times out (each is written as soon as it is measured).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dukd_cli.runtime import threads  # noqa: E402, I001  (before torch: the OpenMP wait policy)
import torch  # noqa: E402

PAIRS = {
    # name: (teacher, teacher kwargs, student, student kwargs)
    "edsr": ("edsr-l", {}, "edsr-s", {}),
    "rcan": ("rcan-l", {}, "rcan-s", {}),
    # --quick: tiny networks of the same families
    "edsr-tiny": ("edsr", {"n_feats": 16, "n_resblocks": 2}, "edsr", {"n_feats": 8, "n_resblocks": 1}),
}
METHODS = ("dukd", "kd", "scratch")
VARIANTS = ("eager", "channels_last", "compile", "channels_last+compile")
UPSCALE_MODELS = ("edsr-s", "rcan-s", "swinir-s")
SECTIONS = ("train", "authors", "syncs", "upscale")
RUNTIMES = ("eager-fp32", "eager-bf16", "compiled-bf16", "onnxruntime")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def timed_loop(step, device: torch.device, warmup: int, iters: int, cap_s: float) -> dict:
    """Run ``step`` ``warmup`` times (the first call's time reported: compilation), then up to
    ``iters`` times or ``cap_s`` seconds; it/s over the measured calls."""
    t0 = time.perf_counter()
    for i in range(warmup):
        step()
        if i == 0:
            sync(device)
            first = time.perf_counter() - t0
    sync(device)
    warm = time.perf_counter() - t0
    done, t1 = 0, time.perf_counter()
    while done < iters:
        step()
        done += 1
        if time.perf_counter() - t1 > cap_s:
            break
    sync(device)
    el = time.perf_counter() - t1
    return {
        "it_s": round(done / el, 4),
        "measured_iters": done,
        "first_call_s": round(first, 3),
        "warmup_s": round(warm, 3),
    }


# ---------------------------------------------------------------------------------------------
# Cells (run inside a group process)
# ---------------------------------------------------------------------------------------------


def _teacher_file(pair: str, tmp: Path, scale: int) -> str:
    from safetensors.torch import save_file

    from dukd_cli.models.factory import create_model, resolve_spec

    path = tmp / f"{pair}-teacher.safetensors"
    if not path.is_file():
        t, tk, _, _ = PAIRS[pair]
        spec = resolve_spec(t, scale, kwargs=tk)
        torch.manual_seed(0)
        model = create_model(spec.arch, scale, **spec.kwargs)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def _trainer(spec: dict, pair: str, method: str, variant: str, tmp: Path):
    from dukd_cli.distill import config as C
    from dukd_cli.distill import fast
    from dukd_cli.distill.display import Display
    from dukd_cli.distill.trainer import Trainer

    fast.COMPILE_BACKEND = spec["compile_backend"]
    t, tk, st, sk = PAIRS[pair]
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = st, spec["scale"], sk
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = t, _teacher_file(pair, tmp, spec["scale"]), tk
    cfg.method.name = method
    cfg.data.paths, cfg.data.cache_dir = spec["data"], str(Path(spec["tmp"]) / "cache")
    cfg.train.batch_size, cfg.train.patch_size, cfg.train.device = (
        spec["batch"],
        spec["patch"],
        spec["device"],
    )
    cfg.train.channels_last = "channels_last" in variant
    cfg.train.compile = "compile" in variant
    cfg.train.iters, cfg.val.every = 10**9, 0
    tr = Trainer(cfg, tmp / f"run-{pair}-{method}-{variant}-{os.getpid()}", display=Display(enabled=False))
    tr.setup()
    return tr


def _synthetic(spec: dict, tr) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    p, s, n = spec["patch"], spec["scale"], spec["batch"]
    lr = torch.randint(0, 256, (n, 3, p, p), generator=g, dtype=torch.uint8)
    hr = torch.randint(0, 256, (n, 3, p * s, p * s), generator=g, dtype=torch.uint8)
    return lr, hr


def cell_train(spec: dict, pair: str, method: str, variant: str, tmp: Path) -> list[dict]:
    from dukd_cli.distill.methods import Batch

    tr = _trainer(spec, pair, method, variant, tmp)
    dev = tr.session.device
    out = []
    lr, hr = tr.session.to_device(*_synthetic(spec, tr))
    reset_peak(dev)
    r = timed_loop(
        lambda: tr.train_step(Batch(lr, hr, 0)), dev, spec["warmup"], spec["iters"], spec["cell_s"]
    )
    out.append({"source": "synthetic", **r, "peak_gpu_mib": peak_mib(dev)})
    batches = tr.batches(tr.make_loader(start_iter=0))

    def real():
        a, b = next(batches)
        tr.train_step(Batch(a, b, 0))

    reset_peak(dev)
    r = timed_loop(real, dev, max(1, spec["warmup"] // 2), spec["iters"], spec["cell_s"])
    out.append({"source": "data", **r, "peak_gpu_mib": peak_mib(dev), "workers": tr.workers})
    tr.session.method.close()
    return [{"section": "train", "pair": pair, "method": method, "variant": variant, **o} for o in out]


def cell_syncs(spec: dict, pair: str, tmp: Path) -> list[dict]:
    """CUDA host synchronisations per DUKD iteration (eager), synthetic and real-data batches."""
    from dukd_cli.distill.methods import Batch

    tr = _trainer(spec, pair, "dukd", "eager", tmp)
    dev = tr.session.device
    lr, hr = tr.session.to_device(*_synthetic(spec, tr))
    batches = tr.batches(tr.make_loader(start_iter=0))
    rows = []
    for source in ("synthetic", "data"):
        for _ in range(2):  # warm: cudnn autotuning and the allocator sync on first use
            a, b = (lr, hr) if source == "synthetic" else next(batches)
            tr.train_step(Batch(a, b, 0))
        sync(dev)
        n = 5
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(n):
                    a, b = (lr, hr) if source == "synthetic" else next(batches)
                    tr.train_step(Batch(a, b, 0))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        msgs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
        rows.append(
            {
                "section": "syncs",
                "pair": pair,
                "method": "dukd",
                "variant": "eager",
                "source": source,
                "syncs_per_iter": len(msgs) / n,
                "examples": sorted(set(msgs))[:3],
            }
        )
    tr.session.method.close()
    return rows


def _noising(x: torch.Tensor, idx: dict[str, torch.Tensor]) -> torch.Tensor:
    """The released code's per-sample colour inversion / flips / transpose by index lists (applied
    the same way to the student's output; their 'inverse')."""
    x = x.clone()
    for op, sel in idx.items():
        if sel.numel() == 0:
            continue
        part = x[sel]
        part = {
            "i": lambda t: 1.0 - t,
            "h": lambda t: t.flip(-2),
            "v": lambda t: t.flip(-1),
            "t": lambda t: t.transpose(-2, -1),
        }[op](part)
        x[sel] = part
    return x


def cell_authors(spec: dict, pair: str, tmp: Path) -> list[dict]:
    """The authors' DUKD iteration re-created (see the module docstring)."""
    import numpy as np
    import torch.nn.functional as F

    from dukd_cli.data.imresize import imresize
    from dukd_cli.models.factory import create_model, resolve_spec
    from dukd_cli.upscale.inference import select_device

    dev = select_device(spec["device"])
    if dev.type == "cuda":  # BasicSR's settings; PyTorch's defaults otherwise (fp32, TF32 convolutions)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
    s = spec["scale"]
    t, tk, st, sk = PAIRS[pair]
    torch.manual_seed(0)
    ts, ss = resolve_spec(t, s, kwargs=tk), resolve_spec(st, s, kwargs=sk)
    teacher = create_model(ts.arch, s, **ts.kwargs).to(dev).train()  # never frozen, never eval
    student = create_model(ss.arch, s, **ss.kwargs).to(dev).train()
    ema = copy.deepcopy(student)
    opt = torch.optim.Adam(student.parameters(), lr=1e-4, betas=(0.9, 0.99))
    family = "rcan" if "rcan" in ss.arch else "edsr"
    w_pix, prob, zoom_out = (1.0, 0.0, False) if family == "rcan" else (5.0, 0.3, True)  # released x4 configs
    g = torch.Generator().manual_seed(0)
    p, n = spec["patch"], spec["batch"]
    lq = torch.rand((n, 3, p, p), generator=g).to(dev)
    gt = torch.rand((n, 3, p * s, p * s), generator=g).to(dev)
    rng = np.random.default_rng(0)
    e_params = dict(ema.named_parameters())

    def step():
        opt.zero_grad()
        out = student(lq)
        out_t = teacher(lq)
        l_pix = w_pix * F.l1_loss(out, gt)
        l_kd = F.l1_loss(out, out_t)
        log = {"l_pix": l_pix, "l_kd": l_kd}
        (l_pix + l_kd).backward()
        opt.step()
        i, j = divmod(int(rng.permutation(s * s)[0]), s)
        sub = gt[..., i * p : (i + 1) * p, j * p : (j + 1) * p]
        sr_sub = teacher(sub)
        if prob > 0:
            idx = {
                op: torch.nonzero(torch.from_numpy(rng.random(sub.shape[0]) < prob)).squeeze(1).to(dev)
                for op in ("i", "h", "v", "t")
            }
            sub = _noising(sub, idx)
            l_zi = F.l1_loss(sr_sub, _noising(student(sub), idx))
        else:
            l_zi = F.l1_loss(sr_sub, student(sub))
        total = l_zi
        if zoom_out:
            lqlq = torch.stack([imresize(x, 1 / s) for x in lq.detach().cpu()]).to(dev)
            sr_lqlq = student(lqlq)
            l_zo_pix = w_pix * F.l1_loss(sr_lqlq, lq)
            l_zo_kd = F.l1_loss(sr_lqlq, teacher(lqlq))
            log.update(l_zo_pix=l_zo_pix, l_zo_kd=l_zo_kd)
            total = total + l_zo_pix + l_zo_kd
        total.backward()  # on top of step 1's gradients, as released
        opt.step()
        _ = {k: v.mean().item() for k, v in log.items()}
        with torch.no_grad():
            for k, v in student.named_parameters():
                e_params[k].mul_(0.999).add_(v, alpha=0.001)

    reset_peak(dev)
    r = timed_loop(step, dev, spec["warmup"], spec["iters"], spec["cell_s"])
    return [
        {
            "section": "authors",
            "pair": pair,
            "method": "dukd",
            "variant": "authors (fp32)",
            "source": "synthetic",
            **r,
            "peak_gpu_mib": peak_mib(dev),
        }
    ]


def cell_upscale(spec: dict, model_name: str, runtime: str, tmp: Path) -> list[dict]:
    from dukd_cli.models.factory import create_model
    from dukd_cli.upscale.inference import select_device

    dev = select_device(spec["device"])
    size = spec["upscale_size"]
    torch.manual_seed(0)
    model = create_model(model_name, 4).eval()
    x = torch.rand(1, 3, size, size)
    row = {"section": "upscale", "model": model_name, "runtime": runtime, "size": size}
    if runtime == "onnxruntime":
        from dukd_cli.export.onnx import _session, export_onnx

        path = tmp / f"{model_name}.onnx"
        export_onnx(model, path, fixed_size=size)
        want = "cuda" if dev.type == "cuda" else "cpu"
        sess = _session(path, want)
        provider = sess.get_providers()[0]
        if dev.type == "cuda" and provider != "CUDAExecutionProvider":
            return [{**row, "status": "skipped", "reason": "ONNX Runtime has no CUDA provider here"}]
        feed = {sess.get_inputs()[0].name: x.numpy()}
        r = timed_loop(
            lambda: sess.run(None, feed),
            torch.device("cpu"),
            spec["up_warmup"],
            spec["up_iters"],
            spec["cell_s"],
        )
        return [{**row, "provider": provider, "precision": "fp32", "fps": r["it_s"], **r}]
    model, x = model.to(dev), x.to(dev)
    precision = "fp32" if runtime == "eager-fp32" else "bf16"
    if runtime == "compiled-bf16":
        model = torch.compile(model, backend=spec["compile_backend"], dynamic=False)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def run():
        with torch.inference_mode(), amp:
            model(x)

    reset_peak(dev)
    r = timed_loop(run, dev, spec["up_warmup"], spec["up_iters"], spec["cell_s"])
    return [{**row, "precision": precision, "fps": r["it_s"], **r, "peak_gpu_mib": peak_mib(dev)}]


def run_group(spec: dict, out_path: Path) -> int:
    """One group of cells in this process; each result is appended to ``out_path`` at once."""
    threads.apply(threads.plan(None))
    tmp = Path(spec["tmp"])
    for cell in spec["cells"]:
        key = cell["key"]
        if time.time() > spec["deadline_at"]:
            rows = [{"key": key, "status": "skipped", "reason": "deadline reached before this cell"}]
        else:
            t0 = time.time()
            try:
                kind = cell["kind"]
                if kind == "train":
                    rows = cell_train(spec, cell["pair"], cell["method"], cell["variant"], tmp)
                elif kind == "authors":
                    rows = cell_authors(spec, cell["pair"], tmp)
                elif kind == "syncs":
                    rows = cell_syncs(spec, cell["pair"], tmp)
                else:
                    rows = cell_upscale(spec, cell["model"], cell["runtime"], tmp)
                rows = [
                    {"key": key, "status": r.pop("status", "ok"), **r, "cell_s": round(time.time() - t0, 2)}
                    for r in rows
                ]
            except Exception as exc:  # one failing cell must not lose the rest of the run
                rows = [
                    {
                        "key": key,
                        "status": "error",
                        "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                    }
                ]
        with open(out_path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        for r in rows:
            print(_line(r), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# The plan, the groups, the report
# ---------------------------------------------------------------------------------------------


def _line(r: dict) -> str:
    if r.get("status") != "ok":
        return f"{r['key']:48s} {r.get('status')}: {r.get('reason', '')}"
    what = r.get("source") or r.get("runtime", "")
    val = f"{r['it_s']:9.3f} it/s" if r["section"] != "upscale" else f"{r['fps']:9.3f} frames/s"
    if r["section"] == "syncs":
        val = f"{r['syncs_per_iter']:.1f} syncs/iteration"
    mem = f"  peak {r['peak_gpu_mib']:.0f} MiB" if r.get("peak_gpu_mib") else ""
    return f"{r['key']:48s} {what:10s} {val}{mem}"


def plan_groups(args) -> list[dict]:
    """Groups of cells in priority order: eager training and the authors' ratio first, then
    channels-last, syncs, eager upscale, compiled DUKD before compiled KD/scratch, ONNX last."""
    groups: list[dict] = []
    pairs, methods, variants = args.pairs, args.methods, args.variants
    secs, eager_s, comp_s = args.sections, args.group_seconds, args.group_seconds * 3

    def train(variant: str, pair: str, ms: list[str], per_cell: float) -> None:
        cells = [
            {
                "kind": "train",
                "pair": pair,
                "method": m,
                "variant": variant,
                "key": f"train/{pair}/{m}/{variant}",
            }
            for m in ms
        ]
        groups.append(
            {"name": f"train {pair} {'/'.join(ms)} {variant}", "cells": cells, "timeout": per_cell * len(ms)}
        )

    if "train" in secs and "eager" in variants:
        for pair in pairs:
            train("eager", pair, methods, eager_s)
    if "authors" in secs:
        for pair in pairs:
            cells = [{"kind": "authors", "pair": pair, "key": f"authors/{pair}"}]
            groups.append({"name": f"authors {pair}", "timeout": eager_s, "cells": cells})
    if "train" in secs and "channels_last" in variants:
        for pair in pairs:
            train("channels_last", pair, methods, eager_s)
    if "syncs" in secs:
        cells = [{"kind": "syncs", "pair": pairs[0], "key": f"syncs/{pairs[0]}"}]
        if args.device_type == "cuda":
            groups.append({"name": "syncs", "timeout": eager_s, "cells": cells})
        else:
            groups.append({"name": "syncs", "skip": "host syncs are only counted on CUDA", "cells": cells})
    if "upscale" in secs:
        cells = [
            {"kind": "upscale", "model": m, "runtime": rt, "key": f"upscale/{m}/{rt}"}
            for m in args.upscale_models
            for rt in ("eager-fp32", "eager-bf16")
            if rt in args.upscale_runtimes
        ]
        groups.append({"name": "upscale eager", "timeout": eager_s / 3 * len(cells), "cells": cells})
    for v in ("compile", "channels_last+compile"):
        if "train" in secs and v in variants:
            for m in methods:
                for pair in pairs:
                    train(v, pair, [m], comp_s)
    if "upscale" in secs and "compiled-bf16" in args.upscale_runtimes:
        cells = [
            {"kind": "upscale", "model": m, "runtime": "compiled-bf16", "key": f"upscale/{m}/compiled-bf16"}
            for m in args.upscale_models
        ]
        groups.append({"name": "upscale compiled", "timeout": comp_s / 2 * len(cells), "cells": cells})
    if "upscale" in secs and "onnxruntime" in args.upscale_runtimes:
        cells = [
            {"kind": "upscale", "model": m, "runtime": "onnxruntime", "key": f"upscale/{m}/onnxruntime"}
            for m in args.upscale_models
        ]
        groups.append({"name": "upscale onnxruntime", "timeout": eager_s * len(cells), "cells": cells})
    return groups


def markdown(report: dict) -> str:
    rows = report["cells"]
    ok = [r for r in rows if r.get("status") == "ok"]
    lines = [
        f"# gpu_suite: {report['device']}",
        "",
        f"torch {report['torch']}, batch {report['batch']}, LR patch {report['patch']} px, x{report['scale']}, "
        f"compile backend {report['compile_backend']}, {report['elapsed_s']:.0f} s of a {report['deadline_s']:.0f} s deadline"
        + (" (--quick: tiny CPU sizes, not a measurement)" if report["quick"] else ""),
        "",
    ]
    train = [r for r in ok if r["section"] in ("train", "authors")]
    if train:
        lines += [
            "## Training (it/s)",
            "",
            "| pair | method | variant | batches | it/s | peak GPU MiB | first call s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in train:
            mem = r.get("peak_gpu_mib")
            lines.append(
                f"| {r['pair']} | {r['method']} | {r['variant']} | {r['source']} | {r['it_s']:.2f} | "
                f"{mem if mem is not None else '-'} | {r['first_call_s']:.1f} |"
            )
        lines.append("")
    ratios = report["summary"].get("dukd_over_authors", {})
    if ratios:
        lines += [
            "## DUKD step: dukd / the authors' iteration (same run, synthetic batch)",
            "",
            "| pair | dukd variant | dukd it/s | authors it/s | ratio |",
            "|---|---|---|---|---|",
        ]
        for pair, d in ratios.items():
            for v, x in d.items():
                lines.append(
                    f"| {pair} | {v} | {x['dukd_it_s']:.2f} | {x['authors_it_s']:.2f} | {x['ratio']:.2f}x |"
                )
        lines.append("")
    syncs = [r for r in ok if r["section"] == "syncs"]
    if syncs:
        lines += [
            "## Host synchronisations per DUKD iteration",
            "",
            "| batches | syncs/iteration | examples |",
            "|---|---|---|",
        ]
        for r in syncs:
            lines.append(f"| {r['source']} | {r['syncs_per_iter']:.1f} | {'; '.join(r['examples']) or '-'} |")
        lines.append("")
    up = [r for r in ok if r["section"] == "upscale"]
    if up:
        lines += [
            f"## Upscale, one {up[0]['size']}x{up[0]['size']} input, x4 (frames/s)",
            "",
            "| model | runtime | precision | frames/s | peak GPU MiB |",
            "|---|---|---|---|---|",
        ]
        for r in up:
            rt = r["runtime"] + (f" ({r['provider']})" if r.get("provider") else "")
            mem = r.get("peak_gpu_mib")
            lines.append(
                f"| {r['model']} | {rt} | {r['precision']} | {r['fps']:.2f} | {mem if mem is not None else '-'} |"
            )
        lines.append("")
    bad = [r for r in rows if r.get("status") != "ok"]
    if bad:
        lines += ["## Not measured", "", "| cell | status | reason |", "|---|---|---|"]
        lines += [f"| {r['key']} | {r['status']} | {r.get('reason', '')} |" for r in bad]
        lines.append("")
    return "\n".join(lines)


def summarise(cells: list[dict]) -> dict:
    ok = [r for r in cells if r.get("status") == "ok"]
    out: dict = {"dukd_over_authors": {}}
    for a in (r for r in ok if r["section"] == "authors"):
        d = {}
        for r in ok:
            if (
                r["section"] == "train"
                and r["pair"] == a["pair"]
                and r["method"] == "dukd"
                and r["source"] == "synthetic"
            ):
                d[r["variant"]] = {
                    "dukd_it_s": r["it_s"],
                    "authors_it_s": a["it_s"],
                    "ratio": round(r["it_s"] / a["it_s"], 3),
                }
        if d:
            out["dukd_over_authors"][a["pair"]] = d
    out["cells_ok"] = len(ok)
    out["cells_not_measured"] = len(cells) - len(ok)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="CPU, tiny networks and sizes: a check of the script, not a measurement",
    )
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --quick)")
    ap.add_argument(
        "--deadline", type=float, default=None, help="seconds for the whole run (default 450; --quick 240)"
    )
    ap.add_argument(
        "--cell-seconds", type=float, default=None, help="cap on one cell's measured loop (default 6)"
    )
    ap.add_argument(
        "--group-seconds",
        type=float,
        default=None,
        help="timeout per eager cell (compiled: 3x; default 60)",
    )
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--pairs", default=None, help="default: edsr,rcan (--quick: edsr-tiny)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--upscale-models", default=None, help="default: " + ",".join(UPSCALE_MODELS) + " (--quick: edsr-s)"
    )
    ap.add_argument("--compile-backend", default=None, help="default inductor (--quick: aot_eager)")
    ap.add_argument("--upscale-runtimes", default=",".join(RUNTIMES), help="default: " + ",".join(RUNTIMES))
    ap.add_argument(
        "--data", action="append", default=None, help="training data for the real-data rows (default builtin)"
    )
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gpu_suite.json"))
    ap.add_argument("--md", default=None, help="Markdown table (default: the JSON path with .md)")
    ap.add_argument(
        "--inline",
        action="store_true",
        help="run every group in this process (no hard timeouts; --quick's default)",
    )
    ap.add_argument("--isolate", action="store_true", help="with --quick: one process per group, as on a GPU")
    ap.add_argument("--group", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--group-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.group:
        return run_group(json.loads(Path(args.group).read_text()), Path(args.group_out))

    q = args.quick
    device = args.device or ("cpu" if q else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("no CUDA device here: run on a GPU machine, or use --quick (CPU) to check the script")
    args.device_type = torch.device(device).type
    args.pairs = (args.pairs or ("edsr-tiny" if q else "edsr,rcan")).split(",")
    for p in args.pairs:
        if p not in PAIRS:
            ap.error(f"unknown pair {p} (known: {', '.join(PAIRS)})")
    args.methods = [m for m in args.methods.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {', '.join(bad)} (known: {', '.join(VARIANTS)})")
    args.sections = [s for s in args.sections.split(",") if s]
    args.inline = args.inline or (q and not args.isolate)
    models = args.upscale_models or ("edsr-s" if q else ",".join(UPSCALE_MODELS))
    args.upscale_models = [m for m in models.split(",") if m]
    args.upscale_runtimes = [r for r in args.upscale_runtimes.split(",") if r]
    bad = [r for r in args.upscale_runtimes if r not in RUNTIMES]
    if bad:
        ap.error(f"unknown runtime(s) {', '.join(bad)} (known: {', '.join(RUNTIMES)})")
    deadline = args.deadline if args.deadline is not None else (240.0 if q else 450.0)
    args.group_seconds = args.group_seconds or 60.0
    spec_base = {
        "device": device,
        "scale": 4,
        "batch": 2 if q else 16,
        "patch": 12 if q else 48,
        "warmup": 1 if q else 5,
        "iters": 2 if q else 30,
        "cell_s": args.cell_seconds or (5.0 if q else 6.0),
        "upscale_size": 16 if q else 256,
        "up_warmup": 2 if q else 3,
        "up_iters": 2 if q else 20,
        "compile_backend": args.compile_backend or ("aot_eager" if q else "inductor"),
        "data": args.data or ["builtin"],
    }
    t_start = time.time()
    deadline_at = t_start + deadline
    cells: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for gi, group in enumerate(plan_groups(args)):
            if group.get("skip"):
                cells += [
                    {"key": c["key"], "status": "skipped", "reason": group["skip"]} for c in group["cells"]
                ]
                continue
            left = deadline_at - time.time() - 3  # room to write the report
            if left < 5:
                cells += [
                    {
                        "key": c["key"],
                        "status": "skipped",
                        "reason": f"global deadline ({deadline:.0f} s) reached",
                    }
                    for c in group["cells"]
                ]
                print(f"skipped group '{group['name']}': global deadline", flush=True)
                continue
            spec = {**spec_base, "cells": group["cells"], "tmp": str(tmp), "deadline_at": deadline_at}
            spec_path, out_path = tmp / f"group{gi}.json", tmp / f"group{gi}.jsonl"
            spec_path.write_text(json.dumps(spec))
            timeout = min(group["timeout"], left)
            print(f"== {group['name']} (timeout {timeout:.0f} s)", flush=True)
            cmd = [sys.executable, __file__, "--group", str(spec_path), "--group-out", str(out_path)]
            try:
                if args.inline:  # one process (tests): no hard timeout, the deadline still holds per cell
                    run_group(spec, out_path)
                    failed, why = False, ""
                else:
                    proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
                    if proc.stdout:
                        print(proc.stdout, end="", flush=True)
                    failed = proc.returncode != 0
                    why = (proc.stderr.strip().splitlines() or ["no message"])[-1] if failed else ""
            except subprocess.TimeoutExpired:
                failed, why = True, f"group timed out after {timeout:.1f} s"
            got = [json.loads(x) for x in out_path.read_text().splitlines()] if out_path.is_file() else []
            done = {r["key"] for r in got}
            cells += got
            if failed:
                cells += [
                    {"key": c["key"], "status": "timeout" if "timed out" in why else "error", "reason": why}
                    for c in group["cells"]
                    if c["key"] not in done
                ]
                print(f"group '{group['name']}': {why}", flush=True)
    elapsed = time.time() - t_start
    dev_name = (
        torch.cuda.get_device_name(0)
        if args.device_type == "cuda"
        else f"cpu ({threads.available_cores()} cores)"
    )
    report = {
        "benchmark": "gpu_suite",
        "device": dev_name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": q,
        "deadline_s": deadline,
        "elapsed_s": round(elapsed, 1),
        **{
            k: spec_base[k]
            for k in (
                "scale",
                "batch",
                "patch",
                "warmup",
                "iters",
                "cell_s",
                "upscale_size",
                "compile_backend",
            )
        },
        "pairs": {p: PAIRS[p] for p in args.pairs},
        "cells": cells,
        "summary": summarise(cells),
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    md = Path(args.md) if args.md else path.with_suffix(".md")
    md.write_text(markdown(report) + "\n")
    print(f"wrote {path} and {md} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
