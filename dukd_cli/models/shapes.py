"""Reading an architecture's hyper-parameters off a state dict's key names and tensor shapes.

The toolkit each architecture's ``detect`` hook uses (the zoo's and any plugin's, see
:mod:`dukd_cli.models.detect`): shapes of a state dict, indices of numbered layers, the scale of a
pixel-shuffle upsampler. Pure functions over ``{key: shape}`` mappings; nothing is built or loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Shapes = dict[str, tuple[int, ...]]


@dataclass
class Found:
    """What an architecture's ``detect`` hook read off a checkpoint's shapes.

    ``kwargs`` are constructor arguments; ``structural`` names those the shapes prove (the rest
    are assumptions); ``unknown`` names arguments shapes cannot tell, which detection takes from a
    preset of the same shape, else the constructor's default (and lists as assumed); ``label``
    describes the network for messages (``"EDSR 64 ch, 16 blocks"``); ``suffix`` is appended to
    the label after the scale (SwinIR's upsampler).
    """

    scale: int
    kwargs: dict[str, Any]
    structural: tuple[str, ...]
    label: str
    unknown: tuple[str, ...] = ()
    suffix: str = ""
    assumed: dict[str, Any] = field(default_factory=dict)


def shapes_of(state_dict: Mapping[str, Any]) -> Shapes:
    """``{key: shape}`` of a state dict (or of a mapping that already holds shapes)."""
    out: Shapes = {}
    for k, v in state_dict.items():
        out[str(k)] = tuple(v.shape) if hasattr(v, "shape") else tuple(v)
    return out


def indices(shapes: Shapes, pattern: str) -> list[int]:
    """The sorted numbers captured by the first group of ``pattern`` over the keys (numbered layers)."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := rx.fullmatch(k))})


def upsampler_scale(shapes: Shapes, prefix: str, width: int) -> int | None:
    """Scale of a stack of (conv to 4C or 9C, pixel shuffle) steps: convs at prefix.0, .2, ..."""
    convs = [
        shapes.get(f"{prefix}.{i}.weight") for i in indices(shapes, rf"{re.escape(prefix)}\.(\d+)\.weight")
    ]
    if not convs or any(c is None or len(c) != 4 for c in convs):
        return None
    outs = [c[0] for c in convs]
    if len(outs) == 1 and outs[0] == 9 * width:
        return 3
    if all(o == 4 * width for o in outs):
        return 2 ** len(outs)
    return None


def pixel_shuffle_scale(out_channels: int) -> int | None:
    """The scale s of a one-step pixel-shuffle upsampler with ``3 * s * s`` output channels."""
    s = math.isqrt(out_channels // 3) if out_channels % 3 == 0 else 0
    return s if s >= 2 and 3 * s * s == out_channels else None
