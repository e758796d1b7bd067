"""Invertible augmentations for DUKD's label-consistency regularisation.

The student sees ``D(x)``; its output is mapped back with ``D^-1`` and compared with the teacher's
output on the clean ``x``. ``D`` applies a list of operations, each switched on per sample with
probability ``p``; ``D^-1`` applies the **true inverse of each operation in reverse order**. (The
authors' released code applied the same operations again in the same order, which is not an
inverse: a transpose plus one flip then becomes a 180 degree rotation.)

Operations work on the last two axes of (N, C, H, W) tensors, so the same :class:`AugPlan` undoes
itself on an image at any resolution (an LR-sized input and its x``s`` output). ``transpose`` and
the rotations need square images (all upcycled patches are square).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dukd_cli.errors import DukdError

_Op = Callable[[Tensor], Tensor]

# name -> (forward, inverse). Colour inversion assumes images in [0, 1].
OPS: dict[str, tuple[_Op, _Op]] = {
    "hflip": (lambda x: x.flip(-1), lambda x: x.flip(-1)),
    "vflip": (lambda x: x.flip(-2), lambda x: x.flip(-2)),
    "transpose": (lambda x: x.transpose(-2, -1), lambda x: x.transpose(-2, -1)),
    "rot90": (lambda x: x.rot90(1, (-2, -1)), lambda x: x.rot90(-1, (-2, -1))),
    "invert": (lambda x: 1.0 - x, lambda x: 1.0 - x),
}

DEFAULT_OPS: tuple[str, ...] = ("hflip", "vflip", "transpose", "invert")
"""The released configuration's operations: two flips, a transpose (rotations arise from
combinations), colour inversion. ``rot90`` is available as an extra."""

_GEOMETRIC_SQUARE = {"transpose", "rot90"}


def check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise DukdError(f"unknown augmentation(s) {', '.join(unknown)}; known: {', '.join(OPS)}")
    return tuple(ops)


@dataclass
class AugPlan:
    """Which operation is on for which sample: ``mask[i, k]`` is True when op ``ops[k]`` applies to sample ``i``."""

    ops: tuple[str, ...]
    mask: Tensor  # (N, len(ops)) bool, on any device

    def _check(self, x: Tensor) -> None:
        if x.shape[0] != self.mask.shape[0]:
            raise ValueError(f"plan is for {self.mask.shape[0]} samples, tensor has {x.shape[0]}")
        if x.shape[-1] != x.shape[-2] and any(o in _GEOMETRIC_SQUARE for o in self.ops):
            raise ValueError(f"transpose/rot90 need square images, got {tuple(x.shape[-2:])}")

    def _apply(self, x: Tensor, inverse: bool) -> Tensor:
        self._check(x)
        used = self.mask.any(0).tolist()  # the mask lives on the CPU: no device sync
        mask = self.mask.to(x.device, non_blocking=True)
        order = range(len(self.ops) - 1, -1, -1) if inverse else range(len(self.ops))
        for k in order:
            if not used[k]:
                continue
            col = mask[:, k]
            fwd, inv = OPS[self.ops[k]]
            f = inv if inverse else fwd
            # Per-sample selection; an op no sample uses is skipped entirely.
            x = torch.where(col.view(-1, *([1] * (x.dim() - 1))), f(x), x)
        return x

    def apply(self, x: Tensor) -> Tensor:
        """``D(x)``: the operations in list order, each where its mask is on."""
        return self._apply(x, inverse=False)

    def invert(self, y: Tensor) -> Tensor:
        """``D^-1(y)``: the inverse of each operation, in reverse order."""
        return self._apply(y, inverse=True)

    def repeat(self, times: int) -> AugPlan:
        """The plan for a batch made of ``times`` consecutive copies of the samples (tile-major)."""
        return AugPlan(self.ops, self.mask.repeat(times, 1))


def sample_plan(
    n: int, p: float, ops: Sequence[str] = DEFAULT_OPS, generator: torch.Generator | None = None
) -> AugPlan:
    """Draw a plan for ``n`` samples: every operation independently on with probability ``p``.

    Drawn on the CPU from ``generator`` (so the draw is reproducible and part of the saved state);
    the mask moves to the data's device when applied.
    """
    ops = check_ops(ops)
    mask = torch.rand((n, len(ops)), generator=generator) < float(p)
    return AugPlan(ops, mask)
