"""The exponential moving average of the student: what a run validates and ships.

``ema = ema * d + p * (1 - d)`` after every iteration, in that form (BasicSR's ``model_ema``; ``lerp``
rounds differently); buffers (batch-norm statistics, fake-quant ranges) are copied as they are.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class Ema:
    """A frozen copy of ``student`` that follows its parameters (``update``)."""

    def __init__(self, student: nn.Module) -> None:
        self.model: nn.Module = copy.deepcopy(student).eval().requires_grad_(False)
        self._params = list(self.model.parameters())
        self._followed = list(student.parameters())
        self._buffers = list(self.model.buffers())
        self._followed_buffers = list(student.buffers())

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_mul_(self._params, decay)
        torch._foreach_add_(self._params, self._followed, alpha=1.0 - decay)
        for eb, b in zip(self._buffers, self._followed_buffers, strict=True):
            eb.copy_(b)
