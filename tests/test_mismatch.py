"""Mismatch help that is true: what the file is, what to type, and only options the command has."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dukd_cli.errors import StateDictMismatchError
from dukd_cli.models import external, mismatch, options
from dukd_cli.models.factory import build, create_model, resolve_spec
from zoo.presets import SWINIR_LIGHTWEIGHT

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mm")
    torch.manual_seed(0)
    light = create_model("swinir", 4, **SWINIR_LIGHTWEIGHT.kwargs)
    torch.save({"params": light.state_dict()}, root / "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth")
    torch.save(create_model("edsr", 2, n_feats=16, n_resblocks=2).state_dict(), root / "edsr16_x2.pth")
    (root / "data").mkdir()
    for i in range(2):
        img = (np.random.default_rng(i).random((64, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / "data" / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def _api_phrasing():
    options.use(options.API)  # commands set their own; leave the API's after each test
    yield
    options.use(options.API)


def _help_flags(run_dukd, *command: str) -> set[str]:
    code, out, _ = run_dukd(*command, "--help")
    assert code == 0
    return set(FLAG.findall(out))


def _check_flags(err: str, run_dukd, *command: str) -> set[str]:
    suggested = set(FLAG.findall(err))
    missing = suggested - _help_flags(run_dukd, *command)
    assert not missing, f"{' '.join(command)} suggests options it does not have: {missing}\n{err}"
    return suggested


LIGHT_HINT = "this file is SwinIR-S lightweight x4 (pixelshuffledirect): use `{m} swinir-lightweight` or `{a} upsampler=pixelshuffledirect`"


@pytest.fixture
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # option names in --help are never cut


def test_evaluate_mismatch_names_only_evaluate_options(files, run_dukd, wide_terminal):
    w = files / "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth"
    code, _, err = run_dukd("evaluate", "--model", "swinir-s", "--weights", w, "--scale", "4")
    assert code == 1
    assert "6 missing, 0 unexpected, 2 wrong-shape" in err
    assert LIGHT_HINT.format(m="--model", a="--arg") in err
    assert "--non-strict" not in err
    _check_flags(err, run_dukd, "evaluate")
    # the reference model's help is in the reference options
    code, _, err = run_dukd(
        "evaluate", "--model", "bicubic", "--scale", "4", "--reference-model", "swinir-s",
        "--reference-weights", w,
    )  # fmt: skip
    assert code == 1 and LIGHT_HINT.format(m="--reference-model", a="--reference-arg") in err
    _check_flags(err, run_dukd, "evaluate")


def test_wrong_scale_file_says_its_scale(files, run_dukd, wide_terminal):
    w = files / "edsr16_x2.pth"
    code, _, err = run_dukd(
        "evaluate",
        "--model",
        "edsr",
        "--arg",
        "n_feats=16",
        "--arg",
        "n_resblocks=2",
        "--weights",
        w,
        "--scale",
        "4",
    )
    assert code == 1
    assert (
        "this file is EDSR 16 ch, 2 blocks x2: it is for x2 (its upsampler's shapes say so), not x4: use `--scale 2`"
        in err
    )
    _check_flags(err, run_dukd, "evaluate")
    # different widths and scale: the arguments and the scale
    code, _, err = run_dukd(
        "upscale",
        files / "data" / "0.png",
        "-o",
        files / "o.png",
        "--model",
        "edsr-baseline",
        "--weights",
        w,
        "--scale",
        "4",
    )
    assert code == 1
    assert "use `--arg n_feats=16 --arg n_resblocks=2` or `--scale 2`" in err
    _check_flags(err, run_dukd, "upscale")
    assert not (files / "o.png").exists()


def test_upscale_and_export_mismatch(files, run_dukd, tmp_path, wide_terminal):
    w = files / "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth"
    code, _, err = run_dukd(
        "upscale",
        files / "data" / "0.png",
        "-o",
        tmp_path / "o.png",
        "--model",
        "swinir-s",
        "--weights",
        w,
        "--scale",
        "4",
    )
    assert code == 1 and LIGHT_HINT.format(m="--model", a="--arg") in err
    _check_flags(err, run_dukd, "upscale")
    code, _, err = run_dukd(
        "export",
        "--model",
        "swinir-s",
        "--weights",
        w,
        "--scale",
        "4",
        "-o",
        tmp_path / "exp",
        "--format",
        "safetensors",
    )
    assert code == 1 and LIGHT_HINT.format(m="--model", a="--arg") in err
    _check_flags(err, run_dukd, "export")
    assert not (tmp_path / "exp").exists()


def test_distill_teacher_and_student_mismatch(files, run_dukd, tmp_path, wide_terminal):
    w = files / "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth"
    base = ("distill", "--data", files / "data", "--iters", "1", "--batch-size", "1", "--patch-size", "8",
            "--val-every", "0", "--device", "cpu", "--cache-dir", tmp_path / "c", "--scale", "4")  # fmt: skip
    code, _, err = run_dukd(*base, "--teacher", "swinir-s", "--teacher-weights", w, "--student", "edsr", "--student-arg", "n_feats=8",
                            "--student-arg", "n_resblocks=1", "--out", tmp_path / "r1")  # fmt: skip
    assert code == 1 and LIGHT_HINT.format(m="--teacher", a="--teacher-arg") in err
    assert "--non-strict" not in err  # it loads --student-weights only
    _check_flags(err, run_dukd, "distill")
    code, _, err = run_dukd(
        *base,
        "--method",
        "scratch",
        "--student",
        "swinir-s",
        "--student-weights",
        w,
        "--out",
        tmp_path / "r2",
    )
    assert code == 1 and LIGHT_HINT.format(m="--student", a="--student-arg") in err
    assert "--non-strict loads only the tensors whose names and shapes match" in err
    assert _check_flags(err, run_dukd, "distill") >= {"--student", "--student-arg", "--non-strict"}


def test_python_api_names_arguments_not_flags(files):
    w = str(files / "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth")
    with pytest.raises(StateDictMismatchError) as info:
        build(resolve_spec("swinir-s", 4, weights=w))
    msg = str(info.value)
    assert "use model swinir-lightweight or arguments upsampler='pixelshuffledirect'" in msg
    assert "--" not in msg.split("\n")[-1]
    assert isinstance(info.value, mismatch.ExplainedMismatch) and info.value.report.wrong_shape


def test_other_family_suggests_the_file_as_the_model(files, tmp_path):
    w = str(files / "edsr16_x2.pth")
    with pytest.raises(StateDictMismatchError) as info:
        build(resolve_spec("imdn", 2, weights=w))
    last = info.value.for_options(options.EVALUATE).args[0].splitlines()[-1]
    assert last == f"  this file is EDSR 16 ch, 2 blocks x2: use the file itself as the model, `--model {w}`"


@pytest.mark.skipif(not external.available(), reason="spandrel is not installed")
def test_spandrel_file_given_as_weights(tmp_path, monkeypatch):
    external.import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    path = tmp_path / "RRDB_x4.pth"
    torch.save(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4).state_dict(), path)
    with pytest.raises(StateDictMismatchError) as info:
        build(resolve_spec("edsr", 4, weights=str(path)))
    last = info.value.for_options(options.UPSCALE).args[0].splitlines()[-1]
    assert (
        last
        == f"  this file is ESRGAN (8nf, 1nb) x4 (detected by spandrel), not edsr: give the file itself as the model, `--model {path}`"
    )
    # without spandrel: say how to get it
    monkeypatch.setattr(external, "_spandrel", None)
    monkeypatch.setitem(sys.modules, "spandrel", None)
    with pytest.raises(StateDictMismatchError) as info:
        build(resolve_spec("edsr", 4, weights=str(path)))
    assert "install spandrel (pip install 'dukd[spandrel]')" in str(info.value)
