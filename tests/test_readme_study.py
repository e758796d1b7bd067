"""README's study table is the one `dukd study` wrote: the Markdown between the study markers equals
what the study's renderer makes of the committed JSON, and its numbers are the JSON's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dukd_cli.study.table import markdown

ROOT = Path(__file__).resolve().parents[1]


def _readme_block() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- study: (\S+) -->\n(.*?)\n<!-- /study -->", text, re.S)
    assert m, "README has no study table between <!-- study: FILE --> and <!-- /study -->"
    return m.group(1), m.group(2)


def test_readme_study_table_is_the_studys_json():
    path, block = _readme_block()
    table = json.loads((ROOT / path).read_text(encoding="utf-8"))
    assert block.strip() == markdown(table).strip()
    # and, independently of the renderer: each row's Set5 mean PSNR is the JSON's, to 2 decimals
    for row in table["rows"]:
        cell = row["cells"]["Set5"]
        line = next(ln for ln in block.splitlines() if f"| {row['method']} |" in ln)
        assert f"{cell['psnr_mean']:.2f} ± {cell['psnr_std']:.2f}" in line
        assert row["n"] >= 2  # at least two seeds per cell


def test_readme_study_json_holds_every_seed_it_averages():
    path, _ = _readme_block()
    table = json.loads((ROOT / path).read_text(encoding="utf-8"))
    for row in table["rows"]:
        for bench, cell in row["cells"].items():
            vals = [row["seeds"][s][bench]["psnr"] for s in row["seeds"]]
            assert abs(sum(vals) / len(vals) - cell["psnr_mean"]) < 1e-9
