"""How int8 exports round and store weights (dukd_cli.export.int8_weights) and the graph rewrites of
the ONNX export (dukd_cli.export.graph): each checked against numbers computed here, not by the code."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def _two_convs(seed: int = 0) -> onnx.ModelProto:
    """input (1, 4, H, W) -> Conv 3x3 (group 2, bias) -> Conv 1x1 (no bias) -> output; no padding, so
    every output pixel sees real input (no zeros from a border)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (6, 2, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 6).astype(np.float32)
    w2 = rng.normal(0, 0.3, (5, 6, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["h"], name="c1", group=2),
        helper.make_node("Conv", ["h", "w2"], ["output"], name="c2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, None, None])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 5, None, None])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _patches(n: int, seed: int) -> list[np.ndarray]:
    """Inputs whose channels have very different means (as after a ReLU or an image's colour)."""
    rng = np.random.default_rng(seed)
    offset = np.array([2.0, -1.0, 0.5, 3.0], np.float32).reshape(1, 4, 1, 1)
    return [(offset + 0.3 * rng.standard_normal((1, 4, 12, 12))).astype(np.float32) for _ in range(n)]


def _weight_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network with every conv's weights on the per-channel int8 grid (max|w|/127),
    computed here independently, biases untouched."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    for name in ("w1", "w2"):
        w = numpy_helper.to_array(inits[name])
        s = np.abs(w).reshape(w.shape[0], -1).max(1).reshape(-1, 1, 1, 1) / 127
        inits[name].CopyFrom(numpy_helper.from_array((np.round(w / s) * s).astype(np.float32), name))
    return m


def test_bias_correction_removes_the_mean_error_of_rounded_weights():
    from dukd_cli.export.int8_weights import round_and_correct

    fp32 = _two_convs()
    calib, test = _patches(16, 0), _patches(16, 1)
    rounded = _weight_only(fp32)
    prepared = onnx.ModelProto()
    prepared.CopyFrom(fp32)
    assert round_and_correct(prepared, calib) == 2

    def mean_error(model: onnx.ModelProto) -> np.ndarray:
        # per output channel, over the held-out inputs (ORT without graph rewrites: plain convs)
        return np.mean([(_run(model, x, False) - _run(fp32, x, False)).mean(axis=(0, 2, 3)) for x in test], 0)

    before, after = np.abs(mean_error(rounded)), np.abs(mean_error(prepared))
    assert before.max() > 1e-3  # the rounding does shift the outputs' means here
    assert after.max() < 0.2 * before.max()
    # the weights themselves are exactly the int8 grid's (only the biases differ from `rounded`)
    got = {i.name: numpy_helper.to_array(i) for i in prepared.graph.initializer}
    want = {i.name: numpy_helper.to_array(i) for i in rounded.graph.initializer}
    for name in ("w1", "w2"):
        np.testing.assert_array_equal(got[name], want[name])
    c2 = next(n for n in prepared.graph.node if n.name == "c2")
    assert len(c2.input) == 3 and c2.input[2] in got  # a conv without a bias was given one


def test_the_quantizer_keeps_the_rounded_weights(tmp_path):
    """ONNX Runtime's quantizer re-quantizes the prepared weights to the very same integers, so the
    bias correction applies to the weights the int8 file holds."""
    from test_quantize import ort_quantize_static

    from dukd_cli.export.int8_weights import round_and_correct

    prepared = _two_convs(3)
    round_and_correct(prepared, _patches(4, 0))
    src, out = tmp_path / "prepared.onnx", tmp_path / "q.onnx"
    onnx.save(prepared, str(src))
    q = ort_quantize_static(src, out, _patches(4, 0))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    prep = {i.name: numpy_helper.to_array(i) for i in prepared.graph.initializer}
    checked = 0
    for node in q.graph.node:
        if node.op_type == "DequantizeLinear" and inits.get(node.input[0], np.zeros(0)).dtype == np.int8:
            qw, scale = inits[node.input[0]], inits[node.input[1]]
            wname = next(k for k in ("w1", "w2") if node.input[0].startswith(k))
            deq = qw.astype(np.float32) * scale.reshape(-1, 1, 1, 1)
            np.testing.assert_allclose(deq, prep[wname], rtol=0, atol=1e-6)
            s = np.abs(prep[wname]).reshape(qw.shape[0], -1).max(1) / 127
            np.testing.assert_array_equal(qw, np.round(prep[wname] / s.reshape(-1, 1, 1, 1)).astype(np.int8))
            checked += 1
    assert checked == 2


def test_spatial_mean_becomes_global_average_pool_with_the_same_numbers():
    from dukd_cli.export.graph import spatial_means_to_gap

    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    axes_c = numpy_helper.from_array(np.array([1], np.int64), "axes_c")
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["m"], name="spatial", keepdims=1),
        helper.make_node("ReduceMean", ["input", "axes_c"], ["c"], name="channels", keepdims=1),
        helper.make_node("ReduceMean", ["input", "axes"], ["flat"], name="flat", keepdims=0),
        helper.make_node("Add", ["m", "c"], ["mc"]),
        helper.make_node("Mul", ["mc", "input"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, None, None])],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 3, None, None]),
            helper.make_tensor_value_info("flat", TensorProto.FLOAT, [None, 3]),
        ],
        [axes, axes_c],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(0).random((2, 3, 7, 5), dtype=np.float32)
    want = _run(model, x)
    assert spatial_means_to_gap(model) == 1
    onnx.checker.check_model(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert ops["spatial"] == "GlobalAveragePool"
    assert ops["channels"] == "ReduceMean" and ops["flat"] == "ReduceMean"  # other axes, or dims dropped
    np.testing.assert_allclose(_run(model, x), want, rtol=0, atol=1e-6)


def test_exported_channel_attention_uses_global_average_pool(tmp_path):
    """IMDN's contrast-aware channel attention (mean and std over H, W) and RCAN's channel attention
    export as GlobalAveragePool, and the export still matches PyTorch (its own parity check)."""
    from dukd_cli.export.onnx import PARITY_TOL, export_onnx
    from dukd_cli.models.factory import create_model

    for name, kwargs in (
        ("imdn", {"n_feats": 16, "n_blocks": 1}),
        ("rcan", {"n_feats": 16, "n_resgroups": 1, "n_resblocks": 2}),
    ):
        model = create_model(name, 2, **kwargs).eval()
        path = tmp_path / f"{name}.onnx"
        result = export_onnx(model, path)
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert "ReduceMean" not in ops and ops.count("GlobalAveragePool") >= 1
        assert result.max_abs_diff <= PARITY_TOL
