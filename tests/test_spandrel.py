"""Any checkpoint is a teacher: spandrel-only architectures loaded by file alone, in every command.

The checkpoints are random weights saved by spandrel's own classes (ESRGAN's RRDBNet in the
original release layout, SPAN), written here; nothing is downloaded.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dukd_cli.errors import DukdError
from dukd_cli.models import external
from dukd_cli.models.factory import build, create_model, describe, resolve_spec

pytestmark = pytest.mark.skipif(
    not external.available(), reason="spandrel is not installed (pip install 'dukd[spandrel]')"
)


def _rrdb(scale: int = 4):
    external.import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """RRDB_x4.pth (ESRGAN layout, wrapped in params_ema like Real-ESRGAN), SPAN_x2.safetensors."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("ckpt")
    torch.save({"params_ema": _rrdb(4).state_dict()}, root / "RRDB_x4.pth")
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(1)
    span = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)
    save_file({k: v.contiguous() for k, v in span.state_dict().items()}, str(root / "SPAN_x2.safetensors"))
    return root


def _images(folder, n=3, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        y, x = np.mgrid[0:size, 0:size]
        img = np.stack([(x * 7 + i * 30) % 256, (y * 5) % 256, ((x + y) * 3) % 256], -1).astype(np.float64)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


def test_rrdb_file_is_a_model_by_file_alone(files):
    path = files / "RRDB_x4.pth"
    spec = resolve_spec(str(path), None)
    assert spec.arch == "spandrel" and spec.scale == 4 and spec.detected["architecture"] == "ESRGAN"
    net = build(spec)
    ref = _rrdb(4).eval()
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-6)  # the file's weights, the network's forward
    assert net.scale == 4 and net(x).shape == (1, 3, 44, 52)
    # the Python API takes it the same way, and a wrong scale says the file's
    assert create_model(str(path)).scale == 4
    with pytest.raises(DukdError, match=r"is an ESRGAN .* x4 checkpoint .* but x2 was asked for"):
        resolve_spec(str(path), 2)
    with pytest.raises(DukdError, match="takes no constructor arguments"):
        resolve_spec(str(path), 4, kwargs={"n_feats": 3})


def test_span_safetensors_and_size_requirements(files):
    net = create_model(str(files / "SPAN_x2.safetensors"))
    info = net.describe()
    assert info["architecture"] == "SPAN" and info["scale"] == 2 and info["input_channels"] == 3
    y = net(torch.rand(2, 3, 7, 9))
    assert y.shape == (2, 3, 14, 18)
    # a model with size requirements pads to them and crops the output
    net.min_size, net.multiple_of = 16, 8
    assert net.padded_size(7, 9) == (16, 16) and net(torch.rand(1, 3, 7, 9)).shape == (1, 3, 14, 18)


def test_zoo_info_shows_what_spandrel_detected(files, run_dukd):
    code, out, err = run_dukd("zoo", "info", files / "RRDB_x4.pth", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["kind"] == "checkpoint" and data["architecture"] == "spandrel" and data["scale"] == 4
    d = data["detected"]
    assert d["source"] == "spandrel" and d["architecture"] == "ESRGAN" and d["purpose"] == "SR"
    assert d["size_requirements"]["minimum"] >= 1 and data["params"] == sum(
        p.numel() for p in _rrdb().parameters()
    )
    code, out, err = run_dukd("zoo", "info", files / "RRDB_x4.pth")
    assert code == 0 and "ESRGAN" in out and "spandrel" in out


def test_evaluate_and_upscale_with_a_spandrel_model(files, benchmarks_dir, run_dukd, tmp_path):
    out = tmp_path / "r.json"
    code, _, err = run_dukd(
        "evaluate", "--model", files / "RRDB_x4.pth", "--bench", "set5",
        "--data-dir", benchmarks_dir, "--max-images", "1", "--device", "cpu", "--json", out,
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["results"][0]["n_images"] == 1 and np.isfinite(data["results"][0]["psnr"])
    assert data["window_pad"] == "reflect" and data["scale"] == 4  # the file's own scale: no --scale needed
    code, _, err = run_dukd("evaluate", "--model", "bicubic")
    assert code == 1 and "the bicubic baseline needs --scale" in err

    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((9, 10, 3)) * 255).astype(np.uint8)).save(img)
    code, _, err = run_dukd(
        "upscale", img, "-o", tmp_path / "out.png", "--model", files / "RRDB_x4.pth", "--device", "cpu"
    )
    assert code == 0, err
    assert Image.open(tmp_path / "out.png").size == (40, 36)


def test_distill_rrdb_teacher_into_edsr_student_cli(files, run_dukd, tmp_path):
    """The acceptance command: a spandrel-only teacher (random weights) and a zoo student."""
    data = _images(tmp_path / "data", size=64)
    run = tmp_path / "run"
    code, out, err = run_dukd(
        "distill", "--teacher", files / "RRDB_x4.pth", "--student", "edsr", "--student-arg", "n_feats=32",
        "--student-arg", "n_resblocks=4", "--scale", "4", "--data", data, "--iters", "2", "--batch-size", "2",
        "--patch-size", "12", "--val-every", "0", "--device", "cpu", "--cache-dir", tmp_path / "cache",
        "--out", run, "--log-every", "1",
    )  # fmt: skip
    assert code == 0, err + out
    cfg = (run / "config.toml").read_text()
    assert str((files / "RRDB_x4.pth").resolve()) in cfg  # recorded absolute: --resume works from anywhere
    assert (run / "student.safetensors").is_file()
    # the teacher knows its scale: --scale may be left out
    code, out, err = run_dukd("distill", "--teacher", files / "RRDB_x4.pth", "--student", "edsr", "--dry-run")
    assert code == 0 and "scale = 4" in out and "spandrel" in out, err


