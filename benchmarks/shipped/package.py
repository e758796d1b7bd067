"""Package the recipe's outputs as the shipped models: weight files and model cards in zoo/weights/.

    bash benchmarks/shipped/recipe.sh all           # train and evaluate (writes runs/shipped/)
    python benchmarks/shipped/package.py            # copy the weights, write the model cards (Python 3.11+)

The weight files are copied byte for byte from the runs (``student.safetensors``: the EMA weights
at the last iteration), so a rerun of the recipe on the same machine kind can be checked against the
shipped files by SHA-256 as well as by metrics. The cards take every number from the run
directories and the recipe's ``dukd evaluate --json`` files; nothing is typed in by hand. It also
prints README's results table (Markdown).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from zoo import shipped  # noqa: E402

BENCHES = ("Set5", "Set14", "BSD100")
RECIPE = "benchmarks/shipped/recipe.sh"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_eval(path: Path) -> dict[str, dict]:
    data = json.loads(path.read_text())
    rows = data["results"] if isinstance(data, dict) and "results" in data else data
    return {r["bench"]: r for r in rows}


def run_facts(run: Path) -> dict:
    cfg = tomllib.loads((run / "config.toml").read_text())
    start = (run / "config.toml").stat().st_mtime
    end = (run / "student.safetensors").stat().st_mtime
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    vals = [r for r in records if "val_psnr" in r]
    return {"cfg": cfg, "wall_s": end - start, "records": records, "vals": vals}


def hardware() -> str:
    import torch

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()}-core {cpu or platform.processor() or 'CPU'} ({platform.machine()}), no GPU; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def metrics_table(ev: dict[str, dict]) -> str:
    lines = ["| set | PSNR (dB) | SSIM |", "|---|---:|---:|"]
    for b in BENCHES:
        lines.append(f"| {b} | {ev[b]['psnr']:.2f} | {ev[b]['ssim']:.4f} |")
    return "\n".join(lines)


def front_matter(name: str, sha: str, params: int, ev: dict[str, dict]) -> str:
    lines = ["---", f"name: {name}", "scale: 4", f"parameters: {params}", f"sha256: {sha}"]
    for b in BENCHES:
        lines.append(f"{b.lower()}_psnr: {ev[b]['psnr']:.4f}")
        lines.append(f"{b.lower()}_ssim: {ev[b]['ssim']:.4f}")
    lines.append("---")
    return "\n".join(lines)


def training_block(facts: dict) -> str:
    t = facts["cfg"]["train"]
    return (
        f"- iterations: {t['iters']}, batch {t['batch_size']} patches of {t['patch_size']}x{t['patch_size']} LR pixels, "
        f"Adam lr {t['lr']:g} (x{t['gamma']:g} at {', '.join(map(str, t['milestones']))}), betas {t['betas']}, "
        f"L1 loss, EMA {t['ema_decay']} with warm-up (the shipped weights are the EMA at the last iteration), seed {t['seed']}\n"
        f"- precision: {t['precision']} autocast, channels-last: {t.get('channels_last', False)}, device: {t['device']}\n"
        f"- wall time: {facts['wall_s'] / 60:.1f} min (first to last write of the run directory)"
    )


def curve(facts: dict) -> str:
    if not facts["vals"]:
        return ""
    pts = ", ".join(f"{v['iteration']}: {v['val_psnr']:.2f}" for v in facts["vals"])
    return f"- Set5 PSNR of the EMA weights during training (iteration: dB): {pts}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/shipped", help="the recipe's RUNS folder")
    args = ap.parse_args()
    runs = Path(args.runs)
    from dukd_cli.models.factory import count_parameters_of

    hw = hardware()
    ev = {
        k: load_eval(runs / f"eval-{k}.json")
        for k in ("bicubic", "teacher", "student-scratch", "student-kd", "student-dukd")
    }
    teacher = run_facts(runs / "teacher")
    students = {m: run_facts(runs / f"student-{m}") for m in ("scratch", "kd", "dukd")}
    n_t = count_parameters_of("edsr", 4, shipped.TEACHER_KWARGS)
    n_s = count_parameters_of("edsr", 4, shipped.STUDENT_KWARGS)

    shipped.WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    for name, src in (
        (shipped.TEACHER_NAME, runs / "teacher"),
        (shipped.STUDENT_NAME, runs / "student-dukd"),
    ):
        shutil.copyfile(src / "student.safetensors", shipped.weight_file(name))
        shipped.weight_file(name).chmod(0o644)
    sha_t = sha256(shipped.weight_file(shipped.TEACHER_NAME))
    sha_s = sha256(shipped.weight_file(shipped.STUDENT_NAME))

    eval_cmd = (
        "dukd evaluate --model {m} --scale 4 --bench set5,set14,bsd100 --data-dir ../shared/data/benchmarks"
    )
    common = (
        "Data: `../shared/data/train`, the 291-image SR training set (T91 + BSD200; LR made by MATLAB-exact bicubic "
        "downscaling). At 48x48 LR patches (192x192 HR) 240 of the 291 images are large enough; the 51 smaller "
        "T91 images are skipped. Patches are random crops with flips and 90-degree rotations.\n\n"
        f"Hardware: {hw}. CPU runs of `dukd distill` are bit-reproducible on one machine kind and thread count: "
        f"rerunning the recipe there reproduces this file's SHA-256.\n"
    )
    d = ev["student-dukd"]
    b = ev["bicubic"]

    teacher_card = f"""{front_matter(shipped.TEACHER_NAME, sha_t, n_t, ev["teacher"])}

