"""EDSR: Enhanced Deep Residual Networks for Single Image Super-Resolution (Lim et al., CVPRW 2017).

A conv head, ``n_resblocks`` residual blocks without batch norm (conv-ReLU-conv, branch scaled by
``res_scale``), a body-closing conv with a long skip, a sub-pixel upsampler and a last conv.

Parameter names are those of the official release (EDSR-PyTorch, SNU), so its ``edsr_x*.pt`` and
``edsr_baseline_x*.pt`` files load with ``strict=True``::

    sub_mean.{weight,bias}             fixed mean shift (buffers here), input range [0, 255]
    head.0                             first conv
    body.{i}.body.0 / body.{i}.body.2  the two convs of residual block i
    body.{n_resblocks}                 conv after the blocks
    tail.0.{0,2,...}                   upsampler convs (pixel shuffles in between)
    tail.1                             last conv
    add_mean.{weight,bias}

BasicSR-trained files (``conv_first``, ``body.{i}.conv1/conv2``, ``conv_after_body``,
``upsample.*``, ``conv_last``; no mean stored) are renamed by :meth:`EDSR.convert_state_dict`.

The module follows the official semantics: the [0, 1] input is multiplied by ``img_range`` (255),
the mean is subtracted, ..., the mean is added back and the result divided by ``img_range``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from dukd_cli.errors import DukdError
from dukd_cli.models.shapes import Found, Shapes, indices, upsampler_scale
from zoo.common import (
    DIV2K_RGB_MEAN,
    MeanShift,
    Upsampler,
    check_positive,
    check_scale,
    detect_layout,
    mean_shift_tensors,
    rename_keys,
)


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, the branch scaled by ``res_scale``, plus the identity."""

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        res = self.body(x)
        if self.res_scale != 1.0:
            res = res * self.res_scale
        return res + x


# Key patterns of the two layouts, used to detect which one a checkpoint is in.
_OFFICIAL = [
    r"sub_mean\..*",
    r"add_mean\..*",
    r"head\.0\..*",
    r"body\.\d+\.body\.[02]\..*",
    r"body\.\d+\.(weight|bias)",
    r"tail\..*",
]
_BASICSR = [
    r"conv_first\..*",
    r"body\.\d+\.conv[12]\..*",
    r"conv_after_body\..*",
    r"upsample\..*",
    r"conv_last\..*",
]


