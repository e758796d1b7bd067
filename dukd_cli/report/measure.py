"""Measuring finished runs for the report: the shared evaluator, the training-patch probe, speed, crops.

Every number comes from the project's own tools: :func:`dukd_cli.evaluate.protocol.evaluate` (PSNR/SSIM on Y,
the student-vs-teacher PSNR through its ``reference``; the SR images through ``save_images``), the
probe patches of :mod:`dukd_cli.distill.agreement` (the very patches training logged), and
:func:`dukd_cli.evaluate.metrics.psnr_y` for the crops (no border cropped: a crop lies inside the image).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dukd_cli.distill.agreement import teacher_spec
from dukd_cli.errors import DukdError
from dukd_cli.models.upscaler import Upscaler
from dukd_cli.report.runs import RunData
from dukd_cli.rundir import RunPaths

SPEED_SIDE = 128  # LR side of the timed input
SPEED_REPS = 5
AUTO_CROPS = 2
CROP_SIDE = 64  # HR pixels of an automatic crop
CROP_MARGIN = 16  # automatic crops stay this far from the border (padding effects are not the point)


@dataclass
class Crop:
    bench: str
    image: str
    x: int
    y: int
    w: int
    h: int
    auto: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "image": self.image,
            "x": self.x,
            "y": self.y,
            "w": self.w,
            "h": self.h,
            "auto": self.auto,
        }


def parse_crop(text: str) -> tuple[str | None, str, tuple[int, int, int, int]]:
    """``IMG:x,y,w,h`` or ``SET/IMG:x,y,w,h`` (HR pixels) -> (set or None, image stem, box)."""
    if ":" not in text:
        raise DukdError(f"--crop '{text}' must look like IMAGE:x,y,w,h (HR pixels), e.g. baby:120,200,64,64")
    name, box = text.rsplit(":", 1)
    try:
        x, y, w, h = (int(v) for v in box.split(","))
    except ValueError:
        raise DukdError(f"--crop '{text}': x,y,w,h must be four integers, e.g. baby:120,200,64,64") from None
    if w < 8 or h < 8 or x < 0 or y < 0:
        raise DukdError(f"--crop '{text}': the box must start inside the image and be at least 8x8 pixels")
    bench, _, image = name.rpartition("/")
    if not image:
        raise DukdError(f"--crop '{text}' names no image")
    return bench or None, image, (x, y, w, h)


@dataclass
class Measured:
    """Report-time measurements, JSON-ready (``rows``) plus the crops' pixels for the figure."""

    benches: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # bicubic, runs..., teacher
    crops: list[dict[str, Any]] = field(default_factory=list)
    crop_pixels: list[dict[str, np.ndarray]] = field(default_factory=list)
    teacher: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "benches": self.benches,
            "speed_side": SPEED_SIDE,
            "speed_reps": SPEED_REPS,
            "rows": self.rows,
            "crops": self.crops,
            "teacher": self.teacher,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# Models from run directories
# --------------------------------------------------------------------------------------------


def distill_config(run: RunData):
    from dukd_cli.distill import config as cfgmod

    return cfgmod.from_dict(run.config)


def teacher_key(run: RunData) -> tuple | None:
    """Which teacher a run names, as resolved (a scratch run's config holds the name without the
    preset's weights, which a kd run records): runs with equal keys share one teacher."""
    t = run.section("teacher")
    if not t.get("name"):
        return None
    try:
        spec = teacher_spec(distill_config(run))
        return (spec.arch, str(spec.weights), repr(sorted(spec.kwargs.items())))
    except DukdError:
        return (t.get("name"), t.get("weights"), repr(sorted((t.get("args") or {}).items())))


def build_run_teacher(run: RunData, device: torch.device):
    """The teacher a run names, by the trainer's own rules (its preset's weights, or the recorded file)."""
    from dukd_cli.distill.resolve import build_teacher
    from dukd_cli.models.factory import count_parameters

    spec = teacher_spec(distill_config(run))
    model = build_teacher(spec, device)
    return model, spec, count_parameters(model)


def build_run_student(run: RunData, device: torch.device):
    from dukd_cli.models.factory import build, count_parameters, resolve_spec

    s = run.section("student")
    w = RunPaths(run.root).student
    if not w.is_file():
        raise DukdError(f"{run.root} has no student.safetensors")
    spec = resolve_spec(str(s["name"]), run.scale, kwargs=s.get("args") or {}, weights=str(w))
    model = build(spec, device=device)
    return model, count_parameters(model)


