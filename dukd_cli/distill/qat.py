"""Quantization-aware training: convolutions and linear layers that compute what an int8 model computes.

``dukd distill --quantize int8`` trains the student through :func:`prepare`d layers that simulate
ONNX Runtime's static QDQ int8 quantization (the format ``dukd export --format onnx --quantize int8``
writes), so the distillation losses, with the fp32 teacher labelling the (upcycled) inputs, see the
quantized network's errors and the weights learn to tolerate them:

- **weights** of every ``Conv2d`` / ``Linear``: per output channel, symmetric int8 in [-127, 127]
  (scale ``max|w| / 127`` per channel, zero point 0; ORT's per-channel symmetric weights);
- **activations** at each such layer's input: per tensor, asymmetric 8 bit (256 levels over
  ``[min(0, lo), max(0, hi)]``, an integer zero point; ORT's uint8/int8 activations are the same
  grid up to the zero point's offset). ``lo``/``hi`` follow the observed batch minima/maxima by an
  exponential moving average while the ranges are *observed* (the first iterations of a run), then
  stay frozen, as a calibrated static model's do;
- gradients pass by the straight-through estimator (``torch.fake_quantize_per_channel_affine`` /
  ``torch.fake_quantize_per_tensor_affine``: identity inside the range, zero where clipped).

Not simulated: the int32 bias (its rounding is far below the weights'), and the Q/DQ pairs ORT puts on
tensors that no convolution reads (residual adds, the pixel shuffle, attention products).

Why our own layers and not PyTorch's tooling: ``torch.ao.quantization``'s eager ``prepare_qat`` is
deprecated, needs stubs and fusion written into each network and renames state-dict keys; PT2E has
moved out of torch into torchao, which would pull an unpinned torch. The layers here are swapped in
place keeping every parameter (the optimiser, the EMA and checkpoints see the same tensors) and add
no state-dict keys (their range buffers are not persistent; :func:`observer_state` carries them in
``state.pt``), so the trained student saves as a plain fp32 network that the int8 export then
calibrates and quantizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dukd_cli.errors import DukdError

QUANTIZE = ("int8",)
WEIGHT_QMIN, WEIGHT_QMAX = -127, 127
ACT_QMIN, ACT_QMAX = 0, 255
RANGE_MOMENTUM = 0.01  # EMA of the batch minima/maxima while observing


def check_quantize(value: str | None) -> str | None:
    """``None`` (fp32 training) or ``"int8"``; anything else is a one-line error."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v not in QUANTIZE:
        raise DukdError(f"--quantize must be {' or '.join(QUANTIZE)}, got '{value}'")
    return v


def fake_quant_weight(w: Tensor) -> Tensor:
    """Per-output-channel symmetric int8 fake quantization of a weight (axis 0), straight-through."""
    absmax = w.detach().abs().flatten(1).amax(dim=1).float()
    scale = torch.where(absmax > 0, absmax / WEIGHT_QMAX, torch.ones_like(absmax))
    zero = torch.zeros(scale.shape, dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, WEIGHT_QMIN, WEIGHT_QMAX)