# {shipped.TEACHER_NAME}

EDSR-baseline (64 channels, 16 residual blocks, res_scale 1; {n_t:,} parameters) for x4
super-resolution, trained **from scratch by this project's own CLI** (`dukd distill --method scratch`).
It is the teacher of `{shipped.STUDENT_NAME}` and of `dukd distill --demo`. Weights: `{shipped.weight_file(shipped.TEACHER_NAME).name}`
(float32 safetensors, SHA-256 `{sha_t}`).

## Results (x4, PSNR/SSIM on Y, {4} px border cropped, measured by `dukd evaluate`)

{metrics_table(ev["teacher"])}

Command: `{eval_cmd.format(m=shipped.TEACHER_NAME)}`

For scale: MATLAB bicubic scores {b["Set5"]["psnr"]:.2f} / {b["Set14"]["psnr"]:.2f} / {b["BSD100"]["psnr"]:.2f} dB on the same sets. The
published EDSR-baseline was trained on DIV2K for hundreds of thousands of iterations on a GPU; this
teacher saw a tiny fraction of that training: it is a CPU-made teacher, not a state-of-the-art one.

## Training

{common}
{training_block(teacher)}
{curve(teacher)}
Exact command (from `{RECIPE}`, step `teacher`):

```
dukd distill --method scratch --student edsr-baseline --scale 4 --data ../shared/data/train --seed 0 \\
  --precision bf16 --channels-last --device cpu --val-bench set5 --data-dir ../shared/data/benchmarks \\
  --iters {teacher["cfg"]["train"]["iters"]} --batch-size 16 --patch-size 48 --lr {teacher["cfg"]["train"]["lr"]:g} \\
  --milestones {",".join(map(str, teacher["cfg"]["train"]["milestones"]))} --gamma {teacher["cfg"]["train"]["gamma"]:g} \\
  --val-every 500 --save-every 250 --out runs/shipped/teacher
```

## Limitations

Trained on 240 small images for {teacher["cfg"]["train"]["iters"]} iterations on two CPU cores: about
{b["Set5"]["psnr"]:.1f} -> {ev["teacher"]["Set5"]["psnr"]:.2f} dB on Set5, well short of a GPU-trained EDSR-baseline. Bicubic
degradation only (no noise, blur or JPEG); expect artefacts on real-world degraded photos.
"""

    student_card = (
        f"""{front_matter(shipped.STUDENT_NAME, sha_s, n_s, d)}

# {shipped.STUDENT_NAME}

A small x4 super-resolution network, EDSR with 32 channels and 4 residual blocks ({n_s:,}
parameters, {n_s / n_t:.1%} of its teacher), **distilled by this project's own CLI with DUKD**
(`dukd distill --method dukd`) from [`{shipped.TEACHER_NAME}`]({shipped.TEACHER_NAME}.md). It is `dukd upscale`'s
default model. Weights: `{shipped.weight_file(shipped.STUDENT_NAME).name}` (float32 safetensors, SHA-256 `{sha_s}`).

