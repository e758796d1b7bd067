"""The shipped models (zoo/weights/), the defaults that use them, and ``dukd distill --demo``."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dukd_cli import registry
from dukd_cli.models.factory import build, count_parameters, count_parameters_of, resolve_spec
from dukd_cli.registry import DEFAULT_STUDENT, DEFAULT_TEACHER
from zoo import shipped

NAMES = (shipped.TEACHER_NAME, shipped.STUDENT_NAME)


def card_meta(name: str) -> dict[str, str]:
    """The model card's front matter (``key: value`` lines between ``---`` fences)."""
    text = shipped.model_card(name).read_text()
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert m, f"{name}: model card has no front matter"
    return dict(line.split(": ", 1) for line in m.group(1).splitlines())


def test_defaults_name_the_shipped_presets():
    assert DEFAULT_STUDENT == shipped.STUDENT_NAME
    assert DEFAULT_TEACHER == shipped.TEACHER_NAME


@pytest.mark.parametrize("name", NAMES)
def test_shipped_presets_are_registered_with_their_files(name):
    preset = registry.get_preset(name)
    assert preset is not None and preset.scales == (4,)
    src = registry.source_of(preset.weights[4])
    assert src.verified and Path(src.source) == shipped.weight_file(name)
    assert shipped.weight_file(name).is_file() and shipped.model_card(name).is_file()


def test_zoo_list_shows_the_shipped_models(run_dukd):
    code, out, err = run_dukd("zoo", "list", "--json")
    assert code == 0, err
    import json

    rows = {r["name"]: r for r in json.loads(out)}
    for name in NAMES:
        assert rows[name]["kind"] == "preset"


def test_shipped_sizes_and_parameter_counts():
    assert count_parameters_of("edsr", 4, shipped.TEACHER_KWARGS) == 1_517_571  # EDSR-baseline x4
    n_student = count_parameters_of("edsr", 4, shipped.STUDENT_KWARGS)
    assert n_student == 158_979 and n_student < 300_000
    total = sum(shipped.weight_file(n).stat().st_size for n in NAMES)
    assert total <= 15 * 1024 * 1024


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_load_strictly_and_match_their_card(name):
    model = build(resolve_spec(name, 4, pretrained=True))  # strict: every key present, every shape right
    meta = card_meta(name)
    assert meta["name"] == name and meta["scale"] == "4"
    assert int(meta["parameters"]) == count_parameters(model)
    assert meta["sha256"] == hashlib.sha256(shipped.weight_file(name).read_bytes()).hexdigest()
    text = shipped.model_card(name).read_text()
    for needle in ("dukd distill", "dukd evaluate", "wall time", "Hardware", "../shared/data/train"):
        assert needle in text, f"{name} card lacks {needle!r}"


def test_shipped_student_beats_bicubic_by_a_decibel_on_set5(benchmarks_dir):
    from dukd_cli.evaluate.protocol import evaluate

    model = build(resolve_spec(DEFAULT_STUDENT, 4, pretrained=True))
    (r,) = evaluate(model, 4, ["set5"], data_dir=benchmarks_dir, device="cpu")
    (b,) = evaluate("bicubic", 4, ["set5"], data_dir=benchmarks_dir)
    assert r.psnr >= 29.43 and r.psnr - b.psnr >= 1.0
    meta = card_meta(DEFAULT_STUDENT)  # the card's numbers are what dukd evaluate measures
    assert float(meta["set5_psnr"]) == pytest.approx(r.psnr, abs=5e-4)
    assert float(meta["set5_ssim"]) == pytest.approx(r.ssim, abs=5e-5)


def test_shipped_teacher_card_matches_evaluate_on_set5(benchmarks_dir):
    from dukd_cli.evaluate.protocol import evaluate

    model = build(resolve_spec(DEFAULT_TEACHER, 4, pretrained=True))
    (r,) = evaluate(model, 4, ["set5"], data_dir=benchmarks_dir, device="cpu")
    meta = card_meta(DEFAULT_TEACHER)
    assert float(meta["set5_psnr"]) == pytest.approx(r.psnr, abs=5e-4)
    assert r.psnr > float(card_meta(DEFAULT_STUDENT)["set5_psnr"])  # the teacher is the stronger one


def test_upscale_without_model_uses_the_shipped_student(tmp_path, run_dukd):
    rng = np.random.default_rng(0)
    src = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)).save(src)
    code, _, err = run_dukd("upscale", src, "--quiet")
    assert code == 0, err
    out = tmp_path / "photo_x4.png"
    with Image.open(out) as im:
        assert im.size == (31 * 4, 23 * 4) and im.mode == "RGB"
    # The same pixels as asking for the preset by name.
    code, _, err = run_dukd(
        "upscale", src, "-o", tmp_path / "named.png", "--model", DEFAULT_STUDENT, "--quiet"
    )
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(tmp_path / "named.png")))