def act_qparams(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Scale and zero point of the 8-bit grid over ``[min(0, lo), max(0, hi)]`` (0 exactly representable)."""
    lo = torch.clamp(lo.float(), max=0.0)
    hi = torch.clamp(hi.float(), min=0.0)
    scale = torch.clamp((hi - lo) / (ACT_QMAX - ACT_QMIN), min=1e-8)
    zero = torch.clamp(torch.round(ACT_QMIN - lo / scale), ACT_QMIN, ACT_QMAX).to(torch.int32)
    return scale.reshape(1), zero.reshape(1)


class _ActRange(nn.Module):
    """The per-tensor input range of one layer: observed (EMA of batch min/max) in training, then frozen."""

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__()
        kw = {"device": device}
        self.register_buffer("lo", torch.zeros((), **kw), persistent=False)
        self.register_buffer("hi", torch.zeros((), **kw), persistent=False)
        self.register_buffer("seen", torch.zeros((), dtype=torch.long, **kw), persistent=False)
        self.observing = True
        self.has_range = False  # mirrors seen > 0 without reading the device

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        lo, hi = x.detach().amin().float(), x.detach().amax().float()
        if int(self.seen) == 0:
            self.lo.copy_(lo)
            self.hi.copy_(hi)
        else:
            self.lo.lerp_(lo, RANGE_MOMENTUM)
            self.hi.lerp_(hi, RANGE_MOMENTUM)
        self.seen += 1
        self.has_range = True

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.observing:
            self.observe(x)
        if not self.has_range:
            if int(self.seen) == 0:  # never observed (evaluated before any training step): fp32
                return x
            self.has_range = True  # ranges copied in as buffers (the EMA copy of the student)
        scale, zero = act_qparams(self.lo, self.hi)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, ACT_QMIN, ACT_QMAX)


class FakeQuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` on fake-quantized input and weights (same parameters, same state-dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.act_range(x), fake_quant_weight(self.weight), self.bias)


class FakeQuantLinear(nn.Linear):
    """``nn.Linear`` on fake-quantized input and weights (same parameters, same state-dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.act_range(x), fake_quant_weight(self.weight), self.bias)


def _swap(module: nn.Module) -> nn.Module | None:
    """The fake-quant twin of a plain Conv2d / Linear, holding the very same parameter objects."""
    if type(module) is nn.Conv2d:
        new: nn.Module = FakeQuantConv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            module.bias is not None,
            module.padding_mode,
            device="meta",
        )
    elif type(module) is nn.Linear:
        new = FakeQuantLinear(module.in_features, module.out_features, module.bias is not None, device="meta")
    else:
        return None
    new.weight = module.weight
    new.bias = module.bias
    new.act_range = _ActRange(module.weight.device)
    new.train(module.training)
    return new


def prepare(model: nn.Module) -> nn.Module:
    """Swap every plain ``Conv2d`` / ``Linear`` of ``model`` for its fake-quant twin, in place.

    Parameters are kept (same objects), so an optimiser made before or after sees the same tensors and
    ``model.state_dict()`` has exactly the keys it had. Returns ``model``.
    """
    if is_prepared(model):
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _swap(child)
            if new is not None:
                setattr(parent, name, new)
    if not is_prepared(model):
        raise DukdError(f"{type(model).__name__} has no Conv2d or Linear layer to quantize")
    return model


def layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (FakeQuantConv2d, FakeQuantLinear))]


def is_prepared(model: nn.Module) -> bool:
    return bool(layers(model))


def _ranges(model: nn.Module) -> list[tuple[str, _ActRange]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _ActRange)]


def set_observing(model: nn.Module, observing: bool) -> None:
    """Track the activation ranges in training (True) or keep them frozen (False)."""
    for _, r in _ranges(model):
        r.observing = bool(observing)


def observer_state(model: nn.Module) -> dict[str, Tensor]:
    """The activation ranges (``{layer: [lo, hi, seen]}``) for ``state.pt``: they are no state-dict keys."""
    return {
        n: torch.stack([r.lo.detach().double().cpu(), r.hi.detach().double().cpu(), r.seen.double().cpu()])
        for n, r in _ranges(model)
    }


