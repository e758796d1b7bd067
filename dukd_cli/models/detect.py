"""Which registered network a state dict is: architecture, constructor arguments and scale from keys
and shapes.

Detection is owned by each architecture, as in spandrel: the callable registered under
``dukd.architectures`` may carry a ``detect`` attribute, ``detect(native, original) -> Found | None``,
that reads its constructor arguments off ``native`` (the checkpoint's ``{key: shape}`` after the
architecture's own ``convert_state_dict``; ``original`` is the file's own) with the helpers of
:mod:`dukd_cli.models.shapes`. The zoo's EDSR, RCAN, SwinIR and IMDN declare theirs beside their
networks (``zoo/*.py``); a plugin declares its own the same way and takes part in :func:`detect`,
``dukd zoo info FILE`` and checkpoint teachers without touching dukd.

A candidate counts only if the network built with those arguments (on the meta device: nothing is
allocated) has exactly the checkpoint's keys and shapes, so a detection always loads strictly.
Values that shapes cannot tell (``Found.unknown``, e.g. EDSR's ``res_scale``) are taken from a
preset of the same shape, else the default, and listed in :attr:`Detection.assumed`. Only names and
shapes are read, so a ``{key: shape}`` mapping works as well as a state dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from dukd_cli import registry
from dukd_cli.models.shapes import Found, Shapes, shapes_of

# The built-in families are tried first, in this order; plugin architectures after them by name.
ZOO_ORDER = ("edsr", "rcan", "swinir", "imdn")


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
    suffix: str = ""

    @property
    def label(self) -> str:
        """E.g. ``SwinIR-S lightweight x4 (pixelshuffledirect)`` or ``EDSR 32 ch, 4 blocks x4``."""
        preset = registry.get_preset(self.presets[0]) if self.presets else None
        base = (preset.label or self.presets[0]) if preset is not None else self.base_label
        text = f"{base} x{self.scale}"
        return f"{text} ({self.suffix})" if self.suffix else text

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


def _meta(shapes: Shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _hook(arch: str) -> Callable[[Shapes, Shapes], Found | None] | None:
    try:
        factory = registry.get_architecture(arch)
    except Exception:
        return None
    hook = getattr(factory, "detect", None)
    return hook if callable(hook) else None


def detectable() -> tuple[str, ...]:
    """The registered architectures that declare a ``detect`` hook: the zoo's first, then plugins'."""
    names = [n for n in registry.names(registry.ARCH_GROUP) if _hook(n) is not None]
    return tuple(
        sorted(names, key=lambda n: (n not in ZOO_ORDER, ZOO_ORDER.index(n) if n in ZOO_ORDER else 0, n))
    )


def _native(arch: str, shapes: Shapes) -> Shapes | None:
    """The checkpoint's shapes under the family's native names (its converter), or None if refused."""
    factory = registry.get_architecture(arch)
    model = None
    for scale in (4, 2, 3):
        try:
            with torch.device("meta"):
                model = factory(scale)
            break
        except Exception:
            continue
    if model is None:
        return None
    try:
        conv = getattr(model, "convert_state_dict", None)
        converted = conv(_meta(shapes)) if conv is not None else _meta(shapes)
    except Exception:
        return None
    return shapes_of(converted)


def _matches(arch: str, scale: int, kwargs: Mapping[str, Any], native: Shapes) -> bool:
    """Whether the network built with ``kwargs`` has exactly the keys and shapes of ``native``."""
    try:
        factory = registry.get_architecture(arch)
        with torch.device("meta"):
            model = factory(scale, **kwargs)
    except Exception:
        return False
    return shapes_of(model.state_dict()) == native


_RECOMPUTED = re.compile(r"(.*\.)?(attn_mask|relative_position_index)$")


def _presets_like(arch: str, scale: int, kwargs: Mapping[str, Any], structural: tuple[str, ...]) -> list[str]:
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


def detect(state_dict: Mapping[str, Any], families: tuple[str, ...] | None = None) -> Detection | None:
    """The registered network ``state_dict`` (tensors or shapes) is, or None when no family claims it.

    Each family is asked through its own ``detect`` hook (on the architecture's callable, see
    :mod:`dukd_cli.models.detect`), in :func:`detectable` order unless ``families`` is given.
    """
    shapes = shapes_of(state_dict)
    if not shapes:
        return None
    for arch in detectable() if families is None else families:
        hook = _hook(arch)
        if hook is None:
            continue
        native = _native(arch, shapes)
        if native is None:
            continue
        try:
            found = hook(native, shapes)
        except Exception:  # a plugin's hook that breaks on a foreign file claims nothing
            found = None
        if found is None:
            continue
        kwargs = dict(found.kwargs)
        presets = _presets_like(arch, found.scale, kwargs, found.structural)
        assumed = dict(found.assumed)
        if found.unknown:
            # Arguments that leave no trace in the shapes: a preset's of the same shape, else the default.
            preset = registry.get_preset(presets[0]) if presets else None
            defaults = _defaults(arch)
            for key in found.unknown:
                value = (
                    preset.kwargs[key] if preset is not None and key in preset.kwargs else defaults.get(key)
                )
                kwargs[key] = value
                assumed[key] = value
        target = {k: s for k, s in native.items() if not _RECOMPUTED.fullmatch(k)}
        if not _matches(arch, found.scale, kwargs, target):
            continue
        return Detection(
            arch, found.scale, kwargs, found.structural, presets, assumed, found.label, found.suffix
        )
    return None


def _defaults(arch: str) -> dict[str, Any]:
    from dukd_cli.models.spec import factory_arguments

    try:
        return factory_arguments(registry.get_architecture(arch))[0]
    except Exception:
        return {}


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
