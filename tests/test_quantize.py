"""Int8 / fp16 ONNX exports (`dukd export --quantize int8`, `--format onnx-fp16`) and the runtimes that
score what ships (`dukd evaluate|upscale --runtime onnx|onnx-int8|onnx-fp16`). Tiny networks, seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from dukd_cli.errors import DukdError
from dukd_cli.models.factory import create_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")


def smooth_images(folder: Path, n: int, size: int, seed: int) -> Path:
    """``n`` smooth photo-like RGB images (blurred noise + gradients) of ``size`` x ``size``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        low = rng.random((3, 6, 6))
        up = np.stack([np.kron(c, np.ones((size // 6 + 1, size // 6 + 1)))[:size, :size] for c in low])
        img = 0.5 * up + 0.25 * np.stack([xx, yy, 1 - xx]) + 0.1 * rng.random((3, size, size))
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)).save(
            folder / f"im{i:02d}.png"
        )
    return folder


def ort_quantize_static(src: Path, out: Path, patches: list[np.ndarray]) -> onnx.ModelProto:
    """ONNX Runtime's static quantizer as dukd calls it (QDQ, per-channel int8 weights, uint8
    activations), MinMax-calibrated on ``patches``, with nothing of dukd's choosing; the result."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from dukd_cli.export.int8 import _quiet, _Reader

    with _quiet():
        quantize_static(
            str(src),
            str(out),
            _Reader("input", patches, None),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return onnx.load(str(out))


@pytest.fixture
def wide_tiny(tiny_plugin, tmp_path):
    """A seeded tiny x2 network with 48 features (weights dominate the ONNX file, as in real networks)."""
    torch.manual_seed(1)
    m = create_model("tiny", 2, n_feats=48).eval()
    w = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(w))
    return w, m


def export_opts(w: Path, out: Path) -> list[str]:
    return [
        "export",
        "--model",
        "tiny",
        "--weights",
        str(w),
        "--scale",
        "2",
        "--arg",
        "n_feats=48",
        "-o",
        str(out),
    ]


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1


def test_int8_export_is_qdq_smaller_loads_and_keeps_its_score(wide_tiny, tmp_path, run_dukd):
    w, _m = wide_tiny
    calib = smooth_images(tmp_path / "calib", 4, 112, seed=0)
    out = tmp_path / "exp"
    code, stdout, err = run_dukd(
        *export_opts(w, out),
        "--format",
        "onnx",
        "--quantize",
        "int8",
        "--calib",
        calib,
        "--calib-count",
        "12",
    )
    assert code == 0, err
    assert "int8: left in float: " in err  # the sensitivity decision is printed
    assert "int8 (" in stdout and "hold-out Y-PSNR" in stdout
    int8, fp32 = out / "model.int8.onnx", out / "model.onnx"
    assert (
        int8.is_file() and int8.stat().st_size < 0.6 * fp32.stat().st_size
    )  # 0.53 here; ~0.33 for real networks
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    cfg = json.loads((out / "config.json").read_text())
    q = cfg["onnx_int8"]
    assert cfg["files"]["onnx_int8"] == "model.int8.onnx"
    assert q["calibration_method"] in ("minmax", "percentile", "entropy")
    assert set(q["methods_tried_drop_db"]) == {"minmax", "percentile", "entropy"}
    assert q["holdout_drop_db"] <= 0.1 and q["calibration_patches"] + q["holdout_patches"] == 12
    card = next(ln for ln in (out / "README.md").read_text().splitlines() if "`model.int8.onnx`" in ln)
    assert f"Y-PSNR {q['holdout_drop_db']:.3f} dB below fp32" in card
    convs = len([n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"])
    assert q["biases_corrected"] == convs
    assert "biases corrected for the rounding" in card

    # Scored on other images through both deployed files: within the bound.
    bench = smooth_images(tmp_path / "bench", 3, 96, seed=5)
    res = {}
    for rt in ("onnx", "onnx-int8"):
        j = tmp_path / f"{rt}.json"
        code, _, err = run_dukd("evaluate", "--model", out, "--runtime", rt, "--bench", bench, "--json", j)
        assert code == 0, err
        res[rt] = json.loads(j.read_text())["results"][0]["psnr"]
    assert abs(res["onnx"] - res["onnx-int8"]) <= 0.1


def test_evaluate_onnx_int8_is_plain_onnxruntime_scored_by_the_evaluator(wide_tiny, tmp_path, run_dukd):
    from dukd_cli.data.benchmarks import make_lr
    from dukd_cli.data.imresize import modcrop
    from dukd_cli.evaluate.metrics import psnr_y, ssim_y
    from dukd_cli.images.imageio import read_rgb_uint8

    w, _m = wide_tiny
    calib = smooth_images(tmp_path / "calib", 3, 112, seed=1)
    out = tmp_path / "exp"
    assert (
        run_dukd(*export_opts(w, out), "--quantize", "int8", "--calib", calib, "--calib-count", "8")[0] == 0
    )
    bench = smooth_images(tmp_path / "bench", 2, 50, seed=7)
    j = tmp_path / "r.json"
    code, stdout, err = run_dukd(
        "evaluate", "-m", out, "--runtime", "onnx-int8", "-b", bench, "--json", j, "--per-image"
    )
    assert code == 0, err
    assert "onnx-int8" in stdout
    got = json.loads(j.read_text())
    assert got["runtime"] == "onnx-int8"

    sess = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    ps, ss = [], []
    for p in sorted(bench.glob("*.png")):
        hr = modcrop(read_rgb_uint8(p), 2)
        lr = make_lr(hr, 2)
        y = sess.run(None, {"input": lr.transpose(2, 0, 1)[None].astype(np.float32) / 255})[0][0]
        sr = np.round(np.clip(y, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
        ps.append(psnr_y(sr, hr, 2))
        ss.append(ssim_y(sr, hr, 2))
    r = got["results"][0]
    assert r["psnr"] == pytest.approx(np.mean(ps), abs=1e-6)
    assert r["ssim"] == pytest.approx(np.mean(ss), abs=1e-6)
    # The runtime is really what was scored: PyTorch's fp32 number differs.
    j2 = tmp_path / "t.json"
    assert run_dukd("evaluate", "-m", out, "-b", bench, "--json", j2)[0] == 0
    assert json.loads(j2.read_text())["results"][0]["psnr"] != r["psnr"]


def test_max_drop_refusal_writes_nothing(wide_tiny, tmp_path, run_dukd):
    w, _m = wide_tiny
    calib = smooth_images(tmp_path / "calib", 3, 112, seed=2)
    out = tmp_path / "exp"
    code, _, err = run_dukd(
        *export_opts(w, out),
        "--quantize",
        "int8",
        "--calib",
        calib,
        "--calib-count",
        "8",
        "--max-drop",
        "0.00001",
    )
    assert code == 1 and "--max-drop" in err and "nothing written" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_api_refuses_an_int8_model_that_loses_more_than_max_drop(wide_tiny, tmp_path):
    """Hold-out "HR" = the fp32 model's own outputs: any int8 error is a loss, so a bound of 0.01 dB refuses."""
    from dukd_cli.export.bundle import export_model
    from dukd_cli.export.calib import CalibData, run_session
    from dukd_cli.export.int8 import quantize_int8

    w, _m = wide_tiny
    out = tmp_path / "exp"
    export_model("tiny", out, scale=2, weights=str(w), kwargs={"n_feats": 48})
    rng = np.random.default_rng(0)
    lrs = [rng.random((1, 3, 24, 24), dtype=np.float32) for _ in range(6)]
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    data = CalibData(lrs, run_session(sess, lrs, 2), 2, "self-labelled")
    dst = tmp_path / "q.onnx"
    with pytest.raises(DukdError, match="more than --max-drop 0.01; nothing written"):
        quantize_int8(out / "model.onnx", dst, data, max_drop=0.01, methods=("minmax",), sensitivity=False)
    assert not dst.exists()


def test_fp16_export_verified_and_runs(wide_tiny, tmp_path, run_dukd):
    w, _m = wide_tiny
    out = tmp_path / "exp"
    code, stdout, err = run_dukd(*export_opts(w, out), "--format", "onnx-fp16")
    assert code == 0, err
    assert "fp16:" in stdout
    f16 = out / "model.fp16.onnx"
    assert f16.is_file() and (out / "model.onnx").is_file()
    m = onnx.load(str(f16))
    conv_w = [i for i in m.graph.initializer if len(i.dims) == 4]
    assert conv_w and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_w)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["onnx_fp16"]["parity_psnr_db"] >= 40
    assert cfg["onnx_fp16"]["zoo_fp16_safe"] == "not measured for this architecture"
    src = tmp_path / "in.png"
    smooth_images(tmp_path / "src", 1, 40, seed=3)
    (tmp_path / "src" / "im00.png").rename(src)
    outs = {}
    for rt in ("onnx", "onnx-fp16"):
        code, _, err = run_dukd("upscale", src, "-o", tmp_path / f"{rt}.png", "-m", out, "--runtime", rt)
        assert code == 0, err
        outs[rt] = np.asarray(Image.open(tmp_path / f"{rt}.png")).astype(int)
    assert outs["onnx"].shape == (80, 80, 3) and np.abs(outs["onnx"] - outs["onnx-fp16"]).max() <= 2


def test_fp16_export_refuses_a_network_that_overflows_half(tiny_plugin, tmp_path, run_dukd):
    """A feature of 1e5 (fp16's largest finite is 65504) scaled back down by 1e-5: fine in fp32, inf in fp16."""
    torch.manual_seed(0)
    m = create_model("tiny", 2, n_feats=8)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["conv_first.bias"][0] = 1e5
    sd["conv_last.weight"][:, 0] = 1e-6
    w = tmp_path / "big.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(w))
    out = tmp_path / "exp"
    code, _, err = run_dukd(
        "export", "-m", "tiny", "-w", w, "-s", "2", "-a", "n_feats=8", "-o", out, "--format", "onnx-fp16"
    )
    assert (
        code == 1 and "not fp16-safe" in err.strip().splitlines()[-1]
    )  # progress lines, then one error line
    assert not out.exists()


def test_bad_input_one_line(tiny_x2, tmp_path, run_dukd):
    w, _m = tiny_x2
    st = tmp_path / "st"
    base = ["export", "-m", "tiny", "-w", w, "-s", "2", "-a", "n_feats=8"]
    assert run_dukd(*base, "-o", st, "--format", "safetensors")[0] == 0
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    code, _, err = run_dukd("upscale", img, "-o", tmp_path / "b.png", "-m", st, "--runtime", "onnx")
    assert code == 1 and "has no model.onnx" in err and one_line(err)
    code, _, err = run_dukd("evaluate", "-m", st, "--runtime", "onnx-int8", "-b", tmp_path)
    assert code == 1 and "has no model.int8.onnx" in err and "--quantize int8" in err and one_line(err)
    code, _, err = run_dukd("evaluate", "-m", "tiny", "-s", "2", "--runtime", "onnx", "-b", tmp_path)
    assert code == 1 and "exported model directory" in err and one_line(err)
    code, _, err = run_dukd("evaluate", "-m", st, "--runtime", "tensorrt", "-b", tmp_path)
    assert code == 1 and "--runtime must be one of" in err and one_line(err)
    out = tmp_path / "q"
    code, _, err = run_dukd(*base, "-o", out, "--quantize", "int8", "--calib", tmp_path / "missing")
    assert code == 1 and "--calib" in err and "no such folder" in err and one_line(err)
    code, _, err = run_dukd(*base, "-o", out, "--quantize", "int8")
    assert code == 1 and "--calib DIR" in err and one_line(err)
    code, _, err = run_dukd(
        *base, "-o", out, "--quantize", "int8", "--format", "safetensors", "--calib", tmp_path
    )
    assert code == 1 and "add onnx to --format" in err and one_line(err)
    code, _, err = run_dukd(*base, "-o", out, "--quantize", "int4", "--calib", tmp_path)
    assert code == 1 and "--quantize takes int8" in err and one_line(err)
    assert not out.exists()


def test_every_zoo_family_has_a_measured_fp16_verdict():
    import zoo
    from zoo.precision import fp16_verdict

    for arch in zoo.__all__:
        v = fp16_verdict(arch)
        assert v is not None and "PSNR fp16 vs fp32" in v.evidence, arch
    assert fp16_verdict("tiny") is None  # a plugin's network: not measured, the export's own check decides


def test_sensitivity_pass_can_leave_every_quantized_op_type_in_float(tmp_path):
    """Every op type that ONNX Runtime's QDQ quantizer quantizes in a real SR graph (IMDN: residual
    sums, concatenations, attention products, splits, activations) is a unit the sensitivity pass
    tries in float, alone and together. (The pass used to try only the op types with a special QDQ
    handler, so the residual Adds, Concats and Muls that cost IMDN most were never tried.)"""
    from dukd_cli.export.bundle import export_model
    from dukd_cli.export.int8 import WEIGHTED_OPS, sensitivity_units

    torch.manual_seed(0)
    out = tmp_path / "imdn"
    export_model("imdn", out, scale=2, kwargs={"n_feats": 32, "n_blocks": 2})
    fp32 = out / "model.onnx"
    rng = np.random.default_rng(0)
    lrs = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(2)]
    qm = ort_quantize_static(fp32, tmp_path / "q.onnx", lrs)
    dq_out = {n.output[0] for n in qm.graph.node if n.op_type == "DequantizeLinear"}
    quantized = {
        n.op_type
        for n in qm.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear", *WEIGHTED_OPS) and set(n.input) & dq_out
    }
    assert {"Add", "Concat", "Mul"} <= quantized  # what the residual stream and the attention are made of
    units = dict(sensitivity_units(onnx.load(str(fp32))))
    fm = onnx.load(str(fp32))
    by_type = {op: sorted(n.name for n in fm.graph.node if n.op_type == op) for op in quantized}
    for op in quantized:
        label = next((k for k in units if k.startswith(f"all {op} (")), None)
        assert label is not None, f"{op} is quantized but never tried in float"
        assert sorted(units[label]) == by_type[op]
    convs = [n.name for n in fm.graph.node if n.op_type == "Conv"]
    assert units["last 3 weighted nodes"] == convs[-3:]  # the tail: fusion, last conv, pixel-shuffle conv
    together = next(v for k, v in units.items() if k.startswith("all non-weighted ops"))
    assert {n for names in by_type.values() for n in names} <= set(together)


def test_nodes_left_in_float_keep_int8_weights(wide_tiny, tmp_path):
    """A weighted node the sensitivity pass leaves in float computes in float from int8-stored
    weights (weight-only quantization): the file stays int8-sized, the outputs stay close."""
    from dukd_cli.export.bundle import export_model
    from dukd_cli.export.calib import CalibData, mean_psnr_y, run_session
    from dukd_cli.export.int8 import _Quantizer, weighted_nodes

    w, _m = wide_tiny
    out = tmp_path / "exp"
    export_model("tiny", out, scale=2, weights=str(w), kwargs={"n_feats": 48})
    fp32 = out / "model.onnx"
    rng = np.random.default_rng(0)
    lrs = [rng.random((1, 3, 24, 24), dtype=np.float32) for _ in range(6)]
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    fp32_out = run_session(sess, lrs, 2)
    q = _Quantizer(fp32, CalibData(lrs, fp32_out, 2, "self-labelled"), None, tmp_path, None)
    every = weighted_nodes(q.model)
    q.quantize(tmp_path / "all-int8.onnx", "minmax", [])
    q.quantize(tmp_path / "float.onnx", "minmax", every)
    size = (tmp_path / "float.onnx").stat().st_size
    assert size < 0.6 * fp32.stat().st_size  # 0.48 here; fp32 weights would make it ~1.0x
    assert size <= 1.1 * (tmp_path / "all-int8.onnx").stat().st_size
    model = onnx.load(str(tmp_path / "float.onnx"))
    onnx.checker.check_model(model)
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name in every:
            mul = producer[node.input[1]]  # weight = Cast(int8) * per-channel scale
            assert mul.op_type == "Mul"
            cast = producer[mul.input[0]]
            assert cast.op_type == "Cast" and inits[cast.input[0]].data_type == onnx.TensorProto.INT8
            assert mul.input[1] in inits
            assert node.input[0] not in {
                n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"
            }
    # ONNX Runtime folds Cast + Mul into a float constant when it loads the file (a DequantizeLinear
    # there would stay and keep the conv off the fp32 kernels): no Cast, no Mul left in its graph
    # (this network has no Mul of its own).
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(str(tmp_path / "float.onnx"), opts, providers=["CPUExecutionProvider"])
    loaded = {n.op_type for n in onnx.load(str(tmp_path / "loaded.onnx")).graph.node}
    assert "Cast" not in loaded and "Mul" not in loaded
    outs = run_session(ort.InferenceSession(str(tmp_path / "float.onnx")), lrs, 2)
    assert mean_psnr_y(outs, fp32_out, 2) > 40.0


def test_channel_attention_convs_on_pooled_tensors_stay_float(tmp_path):
    """IMDN's squeeze/excite convolutions run on one pixel per image: int8 there saves no time, so
    they are left in float before any measuring, and the written file computes them in float."""
    from dukd_cli.export.bundle import export_model
    from dukd_cli.export.calib import CalibData, run_session
    from dukd_cli.export.int8 import pooled_weighted_nodes, quantize_int8

    torch.manual_seed(0)
    out = tmp_path / "imdn"
    export_model("imdn", out, scale=2, kwargs={"n_feats": 32, "n_blocks": 2})
    fm = onnx.load(str(out / "model.onnx"))
    inits = {i.name: list(i.dims) for i in fm.graph.initializer}
    convs = {n.name: inits[n.input[1]] for n in fm.graph.node if n.op_type == "Conv"}
    # the attention's convs: 1x1, 32 -> 2 (squeeze) and 2 -> 32 (excite), one pair per block
    attention = sorted(n for n, d in convs.items() if d[2:] == [1, 1] and 2 in d[:2])
    assert len(attention) == 4
    assert sorted(pooled_weighted_nodes(fm)) == attention
    rng = np.random.default_rng(0)
    lrs = [rng.random((1, 3, 20, 20), dtype=np.float32) for _ in range(6)]
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    data = CalibData(lrs, run_session(sess, lrs, 2), 2, "self-labelled")
    dst = tmp_path / "q.onnx"
    report = quantize_int8(
        out / "model.onnx", dst, data, max_drop=float("inf"), methods=("minmax",), sensitivity=False
    )
    assert set(attention) <= set(report.nodes_to_exclude)
    qm = onnx.load(str(dst))
    producer = {o: n.op_type for n in qm.graph.node for o in n.output}
    for node in qm.graph.node:
        if node.name in attention:
            assert producer[node.input[1]] == "Mul"  # float weights (int8-stored): a float conv
        elif node.op_type == "Conv":
            assert producer[node.input[1]] == "DequantizeLinear"  # the others are int8


def test_int8_export_through_the_installed_script(tmp_path):
    """`dukd export --quantize int8` as a user types it (the console script, a fresh process): every
    conv's bias corrected, the attention's 1x1 convs left in float, spatial means as
    GlobalAveragePool, the model card saying so; `dukd evaluate --runtime onnx-int8` scores the file;
    a bad --max-drop is one line, a non-zero exit and no directory."""
    from test_journey import run

    torch.manual_seed(0)
    net = create_model("imdn", 2, n_feats=16, n_blocks=1).eval()
    w = tmp_path / "imdn.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(w))
    calib = smooth_images(tmp_path / "calib", 4, 112, seed=0)
    common = ["export", "--model", "imdn", "--weights", w, "--scale", "2", "--arg", "n_feats=16"]
    common += ["--arg", "n_blocks=1", "--format", "onnx", "--quantize", "int8", "--calib", calib]
    common += ["--calib-count", "8"]

    code, _, err = run(*common, "-o", tmp_path / "bad", "--max-drop", "-1")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--max-drop" in err
    assert not (tmp_path / "bad").exists()

    out = tmp_path / "exp"
    code, _, err = run(*common, "-o", out, "--max-drop", "100", timeout=300)
    assert code == 0, err
    q = json.loads((out / "config.json").read_text())["onnx_int8"]
    fp32 = onnx.load(str(out / "model.onnx"))
    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    assert q["biases_corrected"] == len(convs)
    inits = {i.name: list(i.dims) for i in fp32.graph.initializer}
    attention = [n.name for n in convs if inits[n.input[1]][2:] == [1, 1] and 1 in inits[n.input[1]][:2]]
    assert len(attention) == 2 and set(attention) <= set(q["nodes_to_exclude"])
    ops = [n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node]
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops
    card = (out / "README.md").read_text()
    assert "biases corrected for the rounding" in card

    bench = smooth_images(tmp_path / "bench", 2, 64, seed=5)
    code, stdout, err = run("evaluate", "--model", out, "--runtime", "onnx-int8", "--bench", bench)
    assert code == 0, err
    assert "onnx-int8" in stdout