def load_observer_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Restore what :func:`observer_state` saved (the same network, prepared the same way)."""
    ranges = dict(_ranges(model))
    if set(ranges) != set(state):
        raise DukdError("the saved quantization ranges do not match the student's layers")
    with torch.no_grad():
        for n, v in state.items():
            r = ranges[n]
            r.lo.copy_(v[0].to(r.lo))
            r.hi.copy_(v[1].to(r.hi))
            r.seen.fill_(int(v[2]))
            r.has_range = int(v[2]) > 0


@torch.no_grad()
def calibrate(model: nn.Module, inputs: Iterable[Tensor]) -> int:
    """Set every activation range to the min/max over ``inputs`` (ONNX Runtime's MinMax calibration),
    frozen. Returns the number of batches seen. The model's mode is restored."""
    ranges = _ranges(model)
    lows: dict[str, Tensor] = {}
    highs: dict[str, Tensor] = {}
    hooks = []
    for n, r in ranges:

        def hook(_mod: nn.Module, args: tuple[Any, ...], n: str = n) -> None:
            x = args[0].detach()
            lo, hi = x.amin().float(), x.amax().float()
            lows[n] = torch.minimum(lows[n], lo) if n in lows else lo
            highs[n] = torch.maximum(highs[n], hi) if n in highs else hi

        hooks.append(r.register_forward_pre_hook(hook))
    was = model.training
    model.eval()
    count = 0
    try:
        for _, r in ranges:  # calibrate the float network: no layer sees a quantized input yet
            r.seen.zero_()
            r.has_range = False
        for x in inputs:
            model(x)
            count += 1
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    if not count:
        raise DukdError("no calibration images")
    for n, r in ranges:
        if n in lows:
            r.lo.copy_(lows[n])
            r.hi.copy_(highs[n])
            r.seen.fill_(1)
            r.has_range = True
        r.observing = False
    return count


# --------------------------------------------------------------------------------------------
# the run's configuration
# --------------------------------------------------------------------------------------------

OBSERVE_MAX = 1000  # default: ranges observed for a quarter of the run, at most this many iterations


def resolve_config(cfg: Any, scale: int, needs_teacher: bool) -> None:
    """Decide a ``--quantize`` run's defaults in ``cfg`` (a DistillConfig; idempotent).

    QAT starts from a trained fp32 student: ``--student-weights`` / ``--init-from``, else the
    preset's declared weights. Without ``--teacher`` the teacher is that fp32 student itself
    (self-distillation). ``train.qat_observe`` (iterations during which the activation ranges are
    tracked, then frozen) defaults to a quarter of the run, at most 1000.
    """
    from dukd_cli import registry
    from dukd_cli.models.factory import resolve_spec
    from dukd_cli.models.spec import is_model_dir

    t = cfg.train
    t.quantize = check_quantize(t.quantize)
    if t.quantize is None:
        return
    s = cfg.student
    if s.weights is None and s.name:
        spec = resolve_spec(s.name, None if is_model_dir(s.name) else scale, kwargs=s.args)
        found = spec.weights  # an exported or run directory, a checkpoint file given as the student
        preset = registry.get_preset(spec.preset) if spec.preset else None
        if found is None and preset is not None and preset.weights.get(spec.scale):
            found = resolve_spec(s.name, scale, kwargs=s.args, pretrained=True).weights
        if found is None:
            raise DukdError(
                "--quantize int8 trains a trained fp32 student further: pass --init-from RUN_DIR or "
                f"--student-weights FILE ('{s.name}' has no weights of its own at x{scale})"
            )
        s.weights = found
    if needs_teacher and not cfg.teacher.name:
        cfg.teacher.name = s.name
        cfg.teacher.args = dict(s.args)
        cfg.teacher.weights = s.weights
    if t.qat_observe is None:
        t.qat_observe = max(1, min(OBSERVE_MAX, int(t.iters) // 4))
    if int(t.qat_observe) < 1:
        raise DukdError(f"train.qat_observe must be at least 1 iteration, got {t.qat_observe}")


def plan_line(cfg: Any) -> str | None:
    """The ``--dry-run`` line of a quantization-aware run (None for fp32 training)."""
    t = cfg.train
    if not t.quantize:
        return None
    self_teacher = (
        cfg.teacher.name == cfg.student.name
        and cfg.teacher.weights == cfg.student.weights
        and dict(cfg.teacher.args) == dict(cfg.student.args)
    )
    teacher = "the fp32 student itself (self-distillation)" if self_teacher else f"{cfg.teacher.name} (fp32)"
    return (
        f"quantization-aware training ({t.quantize}): per-channel symmetric int8 weights, per-tensor 8-bit "
        f"activations at every conv/linear input, ranges observed for {t.qat_observe} iterations then frozen; "
        f"teacher: {teacher}; validation measures the int8-simulated student; student.safetensors stays "
        "fp32 for the int8 export"
    )
