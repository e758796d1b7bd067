"""benchmarks/paper/table2_md.py: evaluation JSON -> a Table-2-shaped Markdown table, paper beside ours."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("table2_md", ROOT / "benchmarks" / "paper" / "table2_md.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paper_numbers_come_from_the_one_table_the_project_holds():
    from dukd_cli.report.paper import TABLE2

    t2 = _module()
    assert t2.PAPER[("edsr", "dukd", 4, "Set5")] == TABLE2["EDSR"]["psnr"]["Set5"]["dukd"] == 32.47
    assert len(t2.PAPER) == sum(len(r) for e in TABLE2.values() for r in e["psnr"].values())


def test_table_cells_hold_ours_and_the_papers(tmp_path):
    t2 = _module()
    result = {"results": [{"bench": "Set5", "psnr": 32.1234, "ssim": 0.89567}]}
    (tmp_path / "eval-rcan-kd-x4.json").write_text(json.dumps(result))
    text, record = t2.build(tmp_path, [4], ["rcan"], ["kd", "dukd"])
    kd_row = next(line for line in text.splitlines() if line.startswith("| RCAN-S | KD |"))
    assert "32.12 / 0.8957 (32.45)" in kd_row
    dukd_row = next(line for line in text.splitlines() if line.startswith("| RCAN-S | DUKD |"))
    assert "- (32.56)" in dukd_row and "- (26.62)" in dukd_row  # no run yet: the paper's number alone
    assert record["rcan-kd-x4"] == {"Set5": {"psnr": 32.1234, "ssim": 0.89567}}
    assert record["rcan-dukd-x4"] == {}
