"""A study's table in the shape of the paper's Table 2: rows methods (per student), columns the
benchmark sets, each cell the mean and standard deviation over seeds of PSNR and SSIM (on Y, as
``dukd evaluate``); then the paired difference DUKD - KD per seed (same seed, same data stream).

:func:`summarise` builds the JSON (every number at full precision); :func:`markdown` prints it
(PSNR to 2 decimals, SSIM to 4): the Markdown is made from the JSON and from nothing else.
The standard deviation is the sample one (n - 1); with one seed there is none (``null``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

TABLE_FORMAT = "dukd-study-table"
REFERENCE = "kd"  # the paired differences are DUKD-family methods minus this one


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    n = len(values)
    m = math.fsum(values) / n
    if n < 2:
        return m, None
    return m, math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def summarise(plan_json: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The study's table from its plan and ``results`` (``{cell key: eval record}``; an eval record
    holds ``student``, ``method``, ``seed`` and ``results: {bench: {psnr, ssim}}``)."""
    benches: list[str] = []
    for rec in results.values():
        for b in rec["results"]:
            if b not in benches:
                benches.append(b)
    rows = []
    missing = []
    for s in plan_json["students"]:
        for m in plan_json["methods"]:
            per_seed: dict[str, dict[str, dict[str, float]]] = {}
            for seed in plan_json["seeds"]:
                rec = results.get(f"{s['label']}/{m}/seed{seed}")
                if rec is None:
                    missing.append(f"{s['label']}/{m}/seed{seed}")
                    continue
                per_seed[str(seed)] = {b: dict(v) for b, v in rec["results"].items()}
            cells = {}
            for b in benches:
                ps = [r[b]["psnr"] for r in per_seed.values() if b in r]
                ss = [r[b]["ssim"] for r in per_seed.values() if b in r]
                if not ps:
                    continue
                pm, psd = mean_std(ps)
                sm, ssd = mean_std(ss)
                cells[b] = {"psnr_mean": pm, "psnr_std": psd, "ssim_mean": sm, "ssim_std": ssd, "n": len(ps)}
            rows.append(
                {"student": s["label"], "method": m, "n": len(per_seed), "cells": cells, "seeds": per_seed}
            )
    paired = []
    by = {(r["student"], r["method"]): r for r in rows}
    for s in plan_json["students"]:
        ref = by.get((s["label"], REFERENCE))
        if ref is None:
            continue
        for m in plan_json["methods"]:
            if not m.startswith("dukd"):
                continue
            row = by[(s["label"], m)]
            seeds = [k for k in row["seeds"] if k in ref["seeds"]]
            per_seed = {
                k: {
                    b: row["seeds"][k][b]["psnr"] - ref["seeds"][k][b]["psnr"]
                    for b in benches
                    if b in row["seeds"][k] and b in ref["seeds"][k]
                }
                for k in seeds
            }
            mean, std = {}, {}
            for b in benches:
                d = [v[b] for v in per_seed.values() if b in v]
                if d:
                    mean[b], std[b] = mean_std(d)
            paired.append(
                {
                    "student": s["label"],
                    "method": m,
                    "minus": REFERENCE,
                    "n": len(seeds),
                    "per_seed": per_seed,
                    "mean": mean,
                    "std": std,
                }
            )
    return {
        "format": TABLE_FORMAT,
        "version": 1,
        "what": plan_json.get("what", ""),
        "preset": plan_json.get("preset"),
        "scale": plan_json["scale"],
        "teacher": plan_json["teacher"].get("name"),
        "seeds": list(plan_json["seeds"]),
        "benches": benches,
        "rows": rows,
        "paired": paired,
        "missing": missing,
    }


def _pm(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def markdown(table: Mapping[str, Any]) -> str:
    """The table as Markdown (Table 2's shape), made from :func:`summarise`'s JSON only."""
    benches = table["benches"]
    seeds = ", ".join(str(s) for s in table["seeds"])
    lines = []
    if table.get("what"):
        lines += [f"*{table['what']}*", ""]
    lines += [
        f"x{table['scale']}, teacher {table['teacher']}; PSNR (dB) / SSIM on Y, mean ± standard deviation "
        f"(n - 1) over seeds {seeds}",
        "",
        "| student | method | seeds | " + " | ".join(benches) + " |",
        "|---|---|---|" + "---|" * len(benches),
    ]
    for r in table["rows"]:
        cells = []
        for b in benches:
            c = r["cells"].get(b)
            cells.append(
                "-"
                if c is None
                else f"{_pm(c['psnr_mean'], c['psnr_std'], 2)} / {_pm(c['ssim_mean'], c['ssim_std'], 4)}"
            )
        lines.append(f"| {r['student']} | {r['method']} | {r['n']} | " + " | ".join(cells) + " |")
    if table["paired"]:
        lines += [
            "",
            "Paired difference per seed (same seed, same data stream), PSNR dB:",
            "",
            "| student | difference | seed | " + " | ".join(benches) + " |",
            "|---|---|---|" + "---|" * len(benches),
        ]
        for p in table["paired"]:
            what = f"{p['method']} - {p['minus']}"
            for seed, diffs in p["per_seed"].items():
                vals = [_signed(diffs[b]) if b in diffs else "-" for b in benches]
                lines.append(f"| {p['student']} | {what} | {seed} | " + " | ".join(vals) + " |")
            vals = [
                (_signed(p["mean"][b]) + (f" ± {p['std'][b]:.2f}" if p["std"].get(b) is not None else ""))
                if b in p["mean"]
                else "-"
                for b in benches
            ]
            lines.append(f"| {p['student']} | {what} | mean | " + " | ".join(vals) + " |")
    if table["missing"]:
        lines += ["", f"Not finished yet: {', '.join(table['missing'])}."]
    return "\n".join(lines) + "\n"
