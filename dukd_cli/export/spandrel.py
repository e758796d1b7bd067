"""The weights file layout that spandrel reads, so that exported students run where SR users are.

chaiNNer, ComfyUI and most upscaling front-ends load checkpoints through spandrel, which tells the
architecture and its hyper-parameters from the state dict's keys and tensor shapes alone. For each
family it knows, dukd's ``model.safetensors`` is written in that family's official layout:

- ``swinir``: the parameters plus the buffers of the authors' release that spandrel reads the
  window size and the training size from (``attn.relative_position_index`` in every block,
  ``attn_mask`` in the shifted ones; :meth:`zoo.swinir.SwinIR.official_state_dict`). Without them
  spandrel refuses the file (``UnsupportedModelError``). dukd drops them again on loading.
- ``rcan``: dukd's names are already the official ones.
- ``spandrel`` (a network dukd runs through spandrel: SPAN, RRDB, ...): spandrel's own keys, without
  the ``net.`` prefix of dukd's wrapper.

What spandrel cannot see in a file it assumes (RCAN: input range 255 and ``res_scale`` 1; SwinIR:
the DIV2K mean, biased q/k/v, input range 1 except for window 7): a network built otherwise would
load but compute other images, so it is reported as not readable instead. EDSR and IMDN are not
spandrel families at all; for them (and those) the way to other runtimes is the ONNX file.

:func:`verify` loads a written file with spandrel's own file loader and compares its output with
dukd's on a small random image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dukd_cli.errors import DukdError

TOLERANCE = 1e-5  # fp32, relative to the output's magnitude (at least 1)
FRONT_ENDS = "chaiNNer, ComfyUI"
_DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


@dataclass(frozen=True)
class Layout:
    """What to write as ``model.safetensors`` and whether spandrel reads it as this network."""

    state_dict: dict[str, Tensor]
    architecture: str | None  # spandrel's name for the family; None: spandrel cannot read it
    reason: str | None = None  # why not, one clause

    def to_config(self, max_abs_diff: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture}
        if self.reason:
            out["reason"] = self.reason
        if max_abs_diff is not None:
            out["max_abs_diff"] = float(max_abs_diff)
        return out


def _plain(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items() if isinstance(v, Tensor)}


def _rcan_reason(net: nn.Module) -> str | None:
    img_range = float(getattr(net, "img_range", 255.0))
    if img_range != 255.0:
        return f"spandrel reads every RCAN with input range 255 (this one uses {img_range:g})"
    scales = {float(m.res_scale) for m in net.modules() if hasattr(m, "res_scale")}
    if scales - {1.0}:
        return f"spandrel reads every RCAN with res_scale 1 (this one uses {sorted(scales - {1.0})[0]:g})"
    return None


def _swinir_reason(net: nn.Module) -> str | None:
    ws, img_range = int(net.window_size), float(net.img_range)
    assumed = 255.0 if ws == 7 else 1.0  # spandrel's rule: only its JPEG models use window 7
    if img_range != assumed:
        return (
            f"spandrel reads a window-{ws} SwinIR with input range {assumed:g} (this one uses {img_range:g})"
        )
    mean = tuple(float(m) for m in net.mean.flatten().tolist())
    if any(abs(a - b) > 1e-6 for a, b in zip(mean, _DIV2K_MEAN, strict=True)):
        return "spandrel subtracts the DIV2K mean in every SwinIR (this one uses another rgb_mean)"
    qkv = next((m.qkv for m in net.modules() if hasattr(m, "qkv")), None)
    if qkv is not None and qkv.bias is None:
        return "spandrel builds every SwinIR with q/k/v biases (this one has none)"
    return None


def layout_for(net: nn.Module, arch: str) -> Layout:
    """The state dict to export for ``net`` (built from architecture ``arch``) and spandrel's view of it."""
    if arch == "swinir" and hasattr(net, "official_state_dict"):
        reason = _swinir_reason(net)
        return Layout(net.official_state_dict(), None if reason else "SwinIR", reason)
    if arch == "rcan":
        reason = _rcan_reason(net)
        return Layout(_plain(net), None if reason else "RCAN", reason)
    if arch == "spandrel" and hasattr(net, "net"):
        sd = {k: v.detach().to("cpu").clone() for k, v in net.net.state_dict().items()}
        return Layout(sd, str(getattr(net, "architecture", "?")))
    name = {"edsr": "EDSR", "imdn": "IMDN"}.get(arch, arch)
    return Layout(_plain(net), None, f"spandrel has no {name} architecture")


def advice(record: Mapping[str, Any], onnx_written: bool) -> str:
    """One line for the user from an export's ``config["spandrel"]``: the family spandrel loads
    ``model.safetensors`` as, or why it cannot and where to go instead."""
    if record.get("architecture"):
        return f"spandrel ({FRONT_ENDS}) loads model.safetensors as {record['architecture']}"
    where = "use model.onnx there" if onnx_written else "export with --format onnx for them"
    return f"{FRONT_ENDS} (spandrel) cannot load model.safetensors: {record.get('reason', '?')}; {where}"


def verify(path: str | os.PathLike, net: nn.Module, *, size: tuple[int, int] = (19, 17)) -> float:
    """Load ``path`` with spandrel's own file loader; the max abs difference of its output from ``net``'s
    on a random image (at most :data:`TOLERANCE` times the output's magnitude, at least 1).

    Raises :class:`dukd_cli.models.external.SpandrelMissingError` without spandrel and a one-line
    :class:`DukdError` when spandrel refuses the file or reads another network.
    """
    from dukd_cli.models import external

    module = external.import_spandrel()
    try:
        with torch.device("cpu"):
            desc = module.ModelLoader(device="cpu").load_from_file(os.fspath(path))
    except Exception as exc:  # spandrel's refusal in any of its forms
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DukdError(f"spandrel does not load {Path(path).name}: {first}") from None
    theirs = external.SpandrelSR(desc, os.fspath(path)).eval()
    scale = int(getattr(net, "scale", 0) or 0)
    if theirs.scale != scale:
        raise DukdError(
            f"spandrel reads {Path(path).name} as a x{theirs.scale} {theirs.architecture}, not x{scale}"
        )
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, *size, generator=g)
    was = net.training
    net.eval()
    try:
        with torch.inference_mode():
            a, b = net(x.clone()).float(), theirs(x.clone()).float()
    finally:
        net.train(was)
    if a.shape != b.shape:
        raise DukdError(
            f"spandrel's {theirs.architecture} gives {tuple(b.shape)} where dukd gives {tuple(a.shape)}"
        )
    diff = float((a - b).abs().max())
    if not diff <= TOLERANCE * max(1.0, float(a.abs().max())):
        raise DukdError(
            f"spandrel reads {Path(path).name} as {theirs.architecture} but computes other images "
            f"(max abs difference {diff:.2g})"
        )
    return diff


def describe(config: Mapping[str, Any]) -> str | None:
    """The model-card line for an export's ``config["spandrel"]`` record."""
    rec = config.get("spandrel")
    if not isinstance(rec, Mapping):
        return None
    if rec.get("architecture"):
        checked = (
            f" (checked: max abs difference {rec['max_abs_diff']:.1e})"
            if rec.get("max_abs_diff") is not None
            else ""
        )
        return f"loads in spandrel ({FRONT_ENDS}) as {rec['architecture']}{checked}"
    return f"not loadable by spandrel ({FRONT_ENDS}): {rec.get('reason', '?')}"
