"""Helpers of fixes_cpu.sh: the raw (non-EMA) student of a run, and the Markdown table of the evaluations.

    python benchmarks/paper/fixes_table.py raw RUN_DIR OUT.safetensors
    python benchmarks/paper/fixes_table.py table RUNS --variants "authors dukd true-inverse" --seeds "0 1"

The table reads ``RUNS/eval-<variant>-s<seed>-<ema|raw>.json`` (``dukd evaluate --json``) and prints,
per variant, the PSNR/SSIM of every seed and their mean, for the EMA weights and the raw weights;
it also writes ``RUNS/table.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BENCHES = ("Set5", "Set14", "BSD100")


def raw(run: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    st = torch.load(run / "state.pt", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in st["student"].items()}, str(out))


def _load(path: Path) -> dict[str, tuple[float, float]]:
    d = json.loads(path.read_text())
    return {r["bench"]: (float(r["psnr"]), float(r["ssim"])) for r in d["results"]}


def table(runs: Path, variants: list[str], seeds: list[str]) -> str:
    lines, record = [], {}
    for which, title in (
        ("ema", "EMA weights (student.safetensors, the deliverable)"),
        ("raw", "raw weights (state.pt)"),
    ):
        lines += [
            f"#### {title}",
            "",
            "| variant | seed | " + " | ".join(f"{b} PSNR / SSIM" for b in BENCHES) + " |",
            "|---|---|" + "---|" * len(BENCHES),
        ]
        for v in variants:
            per_seed = []
            for s in seeds:
                p = runs / f"eval-{v}-s{s}-{which}.json"
                if not p.is_file():
                    continue
                res = _load(p)
                per_seed.append(res)
                record.setdefault(which, {}).setdefault(v, {})[s] = res
                cells = [f"{res[b][0]:.2f} / {res[b][1]:.4f}" if b in res else "-" for b in BENCHES]
                lines.append(f"| {v} | {s} | " + " | ".join(cells) + " |")
            if len(per_seed) > 1:
                cells = []
                for b in BENCHES:
                    ps = [r[b][0] for r in per_seed if b in r]
                    ss = [r[b][1] for r in per_seed if b in r]
                    cells.append(f"**{statistics.mean(ps):.2f}** / {statistics.mean(ss):.4f}" if ps else "-")
                lines.append(f"| {v} | mean | " + " | ".join(cells) + " |")
        lines.append("")
    (runs / "table.json").write_text(json.dumps(record, indent=2) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("raw")
    r.add_argument("run", type=Path)
    r.add_argument("out", type=Path)
    t = sub.add_parser("table")
    t.add_argument("runs", type=Path)
    t.add_argument("--variants", default="authors dukd true-inverse")
    t.add_argument("--seeds", default="0 1")
    a = ap.parse_args(argv)
    if a.cmd == "raw":
        raw(a.run, a.out)
    else:
        print(table(a.runs, a.variants.split(), a.seeds.split()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