def student_params(run: RunData) -> int | None:
    from dukd_cli.models.factory import count_parameters_of, resolve_spec

    s = run.section("student")
    try:
        spec = resolve_spec(str(s["name"]), run.scale, kwargs=s.get("args") or {})
        return count_parameters_of(spec.arch, spec.scale, spec.kwargs)
    except (DukdError, KeyError):
        return None


def probe_patches(run: RunData):
    """The run's fixed training patches (uint8 LR), rebuilt from its configuration."""
    from dukd_cli.data.discover import DIV2K
    from dukd_cli.distill import data as datamod
    from dukd_cli.distill.agreement import fixed_patches

    cfg = distill_config(run)
    t = cfg.train
    for spec in cfg.data.paths:  # the report never downloads: catalog data must be here already
        if str(spec).lower() == DIV2K and not Path(str(spec)).exists():
            from dukd_cli.data.catalog import get
            from dukd_cli.data.fetch import is_present

            if not is_present(get("DIV2K")):
                raise DukdError(
                    "the run's training data (div2k) is not on this machine; the report downloads nothing"
                )
    ts = datamod.prepare(cfg.data.paths, int(cfg.student.scale), t.patch_size, cfg.data.cache_dir)
    ds = datamod.PatchDataset(ts.items, int(cfg.student.scale), t.patch_size, t.seed)
    return fixed_patches(ds, int(t.seed))[0]


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------


