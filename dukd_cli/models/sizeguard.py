"""Bounds checked before work: networks too large to build, batches and outputs too large to hold.

Every network dukd builds from an architecture and its arguments goes through
:func:`dukd_cli.models.factory.instantiate`, which runs the factory under :class:`BuildBudget`. The budget sees
each tensor the factory is about to create (``torch.empty``, ``zeros``, ``randn``, ...), works out its
size first on the ``meta`` device (no memory), and stops the build with one line

- before the parameters and buffers so far would exceed the memory this process can use
  (:func:`available_ram`: MemAvailable, lowered by a cgroup limit), e.g. ``--arg n_feats=99999999``;
- after :data:`MAX_TENSORS` tensors (parameters and buffers), six times the zoo's largest network
  (RCAN, 200 residual blocks: 1,634; SwinIR: 361), e.g. ``--arg n_resgroups=100000 --arg
  n_resblocks=100000``, which would otherwise take hours and tens of GB of Python objects.

This is architecture-agnostic: it needs nothing from the factory but the tensors it allocates.

:func:`check_output_pixels` bounds the size of one output image (``upscale``, ``evaluate``):
:data:`MAX_OUTPUT_PIXELS` unless ``--max-pixels`` raises it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from dukd_cli.errors import DukdError

#: The most tensors (parameters and buffers) one network may create while it is built.
MAX_TENSORS = 10_000

#: The default bound on one output image's pixel count (width x height): 1 gigapixel (3 GB as 8-bit RGB,
#: 12 GB as the float32 image the network writes).
MAX_OUTPUT_PIXELS = 1_000_000_000

_FACTORIES = {
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.empty_strided,
}


def available_ram() -> int:
    """Bytes this process may still allocate: MemAvailable, lowered by a cgroup v2/v1 memory limit."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            free = 1 << 62
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < (1 << 60):
            free = min(free, max(0, int(limit) - usage))
        break
    return free


def gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


class TooLargeError(DukdError):
    """A network, batch or output that cannot fit."""


class BuildBudget(TorchFunctionMode):
    """Stop a network's construction before it outgrows ``limit_bytes`` or :data:`MAX_TENSORS`."""

    def __init__(self, what: str, limit_bytes: int | None = None, max_tensors: int | None = None) -> None:
        super().__init__()
        self.what = what
        self.limit = available_ram() if limit_bytes is None else int(limit_bytes)
        self.max_tensors = MAX_TENSORS if max_tensors is None else int(max_tensors)
        self.tensors = 0
        self.bytes = 0
        self.elements = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Iterable[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _FACTORIES:
            try:
                probe = func(*args, **{**kwargs, "device": "meta"})
                size = probe.numel() * probe.element_size()
                n = probe.numel()
            except Exception:  # let the real call report its own error
                size = n = 0
            self.tensors += 1
            self.elements += n
            self.bytes += size
            if self.bytes > self.limit:
                raise TooLargeError(
                    f"{self.what} is too large for this machine: its tensors need more than {gb(self.bytes)} "
                    f"({self.elements:,} values so far) and {gb(self.limit)} of memory is available"
                )
            if self.tensors > self.max_tensors:
                raise TooLargeError(
                    f"{self.what} is too large: it creates more than {self.max_tensors:,} tensors "
                    f"(any real super-resolution network holds far fewer); refusing to build it"
                )
        return func(*args, **kwargs)


def check_output_pixels(
    width: int, height: int, limit: int | None, what: str, option: str = "--max-pixels"
) -> None:
    """One line unless a ``width`` x ``height`` output is within ``limit`` pixels (None: the default)."""
    bound = MAX_OUTPUT_PIXELS if limit is None else int(limit)
    n = int(width) * int(height)
    if n > bound:
        raise TooLargeError(
            f"{what}: the output would be {int(width):,} x {int(height):,} = {n / 1e6:,.0f} megapixels, above "
            f"the limit of {bound / 1e6:,.0f} megapixels per image; pass {option} {n} to allow it"
        )


def check_max_pixels(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DukdError(f"--max-pixels must be a positive whole number of pixels, got {value!r}")
    return value


def check_batch(
    batch_size: int, patch: int, scale: int, bytes_per_lr_pixel: float, device: torch.device
) -> None:
    """One line unless a training batch can fit: its float patches and HR targets plus one forward's
    activations (``bytes_per_lr_pixel``, inference's generous per-pixel budget) within the device's
    free memory. Training keeps more (the graph for backward), so this refuses only what cannot
    possibly fit (``--batch-size 100000``), never a batch that merely might."""
    per_sample = 3 * patch * patch * (1 + scale * scale) * 4 + bytes_per_lr_pixel * patch * patch
    need = batch_size * per_sample
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = available_ram()
    if need > free:
        fit = max(1, int(free // max(per_sample, 1)))
        raise TooLargeError(
            f"--batch-size {batch_size} needs about {gb(need)} for {patch} px patches at x{scale} "
            f"(patches, targets and activations); {gb(free)} is free on {device}: at most about {fit} fits"
        )
