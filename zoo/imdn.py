"""IMDN: Lightweight Image Super-Resolution with Information Multi-distillation Network (Hui et al., ACM MM 2019).

A conv head; ``n_blocks`` information multi-distillation blocks (IMDB); the outputs of all blocks
concatenated and fused by a 1x1 conv + LeakyReLU; a conv with a long skip; a one-step sub-pixel
upsampler (conv to 3*scale^2 channels + PixelShuffle).

An IMDB runs four 3x3 convs in sequence; after each of the first three (conv + LeakyReLU 0.05) it
splits off a quarter of the channels (distillation rate 0.25) and passes the rest on. The four
distilled parts are concatenated, gated by contrast-aware channel attention (CCA: per-channel
standard deviation + mean -> 1x1 squeeze - ReLU - 1x1 excite - sigmoid) and fused by a 1x1 conv,
plus the block input.

Parameter names are those of the released files (``IMDN_x{2,3,4}.pth``, minus their ``module.``
prefix)::

    fea_conv, IMDB{k}.{c1..c5}, IMDB{k}.cca.conv_du.{0,2}, c.0, LR_conv, upsampler.0

Input RGB in [0, 1], no mean shift.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dukd_cli.errors import DukdError
from dukd_cli.models.shapes import Found, Shapes, indices, pixel_shuffle_scale
from zoo.common import check_positive, check_scale

LRELU_SLOPE = 0.05


def channel_std(x: Tensor) -> Tensor:
    """Per-channel standard deviation over the spatial positions (population, not unbiased): (N, C, 1, 1)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()


class CCALayer(nn.Module):
    """Contrast-aware channel attention: gate = sigmoid(excite(ReLU(squeeze(std(x) + mean(x)))))."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        stats = channel_std(x) + x.mean(dim=(2, 3), keepdim=True)
        return x * self.conv_du(stats)


class IMDB(nn.Module):
    """Information multi-distillation block (progressive channel splitting + CCA + 1x1 fusion)."""

    def __init__(self, channels: int, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(self.remaining, channels, 3, padding=1)
        self.c3 = nn.Conv2d(self.remaining, channels, 3, padding=1)
        self.c4 = nn.Conv2d(self.remaining, self.distilled, 3, padding=1)
        self.act = nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        self.c5 = nn.Conv2d(self.distilled * 4, channels, 1)
        self.cca = CCALayer(self.distilled * 4)

    def forward(self, x: Tensor) -> Tensor:
        split = (self.distilled, self.remaining)
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        d4 = self.c4(r3)
        fused = self.c5(self.cca(torch.cat([d1, d2, d3, d4], dim=1)))
        return fused + x


class IMDN(nn.Module):
    """IMDN; maps (N, 3, h, w) RGB in [0, 1] to (N, 3, h*scale, w*scale), not clamped."""

    def __init__(
        self, scale: int, n_feats: int = 64, n_blocks: int = 6, distillation_rate: float = 0.25
    ) -> None:
        super().__init__()
        self.scale = scale
        self.n_blocks = n_blocks
        self.fea_conv = nn.Conv2d(3, n_feats, 3, padding=1)
        for k in range(1, n_blocks + 1):
            self.add_module(f"IMDB{k}", IMDB(n_feats, distillation_rate))
        self.c = nn.Sequential(
            nn.Conv2d(n_feats * n_blocks, n_feats, 1), nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        )
        self.LR_conv = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(n_feats, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def blocks(self) -> list[IMDB]:
        return [getattr(self, f"IMDB{k}") for k in range(1, self.n_blocks + 1)]

    def forward(self, x: Tensor) -> Tensor:
        fea = self.fea_conv(x)
        outs = []
        y = fea
        for block in self.blocks():
            y = block(y)
            outs.append(y)
        y = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(y)

    def feature_taps(self) -> list[str]:
        """Body features at 1/3, 2/3 and the end of the body, for feature-based distillation.

        The outputs of blocks ``IMDB{n//3}``, ``IMDB{2n//3}`` and ``IMDB{n}`` (IMDB2, IMDB4, IMDB6
        for the released 6-block model), all (N, C, h, w). The last block is used rather than the
        fusion conv so that all three taps are the same kind of feature.
        """
        n = self.n_blocks
        return [f"IMDB{max(n // 3, 1)}", f"IMDB{max(2 * n // 3, 1)}", f"IMDB{n}"]

    @staticmethod
    def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The released files are native apart from a ``module.`` prefix on every key (DataParallel),
        which is stripped here too (the weight resolver normally strips it first)."""
        prefix = "module."
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix) :]: v for k, v in state_dict.items()}
        return dict(state_dict)


def imdn(scale: int, n_feats: int = 64, n_blocks: int = 6, distillation_rate: float = 0.25) -> IMDN:
    """Build an IMDN (defaults: the released model, 64 ch, 6 IMDBs). Scales: any integer >= 2
    (released weights: x2, x3, x4)."""
    scale = check_scale("imdn", scale, any_integer=True)
    check_positive("imdn", n_feats=n_feats, n_blocks=n_blocks)
    distilled = int(n_feats * distillation_rate)
    if not 0 < distilled < n_feats or (distilled * 4) // 16 < 1:
        raise DukdError(
            f"imdn: distillation_rate {distillation_rate} with n_feats {n_feats} gives {distilled} distilled "
            "channels; need at least 4 and fewer than n_feats"
        )
    return IMDN(scale, n_feats, n_blocks, float(distillation_rate))


# Detection is owned by the architecture (dukd_cli.models.detect): read the constructor arguments
# off a checkpoint's shapes.
def detect_imdn(n: Shapes, original: Shapes) -> Found | None:
    """IMDN from its shapes: ``n_feats``, ``n_blocks``, ``distillation_rate``, scale (one-step upsampler)."""
    fea = n.get("fea_conv.weight")
    up = n.get("upsampler.0.weight")
    c4 = n.get("IMDB1.c4.weight")
    if fea is None or up is None or c4 is None:
        return None
    feats = fea[0]
    blocks = len(indices(n, r"IMDB(\d+)\.c1\.weight"))
    scale = pixel_shuffle_scale(up[0])
    if not blocks or scale is None:
        return None
    kwargs = {"n_feats": feats, "n_blocks": blocks, "distillation_rate": c4[0] / feats}
    return Found(scale, kwargs, tuple(kwargs), f"IMDN {feats} ch, {blocks} blocks")


imdn.detect = detect_imdn
