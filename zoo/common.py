"""Small building blocks shared by the zoo's networks.

Everything here is parameter-name neutral: the networks decide the attribute names, so that their
``state_dict`` keys match the official releases (see ``docs`` on checkpoint formats).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dukd_cli.errors import DukdError, WeightsError

DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)
"""Per-channel RGB mean of DIV2K in [0, 1], used by EDSR, RCAN and SwinIR."""


# --------------------------------------------------------------------------------------------------
# argument checks (one-line user-facing errors)
# --------------------------------------------------------------------------------------------------


def is_power_of_two(n: int) -> bool:
    return n >= 2 and n & (n - 1) == 0


def check_scale(arch: str, scale: object, *, any_integer: bool = False) -> int:
    """Return ``scale`` as an int, or raise a one-line :class:`DukdError`.

    Networks whose upsampler is a stack of x2 pixel shuffles (EDSR, RCAN, SwinIR) support 2^n
    and 3; a one-step pixel-shuffle upsampler (IMDN) supports any integer >= 2 (``any_integer``).
    """
    if isinstance(scale, bool) or not isinstance(scale, int):
        raise DukdError(f"{arch}: scale must be an integer, got {scale!r}")
    if any_integer:
        if scale < 2:
            raise DukdError(f"{arch}: unsupported scale x{scale} (supported: any integer >= 2)")
    elif not (is_power_of_two(scale) or scale == 3):
        raise DukdError(f"{arch}: unsupported scale x{scale} (supported: 2, 3, 4, 8 and other powers of 2)")
    return scale


def check_positive(arch: str, **values: object) -> None:
    """Raise a one-line :class:`DukdError` unless every named value is a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DukdError(f"{arch}: {name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------


class MeanShift(nn.Module):
    """Add (``sign=+1``) or subtract (``sign=-1``) a per-channel RGB mean, as a fixed 1x1 conv.

    Official EDSR / RCAN files store this as ``weight`` (3, 3, 1, 1) and ``bias`` (3,) of a frozen
    1x1 convolution. Here they are persistent *buffers*: they are saved and loaded under the same
    names (so official files load strictly), but never trained, never counted as parameters, and
    moved along with ``.to()``.
    """

    def __init__(
        self,
        rgb_range: float = 255.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
        sign: int = -1,
    ) -> None:
        super().__init__()
        weight, bias = mean_shift_tensors(rgb_range, rgb_mean, sign)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def mean_shift_tensors(
    rgb_range: float = 255.0, rgb_mean: Sequence[float] = DIV2K_RGB_MEAN, sign: int = -1
) -> tuple[Tensor, Tensor]:
    """The ``(weight, bias)`` a :class:`MeanShift` holds (identity weight, ``sign*range*mean`` bias)."""
    weight = torch.eye(3).view(3, 3, 1, 1)
    bias = sign * float(rgb_range) * torch.tensor([float(m) for m in rgb_mean])
    return weight, bias


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: ``log2(scale)`` x (3x3 conv to 4C, PixelShuffle(2)), or one x3 step.

    Indices match EDSR-PyTorch's ``tail.0``, BasicSR's ``upsample`` and SwinIR's ``upsample``:
    convs at 0 (and 2, 4, ... for x4, x8), pixel shuffles in between.
    """

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if is_power_of_two(scale):
            for _ in range(scale.bit_length() - 1):
                layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
        else:
            raise DukdError(f"upsampler: unsupported scale x{scale} (supported: 2^n and 3)")
        super().__init__(*layers)


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample with probability ``p``.

    Active only in training mode; in eval mode (and with ``p == 0``) it is the identity, so a
    teacher in ``eval()`` gives deterministic outputs. Kept samples are scaled by ``1 / (1 - p)``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------------------------------
# state-dict conversion helpers
# --------------------------------------------------------------------------------------------------


def classify_keys(
    state_dict: Mapping[str, Tensor], layouts: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """Group the keys of ``state_dict`` by the layout whose regular expressions they match.

    ``layouts`` maps a layout name to patterns (full matches). A key matching several layouts is
    counted in each; keys matching none are left out.
    """
    compiled = {name: [re.compile(p) for p in pats] for name, pats in layouts.items()}
    found: dict[str, list[str]] = {name: [] for name in layouts}
    for key in state_dict:
        for name, pats in compiled.items():
            if any(p.fullmatch(key) for p in pats):
                found[name].append(key)
    return found


def detect_layout(
    arch: str,
    state_dict: Mapping[str, Tensor],
    native: Iterable[str],
    foreign: Iterable[str],
    foreign_name: str,
) -> bool:
    """Decide whether ``state_dict`` is in the foreign layout (True) or the native one (False).

    Raises :class:`WeightsError` when the dict holds keys that only the native layout has *and* keys
    that only the foreign layout has: such a mix is never guessed at.
    """
    found = classify_keys(state_dict, {"native": native, "foreign": foreign})
    only_native = [k for k in found["native"] if k not in set(found["foreign"])]
    only_foreign = [k for k in found["foreign"] if k not in set(found["native"])]
    if only_native and only_foreign:
        raise WeightsError(
            f"{arch}: checkpoint mixes official and {foreign_name} key names "
            f"(e.g. '{only_native[0]}' and '{only_foreign[0]}'); refusing to guess"
        )
    return bool(only_foreign)


def rename_keys(state_dict: Mapping[str, Tensor], rules: Sequence[tuple[str, str | Callable]]) -> dict:
    """Rename every key by the first rule ``(pattern, replacement)`` whose pattern fully matches.

    Keys that no rule matches are kept as they are (a strict load then reports them).
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for pat, repl in compiled:
            if pat.fullmatch(key):
                new = pat.sub(repl, key)
                break
        if new in out:
            raise WeightsError(f"checkpoint conversion maps two keys onto '{new}'")
        out[new] = value
    return out
