"""SwinIR: Image Restoration Using Swin Transformer (Liang et al., ICCVW 2021), classical / lightweight SR.

Shallow feature conv; ``len(depths)`` residual Swin transformer blocks (RSTB: ``depth`` Swin layers
with (shifted) window self-attention, a conv, and a skip); a LayerNorm and a body-closing conv
with a long skip; then either ``pixelshuffle`` (conv + LeakyReLU to ``num_feat`` channels, x2/x3
pixel-shuffle steps, last conv: classical SR) or ``pixelshuffledirect`` (one conv + one pixel
shuffle: lightweight SR).

Parameter names are the official ones (BasicSR uses the same), so released files load strictly::

    conv_first, patch_embed.norm,
    layers.{i}.residual_group.blocks.{j}.{norm1, attn.qkv, attn.proj,
        attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2},
    layers.{i}.conv, norm, conv_after_body, conv_before_upsample.0, upsample.{0,2,...}, conv_last

``attn.relative_position_index`` is a non-persistent buffer and the shifted-window mask is computed
per input size (cached per (H, W, device)); official files also hold both (the mask for their
training size), and :meth:`SwinIR.convert_state_dict` drops them. Any input size works: the input
is reflect-padded at the bottom/right to a multiple of ``window_size`` and the output cropped.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with the relative
position bias (plus the shift mask) as an additive float mask; ``WindowAttention.use_sdpa = False``
switches to the plain ``softmax(q k^T * scale + bias + mask) v`` formulation of the original code
(the tests check both agree).

Input RGB in [0, 1]; the DIV2K mean is subtracted inside (``img_range`` 1).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dukd_cli.errors import DukdError
from dukd_cli.models.shapes import Found, Shapes, indices, pixel_shuffle_scale, upsampler_scale
from dukd_cli.models.sizes import pad_to_multiple
from zoo.common import DIV2K_RGB_MEAN, DropPath, Upsampler, check_positive, check_scale

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")
RESI_CONNECTIONS = ("1conv", "3conv")


# --------------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------------


def window_partition(x: Tensor, ws: int) -> Tensor:
    """(B, H, W, C) -> (B * nW, ws*ws, C); windows in row-major order, image index outermost."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(ws: int) -> Tensor:
    """(ws*ws, ws*ws) index into the (2ws-1)^2 bias table for every (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # N, N, 2 in [0, 2ws-2]
    return rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device | None = None) -> Tensor:
    """(nW, N, N) additive mask for shifted-window attention on an (h, w) map (multiples of ``ws``).

    After the cyclic shift, windows at the bottom/right edge hold pixels from up to 4 regions of
    the unshifted map; pairs from different regions get -100 (the original code's value), others 0.
    """
    region = torch.zeros(1, h, w, 1, device=device)
    label = 0
    bands = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for hs in bands:
        for wsl in bands:
            region[:, hs, wsl, :] = label
            label += 1
    ids = window_partition(region, ws).squeeze(-1)  # nW, N
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


# --------------------------------------------------------------------------------------------------
# transformer parts
# --------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """fc1 - GELU - fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows with a learned relative position bias."""

    use_sdpa: bool = True

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """(heads, N, N) bias gathered from the table."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: (B * nW, N, C) windows; ``mask``: (nW, N, N) additive shift mask or None."""
        bw, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias()
        if self.use_sdpa:
            out = self._sdpa(q, k, v, bias, mask)
        else:
            out = self._naive(q, k, v, bias, mask)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype), scale=self.scale
            )
        # Fold the window index into the head axis, (B, nW * heads, N, d): the (nW * heads, N, N)
        # bias + mask then broadcasts over the images instead of being copied B times.
        bw, heads, n, d = q.shape
        nw = mask.shape[0]
        attn_mask = (mask.unsqueeze(1) + bias.unsqueeze(0)).to(q.dtype).reshape(1, nw * heads, n, n)
        folded = [t.reshape(bw // nw, nw * heads, n, d) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*folded, attn_mask=attn_mask, scale=self.scale)
        return out.reshape(bw, heads, n, d)

    def _naive(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        bw, heads, n, _ = q.shape
        attn = (q * self.scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(bw, heads, n, n)
        return attn.softmax(dim=-1) @ v

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """LayerNorm - (shifted) window attention - skip; LayerNorm - MLP - skip (both with drop path)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, x_size: tuple[int, int], mask: Tensor | None) -> Tensor:
        """``x``: (B, H*W, C) tokens; ``mask``: the shift mask for (H, W) (used when shifted)."""
        h, w = x_size
        b, _, c = x.shape
        ws, shift = self.window_size, self.shift_size
        y = self.norm1(x).view(b, h, w, c)
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        y = self.attn(window_partition(y, ws), mask if shift else None)
        y = window_reverse(y, ws, h, w)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, alternately regular and shifted (by ``window_size // 2``) windows."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: Sequence[float],
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size,
                0 if j % 2 == 0 else window_size // 2,
                mlp_ratio,
                qkv_bias,
                drop_path[j],
            )
            for j in range(depth)
        )

    def forward(self, x: Tensor, x_size: tuple[int, int], mask: Tensor | None) -> Tensor:
        for block in self.blocks:
            x = block(x, x_size, mask)
        return x


def _resi_conv(dim: int, kind: str) -> nn.Module:
    """The conv closing an RSTB / the body: one 3x3 conv, or the lighter 3x3-1x1-3x3 bottleneck."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, padding=1)
    return nn.Sequential(
        nn.Conv2d(dim, dim // 4, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim // 4, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim, 3, padding=1),
    )


class RSTB(nn.Module):
    """Residual Swin transformer block: Swin layers, a conv, and a skip.

    Takes and returns (N, C, H, W) feature maps (the original passes token sequences; the
    arithmetic is the same), so forward hooks on ``layers.{i}`` see ordinary feature maps.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: Sequence[float],
        resi_connection: str,
    ) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, drop_path)
        self.conv = _resi_conv(dim, resi_connection)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.residual_group(x.flatten(2).transpose(1, 2), (h, w), mask)
        return self.conv(tokens.transpose(1, 2).reshape(b, c, h, w)) + x


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, H*W, C) tokens, then LayerNorm (``patch_embed.norm``); patch size 1."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


# --------------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------------


class SwinIR(nn.Module):
    """SwinIR for SR; maps (N, 3, h, w) RGB in [0, 1] to (N, 3, h*scale, w*scale), not clamped."""

    _MASK_CACHE_SIZE = 8

    def __init__(
        self,
        scale: int,
        embed_dim: int = 60,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        upsampler: str = "pixelshuffle",
        resi_connection: str = "1conv",
        img_size: int = 64,
        drop_path_rate: float = 0.1,
        num_feat: int = 64,
        img_range: float = 1.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.window_size = window_size
        self.img_size = img_size  # training patch size of released files; no effect on the network
        self.img_range = float(img_range)
        self.upsampler = upsampler
        self.register_buffer(
            "mean", torch.tensor([float(m) for m in rgb_mean]).view(1, 3, 1, 1), persistent=False
        )
        self._masks: OrderedDict[tuple[int, int, str], Tensor] = OrderedDict()

        # shallow features
        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)

        # deep features
        self.patch_embed = PatchEmbed(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        start = 0
        for depth, heads in zip(depths, num_heads, strict=True):
            self.layers.append(
                RSTB(
                    embed_dim,
                    depth,
                    heads,
                    window_size,
                    mlp_ratio,
                    qkv_bias,
                    rates[start : start + depth],
                    resi_connection,
                )
            )
            start += depth
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = _resi_conv(embed_dim, resi_connection)

        # reconstruction
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_feat, 3, padding=1), nn.LeakyReLU(inplace=True)
            )
            self.upsample = Upsampler(scale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, padding=1)
        else:  # pixelshuffledirect
            self.upsample = nn.Sequential(
                nn.Conv2d(embed_dim, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale)
            )

        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def shift_mask(self, h: int, w: int, device: torch.device) -> Tensor:
        """The shifted-window mask for an (h, w) feature map, cached per (h, w, device) (a few sizes)."""
        key = (h, w, str(device))
        mask = self._masks.get(key)
        if mask is None:
            mask = shifted_window_mask(h, w, self.window_size, self.window_size // 2, device)
            self._masks[key] = mask
            while len(self._masks) > self._MASK_CACHE_SIZE:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(key)
        return mask

    def forward_features(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        mask = self.shift_mask(h, w, x.device)
        x = self.patch_embed(x).transpose(1, 2).reshape(b, c, h, w)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.upsample(x)
        x = x / self.img_range + mean
        return x[..., : h * self.scale, : w * self.scale]

    def feature_taps(self) -> list[str]:
        """Body features at 1/3, 2/3 and the end of the body, for feature-based distillation.

        The outputs of RSTBs ``n//3 - 1`` and ``2n//3 - 1`` (feature maps, after their skip) and of
        ``conv_after_body`` (before the long skip), all (N, C, H, W) at the padded size.
        """
        n = len(self.layers)
        first, second = max(n // 3 - 1, 0), max(2 * n // 3 - 1, 0)
        return [f"layers.{first}", f"layers.{second}", "conv_after_body"]

    def official_state_dict(self) -> dict[str, Tensor]:
        """The state dict as the authors' release holds it: every ``attn.relative_position_index`` and,
        for the shifted blocks, the ``attn_mask`` of an ``img_size`` x ``img_size`` input (rounded up to
        whole windows, at least two), besides the
        parameters (copies, on the CPU). Loaders that read a SwinIR's shape off these buffers
        (spandrel: chaiNNer, ComfyUI) need them; :meth:`convert_state_dict` drops them again."""
        sd = {k: v.detach().to("cpu").clone() for k, v in self.state_dict().items()}
        ws = self.window_size
        side = max(-(-self.img_size // ws), 2) * ws  # the release's training size (windows must shift)
        index = relative_position_index(ws)
        mask = shifted_window_mask(side, side, ws, ws // 2)
        for i, layer in enumerate(self.layers):
            for j, block in enumerate(layer.residual_group.blocks):
                prefix = f"layers.{i}.residual_group.blocks.{j}."
                sd[prefix + "attn.relative_position_index"] = index.clone()
                if block.shift_size:
                    sd[prefix + "attn_mask"] = mask.clone()
        return sd

    @staticmethod
    def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Drop the stale ``attn_mask`` / ``relative_position_index`` buffers that released files
        hold (recomputed here); names are otherwise already native (official = BasicSR)."""
        return {
            k: v
            for k, v in state_dict.items()
            if not (k.endswith(".attn_mask") or k == "attn_mask" or k.endswith("relative_position_index"))
        }


def swinir(
    scale: int,
    embed_dim: int = 60,
    depths: Sequence[int] = (6, 6, 6, 6),
    num_heads: Sequence[int] = (6, 6, 6, 6),
    window_size: int = 8,
    mlp_ratio: float = 2.0,
    upsampler: str = "pixelshuffle",
    resi_connection: str = "1conv",
    img_size: int = 64,
    drop_path_rate: float = 0.1,
    num_feat: int = 64,
    img_range: float = 1.0,
    rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
    qkv_bias: bool = True,
) -> SwinIR:
    """Build a SwinIR. The paper's SwinIR-M teacher: embed 180, depths and heads (6,)*6; its student
    SwinIR-S: embed 60, (6,)*4, both window 8, mlp 2, ``pixelshuffle``. Scales: 2^n and 3
    (``pixelshuffledirect``: any integer >= 2)."""
    if upsampler not in UPSAMPLERS:
        raise DukdError(f"swinir: unsupported upsampler '{upsampler}' (supported: {', '.join(UPSAMPLERS)})")
    if resi_connection not in RESI_CONNECTIONS:
        raise DukdError(
            f"swinir: unsupported resi_connection '{resi_connection}' (supported: {', '.join(RESI_CONNECTIONS)})"
        )
    scale = check_scale("swinir", scale, any_integer=upsampler == "pixelshuffledirect")
    depths, num_heads = tuple(depths), tuple(num_heads)
    check_positive(
        "swinir", embed_dim=embed_dim, window_size=window_size, img_size=img_size, num_feat=num_feat
    )
    if not depths or len(depths) != len(num_heads):
        raise DukdError(f"swinir: depths {depths} and num_heads {num_heads} need the same, non-zero length")
    check_positive("swinir", **{f"depths[{i}]": d for i, d in enumerate(depths)})
    check_positive("swinir", **{f"num_heads[{i}]": n for i, n in enumerate(num_heads)})
    if any(embed_dim % n for n in num_heads):
        raise DukdError(f"swinir: embed_dim {embed_dim} is not divisible by every num_heads {num_heads}")
    if window_size < 2:
        raise DukdError(f"swinir: window_size must be at least 2, got {window_size}")
    if len(rgb_mean) != 3:
        raise DukdError(f"swinir: rgb_mean needs 3 values, got {len(rgb_mean)}")
    if not 0.0 <= float(drop_path_rate) < 1.0:
        raise DukdError(f"swinir: drop_path_rate must be in [0, 1), got {drop_path_rate}")
    return SwinIR(
        scale,
        embed_dim,
        depths,
        num_heads,
        window_size,
        float(mlp_ratio),
        upsampler,
        resi_connection,
        img_size,
        float(drop_path_rate),
        num_feat,
        img_range,
        tuple(rgb_mean),
        qkv_bias,
    )


# Detection is owned by the architecture (dukd_cli.models.detect): read the constructor arguments
# off a checkpoint's shapes.
def detect_swinir(n: Shapes, original: Shapes) -> Found | None:
    """SwinIR from its shapes: ``embed_dim``, ``depths``, ``num_heads`` and ``window_size`` (bias
    tables), ``mlp_ratio``, ``upsampler``, ``num_feat``, ``resi_connection``; ``img_size`` from the
    shift mask a released file carries (the converter drops it, so it is read in ``original``)."""
    first = n.get("conv_first.weight")
    if first is None or len(first) != 4 or first[1] != 3:
        return None
    embed = first[0]
    layers = indices(n, r"layers\.(\d+)\.residual_group\.blocks\.0\.norm1\.weight")
    if not layers:
        return None
    depths = tuple(
        len(indices(n, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight")) for i in layers
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
        scale = upsampler_scale(n, "upsample", before[0])
    else:
        up = n.get("upsample.0.weight")
        kwargs["upsampler"] = "pixelshuffledirect"
        scale = pixel_shuffle_scale(up[0]) if up is not None else None
    if scale is None:
        return None
    kwargs["resi_connection"] = resi
    structural = tuple(kwargs)
    # The shift mask saved by released files tells their training patch size (no effect on the network).
    mask = next((s for k, s in original.items() if k.endswith("blocks.1.attn_mask")), None)
    if mask is not None and len(mask) == 3 and math.isqrt(mask[0]) ** 2 == mask[0]:
        kwargs["img_size"] = math.isqrt(mask[0]) * window
    label = f"SwinIR embed {embed}, {len(depths)} x {depths[0]} layers"
    return Found(scale, kwargs, structural, label, suffix=str(kwargs["upsampler"]))


swinir.detect = detect_swinir
