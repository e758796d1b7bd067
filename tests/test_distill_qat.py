"""Quantization-aware training (``dukd distill --quantize int8``): fake-quant layers, self-distillation,
exact resume, and a student that stays a plain fp32 network. Tiny networks, a few iterations."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from dukd_cli.distill import config as C
from dukd_cli.distill import qat
from dukd_cli.distill.trainer import Trainer
from dukd_cli.errors import DukdError
from zoo.edsr import edsr


def _net(seed=0):
    torch.manual_seed(seed)
    return edsr(2, n_feats=8, n_resblocks=2).eval()


def _batch(seed=1, n=2, size=12):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_prepare_keeps_every_parameter_and_key():
    net = _net()
    keys, params = list(net.state_dict()), [id(p) for p in net.parameters()]
    qat.prepare(net)
    assert list(net.state_dict()) == keys  # the range buffers are no state-dict keys
    assert [id(p) for p in net.parameters()] == params  # same tensors: optimiser and EMA see them
    assert len(qat.layers(net)) == sum(1 for k in keys if k.endswith(".weight") and "mean" not in k)
    plain = edsr(2, n_feats=8, n_resblocks=2)
    plain.load_state_dict(net.state_dict(), strict=True)


def test_fake_quant_forward_differs_from_fp32_by_a_bounded_amount():
    ref = _net()
    net = qat.prepare(copy.deepcopy(ref))
    x = _batch()
    assert qat.calibrate(net, [x]) == 1
    with torch.no_grad():
        a, b = ref(x), net(x)
    diff = (a - b).abs().max().item()
    assert 1e-4 < diff < 0.05, diff  # int8 noise: visible, but a few grey levels, not another network
    # weights: per output channel, on a 255-level grid of +-max|w| (within half a step of the fp32 value)
    w = ref.head[0].weight
    step = w.abs().flatten(1).amax(1) / 127
    wq = qat.fake_quant_weight(w)
    assert ((wq - w).abs() <= step.view(-1, 1, 1, 1) / 2 + 1e-7).all()
    assert len(torch.unique(torch.round(wq[0] / step[0]))) <= 255


def test_ranges_are_observed_in_training_then_frozen():
    net = qat.prepare(_net()).train()
    qat.set_observing(net, True)
    net(_batch(seed=2))
    r = net.head[0].act_range
    lo, hi = r.lo.clone(), r.hi.clone()
    assert int(r.seen) == 1 and hi > lo
    qat.set_observing(net, False)
    net(_batch(seed=3) * 3)  # much larger inputs: a frozen range does not move
    assert torch.equal(r.lo, lo) and torch.equal(r.hi, hi)


@pytest.fixture
def setup(tmp_path):
    """Training images and a 'trained' fp32 tiny EDSR (random weights) saved to a file."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = (rng.random((40, 40, 3)) * 64 + np.linspace(0, 180, 40)[None, :, None]).astype(np.uint8)
        Image.fromarray(img).save(data / f"{i}.png")
    w = tmp_path / "fp32.safetensors"
    save_file({k: v.contiguous() for k, v in _net(5).state_dict().items()}, str(w))
    return {"data": data, "weights": w, "cache": tmp_path / "cache", "root": tmp_path}


def _cfg(s, iters=6, **train):
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale = "edsr", 2
    cfg.student.args = {"n_feats": 8, "n_resblocks": 2}
    cfg.student.weights = str(s["weights"])  # no teacher: the fp32 student is its own teacher
    cfg.method.name = "kd"
    cfg.method.options = {"w_pix": 0.0}
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = [str(s["data"])], str(s["cache"]), 0
    t = cfg.train
    t.iters, t.batch_size, t.patch_size, t.lr, t.seed = iters, 2, 8, 1e-3, 3
    t.log_every, t.save_every, t.ema_decay, t.quantize, t.qat_observe = 2, 100, 0.0, "int8", 4
    for k, v in train.items():
        setattr(t, k, v)
    cfg.val.every = 0
    return cfg


