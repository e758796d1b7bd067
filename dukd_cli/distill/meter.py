"""The losses of a run between two log steps: sums kept on the device (no synchronisation per
iteration), their means at a log step (over every rank), and the first iteration whose loss was
not finite. The sums are saved with each checkpoint, so the logged means of a resumed run match
an uninterrupted one."""

from __future__ import annotations

from typing import Any

import torch

from dukd_cli.distill import checkpoint as ckpt
from dukd_cli.distill import ddp


class LossMeter:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0  # iterations summed
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, terms: dict[str, torch.Tensor], loss: torch.Tensor, iteration: int) -> None:
        """One loss group of ``iteration`` (0-based): its terms and their sum."""
        with torch.no_grad():
            for k, v in terms.items():
                v = v.detach().float()
                self.sums[k] = self.sums[k] + v if k in self.sums else v
            lf = loss.detach().float()
            self.sums["loss"] = self.sums["loss"] + lf if "loss" in self.sums else lf
            bad = ~torch.isfinite(lf)
            self._first_bad = torch.where(bad & (self._first_bad < 0), iteration + 1, self._first_bad)

    def first_bad(self) -> int:
        """The first iteration (1-based) whose loss was NaN/inf, or -1 (a synchronisation)."""
        return int(self._first_bad.item())

    def means(self, dist: ddp.DistInfo) -> dict[str, float]:
        """The mean of each term since the last call (averaged over ranks); the sums start again."""
        steps = max(1, self.steps)
        values = {k: float(v.item()) / steps for k, v in self.sums.items()}
        self.sums, self.steps = {}, 0
        return ddp.mean_scalars(values, dist, self.device)

    def pack(self) -> dict[str, Any]:
        return ckpt.pack_log(self.sums, self.steps)

    def load(self, state: dict[str, Any], rank: int) -> None:
        self.sums, self.steps = ckpt.unpack_log(state, rank, self.device)
