"""Size rules: padding an input up to the size a network accepts."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_to_size(x: Tensor, h: int, w: int) -> Tensor:
    """Reflect-pad NCHW ``x`` at the bottom/right up to ``(h, w)``.

    One reflect pad cannot exceed the side length minus one, so short sides are padded in several
    reflect steps (a 1-pixel side is replicated): any input size works.
    """
    for dim, target in ((-2, h), (-1, w)):
        pad = target - x.shape[dim]
        while pad > 0:
            size = x.shape[dim]
            step = pad if size == 1 else min(pad, size - 1)
            mode = "replicate" if size == 1 else "reflect"
            x = F.pad(x, (0, step, 0, 0) if dim == -1 else (0, 0, 0, step), mode=mode)
            pad -= step
    return x


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad NCHW ``x`` at the bottom/right so that H and W are multiples of ``multiple``."""
    if multiple <= 1:
        return x
    h, w = x.shape[-2], x.shape[-1]
    return pad_to_size(x, h + (-h) % multiple, w + (-w) % multiple)