def time_models(models: dict[str, torch.nn.Module], device: torch.device) -> dict[str, float]:
    """Median ms of one forward on a SPEED_SIDE^2 LR image, fp32; the models alternate within each
    repetition (a shared machine's load falls on all of them alike)."""
    from dukd_cli.upscale.inference import run_model

    x = torch.rand(1, 3, SPEED_SIDE, SPEED_SIDE, generator=torch.Generator().manual_seed(0)).to(device)
    times: dict[str, list[float]] = {k: [] for k in models}
    for rep in range(SPEED_REPS + 1):
        for k, m in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            run_model(m, x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if rep:  # the first pass warms up
                times[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------


def _y(img: np.ndarray) -> np.ndarray:
    from dukd_cli.evaluate.metrics import rgb_to_y

    return rgb_to_y(img)


def best_window(diff: np.ndarray, side: int, margin: int) -> tuple[int, int, float]:
    """(x, y, mean) of the ``side`` x ``side`` window (``margin`` px from the border) with the largest mean."""
    h, w = diff.shape
    side = max(1, min(side, h - 2 * margin, w - 2 * margin))
    ii = np.zeros((h + 1, w + 1))
    ii[1:, 1:] = diff.cumsum(0).cumsum(1)
    sums = ii[side:, side:] - ii[:-side, side:] - ii[side:, :-side] + ii[:-side, :-side]
    sums = sums[margin : h - side + 1 - margin, margin : w - side + 1 - margin]
    if sums.size == 0:
        return 0, 0, 0.0
    yy, xx = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(xx) + margin, int(yy) + margin, float(sums[yy, xx]) / (side * side)


def auto_crops(
    images: Iterable[tuple[str, dict[str, np.ndarray]]],
    students: list[str],
    teacher: str | None,
    scale: int,
    n: int = AUTO_CROPS,
) -> list[Crop]:
    """Where the runs differ most: the per-pixel spread (std) of the students' Y; with one student,
    its distance from the teacher (else from HR). One crop per image, the ``n`` best images.
    ``images``: ``(SET/NAME, {model: uint8 image, "HR": ...})`` pairs, read one at a time."""
    found = []
    for key, imgs in images:
        bench, name = key.split("/", 1)
        ys = [_y(imgs[s]) for s in students]
        if len(ys) >= 2:
            diff = np.std(np.stack(ys), axis=0)
        else:
            other = imgs[teacher] if teacher and teacher in imgs else imgs["HR"]
            diff = np.abs(ys[0] - _y(other))
        side = min(CROP_SIDE, diff.shape[0] // 2, diff.shape[1] // 2)
        if side < 8:
            continue
        x, y, score = best_window(diff, side, max(CROP_MARGIN, scale))
        found.append((score, Crop(bench, name, x, y, side, side, auto=True)))
    found.sort(key=lambda t: -t[0])
    return [c for _, c in found[:n]]


def crop_psnr(sr: np.ndarray, hr: np.ndarray, c: Crop) -> float:
    from dukd_cli.evaluate.metrics import psnr_y

    box = (slice(c.y, c.y + c.h), slice(c.x, c.x + c.w))
    return float(psnr_y(sr[box], hr[box], 0))


# --------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def measure(
    runs: list[RunData],
    benches: list[str],
    *,
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    crops: list[str] | None = None,
    speed: bool = True,
    progress: Callable[[str], None] | None = None,
    exports: Sequence[str | os.PathLike] | None = None,
) -> Measured:
    """Evaluate bicubic, every run's student and the teacher on ``benches``; agreement, speed, crops.

    ``exports``: directories written by ``dukd export`` (of these runs): each of their ONNX files
    (fp32, int8, fp16) is evaluated through ONNX Runtime and shown beside its run's row."""
    from dukd_cli.data.benchmarks import load_pairs
    from dukd_cli.distill.agreement import CachedReference
    from dukd_cli.evaluate.protocol import BICUBIC, resolve_benches
    from dukd_cli.upscale.inference import select_device

    say = progress or (lambda _m: None)
    dev = select_device(device)
    scale = int(runs[0].scale or 0)
    sets = resolve_benches(benches, data_dir)
    wanted = [parse_crop(c) for c in crops or []]
    out = Measured(benches=[s.name for s in sets])

    # Given crops are checked before anything is evaluated.
    pairs = {(s.name, p.name): p for s in sets for p in load_pairs(s, scale)}
    chosen = _given_crops(wanted, pairs, out.benches, scale)
    deployed = deployed_models(exports or [], runs, scale, dev)
    teacher, t_params = _teacher(runs, dev, out)
    ref = CachedReference(teacher) if teacher is not None else None

    with tempfile.TemporaryDirectory(prefix="dukd-report-") as tmp:
        saved = Path(tmp)
        models: dict[str, Any] = {"bicubic": BICUBIC}
        students: list[str] = []
        for r in runs:
            try:
                models[r.label], _ = build_run_student(r, dev)
                students.append(r.label)
            except DukdError as exc:
                out.notes.append(f"{r.label}: student not measured: {exc}")
        if ref is not None:
            models["teacher"] = ref
        for key, model in models.items():
            say(f"evaluating {key} on {', '.join(out.benches)}")
            use_ref = ref if key in students else None
            out.rows.append(
                _evaluated_row(key, model, scale, sets, dev, saved / key, use_ref, runs, t_params)
            )

        for d in deployed:
            say(f"evaluating {d.key} on {', '.join(out.benches)}")
            out.rows.append(_deployed_row(d, scale, sets, dev, saved / "deployed" / d.key))
        _order_rows(out, deployed)

        # The fixed training patches: the same ones training logged (rebuilt from each config).
        if teacher is not None:
            _training_agreement(out, runs, students, models, teacher, scale, dev)

        if speed:
            timed = {k: (m.teacher if k == "teacher" else m) for k, m in models.items() if k != "bicubic"}
            timed.update({d.key: d.model for d in deployed})
            say(f"timing {', '.join(timed)}")
            for k, ms in time_models(timed, dev).items():
                _row(out, k)["speed_ms"] = ms

        # Crops: given, or where the runs differ most.
        _crops(out, chosen, wanted, pairs, models, students, ref is not None, scale, saved, say)
    return out


@dataclass
class Deployed:
    """One ONNX file of an exported directory, as a row: ``key`` is ``LABEL · RUNTIME``."""

    key: str
    runtime: str
    file: Path
    model: Upscaler
    run: str | None  # the label of the run it was exported from, when that run is on the page
    params: int | None


def deployed_models(
    exports: Sequence[str | os.PathLike], runs: list[RunData], scale: int, dev: torch.device
) -> list[Deployed]:
    """Every ONNX file (fp32, int8, fp16) of each exported directory, loaded in ONNX Runtime (checked
    before anything is evaluated: an export of another scale, or with no ONNX file, is an error)."""
    import json

    from dukd_cli.export.runtimes import ONNX_RUNTIMES, load_onnx_runtime
    from dukd_cli.rundir import EXPORT_CONFIG

    by_root = {r.root.resolve(): r.label for r in runs}
    out: list[Deployed] = []
    for e in exports:
        d = Path(e).expanduser()
        if not (d / EXPORT_CONFIG).is_file():
            raise DukdError(f"--export {e}: not a directory written by dukd export (no {EXPORT_CONFIG})")
        try:
            cfg = json.loads((d / EXPORT_CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise DukdError(f"--export {e}: cannot read {EXPORT_CONFIG}: {exc}") from None
        run_dir = (cfg.get("provenance") or {}).get("run_dir")
        run = by_root.get(Path(run_dir).resolve()) if isinstance(run_dir, str) else None
        found = [(rt, d / f) for rt, (f, _how) in ONNX_RUNTIMES.items() if (d / f).is_file()]
        if not found:
            raise DukdError(f"--export {e} holds no ONNX file (export it with --format onnx)")
        params = cfg.get("parameters") if isinstance(cfg.get("parameters"), int) else None
        for rt, f in found:
            model = load_onnx_runtime(d, rt, scale=scale, device="cuda" if dev.type == "cuda" else "cpu")
            out.append(Deployed(f"{run or d.name} · {rt}", rt, f, model, run, params))
    keys = [x.key for x in out]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup:
        raise DukdError(f"--export: two exports would both be shown as '{dup}'; give each run's export once")
    return out


def _deployed_row(
    d: Deployed, scale: int, sets: list[Any], dev: torch.device, save_to: Path
) -> dict[str, Any]:
    from dukd_cli.evaluate.protocol import evaluate

    res = evaluate(d.model, scale, sets, device=dev, save_images=save_to)
    size = d.file.stat().st_size
    return {
        "model": d.key,
        "kind": "deployed",
        "runtime": d.runtime,
        "run": d.run,
        "file_bytes": size,
        "file_mb": size / 1e6,
        "results": {
            b.bench: {"psnr": _num(b.psnr), "ssim": _num(b.ssim), "n_images": b.n_images, "agree_psnr": None}
            for b in res
        },
        "params": d.params,
        "speed_ms": None,
        "agree_train_psnr": None,
    }


def _order_rows(out: Measured, deployed: list[Deployed]) -> None:
    """Each deployed row right after its run's row (the others before the teacher's)."""
    rows = [r for r in out.rows if r["kind"] != "deployed"]
    extra = {d.key: next(r for r in out.rows if r["model"] == d.key) for d in deployed}
    for d in deployed:
        at = next((i for i, r in enumerate(rows) if r["model"] == d.run), None)
        if at is None:
            at = next((i for i, r in enumerate(rows) if r["kind"] == "teacher"), len(rows)) - 1
        while at + 1 < len(rows) and rows[at + 1]["kind"] == "deployed":
            at += 1
        rows.insert(at + 1, extra[d.key])
    out.rows[:] = rows


def _given_crops(
    wanted: list[tuple[str | None, str, tuple[int, int, int, int]]],
    pairs: dict[tuple[str, str], Any],
    benches: list[str],
    scale: int,
) -> list[Crop]:
    """``--crop`` values as crops of the evaluated images (checked: the image exists, the box fits)."""
    chosen: list[Crop] = []
    for bench, image, (x, y, w, h) in wanted:
        match = [k for k in pairs if k[1] == image and (bench is None or k[0].lower() == bench.lower())]
        if not match:
            raise DukdError(
                f"--crop: no image '{image}' in {', '.join(benches)}" + (f" (set {bench})" if bench else "")
            )
        hb, name = match[0]
        hr = pairs[(hb, name)].hr
        if x + w > hr.shape[1] or y + h > hr.shape[0]:
            raise DukdError(
                f"--crop {image}:{x},{y},{w},{h} leaves the {hr.shape[1]}x{hr.shape[0]} image "
                f"(HR pixels, after cropping to a multiple of {scale})"
            )
        chosen.append(Crop(hb, name, x, y, w, h))
    return chosen


def _teacher(
    runs: list[RunData], dev: torch.device, out: Measured
) -> tuple[torch.nn.Module | None, int | None]:
    """The first run's teacher and its parameter count (None where no run names one, or it cannot be
    built: ``out.notes`` says so)."""
    teacher = t_params = None
    t_runs = [r for r in runs if teacher_key(r) is not None]
    if not t_runs:
        out.notes.append("no run names a teacher: no teacher row, no teacher agreement")
        return None, None
    try:
        teacher, t_spec, t_params = build_run_teacher(t_runs[0], dev)
        out.teacher = t_spec.name
    except DukdError as exc:
        out.notes.append(f"teacher not measured: {exc}")
    others = {teacher_key(r) for r in t_runs} - {teacher_key(t_runs[0])}
    if others:
        out.notes.append(
            f"the runs name different teachers; the teacher row and every agreement use "
            f"{t_runs[0].label}'s ({t_runs[0].section('teacher').get('name')})"
        )
    return teacher, t_params


def _evaluated_row(
    key: str,
    model: Upscaler | str,
    scale: int,
    sets: list[Any],
    dev: torch.device,
    save_to: Path,
    reference: Upscaler | None,
    runs: list[RunData],
    t_params: int | None,
) -> dict[str, Any]:
    """One row of the results table: ``model`` evaluated on every set (its SR images saved under
    ``save_to`` for the crops; a student's agreement with the teacher through ``reference``)."""
    from dukd_cli.evaluate.protocol import evaluate

    res = evaluate(model, scale, sets, device=dev, save_images=save_to, reference=reference)
    row: dict[str, Any] = {
        "model": key,
        "kind": "bicubic" if key == "bicubic" else ("teacher" if key == "teacher" else "student"),
        "results": {
            b.bench: {
                "psnr": _num(b.psnr),
                "ssim": _num(b.ssim),
                "n_images": b.n_images,
                "agree_psnr": _num(b.ref_psnr),
            }
            for b in res
        },
        "params": None,
        "speed_ms": None,
        "agree_train_psnr": None,
    }
    if key == "teacher":
        row["params"] = t_params
    elif key != "bicubic":
        row["params"] = student_params(next(r for r in runs if r.label == key))
    return row


def _training_agreement(
    out: Measured,
    runs: list[RunData],
    students: list[str],
    models: dict[str, Any],
    teacher: torch.nn.Module,
    scale: int,
    dev: torch.device,
) -> None:
    """Each student's PSNR against the teacher on its run's fixed training patches (runs with the
    same data, patch size and seed share the patches and the teacher's outputs)."""
    from dukd_cli.distill.agreement import patch_agreement, sr_patches

    cache: dict[tuple, tuple] = {}
    for r in runs:
        if r.label not in students:
            continue
        c = r.section("data"), r.section("train").get("patch_size"), r.section("train").get("seed")
        k = repr(c)
        try:
            if k not in cache:
                lr = probe_patches(r)
                cache[k] = (lr, sr_patches(teacher, lr, dev))
            lr, t_u8 = cache[k]
            val = patch_agreement(models[r.label], t_u8, lr, scale, dev)
            _row(out, r.label)["agree_train_psnr"] = _num(val)
        except DukdError as exc:
            out.notes.append(f"{r.label}: training-patch agreement not measured: {exc}")


def _crops(
    out: Measured,
    chosen: list[Crop],
    wanted: list[Any],
    pairs: dict[tuple[str, str], Any],
    models: dict[str, Any],
    students: list[str],
    has_teacher: bool,
    scale: int,
    saved: Path,
    say: Callable[[str], None],
) -> None:
    """The crops (given, else where the runs differ most): every model's panel and its PSNR."""
    from dukd_cli.images.imageio import read_rgb_uint8

    def pixels(bench: str, name: str) -> dict[str, np.ndarray]:
        px = {"HR": np.asarray(pairs[(bench, name)].hr)}
        for key in models:
            px[key] = read_rgb_uint8(saved / key / bench / f"{name}.png")
        return px

    if not wanted and students:
        say("choosing crops where the runs differ most")
        imgs = ((f"{b}/{n}", pixels(b, n)) for (b, n) in pairs)
        chosen = auto_crops(imgs, students, "teacher" if has_teacher else None, scale)
    for c in chosen:
        px = pixels(c.bench, c.image)
        box = (slice(c.y, c.y + c.h), slice(c.x, c.x + c.w))
        panels = {k: px[k][box].copy() for k in ["HR", *models]}
        psnrs = {k: (None if k == "HR" else _num(crop_psnr(px[k], px["HR"], c))) for k in panels}
        out.crops.append(
            {**c.to_json(), "psnr": psnrs, "image_size": [int(px["HR"].shape[1]), int(px["HR"].shape[0])]}
        )
        out.crop_pixels.append({"full": px["HR"], **panels})


def _row(m: Measured, key: str) -> dict[str, Any]:
    return next(r for r in m.rows if r["model"] == key)
