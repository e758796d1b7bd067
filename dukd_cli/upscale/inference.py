"""Running a super-resolution model on images of any size: devices, precision, tiling, self-ensemble.

Shared by ``dukd evaluate``, ``dukd upscale`` and the distillation's validation, so that every place
that turns an LR tensor into an SR tensor does it the same way.

- :func:`select_device` turns ``auto`` / ``cpu`` / ``cuda[:N]`` / ``mps`` into a ``torch.device`` (a
  one-line :class:`DukdError` when the device does not exist here).
- :func:`autocast` is the precision context (``fp32``, ``bf16``, ``fp16``).
- :func:`run_model` runs a model on an ``(N, 3, h, w)`` batch, whole or in overlapping tiles blended
  with a raised-cosine ramp (no seams), optionally with the x8 self-ensemble.
- :func:`auto_tile` picks a tile size from the free memory of the device.

A "model" here is an :class:`~dukd_cli.models.upscaler.Upscaler`: callable on an NCHW float tensor,
with an integer ``scale`` (a ``torch.nn.Module`` following the model contract, spandrel's wrapper,
or :class:`dukd_cli.export.onnx.OnnxModel`), and the size rules of
:func:`~dukd_cli.models.upscaler.size_rules` (a window: inputs are reflect-padded to a multiple of
it, outputs cropped; a fixed input size: inputs are tiled at that size). A non-module may say where
its inputs must live (``device``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from dukd_cli.errors import DukdError
from dukd_cli.models.sizes import pad_to_multiple
from dukd_cli.models.upscaler import Upscaler, as_upscaler, size_rules

PRECISIONS = ("fp32", "bf16", "fp16")
MIN_TILE = 16


# --------------------------------------------------------------------------------------------------
# devices and precision
# --------------------------------------------------------------------------------------------------


def select_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises :class:`DukdError` for a name torch does not know, or a device this machine lacks.
    """
    if isinstance(name, torch.device):
        dev = name
    else:
        text = (name or "auto").strip().lower()
        if text == "auto":
            return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        if text == "gpu":
            text = "cuda"
        try:
            dev = torch.device(text)
        except (RuntimeError, ValueError):
            raise DukdError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DukdError(f"device '{name}' asked for, but CUDA is not available here (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DukdError(
                f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DukdError(f"device '{name}' asked for, but MPS is not available here (use --device cpu)")
        return dev
    raise DukdError(f"unsupported device '{name}' (use auto, cpu, cuda, cuda:N or mps)")


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """Validate a precision name for a device; ``fp16`` needs CUDA or MPS (CPU kernels are slow or missing)."""
    p = str(precision).strip().lower()
    aliases = {
        "float32": "fp32",
        "32": "fp32",
        "bfloat16": "bf16",
        "float16": "fp16",
        "half": "fp16",
        "16": "fp16",
    }
    p = aliases.get(p, p)
    if p not in PRECISIONS:
        raise DukdError(f"unknown precision '{precision}' (use {', '.join(PRECISIONS)})")
    dev_type = torch.device(device).type if device is not None else "cpu"
    if p == "fp16" and dev_type == "cpu":
        raise DukdError("--precision fp16 needs a GPU; on the CPU use bf16 (or fp32)")
    return p


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str = "fp32") -> Iterator[None]:
    """Mixed-precision context for ``device``: ``fp32`` does nothing; ``bf16`` / ``fp16`` use
    ``torch.autocast``. ``fp16`` on the CPU is refused (:class:`DukdError`) rather than silently run
    in another precision; use ``bf16`` there.
    """
    dev = torch.device(device)
    p = check_precision(precision, dev)
    if p == "fp32":
        yield
        return
    dtype = torch.bfloat16 if p == "bf16" else torch.float16
    with torch.autocast(device_type=dev.type, dtype=dtype):
        yield


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def model_device(model: Upscaler, default: torch.device) -> torch.device:
    """Where the model computes: its first parameter's (or buffer's) device, its ``device``, or ``default``."""
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    dev = getattr(model, "device", None)
    return torch.device(dev) if dev is not None else default


WINDOW_PADS = ("reflect", "swinir")


def check_window_pad(mode: str) -> str:
    """``reflect`` or ``swinir`` (see :func:`pad_swinir`), else a one-line :class:`DukdError`."""
    m = str(mode).strip().lower()
    if m not in WINDOW_PADS:
        raise DukdError(f"--window-pad must be {' or '.join(WINDOW_PADS)}, not '{mode}'")
    return m


