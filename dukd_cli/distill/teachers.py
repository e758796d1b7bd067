"""Several teachers as one: the panel the methods label their inputs with (``--teacher`` repeated).

Rules (``--teacher-mix``):

* ``mean``: every teacher labels every input; the label is the mean of their outputs.
* ``best``: per sample, the teacher whose output on that sample's LR patch is closest to its HR
  patch (mean absolute error; ties go to the earlier teacher) labels it. Inputs without a ground
  truth of their own (DUKD's zoom-in tiles and zoom-out input) are labelled by the teacher chosen
  for the sample they were made from. Every teacher still runs on every input (the choice needs
  all outputs on the original pair; the upcycled inputs reuse it).

The panel is an ``nn.Module`` holding the frozen teachers; calling it plainly (the validation's
agreement probe) gives the mean output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dukd_cli.errors import DukdError

MIXES = ("mean", "best")


def check_mix(mix: str | None) -> str:
    m = (mix or "mean").strip().lower()
    if m not in MIXES:
        raise DukdError(f"--teacher-mix must be one of {', '.join(MIXES)}, got '{mix}'")
    return m


class TeacherPanel(nn.Module):
    """Frozen teachers of one scale combined by ``mix`` (see the module docstring)."""

    def __init__(self, teachers: Sequence[nn.Module], mix: str = "mean") -> None:
        super().__init__()
        if len(teachers) < 2:
            raise DukdError("a teacher panel needs at least two teachers")
        self.teachers = nn.ModuleList(teachers)
        self.mix = check_mix(mix)
        self.scale = int(getattr(teachers[0], "scale", 0) or 0) or None

    def outputs(self, x: Tensor) -> list[Tensor]:
        return [t(x) for t in self.teachers]

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([y.float() for y in self.outputs(x)]).mean(0)

    @staticmethod
    def choose(outputs: Sequence[Tensor], target: Tensor) -> Tensor:
        """Per sample of ``target`` (N rows), the index of the output closest to it (mean |y - target|)."""
        n = target.shape[0]
        err = torch.stack([(y[:n].float() - target.float()).abs().flatten(1).mean(1) for y in outputs])
        return err.argmin(dim=0)  # first minimum: ties go to the earlier teacher

    def label(
        self, x: Tensor, *, target: Tensor | None = None, choice: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """The label of ``x`` and, under ``best``, the per-sample choice.

        ``best``: the choice is made on the first ``len(target)`` rows when ``target`` is given,
        else ``choice`` (from an earlier call) is used; row ``r`` of ``x`` belongs to sample
        ``r % n`` (DUKD stacks tiles tile-major and the zoom-out input sample by sample).
        """
        ys = self.outputs(x)
        if self.mix == "mean":
            return torch.stack([y.float() for y in ys]).mean(0).to(ys[0].dtype), None
        if target is not None:
            choice = self.choose(ys, target)
        if choice is None:
            raise DukdError("teacher mix 'best' needs the ground truth of the original pair first")
        rows = torch.arange(x.shape[0], device=choice.device) % choice.shape[0]
        pick = choice[rows].to(x.device)
        stacked = torch.stack(ys)  # (T, N, C, H, W)
        out = stacked[pick, torch.arange(x.shape[0], device=x.device)]
        return out, choice
