"""Turn table2.sh's evaluation JSON into a Table-2-shaped Markdown table, the paper's numbers beside ours.

    python benchmarks/paper/table2_md.py RUNS [--scales "2 3 4"] [--students "edsr rcan swinir"]
                                              [--methods "scratch kd dukd"] [--json OUT.json]

Reads ``RUNS/eval-<student>-<method>-x<scale>.json`` (``dukd evaluate --json``). One table per scale;
rows are student x method, columns the benchmarks, cells ``ours PSNR / SSIM`` followed by the
paper's PSNR in brackets where we hold it. The paper's numbers quoted here are only those stated in
the project's method notes (``shared/docs/dukd-method.md``: Table 2, x4, Set5 and Urban100 for
scratch, KD and DUKD); every other cell of the paper is left out rather than quoted unverified.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

BENCHES = ("Set5", "Set14", "BSD100", "Urban100")
STUDENT_NAMES = {"edsr": "EDSR-S", "rcan": "RCAN-S", "swinir": "SwinIR-S"}
METHOD_NAMES = {"scratch": "scratch", "kd": "KD", "dukd": "DUKD"}


def paper_psnr() -> dict[tuple[str, str, int, str], float]:
    """(student family, method, scale, bench) -> the paper's PSNR on Y: the one copy of the paper's
    Table 2 numbers that the project holds (``dukd_cli.report.paper.TABLE2``, x4)."""
    from dukd_cli.report.paper import TABLE2

    return {
        (family.lower(), method, 4, bench): value
        for family, entry in TABLE2.items()
        for bench, row in entry["psnr"].items()
        for method, value in row.items()
    }


PAPER = paper_psnr()


def _results(path: Path) -> dict[str, tuple[float, float]]:
    d = json.loads(path.read_text())
    return {r["bench"]: (float(r["psnr"]), float(r["ssim"])) for r in d["results"]}


def build(runs: Path, scales: list[int], students: list[str], methods: list[str]) -> tuple[str, dict]:
    lines: list[str] = []
    record: dict = {}
    for s in scales:
        lines += [
            f"### x{s} (PSNR / SSIM on Y; the paper's PSNR in brackets)",
            "",
            "| student | method | " + " | ".join(BENCHES) + " |",
            "|---|---|" + "---|" * len(BENCHES),
        ]
        for f in students:
            for m in methods:
                p = runs / f"eval-{f}-{m}-x{s}.json"
                res = _results(p) if p.is_file() else {}
                record[f"{f}-{m}-x{s}"] = {b: {"psnr": v[0], "ssim": v[1]} for b, v in res.items()}
                cells = []
                for b in BENCHES:
                    ours = f"{res[b][0]:.2f} / {res[b][1]:.4f}" if b in res else "-"
                    paper = PAPER.get((f, m, s, b))
                    cells.append(ours + (f" ({paper:.2f})" if paper is not None else ""))
                lines.append(
                    f"| {STUDENT_NAMES.get(f, f)} | {METHOD_NAMES.get(m, m)} | " + " | ".join(cells) + " |"
                )
        lines.append("")
    return "\n".join(lines), record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--scales", default="2 3 4")
    ap.add_argument("--students", default="edsr rcan swinir")
    ap.add_argument("--methods", default="scratch kd dukd")
    ap.add_argument(
        "--json", type=Path, default=None, help="also write the numbers (default RUNS/table2.json)"
    )
    a = ap.parse_args(argv)
    text, record = build(a.runs, [int(x) for x in a.scales.split()], a.students.split(), a.methods.split())
    (a.json or a.runs / "table2.json").write_text(json.dumps(record, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