def pad_swinir(x: Tensor, multiple: int) -> Tensor:
    """The SwinIR authors' test-time padding (``main_test_swinir.py``): H and W are padded at the
    bottom/right to the *next* multiple of ``multiple`` (always 1 to ``multiple`` pixels, also when
    the side already divides) by concatenating the flipped image (the edge pixel repeated, unlike
    reflect padding) and cropping."""
    for dim in (-2, -1):
        size = x.shape[dim]
        target = (size // multiple + 1) * multiple
        while x.shape[dim] < target:  # one flip suffices unless the side is shorter than the pad
            x = torch.cat([x, x.flip(dim)], dim)
        x = x.narrow(dim, 0, target)
    return x


# The x8 self-ensemble: bit 0 flips W, bit 1 flips H, bit 2 transposes H and W (applied first).
def _forward_transform(x: Tensor, k: int) -> Tensor:
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x


def _inverse_transform(y: Tensor, k: int) -> Tensor:
    if k & 2:
        y = y.flip(-2)
    if k & 1:
        y = y.flip(-1)
    if k & 4:
        y = y.transpose(-2, -1)
    return y


def _call(model: Upscaler, x: Tensor, scale: int, precision: str, device: torch.device) -> Tensor:
    """One forward pass on a batch already on ``device``: window padding, precision, shape check, crop."""
    h, w = x.shape[-2:]
    xp = pad_to_multiple(x, size_rules(model).multiple)
    if isinstance(model, torch.nn.Module):
        with autocast(device, precision):
            y = model(xp)
    else:
        y = model(xp)
    if not isinstance(y, Tensor):
        raise DukdError(f"{type(model).__name__} returned {type(y).__name__}, not a tensor")
    hp, wp = xp.shape[-2:]
    expected = (x.shape[0], 3, hp * scale, wp * scale)
    if tuple(y.shape) != expected:
        raise DukdError(
            f"model output has shape {tuple(y.shape)} for input {tuple(xp.shape)}; expected {expected} (x{scale})"
        )
    return y[..., : h * scale, : w * scale].float()


def _run_piece(
    model: Upscaler, x: Tensor, scale: int, precision: str, device: torch.device, self_ensemble: bool
) -> Tensor:
    """Forward one piece (a tile or the whole image), optionally as the mean of the 8 dihedral transforms."""
    x = x.to(device=device, dtype=torch.float32, non_blocking=True)
    if not self_ensemble:
        return _call(model, x, scale, precision, device)
    acc = None
    for k in range(8):
        y = _inverse_transform(_call(model, _forward_transform(x, k), scale, precision, device), k)
        acc = y if acc is None else acc.add_(y)
    return acc.div_(8.0)


# --------------------------------------------------------------------------------------------------
# tiling
# --------------------------------------------------------------------------------------------------


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` overlap.

    With ``align == 1`` every tile has the full size (the last one is moved back to end at
    ``length``), so a model sees one input size (good for caches, compiled graphs and fixed-size
    ONNX models). With ``align > 1`` (windowed models) every start is a multiple of ``align`` so
    that the tiles' attention windows coincide with the whole image's; the last tile then ends at
    ``length`` and may be up to ``align - 1`` pixels longer than ``tile``.
    """
    if length <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    if align > 1:
        stride = max(stride // align * align, align)
        last = (length - tile) // align * align
    else:
        last = length - tile
    starts = list(range(0, last, stride))
    starts.append(last)
    return starts


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """``(start, end)`` of each tile along one axis (see :func:`tile_starts`)."""
    starts = tile_starts(length, tile, overlap, align)
    spans = [(s, min(s + tile, length)) for s in starts]
    spans[-1] = (starts[-1], length)
    return spans


def _ramp(n: int, device: torch.device, scale: int = 1) -> Tensor:
    """``n`` rising weights (output pixels) over an overlap of ``n`` pixels, ``n`` a multiple of ``scale``.

    The first quarter of the overlap (whole input pixels) has weight ~0: the tile edge, where the
    network saw zero padding instead of the neighbouring pixels, does not count. The middle half
    rises as ``sin^2`` (a raised cosine), the last quarter is 1. A rising ramp and its mirror (the
    neighbour's falling ramp) sum to exactly 1 over the overlap. Weights are floored at 1e-6 so
    that every output pixel has a positive total even where three tiles meet.
    """
    lr = n // scale
    dead = (lr // 4) * scale
    rise = n - 2 * dead
    t = torch.zeros(n, device=device, dtype=torch.float32)
    if rise > 0:
        u = (torch.arange(rise, device=device, dtype=torch.float32) + 0.5) / rise
        t[dead : dead + rise] = torch.sin(u * (math.pi / 2)) ** 2
    t[dead + rise :] = 1.0
    return t.clamp_(min=1e-6)


def axis_weights(length: int, spans: list[tuple[int, int]], scale: int, device: torch.device) -> list[Tensor]:
    """Per-tile 1-D blending weights (output pixels) along one axis, normalised to sum to 1 everywhere.

    Each tile ramps up over its overlap with the previous tile and down over its overlap with the
    next; at the image border it keeps full weight. The tile grid is a Cartesian product, so the
    2-D weight of a tile is the outer product of its two axes' weights and also sums to 1.
    """
    raw: list[Tensor] = []
    total = torch.zeros(length * scale, device=device)
    n = len(spans)
    for i, (s, e) in enumerate(spans):
        w = torch.ones((e - s) * scale, device=device)
        if i > 0:
            ov = max(spans[i - 1][1] - s, 0) * scale
            if ov > 0:
                w[:ov] *= _ramp(ov, device, scale)
        if i < n - 1:
            ov = max(e - spans[i + 1][0], 0) * scale
            if ov > 0:
                w[w.numel() - ov :] *= _ramp(ov, device, scale).flip(0)
        raw.append(w)
        total[s * scale : e * scale] += w
    return [w / total[s * scale : e * scale] for w, (s, e) in zip(raw, spans, strict=True)]


def run_model(
    model: Upscaler,
    x: Tensor,
    *,
    tile: int | None = None,
    tile_overlap: int = 16,
    precision: str = "fp32",
    self_ensemble: bool = False,
    window_pad: str = "reflect",
) -> Tensor:
    """Super-resolve ``x`` (N, 3, h, w) in [0, 1] with ``model``; returns (N, 3, h*s, w*s) float32 on
    ``x``'s device, NOT clamped (callers clamp or quantise).

    ``window_pad``: how windowed models (a ``window_size``) get whole windows: ``reflect`` pads only
    as needed (BasicSR's way); ``swinir`` pads the whole image first with :func:`pad_swinir`
    (the SwinIR authors' test script) and crops the output.

    ``tile``: side (in input pixels) of square tiles, or ``None`` for the whole image at once. Tiles
    overlap by at least ``tile_overlap`` pixels and are blended with a raised-cosine ramp, so the
    result matches the whole-image output closely away from the image border. The model may live on
    another device than ``x`` (e.g. a large image in CPU memory and the model on the GPU): tiles
    move to the model one at a time and the output is assembled on ``x``'s device (channels-last,
    so that ``out[0].permute(1, 2, 0)`` is an HWC array without a copy).

    ``self_ensemble``: average the outputs of the 8 flips/transposes of each piece (x8 slower).
    Runs under ``torch.inference_mode()``; the returned tensor is an ordinary one (in-place ops
    allowed). Models with ``window_size`` get their input reflect-padded to a multiple of it
    (output cropped), which is harmless for models that pad themselves.
    """
    plan = _TilePlan.make(model, x, tile, tile_overlap, precision)
    n, _, h, w = x.shape
    rules = size_rules(model)
    if check_window_pad(window_pad) == "swinir" and rules.multiple > 1:
        y = run_model(
            model,
            pad_swinir(x, rules.multiple),
            tile=tile,
            tile_overlap=tile_overlap,
            precision=precision,
            self_ensemble=self_ensemble,
        )
        return y[..., : h * plan.scale, : w * plan.scale].contiguous(memory_format=torch.channels_last)
    # The result is allocated outside inference mode so callers may modify it in place (clamp_,
    # mul_); (N, H, W, 3) storage seen as NCHW: channels-last, HWC views without a copy.
    s = plan.scale
    out = torch.zeros((n, h * s, w * s, 3), dtype=torch.float32, device=x.device).permute(0, 3, 1, 2)
    if plan.tile is None:
        with torch.inference_mode():
            out.copy_(_run_piece(model, x, plan.scale, plan.precision, plan.device, self_ensemble))
        return out
    for r0, r1, band in _bands(model, x, plan, self_ensemble, None):
        out[..., r0:r1, :].copy_(band)
        del band
    return out


class _TilePlan:
    """The checked arguments of one tiled (or whole) run: scale, device, precision, tile, overlap."""

    def __init__(
        self, scale: int, device: torch.device, precision: str, tile: int | None, overlap: int, align: int
    ) -> None:
        self.scale, self.device, self.precision = scale, device, precision
        self.tile, self.overlap, self.align = tile, overlap, align

    @classmethod
    def make(cls, model: object, x: Tensor, tile: int | None, tile_overlap: int, precision: str) -> _TilePlan:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise DukdError(f"run_model expects an (N, 3, h, w) tensor, got {shape}")
        if x.shape[-1] == 0 or x.shape[-2] == 0 or x.shape[0] == 0:
            raise DukdError(f"cannot upscale an empty tensor of shape {tuple(x.shape)}")
        model = as_upscaler(model)
        scale = int(model.scale)
        device = model_device(model, x.device)
        precision = check_precision(precision, device)
        if not isinstance(model, torch.nn.Module) and precision != "fp32":
            raise DukdError(f"{type(model).__name__} runs in fp32 only; drop --precision {precision}")
        rules = size_rules(model)
        if rules.fixed is not None:
            tile = rules.fixed[0]  # a fixed-size model is always run at its own (square) size
        if tile is not None:
            tile = int(tile)
            if tile < MIN_TILE:
                raise DukdError(f"tile size {tile} is too small (at least {MIN_TILE})")
            ws = rules.multiple
            tile = -(-tile // ws) * ws  # whole windows per tile: no padding inside the image
            tile_overlap = int(tile_overlap)
            if tile_overlap < 0:
                raise DukdError(f"tile overlap must be >= 0, got {tile_overlap}")
            if tile_overlap >= tile:
                raise DukdError(f"tile overlap ({tile_overlap}) must be smaller than the tile ({tile})")
        h, w = x.shape[-2:]
        if tile is not None and h <= tile and w <= tile:
            tile = None
        return cls(scale, device, precision, tile, int(tile_overlap), rules.multiple)

    def grid(self, h: int, w: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The tile spans along H and W (one span each for a whole-image run)."""
        if self.tile is None:
            return [(0, h)], [(0, w)]
        t, ov, al = self.tile, self.overlap, self.align
        return tile_spans(h, t, ov, al), tile_spans(w, t, ov, al)


def tile_count(
    model: Upscaler, x: Tensor, *, tile: int | None = None, tile_overlap: int = 16, precision: str = "fp32"
) -> int:
    """How many pieces :func:`run_model` / :func:`iter_bands` run for ``x`` (1 for a whole image)."""
    plan = _TilePlan.make(model, x, tile, tile_overlap, precision)
    ys, xs = plan.grid(*x.shape[-2:])
    return len(ys) * len(xs)


def iter_bands(
    model: Upscaler,
    x: Tensor,
    *,
    tile: int | None = None,
    tile_overlap: int = 16,
    precision: str = "fp32",
    self_ensemble: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, int, Tensor]]:
    """:func:`run_model` one band of output rows at a time: yields ``(r0, r1, band)`` in order, where
    ``band`` (N, 3, r1 - r0, w*s) is float32 on ``x``'s device, NOT clamped, and the bands put
    together are exactly (bit for bit) what :func:`run_model` returns. A whole-image band is the
    model's output itself (an inference tensor: read it, or modify a copy).

    A band is finished as soon as no later tile row reaches it, so only one row of tiles plus the
    overlap with the next row is held: memory grows with the tile and the image width, not the
    image. ``on_tile(done, total)`` is called after each tile (a whole image is one tile).
    Tiled bands may be modified in place; none should be kept across iterations (the memory bound).
    """
    plan = _TilePlan.make(model, x, tile, tile_overlap, precision)
    yield from _bands(model, x, plan, self_ensemble, on_tile)


def _bands(
    model: Upscaler,
    x: Tensor,
    plan: _TilePlan,
    self_ensemble: bool,
    on_tile: Callable[[int, int], None] | None,
) -> Iterator[tuple[int, int, Tensor]]:
    n, _, h, w = x.shape
    s = plan.scale
    ys, xs = plan.grid(h, w)
    total = len(ys) * len(xs)
    if plan.tile is None:
        with torch.inference_mode():
            band = _run_piece(model, x, s, plan.precision, plan.device, self_ensemble).to(x.device)
        if on_tile:
            on_tile(1, total)
        yield 0, h * s, band
        return
    wy = axis_weights(h, ys, s, x.device)
    wx = axis_weights(w, xs, s, x.device)
    # ``carry``: output rows [a0, a0 + carry rows) that earlier tile rows reached but that the next
    # tile row also reaches (the overlap); it holds the sums so far, added to in the same order as
    # a whole-image accumulator would be, so the result is identical.
    a0, carry, done = 0, None, 0
    for i, (y0, y1) in enumerate(ys):
        rows = y1 * s - a0
        # Allocated outside inference mode so that callers may modify the bands in place.
        buf = torch.zeros((n, 3, rows, w * s), dtype=torch.float32, device=x.device)
        if carry is not None:
            buf[..., : carry.shape[-2], :].copy_(carry)
        carry = None
        with torch.inference_mode():
            for j, (x0, x1) in enumerate(xs):
                piece = _run_piece(model, x[..., y0:y1, x0:x1], s, plan.precision, plan.device, self_ensemble)
                piece = piece.to(x.device)
                piece.mul_(wy[i].view(-1, 1)).mul_(wx[j].view(1, -1))
                buf[..., y0 * s - a0 : y1 * s - a0, x0 * s : x1 * s] += piece
                del piece
                done += 1
                if on_tile:
                    on_tile(done, total)
        nxt = ys[i + 1][0] * s if i + 1 < len(ys) else y1 * s
        if nxt < y1 * s:
            carry = buf[..., nxt - a0 :, :].clone()
        band = buf[..., : nxt - a0, :]
        del buf
        yield a0, nxt, band
        del band
        a0 = nxt


# --------------------------------------------------------------------------------------------------
# automatic tile size
# --------------------------------------------------------------------------------------------------


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA, MemAvailable (or free pages) on the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def bytes_per_input_pixel(model: Upscaler, precision: str = "fp32") -> float:
    """Rough activation memory per LR input pixel of one forward pass (inference mode).

    Heuristic (``C`` = widest conv/linear output, ``s`` = scale): 6 live maps of ``C`` channels at
    LR resolution; the upsampler's maps at HR resolution, ``C * s^2 / 2`` values per LR pixel; the
    tile's float32 output and its blended copy (``2 * 3 * s^2``); and for windowed-attention models
    ``3 * heads * window^2`` attention scores per token (scores and softmax temporaries). Half
    precisions halve the feature maps. It errs on the generous side: a budget, not a measurement.
    """
    scale = int(model.scale)
    width, heads = 64, 0
    if isinstance(model, torch.nn.Module):
        widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        widths += [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if widths:
            width = max(widths)
        heads = max((int(getattr(m, "num_heads", 0) or 0) for m in model.modules()), default=0)
    elem = 4 if precision == "fp32" else 2
    per_px = elem * width * 6 + elem * width * scale * scale / 2 + 4 * 3 * scale * scale * 2
    ws = size_rules(model).window
    if ws > 1 and heads:
        per_px += elem * heads * ws * ws * 3
    return float(per_px)


def auto_tile(
    model: Upscaler,
    h: int,
    w: int,
    device: torch.device | str,
    *,
    precision: str = "fp32",
    budget_fraction: float = 0.5,
    cpu_cap: int = 1 << 30,
) -> int | None:
    """A tile side for an ``h x w`` input on ``device``, or ``None`` when the whole image fits.

    Budget: ``budget_fraction`` of the free memory (CUDA: ``mem_get_info``; CPU: MemAvailable,
    capped at ``cpu_cap`` = 1 GiB so tiling also bounds the process's peak RSS). Pixels per tile =
    budget / :func:`bytes_per_input_pixel`; the side is the square root, rounded down to a multiple
    of 16 (and of ``window_size``), at least 64. Very large budgets still tile above 2048 px per side.
    """
    dev = torch.device(device)
    free = available_memory(dev)
    budget = free * budget_fraction
    if dev.type == "cpu":
        budget = min(budget, cpu_cap)
    per_px = bytes_per_input_pixel(model, precision)
    side = int(math.sqrt(max(budget, 0) / per_px))
    step = 16
    rules = size_rules(model)
    if rules.window > 1:
        step = step * rules.window // math.gcd(step, rules.window)
    side = max(64, min(side, 2048) // step * step)
    if rules.fixed is not None:
        return rules.fixed[0]
    if h <= side and w <= side:
        return None
    return side