## Results (x4, PSNR/SSIM on Y, 4 px border cropped, measured by `dukd evaluate`)

{metrics_table(d)}

Command: `{eval_cmd.format(m=shipped.STUDENT_NAME)}`

The same student, same iterations and seed, trained three ways (Set5 / Set14 / BSD100 PSNR):

| method | Set5 | Set14 | BSD100 |
|---|---:|---:|---:|
| bicubic | {b["Set5"]["psnr"]:.2f} | {b["Set14"]["psnr"]:.2f} | {b["BSD100"]["psnr"]:.2f} |
"""
        + "".join(
            f"| {m} | {ev['student-' + m]['Set5']['psnr']:.2f} | {ev['student-' + m]['Set14']['psnr']:.2f} | {ev['student-' + m]['BSD100']['psnr']:.2f} |\n"
            for m in ("scratch", "kd", "dukd")
        )
        + f"""| teacher | {ev["teacher"]["Set5"]["psnr"]:.2f} | {ev["teacher"]["Set14"]["psnr"]:.2f} | {ev["teacher"]["BSD100"]["psnr"]:.2f} |

## Training

{common}
{training_block(students["dukd"])}
- method: DUKD (zoom-in and zoom-out upcycled inputs labelled by the teacher, invertible augmentations,
  two-step update), with its defaults for an EDSR-family student at x4
{curve(students["dukd"])}
Exact command (from `{RECIPE}`, step `students`; scratch and kd differ only in `--method`):

```
dukd distill --method dukd --teacher edsr-baseline --teacher-weights runs/shipped/teacher/student.safetensors \\
  --student edsr --student-arg n_feats=32 --student-arg n_resblocks=4 --scale 4 --data ../shared/data/train \\
  --seed 0 --precision bf16 --channels-last --device cpu --val-bench set5 --data-dir ../shared/data/benchmarks \\
  --iters {students["dukd"]["cfg"]["train"]["iters"]} --batch-size 16 --patch-size 48 --lr {students["dukd"]["cfg"]["train"]["lr"]:g} \\
  --milestones {",".join(map(str, students["dukd"]["cfg"]["train"]["milestones"]))} --gamma {students["dukd"]["cfg"]["train"]["gamma"]:g} \\
  --val-every 300 --save-every 300 --out runs/shipped/student-dukd
```

(`runs/shipped/teacher/student.safetensors` is byte-identical to `{shipped.TEACHER_NAME}.safetensors`.)
Wall times of the three student runs: scratch {students["scratch"]["wall_s"] / 60:.1f} min, kd {students["kd"]["wall_s"] / 60:.1f} min, dukd {students["dukd"]["wall_s"] / 60:.1f} min.

## Limitations

Bicubic degradation only (no noise, blur or JPEG); a CPU-scale training run, so far below what the
same architecture reaches with DIV2K and a GPU. Good for a quick, light x4 upscale on a laptop CPU.
"""
    )
    shipped.model_card(shipped.TEACHER_NAME).write_text(teacher_card)
    shipped.model_card(shipped.STUDENT_NAME).write_text(student_card)
    print(
        f"wrote {shipped.weight_file(shipped.TEACHER_NAME)} ({sha_t[:12]}), {shipped.weight_file(shipped.STUDENT_NAME)} ({sha_s[:12]})"
    )
    print("\nREADME results table:\n")
    print("| model | params | Set5 | Set14 | BSD100 |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        ("bicubic", "-", "bicubic"),
        (f"teacher (`{shipped.TEACHER_NAME}`, scratch)", f"{n_t / 1e6:.2f} M", "teacher"),
    ]
    rows += [
        (
            f"student, {m}" + (f" (`{shipped.STUDENT_NAME}`)" if m == "dukd" else ""),
            f"{n_s / 1e6:.2f} M",
            f"student-{m}",
        )
        for m in ("scratch", "kd", "dukd")
    ]
    for label, params, key in rows:
        cells = " | ".join(f"{ev[key][bn]['psnr']:.2f} / {ev[key][bn]['ssim']:.4f}" for bn in BENCHES)
        print(f"| {label} | {params} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