class EDSR(nn.Module):
    """EDSR; maps (N, 3, h, w) RGB in [0, 1] to (N, 3, h*scale, w*scale), not clamped."""

    def __init__(
        self,
        scale: int,
        n_feats: int = 64,
        n_resblocks: int = 16,
        res_scale: float = 1.0,
        img_range: float = 255.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
        mean_shift: bool = True,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.img_range = float(img_range)
        self.mean_shift = bool(mean_shift)
        self.n_resblocks = n_resblocks

        self.sub_mean = MeanShift(self.img_range, rgb_mean, sign=-1)
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        body: list[nn.Module] = [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)]
        body.append(nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.body = nn.Sequential(*body)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, 3, 3, padding=1))
        self.add_mean = MeanShift(self.img_range, rgb_mean, sign=1)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.img_range
        if self.mean_shift:
            x = self.sub_mean(x)
        x = self.head(x)
        x = self.body(x) + x
        x = self.tail(x)
        if self.mean_shift:
            x = self.add_mean(x)
        return x / self.img_range

    def feature_taps(self) -> list[str]:
        """Body features at 1/3, 2/3 and the end of the body, for feature-based distillation.

        The outputs of residual blocks ``n//3 - 1`` and ``2n//3 - 1`` (after their skip) and of the
        body's closing conv ``body.{n}`` (before the long skip), all (N, C, h, w).
        """
        n = self.n_resblocks
        first, second = max(n // 3 - 1, 0), max(2 * n // 3 - 1, 0)
        return [f"body.{first}", f"body.{second}", f"body.{n}"]

    @staticmethod
    def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rename a BasicSR EDSR dict to the official names; official dicts pass unchanged.

        BasicSR stores no mean shift (it uses img_range 255 and the DIV2K mean), so the standard
        ``sub_mean`` / ``add_mean`` buffers are inserted. A dict mixing both layouts is refused.
        """
        if not detect_layout("edsr", state_dict, _OFFICIAL, _BASICSR, "BasicSR"):
            out = dict(state_dict)
            if out and "sub_mean.weight" not in out and "head.0.weight" in out:
                _insert_standard_mean(out)  # some mirrors keep official names but drop the mean
            return out
        blocks = {int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"body\.(\d+)\.conv[12]\..*", k))}
        n_blocks = max(blocks) + 1 if blocks else 0
        out = rename_keys(
            state_dict,
            [
                (r"conv_first\.(.*)", r"head.0.\1"),
                (r"body\.(\d+)\.conv1\.(.*)", r"body.\1.body.0.\2"),
                (r"body\.(\d+)\.conv2\.(.*)", r"body.\1.body.2.\2"),
                (r"conv_after_body\.(.*)", rf"body.{n_blocks}.\1"),
                (r"upsample\.(.*)", r"tail.0.\1"),
                (r"conv_last\.(.*)", r"tail.1.\1"),
            ],
        )
        _insert_standard_mean(out)
        return out


def _insert_standard_mean(out: dict[str, Tensor]) -> None:
    """Add the standard mean-shift buffers (range 255, DIV2K mean) where a dict lacks them."""
    like = next(iter(out.values()))
    for name, sign in (("sub_mean", -1), ("add_mean", 1)):
        weight, bias = mean_shift_tensors(255.0, DIV2K_RGB_MEAN, sign)
        out.setdefault(f"{name}.weight", weight.to(like.dtype))
        out.setdefault(f"{name}.bias", bias.to(like.dtype))


def edsr(
    scale: int,
    n_feats: int = 64,
    n_resblocks: int = 16,
    res_scale: float = 1.0,
    img_range: float = 255.0,
    rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
    mean_shift: bool = True,
) -> EDSR:
    """Build an EDSR. Defaults are EDSR-baseline (64 ch, 16 blocks); the paper's EDSR is 256 ch,
    32 blocks, ``res_scale=0.1``. Scales: 2^n and 3.

    ``img_range`` and ``mean_shift`` describe the semantics a checkpoint was trained with: the
    official releases use range 255 with the DIV2K mean subtracted; super-image's Hub files use
    the same key names but feed [0, 1] without a mean shift (``img_range=1, mean_shift=False``).
    """
    scale = check_scale("edsr", scale)
    check_positive("edsr", n_feats=n_feats, n_resblocks=n_resblocks)
    if len(rgb_mean) != 3:
        raise DukdError(f"edsr: rgb_mean needs 3 values, got {len(rgb_mean)}")
    return EDSR(scale, n_feats, n_resblocks, float(res_scale), img_range, tuple(rgb_mean), mean_shift)


# Detection is owned by the architecture (dukd_cli.models.detect): read the constructor arguments
# off a checkpoint's shapes.
def detect_edsr(n: Shapes, original: Shapes) -> Found | None:
    """EDSR from its shapes: ``n_feats`` (head conv), ``n_resblocks`` (body blocks), scale (upsampler
    convs); ``res_scale`` leaves no trace (taken from a preset of the same shape, else 1)."""
    head = n.get("head.0.weight")
    if head is None or len(head) != 4:
        return None
    feats = head[0]
    blocks = len(indices(n, r"body\.(\d+)\.body\.0\.weight"))
    scale = upsampler_scale(n, "tail.0", feats)
    if not blocks or scale is None:
        return None
    kwargs = {"n_feats": feats, "n_resblocks": blocks}
    return Found(scale, kwargs, tuple(kwargs), f"EDSR {feats} ch, {blocks} blocks", unknown=("res_scale",))


edsr.detect = detect_edsr
