"""`dukd report` and the teacher agreement logged while training: two tiny runs made here (a tiny
plugin network at x2, a 2-image benchmark set made here), one report shared by the tests."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import make_plugin_dir
from PIL import Image
from safetensors.torch import save_file

from dukd_cli import registry
from dukd_cli.distill import agreement
from dukd_cli.distill import config as C
from dukd_cli.distill.trainer import Trainer
from dukd_cli.errors import DukdError

pytest.importorskip("matplotlib", reason="dukd report needs the report extra (pip install 'dukd[report]')")


def _images(folder, n, size, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        y, x = np.mgrid[0:size, 0:size]
        img = np.stack([(x * 7 + i * 30) % 256, (y * 5) % 256, ((x * y) // 3) % 256], -1).astype(np.float64)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module", autouse=True)
def _quick_speed():
    """The speed column on a small input (the tests check it is there, not how fast)."""
    from dukd_cli.report import measure

    old = measure.SPEED_SIDE, measure.SPEED_REPS
    measure.SPEED_SIDE, measure.SPEED_REPS = 32, 2
    yield
    measure.SPEED_SIDE, measure.SPEED_REPS = old


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = make_plugin_dir(tmp_path_factory.mktemp("plugin"))
    sys.path.insert(0, str(root))
    registry.refresh()
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("dukd_testplugin", None)
    registry.refresh()


def _cfg(s, method):
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = "tiny", 2, {"n_feats": 4}
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = "tiny", str(s["teacher"]), {"n_feats": 8}
    cfg.method.name = method
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = [str(s["data"])], str(s["cache"]), 0
    cfg.train.iters, cfg.train.batch_size, cfg.train.patch_size = 4, 2, 8
    cfg.train.log_every, cfg.train.save_every, cfg.train.seed, cfg.train.lr = 1, 100, 3, 1e-3
    cfg.val.every, cfg.val.bench = 2, str(s["bench"])
    return cfg


@pytest.fixture(scope="module")
def runs(plugin, tmp_path_factory):
    from dukd_cli.models.factory import create_model

    root = tmp_path_factory.mktemp("report")
    s = {
        "data": _images(root / "data", 3, 40, 0),
        "bench": _images(root / "Tiny" / "HR", 2, 64, 1).parent,
        "cache": root / "cache",
        "root": root,
        "teacher": root / "teacher.safetensors",
    }
    torch.manual_seed(123)
    teacher = create_model("tiny", 2, n_feats=8)
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(s["teacher"]))
    for m in ("scratch", "kd"):
        Trainer(_cfg(s, m), root / m).fit()
    return s


@pytest.fixture(scope="module")
def report(runs):
    from dukd_cli.report.build import make_report

    out = runs["root"] / "out" / "report.html"
    return make_report([runs["root"] / "scratch", runs["root"] / "kd"], out, device="cpu")


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _lookup(data, path):
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


NUM = re.compile(r'<span class="num" data-json="([^"]+)" data-digits="(\d+)">([^<]+)</span>')


def test_training_logs_teacher_agreement(runs):
    for m in ("scratch", "kd"):  # scratch too: the run names a teacher
        vals = [r for r in _records(runs["root"] / m) if "val_psnr" in r]
        assert [r["iteration"] for r in vals] == [2, 4]
        for r in vals:
            assert r["agree_patches"] == agreement.N_PATCHES
            assert 0 < r["agree_train_psnr"] < 100 and 0 < r["agree_val_psnr"] < 100
        info = json.loads((runs["root"] / m / "run.json").read_text())
        assert info["sessions"][0]["device"] == "cpu" and info["sessions"][0]["torch"] == torch.__version__


def test_resumed_run_logs_the_same_agreement(runs):
    """The probe patches are drawn from the seed, not from the run's history: a run stopped at
    iteration 2 and resumed logs exactly what the uninterrupted run logged."""

    def stop_at_2(trainer, it):
        if it == 2:
            raise KeyboardInterrupt

    run = runs["root"] / "kd-resumed"
    assert Trainer(_cfg(runs, "kd"), run, callbacks=[stop_at_2]).fit().interrupted
    Trainer(C.DistillConfig(), run, resume=True).fit()
    keys = ("iteration", "val_psnr", "agree_train_psnr", "agree_val_psnr")
    got = [{k: r[k] for k in keys} for r in _records(run) if "val_psnr" in r]
    want = [{k: r[k] for k in keys} for r in _records(runs["root"] / "kd") if "val_psnr" in r]
    assert got == want[-1:] and got[0]["iteration"] == 4  # (stopped before its iteration-2 validation)
    assert len(json.loads((run / "run.json").read_text())["sessions"]) == 2


def test_probe_patches_are_fixed_and_the_cache_is_exact(runs):
    keys = agreement.fixed_patch_keys(5, 3)
    assert keys == agreement.fixed_patch_keys(5, 3) and keys != agreement.fixed_patch_keys(5, 4)
    assert sorted({k[0] for k in keys}) == list(range(5))  # spread over every image
    torch.manual_seed(0)
    from dukd_cli.models.factory import create_model

    t = create_model("tiny", 2, n_feats=8).eval()
    ref = agreement.CachedReference(t)
    x = torch.rand(1, 3, 12, 12)
    fresh = agreement._to_u8(ref(x))
    again = agreement._to_u8(ref(x))
    assert ref.hits == 1 and np.array_equal(fresh, again) and np.array_equal(fresh, agreement._to_u8(t(x)))


def test_report_has_every_section_and_images_decode(report):
    page = report.html.read_text()
    for sec in ("results", "curves", "agreement", "crops", "config", "missing"):
        assert f"<section id='{sec}'>" in page
    for words in (
        "Training curves",
        "Teacher agreement",
        "Side-by-side crops",
        "Configuration",
        "wall time",
        "hardware",
    ):
        assert words in page
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(report.figures) >= 4  # curves, agreement, two automatic crops
    files = {p.read_bytes() for p in report.figures}
    for b64 in embedded:
        png = base64.b64decode(b64)
        assert png in files  # the same PNG is written beside the page
        im = Image.open(io.BytesIO(png))
        im.load()
        assert im.width > 200 and im.height > 100
    crops = report.report["measured"]["crops"]
    assert len(crops) == 2 and all(c["auto"] for c in crops)
    assert set(crops[0]["psnr"]) == {"HR", "bicubic", "scratch", "kd", "teacher"}


def test_every_number_on_the_page_is_the_json(report):
    page = report.html.read_text()
    rep = json.loads(report.json.read_text())
    found = NUM.findall(page)
    assert len(found) > 40
    for path, digits, text in found:
        value = _lookup(rep, path)
        d = int(digits)
        assert text == (f"{value:,.0f}" if d == 0 else f"{value:.{d}f}"), path
    # No other number in the tables: every cell's digits come through num().
    for cell in re.findall(r"<td class='n[^']*'>(.*?)</td>", page):
        assert not re.search(r"\d", NUM.sub("", cell)), cell
    # The JSON holds what the run directories logged ...
    scratch = report.report["runs"][0]
    recs = _records(report.report["runs"][0]["dir"] and __import__("pathlib").Path(scratch["dir"]))
    assert scratch["val_psnr"] == [[r["iteration"], r["val_psnr"]] for r in recs if "val_psnr" in r]
    assert scratch["losses"]["rec"] == [[r["iteration"], r["losses"]["rec"]] for r in recs]
    # ... and the final student measured now on the logged patches agrees with the last logged value.
    row = next(r for r in rep["measured"]["rows"] if r["model"] == "scratch")
    assert row["agree_train_psnr"] == pytest.approx(scratch["agree_train_psnr"][-1][1], abs=1e-6)
    assert row["results"]["Tiny"]["agree_psnr"] == pytest.approx(scratch["agree_val_psnr"][-1][1], abs=1e-6)
    assert row["results"]["Tiny"]["psnr"] == pytest.approx(scratch["val_psnr"][-1][1], abs=1e-6)
    assert rep["paper"] is None  # a tiny pair is not the paper's


def test_old_run_reports_what_it_has_and_says_what_is_missing(runs, tmp_path):
    from dukd_cli.report.build import make_report

    old = tmp_path / "old"
    shutil.copytree(runs["root"] / "kd", old)
    (old / "run.json").unlink()
    lines = [{k: v for k, v in r.items() if not k.startswith("agree_")} for r in _records(old)]
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    res = make_report([old], tmp_path / "old.html", device="cpu")
    page = res.html.read_text()
    missing = page.split("<section id='missing'>", 1)[1]
    assert "teacher agreement over training" in missing and "hardware" in missing
    assert "not recorded" in page  # the hardware row
    assert res.report["runs"][0]["agree_train_psnr"] == [] and res.report["runs"][0]["val_psnr"]
    assert "curves" in res.report["figures"] and "agreement" in res.report["figures"]  # measured now instead


def test_paper_pair_is_recognised_by_structure(plugin):
    from dukd_cli.report.paper import paper_pair

    hit = paper_pair({"name": "edsr-l"}, {"name": "edsr", "args": {"n_feats": 64, "n_resblocks": 32}}, 4)
    assert hit is not None and hit["family"] == "EDSR" and hit["psnr"]["Set5"]["dukd"] == 32.47
    assert paper_pair({"name": "edsr-l"}, {"name": "edsr-s"}, 2) is None
    assert (
        paper_pair(
            {"name": "dukd-teacher-x4"}, {"name": "edsr", "args": {"n_feats": 32, "n_resblocks": 4}}, 4
        )
        is None
    )


def test_cli_report_crop_and_errors(runs, run_dukd, tmp_path):
    kd = runs["root"] / "kd"
    out = tmp_path / "r.html"
    code, o, err = run_dukd("report", kd, "-o", out, "--crop", "img1:20,20,16,16", "--device", "cpu")
    assert code == 0, err
    rep = json.loads(out.with_suffix(".json").read_text())
    (c,) = rep["measured"]["crops"]
    assert (c["image"], c["x"], c["y"], c["w"], c["h"], c["auto"]) == ("img1", 20, 20, 16, 16, False)
    for args, words in (
        (["--crop", "img1"], "IMAGE:x,y,w,h"),
        (["--crop", "nope:0,0,16,16"], "no image 'nope'"),
        (["--crop", "img1:60,60,16,16"], "leaves the 64x64 image"),
        (["-o", tmp_path / "r.pdf"], "ending in .html"),
    ):
        code, o, err = run_dukd("report", kd, "--device", "cpu", *map(str, args))
        assert code == 1 and words in err and "Traceback" not in err, err
    code, o, err = run_dukd("report", tmp_path / "nothing")
    assert code == 1 and "run directory not found" in err


def test_without_matplotlib_one_clear_line(runs, run_dukd, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from dukd_cli.report.build import make_report

    with pytest.raises(DukdError, match=r"pip install 'dukd\[report\]'"):
        make_report([runs["root"] / "kd"], tmp_path / "x.html")
    code, o, err = run_dukd("report", runs["root"] / "kd", "-o", tmp_path / "x.html")
    assert code == 1 and "dukd[report]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def _check_numbers(page, rep):
    found = NUM.findall(page)
    for path, digits, text in found:
        value = _lookup(rep, path)
        d = int(digits)
        assert text == (f"{value:,.0f}" if d == 0 else f"{value:.{d}f}"), path
    return found


def test_paper_table_beside_the_results_when_the_pair_is_the_papers(report):
    from dukd_cli.report import html
    from dukd_cli.report.paper import paper_pair

    rep = json.loads(report.json.read_text())
    rep["paper"] = paper_pair({"name": "edsr-l"}, {"name": "edsr-s"}, 4)
    page = html.render(rep, {})
    assert "The paper's numbers (EDSR: edsr-l &rarr; edsr-s)" in page and "Table 2" in page
    paths = [p for p, _, _ in _check_numbers(page, rep)]
    assert {
        "paper.psnr.Set5.scratch",
        "paper.psnr.Set5.kd",
        "paper.psnr.Set5.dukd",
        "paper.psnr.Urban100.dukd",
    } <= set(paths)


def test_without_a_benchmark_the_logged_validation_is_shown(runs, tmp_path):
    from dukd_cli.report.build import make_report

    run = tmp_path / "moved"
    shutil.copytree(runs["root"] / "scratch", run)
    cfg = (run / "config.toml").read_text().replace(str(runs["bench"]), str(tmp_path / "gone"))
    (run / "config.toml").write_text(cfg)
    res = make_report([run], tmp_path / "r.html", device="cpu")
    page = res.html.read_text()
    assert res.report["measured"] is None and "no benchmark evaluated" in " ".join(res.report["notes"])
    assert "each run's last validation" in page and "No crops" in page
    paths = [p for p, _, _ in _check_numbers(page, res.report)]
    assert "runs.0.last_val.val_psnr" in paths
    assert res.report["runs"][0]["last_val"]["val_psnr"] == _records(run)[-1]["val_psnr"]


def test_report_shows_the_precision_and_device_used_not_auto(report, runs):
    """Issue 19: the page said 'precision auto, device auto' (the configuration), not what ran."""
    info = json.loads((runs["root"] / "kd" / "run.json").read_text())
    assert info["sessions"][-1]["precision"] == "fp32" and info["sessions"][-1]["device"] == "cpu"
    page = report.html.read_text()
    assert "fp32, channels-last False, cpu; seed 3" in page
    assert "auto, channels-last" not in page


def test_report_shows_the_deployed_onnx_files_beside_their_run(runs, run_dukd, tmp_path):
    """``--export DIR`` (a ``dukd export`` of a run, fp32 + int8 ONNX): rows beside that run, each
    number the evaluator's for the file that ships, the int8 file's size on the page."""
    pytest.importorskip("onnxruntime.quantization")
    from dukd_cli.evaluate.protocol import evaluate
    from dukd_cli.export.bundle import export_model
    from dukd_cli.export.runtimes import load_onnx_runtime

    kd = runs["root"] / "kd"
    exp = tmp_path / "kd-export"
    calib = _images(tmp_path / "calib", 3, 128, 5)
    export_model(str(kd), exp, formats="safetensors,onnx", quantize="int8", calib=[calib], max_drop=50.0)
    out = tmp_path / "deployed.html"
    code, _o, err = run_dukd("report", kd, "--export", exp, "-o", out, "--device", "cpu")
    assert code == 0, err
    rep = json.loads(out.with_suffix(".json").read_text())
    rows = rep["measured"]["rows"]
    assert [r["model"] for r in rows] == ["bicubic", "kd", "kd · onnx", "kd · onnx-int8", "teacher"]
    by = {r["model"]: r for r in rows}
    bench = runs["bench"]
    for rt in ("onnx", "onnx-int8"):
        (res,) = evaluate(load_onnx_runtime(exp, rt), 2, [str(bench)], device="cpu")
        assert by[f"kd · {rt}"]["results"]["Tiny"]["psnr"] == pytest.approx(res.psnr, abs=1e-9)
        assert by[f"kd · {rt}"]["speed_ms"] > 0
    # fp32 ONNX computes what the run's torch student computes; int8 is another file, a quarter the size.
    assert by["kd · onnx"]["results"]["Tiny"]["psnr"] == pytest.approx(
        by["kd"]["results"]["Tiny"]["psnr"], abs=0.01
    )
    assert by["kd · onnx-int8"]["file_bytes"] == (exp / "model.int8.onnx").stat().st_size
    page = out.read_text()
    assert "kd · onnx-int8" in page and "what ships" in page
    for path, digits, text in NUM.findall(page):  # every number on the page is the JSON's
        value = _lookup(rep, path)
        assert text == (f"{value:,.0f}" if int(digits) == 0 else f"{value:.{int(digits)}f}"), path

    code, _o, err = run_dukd("report", kd, "--export", tmp_path / "calib", "-o", tmp_path / "x.html")
    assert (
        code == 1 and "not a directory written by dukd export" in err and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "x.html").exists()
