"""MATLAB-exact bicubic ``imresize`` in torch (the degradation every SR benchmark rests on).

The SR literature makes its low-resolution inputs with MATLAB's ``imresize(img, 1/s, 'bicubic')``
on uint8 images. A tenth of a dB is the whole effect size of distillation, so "close to MATLAB"
is not enough: this module reproduces MATLAB bit for bit (100% identical pixels against the MATLAB
fixtures in ``shared/data/matlab_lr``). The rules, as ``imresize.m`` applies them:

* Kernel: Keys cubic, ``a = -0.5``, support 4. When shrinking (``scale < 1``) with antialiasing
  (MATLAB's default) the kernel is stretched: ``h(x) = scale * cubic(scale * x)``, support
  ``4 / scale``. Upscaling uses the plain kernel.
* Output length ``ceil(in * scale)``. Output pixel ``x`` (1-based) maps to input coordinate
  ``u = x / scale + 0.5 * (1 - 1 / scale)``; its taps are ``floor(u - support / 2) + 0 ..
  ceil(support) + 1``; weights are normalised to sum to 1 per output pixel; out-of-range taps are
  mirrored (symmetric padding, edge pixel repeated); tap columns whose weights are all zero are
  dropped.
* The two axes are resized one after the other, the axis with the smaller scale first (MATLAB's
  ``dimensionOrder``: a stable sort of the scales, so with equal scales the height goes first).
* uint8 images are resized in float64 and rounded to uint8 **after each pass**, halves away from
  zero (``floor(x + 0.5)`` after clamping to [0, 255]); this intermediate rounding is what MATLAB
  does and it changes about 10% of the LR pixels by one level.

Each pass is a gather plus a weighted sum over the taps, accumulated tap by tap in tap order
(a multiply, then an add: no fused multiply-add; mirrored taps stay separate terms), i.e. the
plain sequential float64 sum of MATLAB's formula. For x2 and x4 the weights are dyadic and every
sum is exact whatever the order; for x3 the order can change the last bit of a sum and, rarely, a
rounded pixel (a BLAS matrix product rounds a few pixels of random images differently; on the
MATLAB fixtures both agree). The sequential order is also the fastest here: it touches only the
taps, while a dense product multiplies whole rows of zeros. Weight and index tables are built once per
``(in_len, out_len, scale, antialias)`` on the CPU (``functools.lru_cache``) and copied once per
device and dtype (a second cache).

``size=(out_h, out_w)`` instead of ``scale`` gives each axis its own scale ``out / in``, as
MATLAB's ``imresize(img, [out_h out_w])`` does; that scale sets the kernel width and the
coordinate mapping of the axis.

CPU work is cut into small items spread over a thread pool (see ``_resize_pass``); CUDA runs each
pass as one batch of kernels. Results are identical either way.

Inputs: (H, W), (C, H, W) or (N, C, H, W) tensors on any device.

* uint8 -> "uint8 mode": computed in float64, rounded after each pass, uint8 out (MATLAB).
* floating -> "float mode": no rounding, no clamping, same dtype out; float16/bfloat16/float32
  are computed in float32, float64 in float64. Differentiable (gather and weighted sums only).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["imresize", "imresize_np", "modcrop", "resize_weights", "output_size"]

# Elements per CPU work item of a pass (images x output rows x row length). At ATen's parallel
# grain size (32768) every kernel of an item runs inline on its thread, the temporaries stay in
# cache, and the items are spread over a thread pool (see ``_resize_pass``).
_CHUNK_ELEMS = 1 << 15
# Output rows an item should at least hold (rows are written transposed, in runs of this length).
_MIN_ROWS = 16
# Spread CPU items over a thread pool of torch.get_num_threads() workers.
_USE_POOL = True

_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), in float64."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    inner = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return inner + outer


def output_size(in_len: int, scale: float) -> int:
    """MATLAB's output length for a scale factor: ``ceil(in_len * scale)``."""
    return int(math.ceil(in_len * scale))


