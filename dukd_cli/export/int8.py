"""Int8 post-training quantization of an exported ``model.onnx`` (``dukd export --quantize int8``).

ONNX Runtime's static quantizer (``onnxruntime.quantization.quantize_static``: QDQ format, per-channel
int8 weights, uint8 activations) does the rewriting; this module decides how, by measurement on
calibration patches cut from HR training images (the run's ``[data]`` or ``--calib DIR``):

1. Calibration patches and a hold-out that never calibrates anything (:mod:`dukd_cli.export.calib`).
   The input tensor's range is fixed to [0, 1] (an 8-bit image is then represented exactly).
   The quantizer reads a copy whose convolution weights are already rounded to its int8 grid, their
   biases corrected for the rounding's mean error (:mod:`dukd_cli.export.int8_weights`).
2. Calibration method: MinMax, Percentile and Entropy are each tried with every quantizable node in
   int8; the one whose int8 model loses least Y-PSNR (vs HR, as ``dukd evaluate`` scores) on the
   hold-out is kept.
3. Sensitivity pass: each weighted node (Conv, ConvTranspose, MatMul, Gemm), the head and tail
   of the network as chains of consecutive weighted nodes, each other op type (as one group) and
   all the other op types together are left in float alone; the gain in hold-out PSNR is its
   sensitivity. Units are then left in float greedily (those that gain alone, most first, then the
   chains and groups, whose gain can appear only once their neighbours are float), each kept only
   when it gains at least ``MIN_GAIN_DB`` on top of what is kept, until the loss is at most
   ``TARGET_FRACTION`` of the allowed drop (margin for images the hold-out does not hold: a
   benchmark whose fp32 error is smaller loses more dB for the same noise) or the float weighted
   nodes would hold more than ``MAX_FLOAT_FRACTION`` of the weights (time grows with them).
   A weighted node left in float keeps its weights in int8 (dequantized by a constant Cast and Mul
   that ONNX Runtime folds at load: weight-only quantization), so the file stays int8-sized; it
   computes in float.
4. The chosen file is checked (QDQ nodes present, loads in ONNX Runtime, smaller than fp32) and its
   hold-out loss compared with ``max_drop``: above it, :class:`DukdError` and nothing is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dukd_cli.errors import DukdError
from dukd_cli.export.calib import (
    CalibData,
    mean_psnr_y,
    pad_to_fixed,
    run_session,
    session,
)
from dukd_cli.export.graph import value_shapes
from dukd_cli.export.int8_weights import WEIGHTED_OPS, round_and_correct, weights_to_int8

if TYPE_CHECKING:
    import onnx

INT8_FILE = "model.int8.onnx"
DEFAULT_MAX_DROP = 0.1
TARGET_FRACTION = (
    0.25  # of --max-drop, on the hold-out: a benchmark whose fp32 error is smaller (Set5) loses ~2x the dB
)
MAX_FLOAT_FRACTION = 0.25
MIN_GAIN_DB = 0.01  # a float node costs speed and size: below this it buys no quality worth having
METHODS = ("minmax", "percentile", "entropy")
NEVER_QUANTIZED = ("Cast", "QuantizeLinear", "DequantizeLinear", "Shape", "Constant")
HEAD_CHAINS = (1, 2)  # the first k weighted nodes in float together
TAIL_CHAINS = (1, 2, 3, 4, 6, 8)  # the last k
QUANTIZE_HINT = "pip install dukd[onnx]"

Log = Callable[[str], None]


def _nolog(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------------------------------
# quantization
# --------------------------------------------------------------------------------------------------


@dataclass
class Int8Report:
    method: str
    nodes_to_exclude: list[str]
    fp32_psnr: float  # hold-out Y-PSNR vs HR
    int8_psnr: float
    psnr_vs_fp32: float  # hold-out Y-PSNR of the int8 outputs against the fp32 outputs
    max_drop: float
    fp32_bytes: int
    int8_bytes: int
    calibration: str
    n_calibration: int
    n_holdout: int
    methods_tried: dict[str, float] = field(default_factory=dict)  # method -> hold-out drop
    sensitivity: list[tuple[str, float]] = field(default_factory=list)  # unit -> gain (dB) in float
    seconds: float = 0.0
    left_in_float: str = ""  # nodes_to_exclude for a person (op types where a whole type is float)
    biases_corrected: int = 0  # convolutions whose bias was corrected for the weights' rounding

    @property
    def drop(self) -> float:
        return self.fp32_psnr - self.int8_psnr

    def to_config(self) -> dict[str, Any]:
        import onnxruntime

        return {
            "file": INT8_FILE,
            "tool": f"onnxruntime.quantization.quantize_static {onnxruntime.__version__}",
            "format": "QDQ",
            "weights": "int8, per channel (symmetric)",
            "biases_corrected": self.biases_corrected,  # convolutions; 0: biases as trained (QAT)
            "activations": "uint8, per tensor",
            "calibration_method": self.method,
            "calibration": self.calibration,
            "calibration_patches": self.n_calibration,
            "holdout_patches": self.n_holdout,
            "nodes_to_exclude": list(self.nodes_to_exclude),
            "left_in_float": self.left_in_float or "nothing (every node in int8)",
            "float_weighted_nodes": "compute in float from int8 weights (Cast + Mul, folded at load)",
            "holdout_psnr_fp32": round(self.fp32_psnr, 4),
            "holdout_psnr_int8": round(self.int8_psnr, 4),
            "holdout_drop_db": round(self.drop, 4),
            "holdout_psnr_int8_vs_fp32": round(self.psnr_vs_fp32, 4),
            "max_drop_db": self.max_drop,
            "methods_tried_drop_db": {k: round(v, 4) for k, v in self.methods_tried.items()},
            "bytes": self.int8_bytes,
            "size_vs_fp32": round(self.int8_bytes / self.fp32_bytes, 4),
        }


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer logs advice through the root logger and prints histogram progress."""
    import contextlib as _c
    import io

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with _c.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _Reader:
    def __init__(self, name: str, patches: Sequence[np.ndarray], fixed: tuple[int, int] | None) -> None:
        self.name, self.patches, self.fixed = name, patches, fixed
        self.it = iter(patches)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {self.name: pad_to_fixed(x, self.fixed)}

    def rewind(self) -> None:
        self.it = iter(self.patches)


