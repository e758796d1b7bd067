"""Which zoo network a state dict is: architecture, constructor arguments and scale from keys and shapes.

:func:`detect` looks at the key names and tensor shapes of a checkpoint (official, BasicSR or dukd
layout; each family's own converter first turns foreign names into native ones) and infers the
constructor arguments of EDSR, RCAN, SwinIR or IMDN:

=======  ===================================================================================
EDSR     ``n_feats`` (head conv), ``n_resblocks`` (body blocks), scale (upsampler convs)
RCAN     ``n_feats``, ``n_resgroups``, ``n_resblocks`` (per group), ``reduction`` (attention)
SwinIR   ``embed_dim``, ``depths``, ``num_heads`` and ``window_size`` (bias tables),
         ``mlp_ratio``, ``upsampler``, ``num_feat``, ``resi_connection``, ``img_size`` (mask)
IMDN     ``n_feats``, ``n_blocks``, ``distillation_rate``, scale (one-step upsampler)
=======  ===================================================================================

A candidate counts only if the network built with those arguments (on the meta device: nothing is
allocated) has exactly the checkpoint's keys and shapes, so a detection always loads strictly.
Values that shapes cannot tell (EDSR's ``res_scale``) are taken from a preset of the same shape,
else the default, and listed in :attr:`Detection.assumed`. Only names and shapes are read, so a
``{key: shape}`` mapping works as well as a state dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

ZOO_FAMILIES = ("edsr", "rcan", "swinir", "imdn")

# Display names of presets, for messages ("this file is SwinIR-S lightweight x4 (pixelshuffledirect)").
PRESET_LABELS = {
    "edsr-l": "EDSR",
    "edsr-s": "EDSR-S (DUKD student)",
    "edsr-baseline": "EDSR-baseline",
    "rcan-l": "RCAN",
    "rcan-s": "RCAN-S (DUKD student)",
    "swinir-l": "SwinIR-M (classical SR)",
    "swinir-s": "SwinIR-S (DUKD student)",
    "swinir-lightweight": "SwinIR-S lightweight",
}


@dataclass
class Detection:
    """A zoo network recognised from a checkpoint."""

    arch: str
    scale: int
    kwargs: dict[str, Any]
    structural: tuple[str, ...]  # the arguments read off the shapes (the rest are assumed)
    presets: list[str] = field(default_factory=list)  # presets of exactly this shape at this scale
    assumed: dict[str, Any] = field(default_factory=dict)
    base_label: str = ""

    @property
    def label(self) -> str:
        """E.g. ``SwinIR-S lightweight x4 (pixelshuffledirect)`` or ``EDSR 32 ch, 4 blocks x4``."""
        base = PRESET_LABELS.get(self.presets[0], self.presets[0]) if self.presets else self.base_label
        text = f"{base} x{self.scale}"
        if self.arch == "swinir":
            text += f" ({self.kwargs.get('upsampler')})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": "zoo",
            "architecture": self.arch,
            "scale": self.scale,
            "label": self.label,
            "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()},
            "presets": list(self.presets),
            "assumed": dict(self.assumed),
        }


Shapes = dict[str, tuple[int, ...]]


def shapes_of(state_dict: Mapping[str, Any]) -> Shapes:
    """``{key: shape}`` of a state dict (or of a mapping that already holds shapes)."""
    out: Shapes = {}
    for k, v in state_dict.items():
        out[str(k)] = tuple(v.shape) if hasattr(v, "shape") else tuple(v)
    return out


def _meta(shapes: Shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _native(arch: str, shapes: Shapes) -> Shapes | None:
    """The checkpoint's shapes under the family's native names (its converter), or None if refused."""
    from dukd_cli import registry

    try:
        factory = registry.get_architecture(arch)
        with torch.device("meta"):
            model = factory(4) if arch != "imdn" else factory(2)
        conv = getattr(model, "convert_state_dict", None)
        converted = conv(_meta(shapes)) if conv is not None else _meta(shapes)
    except Exception:
        return None
    return shapes_of(converted)


def _matches(arch: str, scale: int, kwargs: Mapping[str, Any], native: Shapes) -> bool:
    """Whether the network built with ``kwargs`` has exactly the keys and shapes of ``native``."""
    from dukd_cli import registry

    try:
        factory = registry.get_architecture(arch)
        with torch.device("meta"):
            model = factory(scale, **kwargs)
    except Exception:
        return False
    return shapes_of(model.state_dict()) == native


def _indices(native: Shapes, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in native if (m := rx.fullmatch(k))})


def _upsampler_scale(native: Shapes, prefix: str, width: int) -> int | None:
    """Scale of a stack of (conv to 4C or 9C, pixel shuffle) steps: convs at prefix.0, .2, ..."""
    convs = [
        native.get(f"{prefix}.{i}.weight") for i in _indices(native, rf"{re.escape(prefix)}\.(\d+)\.weight")
    ]
    if not convs or any(c is None or len(c) != 4 for c in convs):
        return None
    outs = [c[0] for c in convs]
    if len(outs) == 1 and outs[0] == 9 * width:
        return 3
    if all(o == 4 * width for o in outs):
        return 2 ** len(outs)
    return None


def _pixel_shuffle_scale(out_channels: int) -> int | None:
    s = math.isqrt(out_channels // 3) if out_channels % 3 == 0 else 0
    return s if s >= 2 and 3 * s * s == out_channels else None


# --------------------------------------------------------------------------------------------
# the families
# --------------------------------------------------------------------------------------------


def _edsr(n: Shapes) -> tuple[int, dict[str, Any], tuple[str, ...], str] | None:
    head = n.get("head.0.weight")
    if head is None or len(head) != 4:
        return None
    feats = head[0]
    blocks = len(_indices(n, r"body\.(\d+)\.body\.0\.weight"))
    scale = _upsampler_scale(n, "tail.0", feats)
    if not blocks or scale is None:
        return None
    return (
        scale,
        {"n_feats": feats, "n_resblocks": blocks},
        ("n_feats", "n_resblocks"),
        f"EDSR {feats} ch, {blocks} blocks",
    )


def _rcan(n: Shapes) -> tuple[int, dict[str, Any], tuple[str, ...], str] | None:
    head = n.get("head.0.weight")
    du = n.get("body.0.body.0.body.3.conv_du.0.weight")
    if head is None or du is None:
        return None
    feats = head[0]
    groups = len(_indices(n, r"body\.(\d+)\.body\.0\.body\.0\.weight"))
    blocks = len(_indices(n, r"body\.0\.body\.(\d+)\.body\.0\.weight"))
    scale = _upsampler_scale(n, "tail.0", feats)
    if not groups or not blocks or scale is None or du[0] < 1 or feats % du[0]:
        return None
    kwargs = {"n_feats": feats, "n_resgroups": groups, "n_resblocks": blocks, "reduction": feats // du[0]}
    return scale, kwargs, tuple(kwargs), f"RCAN {feats} ch, {groups} groups x {blocks} blocks"


def _swinir(n: Shapes) -> tuple[int, dict[str, Any], tuple[str, ...], str] | None:
    first = n.get("conv_first.weight")
    if first is None or len(first) != 4 or first[1] != 3:
        return None
    embed = first[0]
    layers = _indices(n, r"layers\.(\d+)\.residual_group\.blocks\.0\.norm1\.weight")
    if not layers:
        return None
    depths = tuple(
        len(_indices(n, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight")) for i in layers
    )
    tables = [n.get(f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table") for i in layers]
    if any(t is None for t in tables):
        return None
    heads = tuple(t[1] for t in tables)
    side = math.isqrt(tables[0][0])
    if side * side != tables[0][0] or side % 2 == 0:
        return None
    window = (side + 1) // 2
    fc1 = n.get("layers.0.residual_group.blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1[0] / embed if fc1 else 2.0
    resi = "1conv" if "layers.0.conv.weight" in n else "3conv"
    kwargs: dict[str, Any] = {
        "embed_dim": embed,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": float(mlp_ratio),
    }
    before = n.get("conv_before_upsample.0.weight")
    if before is not None:
        kwargs.update(upsampler="pixelshuffle", num_feat=before[0])
        scale = _upsampler_scale(n, "upsample", before[0])
    else:
        up = n.get("upsample.0.weight")
        kwargs["upsampler"] = "pixelshuffledirect"
        scale = _pixel_shuffle_scale(up[0]) if up is not None else None
    if scale is None:
        return None
    kwargs["resi_connection"] = resi
    structural = tuple(kwargs)
    label = f"SwinIR embed {embed}, {len(depths)} x {depths[0]} layers"
    return scale, kwargs, structural, label


def _imdn(n: Shapes) -> tuple[int, dict[str, Any], tuple[str, ...], str] | None:
    fea = n.get("fea_conv.weight")
    up = n.get("upsampler.0.weight")
    c4 = n.get("IMDB1.c4.weight")
    if fea is None or up is None or c4 is None:
        return None
    feats = fea[0]
    blocks = len(_indices(n, r"IMDB(\d+)\.c1\.weight"))
    scale = _pixel_shuffle_scale(up[0])
    if not blocks or scale is None:
        return None
    kwargs = {"n_feats": feats, "n_blocks": blocks, "distillation_rate": c4[0] / feats}
    return scale, kwargs, tuple(kwargs), f"IMDN {feats} ch, {blocks} blocks"


_FAMILIES = {"edsr": _edsr, "rcan": _rcan, "swinir": _swinir, "imdn": _imdn}

# Scrapped buffers that the zoo recomputes (SwinIR's masks and indices): not part of the match.
_RECOMPUTED = re.compile(r"(.*\.)?(attn_mask|relative_position_index)$")


def _presets_like(arch: str, scale: int, kwargs: Mapping[str, Any], structural: tuple[str, ...]) -> list[str]:
    from dukd_cli import registry
    from dukd_cli.models.spec import factory_arguments

    try:
        defaults, _ = factory_arguments(registry.get_architecture(arch))
        found = registry.presets()
    except Exception:
        return []
    try:
        from zoo.presets import ALL as paper
    except Exception:  # pragma: no cover - the zoo is part of the package
        paper = {}
    out = []
    for name, (_entry, preset) in found.items():
        if preset.arch != arch or scale not in preset.scales:
            continue
        merged = {**defaults, **dict(preset.kwargs)}
        if all(_same(merged.get(k), kwargs.get(k)) for k in structural):
            out.append(name)
    return sorted(out, key=lambda p: (p not in paper, list(paper).index(p) if p in paper else 0, p))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def detect(state_dict: Mapping[str, Any], families: tuple[str, ...] = ZOO_FAMILIES) -> Detection | None:
    """The zoo network ``state_dict`` (tensors or shapes) is, or None when no family claims it."""
    shapes = shapes_of(state_dict)
    if not shapes:
        return None
    for arch in families:
        native = _native(arch, shapes)
        if native is None:
            continue
        found = _FAMILIES[arch](native)
        if found is None:
            continue
        scale, kwargs, structural, base = found
        presets = _presets_like(arch, scale, kwargs, structural)
        assumed: dict[str, Any] = {}
        if arch == "edsr":
            # res_scale leaves no trace in the shapes: take a preset's of the same shape, else 1.
            from dukd_cli import registry

            preset = registry.get_preset(presets[0]) if presets else None
            res_scale = float(preset.kwargs.get("res_scale", 1.0)) if preset is not None else 1.0
            kwargs["res_scale"] = res_scale
            assumed["res_scale"] = res_scale
        if arch == "swinir":
            # The shift mask saved by released files tells their training patch size (no effect on
            # the network; the converter drops the mask, so look in the file's own keys).
            mask = next((s for k, s in shapes.items() if k.endswith("blocks.1.attn_mask")), None)
            if mask is not None and len(mask) == 3 and math.isqrt(mask[0]) ** 2 == mask[0]:
                kwargs["img_size"] = math.isqrt(mask[0]) * kwargs["window_size"]
        target = {k: s for k, s in native.items() if not _RECOMPUTED.fullmatch(k)}
        if not _matches(arch, scale, kwargs, target):
            continue
        return Detection(arch, scale, kwargs, structural, presets, assumed, base)
    return None


def differing_arguments(
    detection: Detection, kwargs: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The structural arguments of ``detection`` that differ from ``kwargs`` (over ``defaults``)."""
    merged = {**dict(defaults), **dict(kwargs)}
    return {
        k: detection.kwargs[k] for k in detection.structural if not _same(merged.get(k), detection.kwargs[k])
    }


def format_argument(key: str, value: Any) -> str:
    """``key=value`` as ``--arg`` parses it back; sequences as ``'depths=[6,6,6,6]'`` (quoted for the shell)."""
    if isinstance(value, (list, tuple)):
        return f"'{key}=[{','.join(str(v) for v in value)}]'"
    if isinstance(value, float) and value.is_integer():
        return f"{key}={value:.1f}"
    return f"{key}={value}"
