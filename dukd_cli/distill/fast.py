"""The fast path of a training iteration: compiled networks and batches on the device ahead of time.

* :func:`compile_module` compiles a network **in place** (``nn.Module.compile``): the module
  object, its parameters, buffers, ``state_dict`` keys, hooks and submodule names stay what they
  were, so the optimiser, the EMA (a copy taken before compiling), checkpoints, ``--resume`` and
  FAKD's feature taps see exactly the uncompiled network. Shapes are static (``dynamic=False``):
  an iteration has a few fixed input shapes (LR and zoom-in tiles, zoom-out), each compiled once.
* :class:`DevicePrefetcher` hands out batch ``t`` while batch ``t + 1`` is already being copied
  (pinned memory, non-blocking) and converted to float on a side CUDA stream, overlapping the
  transfer with the computation of ``t``. On the CPU it hands out each batch as it comes (there
  is nothing to overlap), unless asked to look ahead (tests do, to prove the order is unchanged).

Nothing here reads a value back to the host: an iteration enqueues its work and returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

# The torch.compile backend. Inductor generates C++/Triton kernels (what users want on CUDA);
# the tests switch to "aot_eager" (same graphs, eager kernels) because compiling C++ on a shared
# 2-core CPU takes too long for a unit test.
COMPILE_BACKEND = "inductor"

ToDevice = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def compile_module(
    module: nn.Module,
    backend: str | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> nn.Module:
    """``torch.compile`` ``module``'s forward in place (returns the same object).

    Tensor inputs are first made dense in ``memory_format``: DUKD's augmented inputs are
    ``torch.where`` of flipped/transposed views, whose strides change from one iteration to the
    next with the random plan, and every new stride pattern would be a new compilation (until
    torch gives up and runs eagerly). The copy is a no-op for inputs already in that layout.
    """
    compiled = torch.compile(module._call_impl, backend=backend or COMPILE_BACKEND, dynamic=False)

    def call(*args: Any, **kwargs: Any) -> Any:
        args = tuple(a.contiguous(memory_format=memory_format) if isinstance(a, Tensor) else a for a in args)
        return compiled(*args, **kwargs)

    # What nn.Module.compile() does, with the layout step in front: __call__ runs this instead.
    module._compiled_call_impl = call
    return module


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


class DevicePrefetcher:
    """Iterate ``(lr, hr)`` device tensors made by ``to_device`` from a loader's uint8 batches.

    ``ahead`` (default: on CUDA only) keeps the next batch in flight: its copy and conversion run
    on a side stream, the consumer's stream waits for it, and the tensors are recorded on the
    consumer's stream so the caching allocator never reuses them too early.
    """

    def __init__(
        self, batches: Iterator, to_device: ToDevice, device: torch.device, ahead: bool | None = None
    ) -> None:
        self.batches = batches
        self.to_device = to_device
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.ahead = cuda if ahead is None else bool(ahead)
        self.stream = torch.cuda.Stream(self.device) if (cuda and self.ahead) else None
        self._next: tuple[Tensor, Tensor] | None = None

    def __iter__(self) -> DevicePrefetcher:
        return self

    def _load(self) -> tuple[Tensor, Tensor]:
        lr_u8, hr_u8 = next(self.batches)
        if self.stream is None:
            return self.to_device(lr_u8, hr_u8)
        with torch.cuda.stream(self.stream):
            return self.to_device(lr_u8, hr_u8)

    def __next__(self) -> tuple[Tensor, Tensor]:
        if not self.ahead:
            return self.to_device(*next(self.batches))
        cur = self._next if self._next is not None else self._load()
        if self.stream is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_stream(self.stream)
            for t in cur:
                t.record_stream(consumer)
        self._next = self._load()
        return cur
