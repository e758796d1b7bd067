"""The upscaler contract: what ``dukd upscale``, ``dukd evaluate`` and validation run.

An :class:`Upscaler` maps an ``(N, 3, h, w)`` float RGB tensor in [0, 1] to ``(N, 3, s*h, s*w)``
and has an integer ``scale`` (``s``). Three kinds travel through the code, each made to satisfy it
where it is made:

* a ``torch.nn.Module`` of the zoo or a plugin: :func:`dukd_cli.models.factory.build` gives it a
  ``scale`` when the architecture did not (and refuses one of another scale);
* a foreign network read by spandrel: :class:`dukd_cli.models.external.SpandrelSR` wraps it
  (``scale``, and its size rule as ``window_size``);
* an exported ONNX file run by ONNX Runtime (``--runtime onnx|onnx-int8|onnx-fp16``):
  :class:`dukd_cli.export.onnx.OnnxModel` (``scale``, ``window_size``, ``fixed_input_size``,
  ``device``).

Size rules (:class:`SizeRules`, read by :func:`size_rules` and nowhere else) are optional
attributes: ``window_size`` (windowed attention, e.g. SwinIR: inputs are reflect-padded to a
multiple of it and the output cropped) and ``fixed_input_size`` (an ``(h, w)`` the upscaler only
accepts, e.g. an ONNX export without dynamic height and width: inputs are tiled at that size). An
upscaler declaring neither takes any size.

Objects from outside (an API caller's module) enter through :func:`as_upscaler`, which checks the
contract once, so the code behind it reads ``model.scale`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from dukd_cli.errors import DukdError

if TYPE_CHECKING:
    from torch import Tensor


class Upscaler(Protocol):
    """Callable on an NCHW float tensor, returning it ``scale`` times larger."""

    scale: int

    def __call__(self, x: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class SizeRules:
    """The input sizes an upscaler accepts.

    ``window``: its attention window (0 or 1: none); ``fixed``: the only ``(h, w)`` it takes (None:
    any size)."""

    window: int = 0
    fixed: tuple[int, int] | None = None

    @property
    def multiple(self) -> int:
        """What an input is padded to a multiple of before the call: the window, unless the size is
        fixed (then the input is padded to that size instead); 1 for none."""
        return self.window if self.window > 1 and self.fixed is None else 1


def size_rules(model: object) -> SizeRules:
    """The size rules ``model`` declares (``window_size``, ``fixed_input_size``; both optional)."""
    fixed = getattr(model, "fixed_input_size", None)
    return SizeRules(
        window=int(getattr(model, "window_size", 0) or 0),
        fixed=(int(fixed[0]), int(fixed[1])) if fixed is not None else None,
    )


def as_upscaler(model: object) -> Upscaler:
    """``model`` as an :class:`Upscaler`, after checking it has a ``scale`` (the contract's one
    required attribute; being callable is found out by calling it)."""
    if getattr(model, "scale", None) is None:
        raise DukdError(f"{type(model).__name__} has no 'scale' attribute (the model contract requires one)")
    return cast("Upscaler", model)