@functools.lru_cache(maxsize=512)
def resize_weights(
    in_len: int, out_len: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Weight and 0-based index tables of one resize pass, exactly as MATLAB's ``contributions``.

    Returns ``(weights, indices)``, both shaped (out_len, taps): float64 weights and int64 indices
    into the input axis. Output pixel ``i`` is ``sum_k weights[i, k] * input[indices[i, k]]``,
    summed in ``k`` order. The arrays are cached and read-only.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"resize lengths must be positive, got in_len={in_len}, out_len={out_len}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * _cubic(scale * dist) if shrink else _cubic(dist)
    # Sequential row sums (MATLAB sums a short row left to right; numpy's pairwise sum would not).
    total = np.zeros(out_len, dtype=np.float64)
    for k in range(taps):
        total = total + weights[:, k]
    weights = weights / total[:, None]
    # Symmetric mirroring of out-of-range taps: aux = [1..in, in..1], indices wrap around it.
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    weights = np.ascontiguousarray(weights[:, keep])
    idx = np.ascontiguousarray(idx[:, keep])
    weights.setflags(write=False)
    idx.setflags(write=False)
    return weights, idx


@functools.lru_cache(maxsize=512)
def _device_tables(
    in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables of :func:`resize_weights` as tensors on ``device`` (weights in ``dtype``).

    Weights are returned transposed, (taps, out_len), so that ``weights[k]`` is contiguous.
    """
    w, idx = resize_weights(in_len, out_len, scale, antialias)
    wt = torch.from_numpy(np.array(w.T, order="C")).to(device=device, dtype=dtype)
    it = torch.from_numpy(np.array(idx.T, order="C")).to(device=device)
    return wt, it


def _taps_sum(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, out: torch.Tensor) -> None:
    """``out[:, i, :] = sum_k weights[k, i] * x[:, indices[k, i], :]`` for a 3-D ``x`` (B, L, M).

    Accumulates tap by tap in tap order, as a multiply followed by an add (never a fused
    multiply-add): the plain sequential sum of MATLAB's formula. ``x`` may be uint8:
    the multiply converts the gathered samples to the weights' dtype exactly, so the image is never
    converted as a whole.
    """
    torch.mul(x.index_select(1, indices[0]), weights[0].view(1, -1, 1), out=out)
    for k in range(1, weights.shape[0]):
        g = x.index_select(1, indices[k])
        out.add_(g.mul_(weights[k].view(1, -1, 1)) if g.dtype == out.dtype else g * weights[k].view(1, -1, 1))


def _round_uint8_(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's double -> uint8 conversion, in place: clamp to [0, 255], halves away from zero."""
    return x.clamp_(0, 255).add_(0.5).floor_()


def _tracing() -> bool:
    """True while torch.jit tracing, torch.compile or torch.export records the ops being run."""
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    for name in ("is_compiling", "is_exporting"):
        fn = getattr(compiler, name, None)
        if fn is not None and fn():
            return True
    return False


def _cpu_pool(workers: int) -> ThreadPoolExecutor:
    """The process-wide thread pool for CPU work items (torch releases the GIL in its kernels).

    Recreated after a fork (a forked child inherits the pool object but not its threads: work
    submitted to it would never run, e.g. in DataLoader workers) and when the thread count changes.
    """
    global _POOL, _POOL_WORKERS, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_WORKERS != workers or _POOL_PID != os.getpid():
            if _POOL is not None and _POOL_PID == os.getpid():
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dukd-imresize")
            _POOL_WORKERS = workers
            _POOL_PID = os.getpid()
        return _POOL


def _reset_pool_after_fork() -> None:
    global _POOL, _POOL_WORKERS, _POOL_LOCK
    _POOL, _POOL_WORKERS, _POOL_LOCK = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool_after_fork)


def _resize_pass(
    src: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dst: torch.Tensor, quantize: bool
) -> None:
    """One pass: resize axis 1 of ``src`` (B, L, M) and store the result transposed in ``dst``.

    ``dst`` is (B, M, out_len), any dtype (it receives the rounded values in uint8 mode). Writing
    the result transposed means the next pass gathers whole rows again (fast), and the final pass
    lands in the (B, H, W) output without a separate transpose.

    On the CPU the work is cut into items of about ``_CHUNK_ELEMS`` elements (a range of images
    times a range of output rows), small enough that each torch kernel runs inline on its thread,
    and the items are spread over a thread pool of ``torch.get_num_threads()`` workers. Hundreds
    of small kernels that each join an OpenMP barrier are slow, and very slow on a busy machine;
    independent items are not. On other devices one item covers everything.
    """
    b, _, m = src.shape
    out_len = weights.shape[1]

    def item(b0: int, b1: int, r0: int, r1: int) -> None:
        tmp = torch.empty((b1 - b0, r1 - r0, m), dtype=weights.dtype, device=src.device)
        _taps_sum(src[b0:b1], weights[:, r0:r1], indices[:, r0:r1], tmp)
        if quantize:
            _round_uint8_(tmp)
        dst[b0:b1, :, r0:r1].copy_(tmp.transpose(1, 2))

    if src.device.type != "cpu":
        item(0, b, 0, out_len)
        return
    b_step = max(1, min(b, _CHUNK_ELEMS // (m * _MIN_ROWS)))
    r_step = max(1, _CHUNK_ELEMS // (b_step * m))
    jobs = [
        (b0, min(b, b0 + b_step), r0, min(out_len, r0 + r_step))
        for b0 in range(0, b, b_step)
        for r0 in range(0, out_len, r_step)
    ]
    threads = torch.get_num_threads()
    if not _USE_POOL or threads <= 1 or len(jobs) < 2 or _tracing():
        for job in jobs:
            item(*job)
        return
    inference = torch.is_inference_mode_enabled()

    def run(job: tuple[int, int, int, int]) -> None:
        # Workers inherit no grad/inference mode: give them the caller's (the buffers may be
        # inference tensors, which only inference mode may write).
        with torch.inference_mode(inference), torch.no_grad():
            item(*job)

    for fut in [_cpu_pool(threads).submit(run, job) for job in jobs]:
        fut.result()


def _resize_pass_functional(src: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Out-of-place version of :func:`_resize_pass` (float mode with autograd); returns (B, M, out)."""
    acc = src.index_select(1, indices[0]) * weights[0].view(1, -1, 1)
    for k in range(1, weights.shape[0]):
        acc = acc + src.index_select(1, indices[k]) * weights[k].view(1, -1, 1)
    return acc.transpose(1, 2)


def _resize_2d(
    src: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor],
    second: tuple[torch.Tensor, torch.Tensor],
    dst: torch.Tensor | None,
    quantize: bool,
) -> torch.Tensor:
    """Resize axis 1 of ``src`` (B, L1, L2) with ``first``, then axis 2 with ``second``.

    Returns (B, out1, out2); written into ``dst`` when given (the in-place, chunked path),
    otherwise computed out of place (the autograd path).
    """
    (w1, i1), (w2, i2) = first, second
    if dst is None:
        mid = _resize_pass_functional(src, w1, i1)
        return _resize_pass_functional(mid.contiguous(), w2, i2)
    mid = torch.empty((src.shape[0], src.shape[2], w1.shape[1]), dtype=w1.dtype, device=src.device)
    _resize_pass(src, w1, i1, mid, quantize)
    _resize_pass(mid, w2, i2, dst, quantize)
    return dst


def imresize(
    img: torch.Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')``, bit for bit on uint8 images.

    Args:
        img: (H, W), (C, H, W) or (N, C, H, W) tensor; uint8 or floating; any device.
        scale: one factor for both axes (e.g. ``1 / 4`` or ``4``). Output side ``ceil(in * scale)``.
        size: ``(out_h, out_w)`` instead of ``scale``; as in MATLAB each axis then uses the scale
            ``out / in`` (which decides the antialiasing kernel width and the coordinate mapping).
        antialias: MATLAB's ``'Antialiasing'`` option; widens the kernel when shrinking.

    Returns:
        The resized tensor with the same number of dimensions, device and dtype as ``img``.
        uint8 input is computed in float64 and rounded to uint8 after each of the two passes
        (halves away from zero); floating input is neither rounded nor clamped.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if img.dim() not in (2, 3, 4):
        raise ValueError(f"expected a (H, W), (C, H, W) or (N, C, H, W) tensor, got shape {tuple(img.shape)}")
    if img.dtype != torch.uint8 and not img.is_floating_point():
        raise TypeError(f"imresize supports uint8 and floating tensors, got {img.dtype}")
    in_h, in_w = int(img.shape[-2]), int(img.shape[-1])
    if in_h < 1 or in_w < 1:
        raise ValueError(f"cannot resize an empty image of shape {tuple(img.shape)}")
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be positive, got {size}")
        scales = (out_h / in_h, out_w / in_w)
    else:
        s = float(scale)  # type: ignore[arg-type]
        if not s > 0 or not math.isfinite(s):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        scales = (s, s)
        out_h, out_w = output_size(in_h, s), output_size(in_w, s)

    quantize = img.dtype == torch.uint8
    work = torch.float64 if quantize or img.dtype == torch.float64 else torch.float32
    lead = img.shape[:-2]
    # uint8 samples stay uint8 (1 byte each): they are converted tap by tap inside the first pass.
    x = img.reshape(-1, in_h, in_w)
    x = x.contiguous() if quantize else x.to(work).contiguous()
    tab_h = _device_tables(in_h, out_h, float(scales[0]), bool(antialias), x.device, work)
    tab_w = _device_tables(in_w, out_w, float(scales[1]), bool(antialias), x.device, work)
    # Float mode runs out of place when autograd needs the graph, or while a tracer/compiler
    # records the ops (their state is per thread: the pool's threads would be invisible to it).
    differentiable = not quantize and ((torch.is_grad_enabled() and x.requires_grad) or _tracing())
    out = (
        None if differentiable else torch.empty((x.shape[0], out_h, out_w), dtype=img.dtype, device=x.device)
    )
    # MATLAB's dimensionOrder: the axis with the smaller scale goes first (a stable sort, so the
    # height goes first on ties). Width first = height first on the transposed image.
    if scales[0] <= scales[1]:
        y = _resize_2d(x, tab_h, tab_w, out, quantize)
    else:
        y = _resize_2d(
            x.transpose(1, 2), tab_w, tab_h, None if out is None else out.transpose(1, 2), quantize
        ).transpose(1, 2)
    return y.to(img.dtype).reshape(*lead, out_h, out_w)


def imresize_np(
    arr: np.ndarray,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """:func:`imresize` for numpy images: (H, W) or (H, W, C), uint8 or floating; same layout out."""
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {a.shape}")
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C")  # torch cannot wrap read-only arrays
    t = torch.from_numpy(a)
    if a.ndim == 3:
        t = t.permute(2, 0, 1)
    out = imresize(t, scale, size=size, antialias=antialias)
    if a.ndim == 3:
        out = out.permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy())


def modcrop(img: torch.Tensor | np.ndarray, s: int) -> torch.Tensor | np.ndarray:
    """Crop an image so both sides are multiples of ``s``, anchored top-left.

    Keeps rows ``[0, h - h % s)`` and columns ``[0, w - w % s)``. Tensors are (..., H, W); numpy
    arrays are (H, W) or (H, W, C). Returns a view where possible.
    """
    s = int(s)
    if s < 1:
        raise ValueError(f"modcrop factor must be >= 1, got {s}")
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2], img.shape[-1]
        return img[..., : h - h % s, : w - w % s]
    a = np.asarray(img)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {a.shape}")
    h, w = a.shape[0], a.shape[1]
    return a[: h - h % s, : w - w % s]