def test_qat_reduces_the_fake_quant_loss_on_a_fixed_batch():
    """Training through the fake-quant layers (straight-through gradients) against the fp32 network's
    outputs lowers the int8 network's error, the trained weights recalibrated as an export would."""
    from torch import nn

    torch.manual_seed(5)
    fp32 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    with torch.no_grad():
        for conv in (fp32[0], fp32[2]):  # one large tap per output channel: a coarse int8 grid for the rest
            taps = conv.weight.view(conv.weight.shape[0], -1)
            taps[:, 0] = taps.abs().amax(1) * 40
    x = _batch(seed=9, n=4, size=16)
    with torch.no_grad():
        target = fp32(x)

    def int8_loss(weights):
        net = qat.prepare(copy.deepcopy(fp32))
        net.load_state_dict(weights)
        qat.calibrate(net, [x])
        with torch.no_grad():
            return float((net(x) - target).abs().mean())

    student = qat.prepare(copy.deepcopy(fp32))
    qat.calibrate(student, [x])
    before = int8_loss(fp32.state_dict())
    opt = torch.optim.Adam(student.parameters(), lr=1e-4)
    for _ in range(30):
        loss = (student(x) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = int8_loss(student.state_dict())
    assert after < 0.7 * before, (before, after)


def test_quantize_run_distils_from_the_fp32_student_itself(setup):
    trainer = Trainer(_cfg(setup), setup["root"] / "run")
    trainer.setup()
    assert trainer.cfg.teacher.name == "edsr" and trainer.cfg.teacher.weights == str(setup["weights"])
    assert qat.is_prepared(trainer.session.student_module) and qat.is_prepared(trainer.session.ema.model)
    assert not qat.is_prepared(trainer.session.teacher)  # the teacher labels in fp32
    x = _batch()
    with torch.no_grad():
        assert torch.equal(trainer.session.teacher(x), _net(5)(x))
    assert trainer.cfg.train.qat_observe == 4


def test_resume_is_exact_across_the_range_freeze(setup):
    """Cut at 3 of 6 iterations while the ranges are still observed (until 4): the resumed run must
    continue from the saved ranges (they are no state-dict keys; state.pt carries them)."""
    from test_distill_trainer import _StopAt

    root = setup["root"]
    Trainer(_cfg(setup), root / "one").fit()
    cut = Trainer(_cfg(setup), root / "cut", callbacks=[_StopAt(3)]).fit()
    assert cut.interrupted and cut.iteration == 3
    Trainer(C.DistillConfig(), root / "cut", resume=True).fit()  # --quantize comes from config.toml
    a, b = (root / "one" / "student.safetensors"), (root / "cut" / "student.safetensors")
    assert a.read_bytes() == b.read_bytes()
    st = torch.load(root / "cut" / "state.pt", weights_only=True)
    assert set(st["qat"]) == {"student", "ema"} and all(v[2] == 4 for v in st["qat"]["student"].values())


def test_saved_student_is_a_plain_fp32_network(setup, run_dukd, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_dukd(
        "distill", "--student", "edsr", "--student-arg", "n_feats=8", "--student-arg", "n_resblocks=2",
        "--student-weights", setup["weights"], "--scale", "2", "--quantize", "int8", "--method", "kd",
        "--data", setup["data"], "--cache-dir", setup["cache"], "--iters", "3", "--batch-size", "2",
        "--patch-size", "8", "--val-every", "0", "--out", run, "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err + out
    cfg = C.load(run / "config.toml")
    assert cfg.train.quantize == "int8" and cfg.teacher.weights == str(setup["weights"].resolve())
    plain = edsr(2, n_feats=8, n_resblocks=2)
    plain.load_state_dict(load_file(str(run / "student.safetensors")), strict=True)
    assert not qat.is_prepared(plain)
    # the run directory exports like any other (fp32 weights, for the int8 export to quantize)
    code, _, err = run_dukd("export", "--model", run, "-o", tmp_path / "exp", "--format", "safetensors")
    assert code == 0, err
    # --dry-run says what the run does; a resume without --quantize still trains int8
    code, out, _ = run_dukd("distill", "--resume", run, "--iters", "4", "--dry-run")
    assert code == 0 and 'quantize = "int8"' in out and "quantization-aware training (int8)" in out
    assert "self-distillation" in out


def test_an_exported_student_brings_its_own_fp32_weights(setup, run_dukd, tmp_path):
    from dukd_cli.export.bundle import export_model

    exp = tmp_path / "exp"
    export_model("edsr", exp, scale=2, kwargs={"n_feats": 8, "n_resblocks": 2}, weights=str(setup["weights"]),
                 formats="safetensors")  # fmt: skip
    code, out, err = run_dukd(
        "distill", "--student", exp, "--quantize", "int8", "--data", setup["data"], "--dry-run"
    )
    assert code == 0, err
    weights = str((exp / "model.safetensors").resolve())
    assert out.count(f'weights = "{weights}"') == 2  # the student's start and its fp32 teacher
    assert "teacher: the fp32 student itself (self-distillation)" in out


def test_bad_quantize_input_is_one_line(setup, run_dukd):
    code, _, err = run_dukd("distill", "--student", "edsr", "--scale", "2", "--quantize", "int4", "--dry-run")
    assert code == 1 and err.strip() == "error: --quantize must be int8, got 'int4'"
    code, _, err = run_dukd("distill", "--student", "edsr", "--scale", "2", "--quantize", "int8", "--dry-run")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "pass --init-from RUN_DIR or --student-weights FILE" in err
    with pytest.raises(DukdError, match="at least 1"):
        cfg = _cfg(setup, qat_observe=0)
        Trainer(cfg, setup["root"] / "bad").setup()


def test_int8_export_of_a_qat_run_keeps_its_trained_biases(setup):
    """Biases trained through simulated int8 already answer for the weights' rounding: the export of
    a `--quantize int8` run corrects none, the same weights exported as plain weights get corrected."""
    pytest.importorskip("onnxruntime.quantization")
    from dukd_cli.export.bundle import export_model

    root = setup["root"]
    Trainer(_cfg(setup), root / "run").fit()
    calib = root / "calib"
    calib.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        ramp = np.linspace(0, 200, 112)[None, :, None]
        Image.fromarray((rng.random((112, 112, 3)) * 40 + ramp).astype(np.uint8)).save(calib / f"{i}.png")
    common = {"formats": "onnx", "quantize": "int8", "calib": [calib], "calib_count": 8, "max_drop": 100.0}
    qat_cfg = export_model(str(root / "run"), root / "from-run", **common).config["onnx_int8"]
    plain_cfg = export_model(
        "edsr",
        root / "plain",
        scale=2,
        weights=str(root / "run" / "student.safetensors"),
        kwargs={"n_feats": 8, "n_resblocks": 2},
        **common,
    ).config["onnx_int8"]
    assert qat_cfg["biases_corrected"] == 0
    convs = sum(1 for m in edsr(2, n_feats=8, n_resblocks=2).modules() if isinstance(m, torch.nn.Conv2d))
    assert plain_cfg["biases_corrected"] == convs