def check_max_drop(max_drop: float) -> None:
    if not (max_drop >= 0):  # also refuses NaN
        raise DukdError(f"--max-drop must be a number of dB >= 0, got {max_drop}")


def require_quantization() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        raise DukdError(f"int8 quantization needs onnx and onnxruntime: {QUANTIZE_HINT}") from None


def weighted_nodes(model: onnx.ModelProto) -> list[str]:
    """The weighted nodes' names in graph (topological) order."""
    return [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS]


def pooled_weighted_nodes(model: onnx.ModelProto) -> list[str]:
    """Weighted nodes whose input is known (by ONNX shape inference) to be 1x1 in space, such as
    the squeeze and excite convolutions of channel attention after a global pool: int8 would save
    them no time worth having (one pixel per image) and can only add error, so they stay float."""
    pooled = {
        name for name, dims in value_shapes(model).items() if len(dims) >= 3 and all(d == 1 for d in dims[2:])
    }
    return [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.input[0] in pooled]


def weight_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Weighted node -> how many weights it multiplies by (its constant weight's size; 0 when the
    weight is computed). Time and file size grow with it."""
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    return {
        n.name: sizes.get(n.input[1], 0) if len(n.input) > 1 else 0
        for n in model.graph.node
        if n.op_type in WEIGHTED_OPS
    }


def sensitivity_units(model: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """What the sensitivity pass leaves in float one at a time: each weighted node by name, the
    head and tail of the network as chains of consecutive weighted nodes, each other op type as one
    group (the QDQ quantizer quantizes every op type by default), and all of those other op types
    together (their gains are often each small and only add up together).

    Chains matter because a tensor stays 8-bit as long as the node writing it or a node reading it is
    quantized: one convolution alone in float keeps its 8-bit input and output, so the tail of an SR
    network (feature fusion, the last conv, the pixel-shuffle conv) only shows its cost as a chain.
    Leaving a non-weighted op in float costs little time: the convolutions still read 8-bit inputs,
    only the residual sums, concatenations and products between them stay in float.
    """
    weighted = weighted_nodes(model)
    units: list[tuple[str, list[str]]] = [(name, [name]) for name in weighted]
    for k in HEAD_CHAINS:
        if k < len(weighted):
            units.append((f"first {k} weighted node{'s' if k > 1 else ''}", weighted[:k]))
    for k in TAIL_CHAINS:
        if k < len(weighted):
            units.append((f"last {k} weighted node{'s' if k > 1 else ''}", weighted[-k:]))
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS and node.op_type not in NEVER_QUANTIZED:
            groups.setdefault(node.op_type, []).append(node.name)
    units += [(f"all {op} ({len(names)})", names) for op, names in groups.items()]
    if len(groups) > 1:
        every = [n for names in groups.values() for n in names]
        units.append((f"all non-weighted ops ({len(every)})", every))
    return units


def describe_nodes(model: onnx.ModelProto, names: Sequence[str], pooled: Sequence[str] = ()) -> str:
    """``names`` for a person: an op type whose every node is listed as ``all Add (13)``, the weighted
    nodes on 1x1 tensors (``pooled``) as one item, the rest by name."""
    chosen = set(names)
    if not chosen:
        return "nothing (every node in int8)"
    parts = []
    on_pixel = [n for n in pooled if n in chosen]
    if on_pixel:
        parts.append(f"the {len(on_pixel)} weighted nodes on 1x1 tensors")
        chosen -= set(on_pixel)
    by_type: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.name not in on_pixel:
            by_type.setdefault(node.op_type, []).append(node.name)
    for op, nodes in by_type.items():
        picked = [n for n in nodes if n in chosen]
        if picked and len(picked) == len(nodes) and len(nodes) > 1:
            parts.append(f"all {op} ({len(nodes)})")
        else:
            parts.extend(picked)
    return ", ".join(parts)


class _Quantizer:
    """Quantizes one fp32 model again and again with cached calibration ranges and scores the results."""

    def __init__(
        self,
        fp32: Path,
        data: CalibData,
        fixed: tuple[int, int] | None,
        tmp: Path,
        threads: int | None,
        correct_bias: bool = True,
    ) -> None:
        import onnx

        self.fp32, self.data, self.fixed, self.tmp, self.threads = fp32, data, fixed, tmp, threads
        self.model = onnx.load(str(fp32))
        # What the quantizer reads: the network with its convolutions' weights on the int8 grid and
        # their biases corrected (the fp32 file and the reference outputs below stay the original).
        prepared = onnx.ModelProto()
        prepared.CopyFrom(self.model)
        patches = [pad_to_fixed(x, fixed) for x in data.calibration]
        self.corrected = round_and_correct(prepared, patches, threads) if correct_bias else 0
        self.source = tmp / "prepared.onnx"
        onnx.save(prepared, str(self.source))
        self.weighted = weight_counts(self.model)
        self.input_name = self.model.graph.input[0].name
        lr, hr = data.holdout
        self.hold_lr, self.hold_hr = lr, hr
        sess = session(fp32, threads)
        self.fp32_out = run_session(sess, lr, data.scale, fixed)
        self.fp32_psnr = mean_psnr_y(self.fp32_out, hr, data.scale)
        self.n = 0
        # The input is an 8-bit image in [0, 1]: uint8 with scale 1/255 represents it exactly,
        # whatever range the calibration patches happen to span (or a percentile would clip).
        self.input_override = {self.input_name: [{"rmin": np.float32(0.0), "rmax": np.float32(1.0)}]}

    def quantize(self, out: Path, method: str, exclude: Sequence[str]) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        calib = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[method]
        reader = _Reader(self.input_name, self.data.calibration, self.fixed)
        with _quiet():
            quantize_static(
                str(self.source),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calib,
                nodes_to_exclude=list(exclude) or None,
                calibration_cache_path=str(self.tmp / f"ranges-{method}.json"),
                extra_options={"TensorQuantOverrides": self.input_override},
            )
        self.n += 1
        if any(n in self.weighted for n in exclude):
            import onnx

            model = onnx.load(str(out))
            weights_to_int8(model, set(exclude))
            onnx.save(model, str(out))

    def score(self, path: Path) -> tuple[float, float]:
        """(int8 hold-out Y-PSNR vs HR, Y-PSNR vs the fp32 outputs)."""
        outs = run_session(session(path, self.threads), self.hold_lr, self.data.scale, self.fixed)
        return (
            mean_psnr_y(outs, self.hold_hr, self.data.scale),
            mean_psnr_y(outs, self.fp32_out, self.data.scale),
        )

    def drop(self, method: str, exclude: Sequence[str]) -> float:
        out = self.tmp / f"try-{self.n}.onnx"
        self.quantize(out, method, exclude)
        psnr = self.score(out)[0]
        out.unlink(missing_ok=True)
        return self.fp32_psnr - psnr


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    data: CalibData,
    *,
    max_drop: float = DEFAULT_MAX_DROP,
    methods: Sequence[str] = METHODS,
    sensitivity: bool = True,
    fixed_input_size: tuple[int, int] | None = None,
    threads: int | None = None,
    correct_bias: bool = True,
    log: Log = _nolog,
) -> Int8Report:
    """Write an int8 QDQ copy of ``fp32_path`` to ``out_path`` (see the module doc for how it is chosen).

    Raises :class:`DukdError` (and leaves ``out_path`` absent) when its hold-out loss exceeds ``max_drop`` dB.
    """
    require_quantization()
    import onnx

    check_max_drop(max_drop)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise DukdError(f"unknown calibration method '{(bad or ['(none)'])[0]}' (use {', '.join(METHODS)})")
    fp32 = Path(fp32_path)
    out = Path(out_path)
    start = time.perf_counter()
    fixed = tuple(fixed_input_size) if fixed_input_size else None
    with tempfile.TemporaryDirectory(prefix="dukd-int8-") as tmpdir:
        tmp = Path(tmpdir)
        q = _Quantizer(fp32, data, fixed, tmp, threads, correct_bias)
        log(
            f"int8: calibrating on {len(data.calibration)} patches, scoring on a hold-out of "
            f"{len(data.holdout[0])} (fp32 hold-out Y-PSNR {q.fp32_psnr:.3f} dB)"
        )
        tried: dict[str, float] = {}
        for m in methods:
            tried[m] = q.drop(m, [])
            log(f"int8: calibration {m}: hold-out loss {tried[m]:.3f} dB with every node in int8")
        method = min(tried, key=lambda k: tried[k])
        pooled = pooled_weighted_nodes(q.model)
        exclude = list(pooled)
        base = tried[method]
        if exclude:
            base = q.drop(method, exclude)
            log(
                f"int8: {len(exclude)} weighted nodes on 1x1 (pooled) tensors stay in float (no time to "
                f"save there): hold-out loss {base:.3f} dB"
            )
        sens: list[tuple[str, float]] = []
        if sensitivity and base > max_drop * TARGET_FRACTION:
            exclude, sens = _sensitivity_pass(q, method, base, max_drop * TARGET_FRACTION, log, exclude)
        tmp_out = tmp / "final.onnx"
        q.quantize(tmp_out, method, exclude)
        model = onnx.load(str(tmp_out))
        ops = {n.op_type for n in model.graph.node}
        if not {"QuantizeLinear", "DequantizeLinear"} <= ops:
            raise DukdError("the quantized model has no QuantizeLinear/DequantizeLinear nodes (not QDQ)")
        int8_psnr, vs_fp32 = q.score(tmp_out)
        fp32_bytes, int8_bytes = fp32.stat().st_size, tmp_out.stat().st_size
        report = Int8Report(
            method=method,
            nodes_to_exclude=exclude,
            fp32_psnr=q.fp32_psnr,
            int8_psnr=int8_psnr,
            psnr_vs_fp32=vs_fp32,
            max_drop=float(max_drop),
            fp32_bytes=fp32_bytes,
            int8_bytes=int8_bytes,
            calibration=data.description,
            n_calibration=len(data.calibration),
            n_holdout=len(data.holdout[0]),
            methods_tried=tried,
            sensitivity=sens,
            seconds=time.perf_counter() - start,
            left_in_float=describe_nodes(q.model, exclude, pooled),
            biases_corrected=q.corrected,
        )
        log(f"int8: left in float: {report.left_in_float}")
        if report.drop > max_drop:
            raise DukdError(
                f"int8 model loses {report.drop:.3f} dB on the calibration hold-out "
                f"({report.int8_psnr:.3f} vs fp32 {report.fp32_psnr:.3f} dB), more than --max-drop "
                f"{max_drop:g}; nothing written"
            )
        os.replace(tmp_out, out) if out.parent == tmp_out.parent else _copy(tmp_out, out)
    return report


def _sensitivity_pass(
    q: _Quantizer, method: str, base: float, target: float, log: Log, start: Sequence[str] = ()
) -> tuple[list[str], list[tuple[str, float]]]:
    """Measure every unit's gain in float alone (on top of ``start``, already float), then keep units
    in float greedily (those that gain alone, most sensitive first, then the chains and groups), each
    only when it gains ``MIN_GAIN_DB`` on top of what is kept already, until the hold-out loss is at
    most ``target`` or the float weighted nodes would hold more than ``MAX_FLOAT_FRACTION`` of the
    weights. The chains and groups refused are tried again while a round keeps something."""
    first = list(start)
    units = [(label, [n for n in names if n not in first]) for label, names in sensitivity_units(q.model)]
    units = [(label, names) for label, names in units if names]
    log(f"int8: sensitivity pass over {len(units)} nodes, chains and op groups ({method})")
    gains = sorted(
        ((label, names, base - q.drop(method, first + names)) for label, names in units),
        key=lambda g: -g[2],
    )
    for label, _names, gain in gains[:8]:
        log(f"int8:   {label}: {gain:+.3f} dB in float")
    budget = MAX_FLOAT_FRACTION * max(1, sum(q.weighted.values()))
    exclude = list(first)
    current = base
    # The units that gain alone, most first; then the chains and groups that did not: a chain's
    # tensors can still be quantized by the ops around it until those are in float too.
    # Those are tried cheapest first (fewest weights computed in float).
    alone = [g for g in gains if g[2] >= MIN_GAIN_DB]
    later = [g for g in gains if g[2] < MIN_GAIN_DB and not _single_node(g[0], g[1])]
    later.sort(key=lambda g: sum(q.weighted.get(n, 0) for n in g[1]))
    ordered = alone + later
    while True:  # a chain or group refused once is retried after others went float, until none helps
        accepted = False
        for label, names, _gain in ordered:
            if current <= target:
                break
            new = [n for n in names if n not in exclude]
            if not new or sum(q.weighted.get(n, 0) for n in exclude + new) > budget:
                continue
            trial = q.drop(method, exclude + new)
            if trial <= current - MIN_GAIN_DB:
                exclude += new
                current = trial
                accepted = True
                log(f"int8:   keep {label} in float: loss {trial:.3f} dB")
        if current <= target or not accepted:
            break
        ordered = [g for g in later if any(n not in exclude for n in g[1])]
    return exclude, [(label, gain) for label, _n, gain in gains]


def _single_node(label: str, names: Sequence[str]) -> bool:
    """A per-node unit (labelled by the node's own name), not a chain or a group."""
    return len(names) == 1 and label == names[0]


def _copy(src: Path, dst: Path) -> None:
    import shutil

    part = dst.with_name(f".{dst.name}.part")
    shutil.copyfile(src, part)
    os.replace(part, dst)
