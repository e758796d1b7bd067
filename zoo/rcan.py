"""RCAN: Image Super-Resolution Using Very Deep Residual Channel Attention Networks (Zhang et al., ECCV 2018).

A conv head; ``n_resgroups`` residual groups, each of ``n_resblocks`` residual channel-attention
blocks (RCAB: conv-ReLU-conv-channel attention, plus identity) and a closing conv with a short
skip; a body-closing conv with a long skip; a sub-pixel upsampler and a last conv.

Parameter names are those of the official release (yulunzhang/RCAN, EDSR-PyTorch style), so its
``RCAN_BIX*.pt`` files load with ``strict=True``::

    sub_mean.{weight,bias}                              fixed mean shift (buffers), input [0, 255]
    head.0
    body.{g}.body.{b}.body.0 / .body.2                  RCAB convs
    body.{g}.body.{b}.body.3.conv_du.0 / .conv_du.2     channel attention (squeeze / excite 1x1 convs)
    body.{g}.body.{n_resblocks}                         group closing conv
    body.{n_resgroups}                                  body closing conv
    tail.0.{0,2,...}, tail.1                            upsampler, last conv
    add_mean.{weight,bias}

BasicSR-trained files are renamed by :meth:`RCAN.convert_state_dict`.
"""

from __future__ import annotations

import re
from collections import defaultdict
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


