"""Invertible augmentations for DUKD's label-consistency regularisation.

The student sees ``D(x)``; its output is mapped back and compared with the teacher's output on the
clean ``x``. ``D`` applies a list of operations, each switched on per sample with probability ``p``.

* :meth:`AugPlan.invert` (the ``true_inverse`` fix, dukd recipe): the true inverse of each
  operation, in reverse order: ``D^-1(D(x)) == x`` for every combination.
* :meth:`AugPlan.redo` (the authors' released code): the same operations applied again in the same
  order. That is an inverse except for a transpose together with exactly one flip, which becomes
  a 180 degree rotation (about 13% of the samples at p = 0.3 with the four default operations).

The default operations and their order are the released ones: colour inversion, flip of the height
axis (``vflip``), flip of the width axis (``hflip``), transpose. The draw is the released one too:
one draw per operation, in operation order, for the whole batch (sample ``i`` has operation ``k``
on when ``u[k, i] >= 1 - p``, which is how ``numpy.random.choice([0, 1], p=[1 - p, p])`` maps
a uniform number).

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

DEFAULT_OPS: tuple[str, ...] = ("invert", "vflip", "hflip", "transpose")
"""The released operations, in the released order: colour inversion, flip of the height axis, flip
of the width axis, transpose (rotations arise from combinations). ``rot90`` is available as an extra."""

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

    def _apply(self, x: Tensor, inverse: bool, *, again: bool = False) -> Tensor:
        self._check(x)
        used = self.mask.any(0).tolist()  # the mask lives on the CPU: no device sync
        mask = self.mask.to(x.device, non_blocking=True)
        order = range(len(self.ops) - 1, -1, -1) if inverse and not again else range(len(self.ops))
        for k in order:
            if not used[k]:
                continue
            col = mask[:, k]
            fwd, inv = OPS[self.ops[k]]
            f = inv if inverse and not again else fwd
            # Per-sample selection; an op no sample uses is skipped entirely.
            x = torch.where(col.view(-1, *([1] * (x.dim() - 1))), f(x), x)
        return x

    def apply(self, x: Tensor) -> Tensor:
        """``D(x)``: the operations in list order, each where its mask is on."""
        return self._apply(x, inverse=False)

    def invert(self, y: Tensor) -> Tensor:
        """``D^-1(y)``: the inverse of each operation, in reverse order."""
        return self._apply(y, inverse=True)

    def redo(self, y: Tensor) -> Tensor:
        """The released code's "inverse": the same operations again, in the same order (not always an inverse)."""
        return self._apply(y, inverse=True, again=True)

    def undo(self, y: Tensor, true_inverse: bool = True) -> Tensor:
        """:meth:`invert` when ``true_inverse`` (the fix), else :meth:`redo` (as released)."""
        return self.invert(y) if true_inverse else self.redo(y)

    def repeat(self, times: int) -> AugPlan:
        """The plan for a batch made of ``times`` consecutive copies of the samples (tile-major)."""
        return AugPlan(self.ops, self.mask.repeat(times, 1))


def sample_plan(
    n: int, p: float, ops: Sequence[str] = DEFAULT_OPS, generator: torch.Generator | None = None
) -> AugPlan:
    """Draw a plan for ``n`` samples: every operation independently on with probability ``p``.

    The released draw: ``n`` uniform numbers per operation, operation after operation; on where
    ``u >= 1 - p``. Drawn on the CPU from ``generator`` (so the draw is reproducible and part of the
    saved state); the mask moves to the data's device when applied.
    """
    ops = check_ops(ops)
    u = torch.rand((len(ops), n), generator=generator)
    mask = (u >= 1.0 - float(p)).t().contiguous()
    return AugPlan(ops, mask)