def test_demo_runs_and_prints_its_table(tmp_path, run_dukd):
    run = tmp_path / "demo"
    code, out, err = run_dukd(
        "distill",
        "--demo",
        "--iters",
        "2",
        "--batch-size",
        "2",
        "--out",
        run,
        "--cache-dir",
        tmp_path / "cache",
    )
    assert code == 0, err
    for row in ("bicubic", "student, before", "student, after", "teacher", "shipped student"):
        assert row in out
    assert (run / "student.safetensors").is_file() and (run / "config.toml").is_file()


def test_bare_distill_says_what_to_give_and_never_starts_the_demo(tmp_path, run_dukd):
    """Issue 19: a bare 'dukd distill' silently started the minutes-long demo."""
    code, out, err = run_dukd("distill", "--iters", "1", "--out", tmp_path / "d")
    assert code == 1 and "nothing to distil" in err and "'dukd distill --demo'" in err
    assert "student, after" not in out and not (tmp_path / "d").exists()


def test_demo_refuses_options_of_a_real_run(tmp_path, run_dukd):
    code, _, err = run_dukd("distill", "--demo", "--teacher", "edsr-l", "--out", tmp_path / "x")
    assert code != 0
    assert "--demo" in err and "--teacher" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_demo_api_rows_and_holdout(tmp_path):
    from dukd_cli.distill.demo import HOLDOUT, demo_config, run_demo, training_photos

    assert not any(Path(p).name in HOLDOUT for p in training_photos())
    cfg = demo_config(iters=3, device="cpu")
    assert (
        cfg.student.name == DEFAULT_STUDENT
        and cfg.teacher.name == DEFAULT_TEACHER
        and cfg.method.name == "dukd"
    )
    result = run_demo(
        tmp_path / "run", iters=3, batch_size=2, device="cpu", cache_dir=str(tmp_path / "cache")
    )
    names = [r.name for r in result.rows]
    assert names == ["bicubic", "student, before", "student, after", "teacher", "shipped student"]
    rows = {r.name: r for r in result.rows}
    assert rows["student, after"].psnr != rows["student, before"].psnr  # it trained
    assert rows["teacher"].psnr > rows["bicubic"].psnr
    assert result.iterations == 3


def test_demo_before_row_is_the_trainers_initial_student(tmp_path):
    import torch

    from dukd_cli.distill.demo import demo_config
    from dukd_cli.distill.resolve import resolve
    from dukd_cli.distill.trainer import Trainer

    cfg = demo_config(iters=1, device="cpu", cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(int(cfg.train.seed))  # what run_demo does for the "student, before" row
    before = build(resolve(cfg).student)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.setup()
    init = trainer.session.student_module.state_dict()
    assert all(torch.equal(v, init[k]) for k, v in before.state_dict().items())


def test_a_shipped_preset_is_random_unless_its_weights_are_asked_for():
    """Issue 19: a shipped preset's file (which has no published name) attached itself to every
    build of the preset, so the demo's "random" student was the trained one."""
    import torch

    from dukd_cli.models.factory import create_model

    file = str(shipped.weight_file(shipped.STUDENT_NAME))
    assert resolve_spec(DEFAULT_STUDENT, 4).weights is None
    assert resolve_spec(DEFAULT_STUDENT, 4, pretrained=True).weights == file
    assert resolve_spec(DEFAULT_STUDENT, 4, weights=DEFAULT_STUDENT).weights == file
    trained = dict(create_model(DEFAULT_STUDENT, 4, pretrained=True).named_parameters())
    torch.manual_seed(0)
    fresh = {k: p for k, p in create_model(DEFAULT_STUDENT, 4).named_parameters() if p.requires_grad}
    assert fresh and not any(torch.equal(p, trained[k]) for k, p in fresh.items())


def test_distill_student_preset_starts_random_and_its_teacher_trained():
    from dukd_cli.distill.config import DistillConfig
    from dukd_cli.distill.resolve import resolve

    cfg = DistillConfig()
    cfg.student.name, cfg.teacher.name, cfg.student.scale = DEFAULT_STUDENT, DEFAULT_TEACHER, 4
    cfg.data.paths = ["builtin"]
    res = resolve(cfg, plan=True)
    assert res.student.weights is None
    assert res.teacher.weights == str(shipped.weight_file(shipped.TEACHER_NAME))
    cfg.student.weights = DEFAULT_STUDENT  # asked for by name: the shipped file
    assert resolve(cfg, plan=True).student.weights == str(shipped.weight_file(shipped.STUDENT_NAME))
