"""dukd_cli.export.bundle and `dukd export`: directory contents, reload, ONNX parity, atomicity, provenance, Hub push."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dukd_cli.errors import DukdError
from dukd_cli.export import bundle as exp
from dukd_cli.export.bundle import export_model
from dukd_cli.export.onnx import OnnxModel, onnx_parity
from dukd_cli.export.provenance import read_metrics
from dukd_cli.models.factory import build, create_model, resolve_spec
from dukd_cli.models.sizes import pad_to_size
from dukd_cli.upscale.inference import run_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def tiny_weights(path: Path, scale: int = 2, n_feats: int = 8, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    m = create_model("tiny", scale, n_feats=n_feats)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path


def test_export_directory_contents_and_reload(tiny_plugin, tmp_path):
    w = tiny_weights(tmp_path / "w.safetensors")
    out = tmp_path / "exported"
    res = export_model("tiny", out, scale=2, weights=str(w), kwargs={"n_feats": 8})
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.onnx",
        "model.safetensors",
    ]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "tiny" and cfg["scale"] == 2 and cfg["arguments"] == {"n_feats": 8}
    assert cfg["input_range"] == "[0,1] RGB"
    assert cfg["dukd_version"]
    assert cfg["provenance"]["weights"] == str(w.resolve()) and len(cfg["provenance"]["weights_sha256"]) == 64
    onnx_cfg = cfg["onnx"]
    assert onnx_cfg["opset"] >= 17 and onnx_cfg["dynamic_axes"] == ["batch", "height", "width"]
    assert onnx_cfg["parity_max_abs_diff"] <= 1e-4
    assert res.onnx is not None and res.onnx.dynamic_hw
    card = (out / "README.md").read_text()
    assert "tiny" in card and "x2" in card and "model.onnx" in card
    # No temporary directories are left beside it.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # --model DIR: the same network, the same outputs.
    spec = resolve_spec(str(out))
    assert spec.arch == "tiny" and spec.scale == 2 and spec.kwargs == {"n_feats": 8}
    again = build(spec)
    orig = create_model("tiny", 2, weights=str(w), n_feats=8)
    x = torch.rand(1, 3, 19, 23)
    with torch.no_grad():
        assert torch.equal(again(x), orig(x))
    with pytest.raises(DukdError, match="x2"):
        resolve_spec(str(out), 4)


def test_onnx_dynamic_shapes_and_runtime_model(tiny_plugin, tmp_path):
    w = tiny_weights(tmp_path / "w.safetensors", scale=3)
    out = tmp_path / "e"
    export_model("tiny", out, scale=3, weights=str(w))
    orig = create_model("tiny", 3, weights=str(w))
    assert onnx_parity(orig, out / "model.onnx", [(3, 7, 41), (1, 64, 16)]) <= 1e-4
    om = OnnxModel.from_dir(out)
    assert om.scale == 3 and om.fixed_input_size is None
    x = torch.rand(1, 3, 50, 70)
    a = run_model(om, x, tile=32, tile_overlap=8)
    b = run_model(orig, x, tile=32, tile_overlap=8)
    assert a.shape == (1, 3, 150, 210)
    assert (a - b).abs().max().item() <= 1e-4
    with pytest.raises(DukdError, match="fp32"):
        run_model(om, x, precision="bf16")


@pytest.mark.parametrize(
    "arch,kwargs",
    [
        ("edsr", {"n_feats": 8, "n_resblocks": 1}),
        ("rcan", {"n_feats": 8, "n_resgroups": 1, "n_resblocks": 1, "reduction": 4}),
        ("swinir", {"embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "num_feat": 8}),
    ],
)
def test_export_zoo_networks_onnx_parity(arch, kwargs, tmp_path):
    torch.manual_seed(0)
    m = create_model(arch, 2, **kwargs)
    w = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(w))
    out = tmp_path / arch
    res = export_model(arch, out, scale=2, weights=str(w), kwargs=kwargs)
    assert res.onnx is not None and res.onnx.max_abs_diff <= 1e-4
    # Dynamic H/W (a size that is no multiple of any window), or a documented fixed size.
    cfg = json.loads((out / "config.json").read_text())
    if res.onnx.dynamic_hw:
        assert onnx_parity(m.eval(), out / "model.onnx", [(1, 13, 22)]) <= 1e-4
    else:
        assert cfg["onnx"]["fixed_input_size"] and cfg["onnx"]["notes"]
    again = build(resolve_spec(str(out)))
    x = torch.rand(1, 3, 16, 12)
    with torch.no_grad():
        assert torch.equal(again(x), m.eval()(x))


def test_fixed_size_fallback(tiny_plugin, tmp_path, monkeypatch):
    """Where the exporter cannot make H/W dynamic, a fixed-size export is made, recorded and tiled."""
    from dukd_cli.export import onnx as onnx_export

    real = onnx_export._onnx_export

    def no_dynamic(module, example, path, opset, dynamic_hw):
        if dynamic_hw:
            raise RuntimeError("pretend dynamic shapes are unsupported")
        return real(module, example, path, opset, dynamic_hw)

    monkeypatch.setattr(onnx_export, "_onnx_export", no_dynamic)
    w = tiny_weights(tmp_path / "w.safetensors")
    logs: list[str] = []
    out = tmp_path / "fixed"
    res = export_model("tiny", out, scale=2, weights=str(w), onnx_fixed_size=32, log=logs.append)
    assert res.onnx is not None and not res.onnx.dynamic_hw and res.onnx.fixed_input_size == (32, 32)
    assert any("fixed 32x32" in m for m in logs)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["onnx"]["fixed_input_size"] == [32, 32] and cfg["onnx"]["dynamic_axes"] == ["batch"]
    assert "fixed input size 32x32" in (out / "README.md").read_text()
    om = OnnxModel.from_dir(out)
    orig = create_model("tiny", 2, weights=str(w))
    # Larger than the fixed size: tiled at exactly that size, like PyTorch tiled at 32.
    x = torch.rand(1, 3, 45, 70)
    a, b = run_model(om, x), run_model(orig, x, tile=32)
    assert a.shape == b.shape == (1, 3, 90, 140) and (a - b).abs().max().item() <= 1e-4
    # Smaller: reflect-padded up to the fixed size, output cropped.
    x = torch.rand(1, 3, 20, 25)
    a = run_model(om, x)
    with torch.no_grad():
        b = orig(pad_to_size(x, 32, 32))[..., :40, :50]
    assert a.shape == (1, 3, 40, 50) and (a - b).abs().max().item() <= 1e-4


def test_failed_export_leaves_nothing(tiny_plugin, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise DukdError("ONNX export failed its check: max abs difference 0.5 > 1e-4")

    monkeypatch.setattr(exp, "export_onnx", boom)
    out = tmp_path / "never"
    with pytest.raises(DukdError, match="failed its check"):
        export_model("tiny", out, scale=2)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_is_loud(tiny_plugin, tmp_path, monkeypatch):
    from dukd_cli.export import onnx as onnx_export

    monkeypatch.setattr(onnx_export, "onnx_parity", lambda *a, **k: 0.25)
    out = tmp_path / "bad"
    with pytest.raises(DukdError, match="0.25"):
        export_model("tiny", out, scale=2)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_directory_needs_overwrite(tiny_plugin, tmp_path):
    out = tmp_path / "e"
    export_model("tiny", out, scale=2, formats="safetensors")
    assert not (out / "model.onnx").exists()
    with pytest.raises(DukdError, match="--overwrite"):
        export_model("tiny", out, scale=2, formats="safetensors")
    (out / "stale.txt").write_text("old")
    export_model("tiny", out, scale=2, formats="safetensors,onnx", overwrite=True)
    assert (out / "model.onnx").exists() and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["e"]


def test_formats_parsing():
    assert exp.parse_formats("onnx") == ("safetensors", "onnx")
    assert exp.parse_formats("safetensors") == ("safetensors",)
    with pytest.raises(DukdError, match="unknown export format"):
        exp.parse_formats("tflite")


def test_onnx_missing_message(tiny_plugin, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DukdError, match=r"pip install dukd\[onnx\]"):
        export_model("tiny", tmp_path / "e", scale=2)
    assert not (tmp_path / "e").exists()
    # safetensors-only export needs neither.
    export_model("tiny", tmp_path / "e", scale=2, formats="safetensors")


def make_run_dir(root: Path, *, metrics: bool = True) -> Path:
    run = root / "run"
    run.mkdir()
    tiny_weights(run / "student.safetensors", scale=2, n_feats=4, seed=3)
    (run / "config.toml").write_text(
        "# dukd distill run\n"
        '[student]\nname = "tiny"\nscale = 2\nargs = { n_feats = 4 }\n\n'
        '[teacher]\nname = "tiny4"\nweights = "hf://someone/teacher/t.safetensors@abc"\nargs = {}\n\n'
        '[method]\nname = "dukd"\nupdate = "two-step"\n\n'
        '[data]\npaths = ["builtin"]\n\n'
        "[train]\niters = 1200\nbatch_size = 16\n"
    )
    if metrics:
        (run / "metrics.jsonl").write_text(
            '{"iteration": 100, "loss": 0.1, "lr": 0.0001}\n'
            '{"iteration": 500, "val_bench": "set5", "val_psnr": 30.5, "val_ssim": 0.87}\n'
            "not json\n"
            '{"iteration": 1000, "loss": 0.05, "val_bench": "set5", "val_psnr": 31.25, "val_ssim": 0.88}\n'
            '{"iteration": 1100, "loss": 0.04}\n'
        )
    return run


def test_export_from_distill_run_dir(tiny_plugin, tmp_path, run_dukd):
    run = make_run_dir(tmp_path)
    out = tmp_path / "student"
    code, stdout, err = run_dukd("export", "--model", run, "-o", out, "--format", "safetensors")
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "tiny" and cfg["scale"] == 2 and cfg["arguments"] == {"n_feats": 4}
    prov = cfg["provenance"]
    assert prov["method"] == "dukd" and prov["iterations"] == 1200
    assert prov["teacher"]["name"] == "tiny4" and prov["teacher"]["weights"].startswith("hf://")
    assert prov["data"] == {"paths": ["builtin"]}
    assert prov["validation"] == {"iteration": 1000, "val_bench": "set5", "val_psnr": 31.25, "val_ssim": 0.88}
    assert prov["run_dir"] == str(run.resolve())
    assert "dukd" in (out / "README.md").read_text() and "31.25" in (out / "README.md").read_text()
    with torch.no_grad():
        x = torch.rand(1, 3, 8, 8)
        ref = create_model("tiny", 2, weights=str(run / "student.safetensors"), n_feats=4)
        assert torch.equal(build(resolve_spec(str(out)))(x), ref(x))
    # --scale must agree with the run.
    code, _, err = run_dukd(
        "export", "--model", run, "-o", tmp_path / "x", "--scale", "4", "--format", "safetensors"
    )
    assert code == 1 and "x2" in err


def test_export_with_run_option_and_defensive_metrics(tiny_plugin, tmp_path):
    run = make_run_dir(tmp_path, metrics=False)
    w = tiny_weights(tmp_path / "w.safetensors", n_feats=4)
    out = tmp_path / "e"
    export_model(
        "tiny", out, scale=2, weights=str(w), kwargs={"n_feats": 4}, run_dir=run, formats="safetensors"
    )
    prov = json.loads((out / "config.json").read_text())["provenance"]
    assert prov["method"] == "dukd" and "validation" not in prov
    assert read_metrics(tmp_path / "missing.jsonl") == {}


def test_cli_export_then_model_dir(tiny_plugin, tmp_path, run_dukd):
    w = tiny_weights(tmp_path / "w.safetensors", scale=4)
    out = tmp_path / "cli"
    code, stdout, err = run_dukd(
        "export",
        "--model",
        "tiny",
        "--weights",
        w,
        "--scale",
        "4",
        "--arg",
        "n_feats=8",
        "--format",
        "safetensors,onnx",
        "-o",
        out,
    )
    assert code == 0, err
    assert "exported tiny x4" in stdout and "ONNX opset" in stdout
    code, stdout, err = run_dukd("zoo", "info", str(out), "--scale", "4", "--json")
    assert code == 0, err
    assert json.loads(stdout)["kind"] == "export"
    # Errors are one line.
    code, _, err = run_dukd("export", "--model", "tiny", "--scale", "4", "-o", out)
    assert code == 1 and "--overwrite" in err and "Traceback" not in err
    code, _, err = run_dukd("export", "--model", "nosuchnet", "--scale", "4", "-o", tmp_path / "z")
    assert code == 1 and "unknown architecture" in err


def test_push_to_hub_calls(tiny_plugin, tmp_path, run_dukd, monkeypatch):
    import huggingface_hub

    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kw):
        calls.append(("upload_folder", kw))
        assert sorted(p.name for p in Path(kw["folder_path"]).iterdir()) == [
            "README.md",
            "config.json",
            "model.safetensors",
        ]
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "hub"
    code, stdout, err = run_dukd(
        "export",
        "--model",
        "tiny",
        "--scale",
        "2",
        "--format",
        "safetensors",
        "-o",
        out,
        "--push-to-hub",
        "me/tiny-x2",
        "--private",
    )
    assert code == 0, err
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert (
        calls[0][1]["repo_id"] == "me/tiny-x2"
        and calls[0][1]["private"] is True
        and calls[0][1]["exist_ok"] is True
    )
    assert calls[1][1]["repo_id"] == "me/tiny-x2" and Path(calls[1][1]["folder_path"]) == out
    assert "pushed to https://huggingface.co/me/tiny-x2" in stdout

    with pytest.raises(DukdError, match="OWNER/NAME"):
        exp.push_to_hub(out, "no-owner")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DukdError, match="HF_HUB_OFFLINE"):
        exp.push_to_hub(out, "me/tiny-x2")


def test_push_failure_is_one_line(tiny_plugin, tmp_path, monkeypatch):
    import huggingface_hub

    def create_repo(self, repo_id, **kw):
        raise RuntimeError("401 Unauthorized: invalid token\nmore details")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "e"
    export_model("tiny", out, scale=2, formats="safetensors")
    with pytest.raises(DukdError, match="401 Unauthorized") as ei:
        exp.push_to_hub(out, "me/x")
    assert "\n" not in str(ei.value)


def test_api_export_of_a_preset_holds_its_declared_weights(tmp_path):
    """``export_model("dukd-student-x4", ...)`` without weights exports the shipped network, as
    ``dukd export --model dukd-student-x4`` does (it used to export a random initialisation through
    the API: a benchmark's "shipped student" rows scored 12.4 dB)."""
    from safetensors.torch import load_file

    from dukd_cli.export.bundle import export_model
    from zoo.shipped import STUDENT_NAME, weight_file

    out = tmp_path / "student"
    export_model(STUDENT_NAME, out, formats="safetensors")
    shipped = load_file(str(weight_file(STUDENT_NAME)))
    exported = load_file(str(out / "model.safetensors"))
    assert set(exported) == set(shipped)
    assert all(torch.equal(exported[k], shipped[k]) for k in shipped)


def test_cli_export_warns_only_when_it_exports_random_weights(tiny_plugin, tmp_path, run_dukd):
    """Through the installed script: a preset exports its shipped weights without a warning; an
    architecture without --weights exports its random initialisation and says so in one line."""
    from safetensors.torch import load_file

    from zoo.shipped import STUDENT_NAME, weight_file

    code, _o, err = run_dukd(
        "export", "--model", STUDENT_NAME, "--format", "safetensors", "-o", tmp_path / "s"
    )
    assert code == 0, err
    assert "random initialisation" not in err
    shipped = load_file(str(weight_file(STUDENT_NAME)))
    exported = load_file(str(tmp_path / "s" / "model.safetensors"))
    assert all(torch.equal(exported[k], shipped[k]) for k in shipped)

    code, _o, err = run_dukd(
        "export", "--model", "tiny", "--scale", "2", "--format", "safetensors", "-o", tmp_path / "t"
    )
    assert code == 0, err
    warned = [line for line in err.splitlines() if "random initialisation" in line]
    assert len(warned) == 1 and "no --weights for 'tiny'" in warned[0]
