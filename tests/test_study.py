"""dukd study: a grid of tiny runs, resumable, whose Markdown table is its JSON's numbers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from dukd_cli.study.grid import build_plan
from dukd_cli.study.runner import run_study
from dukd_cli.study.table import summarise


def _images(folder, n=3, size=32, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def grid(tmp_path, tiny_x2):
    weights, _ = tiny_x2
    data = _images(tmp_path / "data")
    _images(tmp_path / "benchmarks" / "set5" / "HR", n=1, size=24, seed=1)
    opts = [
        "--teacher", "tiny", "--teacher-weights", weights, "--student", "edsr:n_feats=8,n_resblocks=1",
        "--scale", "2", "--data", data, "--iters", "2", "--batch-size", "2", "--patch-size", "8",
        "--seeds", "0,1", "--bench", "set5", "--data-dir", tmp_path / "benchmarks",
        "--device", "cpu", "--cache-dir", tmp_path / "cache",
    ]  # fmt: skip
    return {"root": tmp_path / "study", "opts": [str(o) for o in opts], "tmp": tmp_path}


def _md_rows(md: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")
    ]


def _mtimes(root):
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.glob("runs/*/*/*/eval.json")}


def test_study_grid_table_matches_json_and_resumes_without_rerunning(grid, run_dukd):
    root, opts = grid["root"], grid["opts"]
    code, out, err = run_dukd("study", root, "--method", "kd", "--method", "dukd", *opts)
    assert code == 0, out + err
    table = json.loads((root / "study-table.json").read_text())
    md = (root / "study.md").read_text()
    assert [r["method"] for r in table["rows"]] == ["kd", "dukd"] and table["missing"] == []
    rows = _md_rows(md)
    # the main table: every PSNR / SSIM mean ± std is the JSON's, rounded
    for r in table["rows"]:
        line = next(x for x in rows if x[1] == r["method"] and x[2] == "2")
        c = r["cells"]["Set5"]
        want = f"{c['psnr_mean']:.2f} ± {c['psnr_std']:.2f} / {c['ssim_mean']:.4f} ± {c['ssim_std']:.4f}"
        assert line[3] == want
        # and the JSON's mean is the mean of the cells' own evaluations
        evals = [
            json.loads(
                (
                    root / "runs" / "edsr-n_feats8-n_resblocks1" / r["method"] / f"seed{s}" / "eval.json"
                ).read_text()
            )
            for s in (0, 1)
        ]
        assert c["psnr_mean"] == pytest.approx(np.mean([e["results"]["Set5"]["psnr"] for e in evals]))
    # the paired difference DUKD - KD, per seed and its mean
    (p,) = table["paired"]
    for seed in ("0", "1"):
        diff = (
            table["rows"][1]["seeds"][seed]["Set5"]["psnr"] - table["rows"][0]["seeds"][seed]["Set5"]["psnr"]
        )
        assert p["per_seed"][seed]["Set5"] == pytest.approx(diff)
        line = next(x for x in rows if x[1] == "dukd - kd" and x[2] == seed)
        assert line[3] == f"{diff:+.2f}"
    # resume: delete one finished cell; only that one runs again
    before = _mtimes(root)
    assert len(before) == 4
    import shutil

    gone = "runs/edsr-n_feats8-n_resblocks1/kd/seed1/eval.json"
    shutil.rmtree(root / "runs" / "edsr-n_feats8-n_resblocks1" / "kd" / "seed1")
    code, out, err = run_dukd("study", root)  # the saved plan alone
    assert code == 0, out + err
    assert "3 finished, 1 to run" in out
    after = _mtimes(root)
    assert {k: v for k, v in after.items() if k != gone} == {k: v for k, v in before.items() if k != gone}
    assert gone in after
    # options that disagree with the saved plan: one line, nothing run
    other = [o if o != "0,1" else "0" for o in opts]
    code, out, err = run_dukd("study", root, "--method", "kd", "--method", "dukd", *other)
    assert code != 0 and "planned with other seeds" in out + err
    # dukd report accepts the study folder: its table on the page, the page's numbers the table's
    page = grid["tmp"] / "page.html"
    code, out, err = run_dukd("report", root, "-o", page, "--device", "cpu")
    assert code == 0, out + err
    rep = json.loads(page.with_suffix(".json").read_text())
    assert rep["study"] == json.loads((root / "study-table.json").read_text())
    assert sorted(r["label"] for r in rep["runs"]) == sorted(
        f"edsr-n_feats8-n_resblocks1/{m}/seed{s}" for m in ("kd", "dukd") for s in (0, 1)
    )
    html = page.read_text()
    c = rep["study"]["rows"][1]["cells"]["Set5"]
    assert f'data-json="study.rows.1.cells.Set5.psnr_mean" data-digits="2">{c["psnr_mean"]:.2f}<' in html


def test_a_killed_cell_resumes_from_its_checkpoint(grid):
    plan = build_plan(
        methods=["scratch", "kd"],
        seeds="0",
        students=["edsr:n_feats=8,n_resblocks=1"],
        teacher="tiny",
        teacher_weights=grid["opts"][grid["opts"].index("--teacher-weights") + 1],
        scale=2,
        data=[str(grid["tmp"] / "data")],
        iters=4,
        batch_size=2,
        patch_size=8,
        bench="set5",
        data_dir=str(grid["tmp"] / "benchmarks"),
    )
    plan.train["save_every"] = 1
    stopped = []

    def kill_once(trainer, it):
        if it == 2 and not stopped:
            stopped.append(trainer.paths.root)
            raise KeyboardInterrupt

    root = grid["root"]
    res = run_study(root, plan, device="cpu", callbacks=[kill_once])
    assert res.interrupted and res.exit_code == 130
    cell = root / "runs" / "edsr-n_feats8-n_resblocks1" / "scratch" / "seed0"
    assert stopped == [cell] and (cell / "state.pt").is_file() and not (cell / "eval.json").exists()
    assert json.loads((root / "study-table.json").read_text())["missing"] == [
        "edsr-n_feats8-n_resblocks1/scratch/seed0",
        "edsr-n_feats8-n_resblocks1/kd/seed0",
    ]
    events, steps = [], []
    res = run_study(
        root,
        device="cpu",
        on_event=events.append,
        callbacks=[lambda tr, it: steps.append((tr.paths.root.parent.name, it))],
    )
    assert not res.interrupted and res.ran == [
        "edsr-n_feats8-n_resblocks1/scratch/seed0",
        "edsr-n_feats8-n_resblocks1/kd/seed0",
    ]
    assert any("resuming at 2" in e for e in events)
    # the killed cell ran only its last two iterations; the other cell all four
    assert steps == [("scratch", 3), ("scratch", 4), ("kd", 1), ("kd", 2), ("kd", 3), ("kd", 4)]
    its = [json.loads(x)["iteration"] for x in (cell / "metrics.jsonl").read_text().splitlines()]
    assert its == sorted(set(its)) and its[-1] == 4  # continued, not restarted
    assert json.loads((cell / "eval.json").read_text())["iteration"] == 4


def test_unknown_method_is_one_line_and_nothing_is_written(grid, run_dukd):
    root = grid["root"]
    code, out, err = run_dukd("study", root, "--method", "kd", "--method", "nosuch", *grid["opts"])
    assert code != 0
    assert "unknown distillation method 'nosuch'" in out + err
    assert len((out + err).strip().splitlines()) == 1
    assert not root.exists()


def test_paper_table2_preset_dry_run(tmp_path, run_dukd):
    code, out, err = run_dukd("study", tmp_path / "paper", "--preset", "paper-table2", "--dry-run")
    assert code == 0, out + err
    assert "15 cells" in out and "edsr-s/csd/seed2: to run" in out and "iters 250000" in out
    assert not (tmp_path / "paper").exists()


def test_summarise_single_seed_has_no_std():
    plan = {
        "students": [{"label": "s"}],
        "methods": ["kd"],
        "seeds": [0],
        "scale": 4,
        "teacher": {"name": "t"},
    }
    rec = {"results": {"Set5": {"psnr": 30.0, "ssim": 0.9}}}
    t = summarise(plan, {"s/kd/seed0": rec})
    assert t["rows"][0]["cells"]["Set5"]["psnr_std"] is None
    assert re.search(
        r"\| 30\.00 / 0\.9000 \|", __import__("dukd_cli.study", fromlist=["markdown"]).markdown(t)
    )


def test_paper_table2_csd_starts_from_the_teacher():
    from dukd_cli.study.grid import Cell, cell_config

    plan = build_plan(preset="paper-table2", teacher_weights="EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth")
    assert cell_config(plan, Cell("edsr-s", "csd", 0)).student.weights.endswith("76ee1c8f.pth")
    assert cell_config(plan, Cell("edsr-s", "kd", 0)).student.weights is None
    assert cell_config(plan, Cell("edsr-s", "kd", 0)).teacher.weights.endswith("76ee1c8f.pth")