def test_distill_from_spandrel_teacher_loss_falls(files, tmp_path):
    from dukd_cli.distill import config as C
    from dukd_cli.distill.trainer import Trainer

    cfg = C.DistillConfig()
    cfg.teacher.name = str(files / "RRDB_x4.pth")
    cfg.student.name, cfg.student.scale, cfg.student.args = "edsr", 4, {"n_feats": 32, "n_resblocks": 4}
    cfg.method.name = "dukd"
    cfg.method.options = {"w_pix": 0.0}  # only the teacher's terms: the student must come to imitate it
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = (
        [str(_images(tmp_path / "d", n=4, size=64))],
        str(tmp_path / "c"),
        0,
    )
    t = cfg.train
    t.iters, t.batch_size, t.patch_size, t.lr, t.seed, t.device = 25, 4, 12, 2e-3, 0, "cpu"
    t.log_every, t.save_every, t.ema_decay = 5, 1000, 0.0
    cfg.val.every = 0
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.setup()
    assert isinstance(trainer.session.teacher, external.SpandrelSR) and not any(
        p.requires_grad for p in trainer.session.teacher.parameters()
    )
    torch.manual_seed(5)
    lr = torch.rand(4, 3, 12, 12)
    with torch.no_grad():
        target = trainer.session.teacher(lr)

        def kd(model):
            was = model.training
            model.eval()
            out = float((model(lr) - target).abs().mean())
            model.train(was)
            return out

        before = kd(trainer.session.student_module)
    result = trainer.fit()
    with torch.no_grad():
        after = kd(trainer.session.student_module)
    assert result.iteration == 25 and not result.interrupted
    assert after < 0.8 * before, (before, after)


def test_export_of_a_spandrel_model_is_self_contained(files, tmp_path, run_dukd):
    out = tmp_path / "exp"
    code, _, err = run_dukd(
        "export", "--model", files / "SPAN_x2.safetensors", "-o", out, "--format", "safetensors"
    )
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "spandrel" and cfg["scale"] == 2
    again = create_model(str(out))  # built from the directory's own model.safetensors
    ref = create_model(str(files / "SPAN_x2.safetensors"))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(again(x), ref(x))
    assert describe(str(out), None)["scale"] == 2


def test_student_initialised_from_a_spandrel_file(files):
    """A spandrel network trains: gradients reach its parameters."""
    net = create_model(str(files / "RRDB_x4.pth")).train()
    net(torch.rand(1, 3, 8, 8)).mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_without_spandrel_one_clear_line(files, monkeypatch, run_dukd):
    from dukd_cli.models import checkpoint as checkpoint_models

    monkeypatch.setattr(checkpoint_models, "_FOUND", {})  # forget what earlier tests detected
    monkeypatch.setattr(external, "_spandrel", None)
    monkeypatch.setitem(sys.modules, "spandrel", None)  # as if not installed
    with pytest.raises(DukdError, match=r"pip install 'dukd\[spandrel\]'"):
        resolve_spec(str(files / "RRDB_x4.pth"), None)
    code, out, err = run_dukd("evaluate", "--model", files / "RRDB_x4.pth", "--scale", "4")
    assert code == 1 and "pip install 'dukd[spandrel]'" in err and len(err.strip().splitlines()) == 1
    # zoo checkpoints need no spandrel
    assert external.available() is False


def test_unknown_file_and_non_sr_model(tmp_path):
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(3, 3)}, str(tmp_path / "foo.safetensors"))
    with pytest.raises(DukdError, match="neither the registered architectures .* nor spandrel recognises"):
        resolve_spec(str(tmp_path / "foo.safetensors"), None)
    torch.save(_rrdb(1).state_dict(), tmp_path / "denoise_x1.pth")
    with pytest.raises(DukdError, match="not super-resolution"):
        resolve_spec(str(tmp_path / "denoise_x1.pth"), None)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_unsafe_pickle_is_refused_before_spandrel_sees_it(tmp_path):
    marker = tmp_path / "ran"
    state = _rrdb(4).state_dict()
    torch.save({"params": state, "cfg": _Evil(marker)}, tmp_path / "RRDB_evil.pth")
    with pytest.raises(DukdError, match="refusing to load"):
        resolve_spec(str(tmp_path / "RRDB_evil.pth"), None)
    assert not marker.exists()


def test_hub_source_as_the_model(files, tmp_path, monkeypatch):
    """hf://OWNER/REPO/FILE as --model: fetched through the Hub cache (offline), then detected."""
    from test_weights import _build_hub_cache

    cache = tmp_path / "hub"
    _build_hub_cache(cache, "someone/esrgan", "RRDB_x4.pth", (files / "RRDB_x4.pth").read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    spec = resolve_spec("hf://someone/esrgan/RRDB_x4.pth", None)
    assert spec.arch == "spandrel" and spec.scale == 4 and spec.weights == "hf://someone/esrgan/RRDB_x4.pth"
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(build(spec)(x), _rrdb(4).eval()(x), atol=1e-6)