class CALayer(nn.Module):
    """Channel attention: global average pool, 1x1 squeeze (C/r) - ReLU - 1x1 excite - sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel-attention block: conv3x3 - ReLU - conv3x3 - CA, scaled by ``res_scale``, + x."""

    def __init__(self, n_feats: int, reduction: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            CALayer(n_feats, reduction),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        res = self.body(x)
        if self.res_scale != 1.0:
            res = res * self.res_scale
        return res + x


class ResidualGroup(nn.Module):
    """``n_resblocks`` RCABs and a closing conv3x3, plus a short skip."""

    def __init__(self, n_feats: int, n_resblocks: int, reduction: int, res_scale: float = 1.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = [RCAB(n_feats, reduction, res_scale) for _ in range(n_resblocks)]
        blocks.append(nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


_OFFICIAL = [
    r"sub_mean\..*",
    r"add_mean\..*",
    r"head\.0\..*",
    r"body\.\d+\.body\.\d+\.body\.[023]\..*",
    r"body\.\d+\.body\.\d+\.(weight|bias)",
    r"body\.\d+\.(weight|bias)",
    r"tail\..*",
]
_BASICSR = [
    r"conv_first\..*",
    r"body\.\d+\.residual_group\..*",
    r"body\.\d+\.conv\..*",
    r"conv_after_body\..*",
    r"upsample\..*",
    r"conv_last\..*",
]


class RCAN(nn.Module):
    """RCAN; maps (N, 3, h, w) RGB in [0, 1] to (N, 3, h*scale, w*scale), not clamped."""

    def __init__(
        self,
        scale: int,
        n_feats: int = 64,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        reduction: int = 16,
        res_scale: float = 1.0,
        img_range: float = 255.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.img_range = float(img_range)
        self.n_resgroups = n_resgroups

        self.sub_mean = MeanShift(self.img_range, rgb_mean, sign=-1)
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        body: list[nn.Module] = [
            ResidualGroup(n_feats, n_resblocks, reduction, res_scale) for _ in range(n_resgroups)
        ]
        body.append(nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.body = nn.Sequential(*body)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, 3, 3, padding=1))
        self.add_mean = MeanShift(self.img_range, rgb_mean, sign=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.sub_mean(x * self.img_range)
        x = self.head(x)
        x = self.body(x) + x
        x = self.tail(x)
        return self.add_mean(x) / self.img_range

    def feature_taps(self) -> list[str]:
        """Body features at 1/3, 2/3 and the end of the body, for feature-based distillation.

        The outputs of residual groups ``g//3 - 1`` and ``2g//3 - 1`` (after their short skip) and
        of the body's closing conv ``body.{g}`` (before the long skip), all (N, C, h, w).
        """
        g = self.n_resgroups
        first, second = max(g // 3 - 1, 0), max(2 * g // 3 - 1, 0)
        return [f"body.{first}", f"body.{second}", f"body.{g}"]

    @staticmethod
    def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rename a BasicSR RCAN dict to the official names; official dicts pass unchanged.

        The group-closing conv ``body.{g}.conv`` becomes ``body.{g}.body.{n}`` with ``n`` the number
        of RCABs found in that group, and ``conv_after_body`` becomes ``body.{n_groups}``. The
        standard mean-shift buffers (range 255, DIV2K mean) are inserted. Mixed dicts are refused.
        """
        if not detect_layout("rcan", state_dict, _OFFICIAL, _BASICSR, "BasicSR"):
            return dict(state_dict)
        blocks: dict[int, set[int]] = defaultdict(set)
        for key in state_dict:
            if m := re.fullmatch(r"body\.(\d+)\.residual_group\.(\d+)\..*", key):
                blocks[int(m.group(1))].add(int(m.group(2)))
        groups = {int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"body\.(\d+)\..*", k))}
        n_groups = max(groups) + 1 if groups else 0

        def group_tail(m: re.Match) -> str:
            g = int(m.group(1))
            n = max(blocks[g]) + 1 if blocks[g] else 0
            return f"body.{g}.body.{n}.{m.group(2)}"

        out = rename_keys(
            state_dict,
            [
                (r"conv_first\.(.*)", r"head.0.\1"),
                (r"body\.(\d+)\.residual_group\.(\d+)\.rcab\.([02])\.(.*)", r"body.\1.body.\2.body.\3.\4"),
                (
                    r"body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.(.*)",
                    r"body.\1.body.\2.body.3.conv_du.0.\3",
                ),
                (
                    r"body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.(.*)",
                    r"body.\1.body.\2.body.3.conv_du.2.\3",
                ),
                (r"body\.(\d+)\.conv\.(.*)", group_tail),
                (r"conv_after_body\.(.*)", rf"body.{n_groups}.\1"),
                (r"upsample\.(.*)", r"tail.0.\1"),
                (r"conv_last\.(.*)", r"tail.1.\1"),
            ],
        )
        like = next(iter(state_dict.values()))
        for name, sign in (("sub_mean", -1), ("add_mean", 1)):
            weight, bias = mean_shift_tensors(255.0, DIV2K_RGB_MEAN, sign)
            out.setdefault(f"{name}.weight", weight.to(like.dtype))
            out.setdefault(f"{name}.bias", bias.to(like.dtype))
        return out


def rcan(
    scale: int,
    n_feats: int = 64,
    n_resgroups: int = 10,
    n_resblocks: int = 20,
    reduction: int = 16,
    res_scale: float = 1.0,
    img_range: float = 255.0,
    rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
) -> RCAN:
    """Build an RCAN. Defaults are the paper's RCAN (64 ch, 10 groups x 20 blocks, reduction 16).
    Scales: 2^n and 3."""
    scale = check_scale("rcan", scale)
    check_positive(
        "rcan", n_feats=n_feats, n_resgroups=n_resgroups, n_resblocks=n_resblocks, reduction=reduction
    )
    if n_feats // reduction < 1:
        raise DukdError(
            f"rcan: reduction {reduction} leaves no channels in the attention of {n_feats} features"
        )
    if len(rgb_mean) != 3:
        raise DukdError(f"rcan: rgb_mean needs 3 values, got {len(rgb_mean)}")
    return RCAN(
        scale, n_feats, n_resgroups, n_resblocks, reduction, float(res_scale), img_range, tuple(rgb_mean)
    )


# Detection is owned by the architecture (dukd_cli.models.detect): read the constructor arguments
# off a checkpoint's shapes.
def detect_rcan(n: Shapes, original: Shapes) -> Found | None:
    """RCAN from its shapes: ``n_feats``, ``n_resgroups``, ``n_resblocks`` (per group), ``reduction``."""
    head = n.get("head.0.weight")
    du = n.get("body.0.body.0.body.3.conv_du.0.weight")
    if head is None or du is None:
        return None
    feats = head[0]
    groups = len(indices(n, r"body\.(\d+)\.body\.0\.body\.0\.weight"))
    blocks = len(indices(n, r"body\.0\.body\.(\d+)\.body\.0\.weight"))
    scale = upsampler_scale(n, "tail.0", feats)
    if not groups or not blocks or scale is None or du[0] < 1 or feats % du[0]:
        return None
    kwargs = {"n_feats": feats, "n_resgroups": groups, "n_resblocks": blocks, "reduction": feats // du[0]}
    return Found(scale, kwargs, tuple(kwargs), f"RCAN {feats} ch, {groups} groups x {blocks} blocks")


rcan.detect = detect_rcan
