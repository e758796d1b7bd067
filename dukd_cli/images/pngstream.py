"""A PNG encoder that takes the image a band of rows at a time, so that memory grows with the band.

``dukd upscale`` writes a large image band by band as its tiles finish (see
:mod:`dukd_cli.images.bandwrite`): a 24000 x 24000 output is never held whole. :class:`PngStreamWriter`
writes the signature, the header and the metadata chunks up front, then filters each band's rows
(the usual per-row choice among the five PNG filters, by least sum of absolute residuals; the
row above a band is remembered) and feeds them to one ``zlib`` stream whose output goes out as
IDAT chunks. 8- and 16-bit gray, gray+alpha, RGB and RGBA are supported.

The compression level is zlib's, 0-9. 1 (the default) to 3 filter every row with Up and use
zlib's RLE strategy: fast, about OpenCV's default (level 1, RLE, Sub filter). 4 to 9 choose the
filter per row (smaller files, several times slower). Level 0 stores the rows unfiltered.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

#: The PNG (zlib) compression level ``dukd`` uses unless told otherwise: fast (OpenCV's default too).
DEFAULT_PNG_LEVEL = 1

_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_IDAT_MIN = 1 << 20  # gather compressed output into chunks of at least this many bytes


def check_png_level(level: int) -> int:
    """``level`` as an int in 0..9, or a one-line :class:`~dukd_cli.errors.DukdError`."""
    from dukd_cli.errors import DukdError

    try:
        value = int(level)
    except (TypeError, ValueError):
        raise DukdError(f"--png-level must be an integer from 0 to 9, not '{level}'") from None
    if isinstance(level, float) or not 0 <= value <= 9:
        raise DukdError(f"--png-level must be an integer from 0 to 9, not '{level}'")
    return value


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def filter_rows(
    raw: np.ndarray, bpp: int, prev: np.ndarray | None = None, method: str = "adaptive"
) -> bytes | memoryview:
    """PNG-filter (H, N) uint8 scanlines; ``prev`` is the (unfiltered) row above the first, if any.

    ``method``: ``"adaptive"``, per row the filter with the least sum of absolute signed residuals
    (libpng's heuristic); ``"up"``, filter 2 (Up) everywhere (one subtraction, what the fast levels
    use); ``"none"``, filter 0. Returns the filtered stream (a filter byte before each row). Works
    in blocks of rows to bound the temporary memory.
    """
    h, n = raw.shape
    if method in ("none", "up"):
        out = np.empty((h, n + 1), dtype=np.uint8)
        if method == "none":
            out[:, 0] = 0
            out[:, 1:] = raw
            return memoryview(out).cast("B")
        out[:, 0] = 2
        np.subtract(raw[1:], raw[:-1], out=out[1:, 1:])
        if prev is None:
            out[0, 1:] = raw[0]
        else:
            np.subtract(raw[0], prev, out=out[0, 1:])
        return memoryview(out).cast("B")  # no copy: zlib reads the buffer
    if method != "adaptive":
        raise ValueError(f"unknown PNG filter method {method!r}")
    block = max(1, (1 << 20) // max(n, 1))
    parts = []
    for r0 in range(0, h, block):
        r1 = min(h, r0 + block)
        x = raw[r0:r1].astype(np.int16)
        up = np.empty_like(x)
        up[1:] = x[:-1]
        if r0 > 0:
            up[0] = raw[r0 - 1]
        elif prev is not None:
            up[0] = prev
        else:
            up[0] = 0
        left = np.zeros_like(x)
        left[:, bpp:] = x[:, :-bpp]
        upleft = np.zeros_like(x)
        upleft[:, bpp:] = up[:, :-bpp]
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        cands = (np.stack([x, x - left, x - up, x - ((left + up) >> 1), x - paeth]) & 0xFF).astype(np.uint8)
        cost = np.abs(cands.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)
        best = np.argmin(cost, axis=0)
        rows = cands[best, np.arange(x.shape[0])]
        parts.append(np.concatenate([best.astype(np.uint8)[:, None], rows], axis=1))
    return np.concatenate(parts).tobytes()


class PngStreamWriter:
    """Write a PNG to an open binary file, rows in order, a band at a time.

    ``write_rows(samples)`` takes (rows, width) or (rows, width, channels) uint8 (``bit_depth`` 8)
    or uint16 (16) samples; ``close()`` checks that ``height`` rows came and ends the file.
    """

    def __init__(
        self,
        f: BinaryIO,
        width: int,
        height: int,
        channels: int,
        bit_depth: int = 8,
        *,
        level: int = DEFAULT_PNG_LEVEL,
        icc_profile: bytes | None = None,
        exif: bytes | None = None,
    ) -> None:
        if channels not in _COLOR_TYPES:
            raise ValueError(f"a PNG has 1 to 4 channels, not {channels}")
        if bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
        if width < 1 or height < 1:
            raise ValueError(f"cannot encode a {width}x{height} PNG")
        self.f, self.width, self.height, self.channels, self.bit_depth = f, width, height, channels, bit_depth
        self.level = int(level)
        self.rows = 0
        self._prev: np.ndarray | None = None
        # Levels 1-3: the Up filter and zlib's RLE strategy, fast (OpenCV's default is level 1 with
        # RLE and the Sub filter; Up compresses photos a little better at the same speed).
        fast = 1 <= self.level <= 3
        self._method = "none" if self.level == 0 else ("up" if fast else "adaptive")
        self._z = zlib.compressobj(
            self.level, zlib.DEFLATED, 15, 9, zlib.Z_RLE if fast else zlib.Z_DEFAULT_STRATEGY
        )
        self._pending: list[bytes] = []
        self._pending_size = 0
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(
            png_chunk(
                b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, _COLOR_TYPES[channels], 0, 0, 0)
            )
        )
        if icc_profile:
            f.write(png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
        if exif:
            f.write(png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))

    def _emit(self, data: bytes, final: bool = False) -> None:
        if data:
            self._pending.append(data)
            self._pending_size += len(data)
        if self._pending and (final or self._pending_size >= _IDAT_MIN):
            self.f.write(png_chunk(b"IDAT", b"".join(self._pending)))
            self._pending, self._pending_size = [], 0

    def write_rows(self, samples: np.ndarray) -> None:
        a = np.asarray(samples)
        want = np.uint8 if self.bit_depth == 8 else np.uint16
        if a.dtype != want:
            raise ValueError(
                f"expected {np.dtype(want).name} samples for a {self.bit_depth}-bit PNG, got {a.dtype}"
            )
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[1:] != (self.width, self.channels):
            raise ValueError(
                f"rows of shape {samples.shape} do not fit a {self.width}-wide {self.channels}-channel PNG"
            )
        if self.rows + a.shape[0] > self.height:
            raise ValueError(f"more than {self.height} rows written")
        if a.shape[0] == 0:
            return
        if self.bit_depth == 16:
            a = a.astype(">u2")
        raw = np.ascontiguousarray(a).view(np.uint8).reshape(a.shape[0], -1)
        self._emit(
            self._z.compress(filter_rows(raw, self.channels * self.bit_depth // 8, self._prev, self._method))
        )
        self._prev = raw[-1].copy()
        self.rows += a.shape[0]

    def close(self) -> None:
        if self.rows != self.height:
            raise ValueError(f"{self.rows} of {self.height} rows written")
        self._emit(self._z.flush(), final=True)
        self.f.write(png_chunk(b"IEND", b""))


# A whole-image 16-bit encoder with a forced row filter: the tests use it to exercise every filter.


def _png_filter_rows(raw: np.ndarray, bpp: int, filter_type: int | None = None) -> bytes:
    """Filter (H, N) uint8 scanlines, choosing per row the PNG filter with the smallest sum of
    absolute (signed) residuals (the usual heuristic), or always ``filter_type`` (0-4) when given;
    returns the filtered stream. Filtering reads only unfiltered bytes, so it vectorises; it runs
    in blocks of rows to bound the memory."""
    h, n = raw.shape
    block = max(1, (1 << 21) // n)
    parts = []
    for r0 in range(0, h, block):
        r1 = min(h, r0 + block)
        x = raw[r0:r1].astype(np.int16)
        up = np.zeros_like(x)
        up[1:] = x[:-1]
        if r0 > 0:
            up[0] = raw[r0 - 1]
        left = np.zeros_like(x)
        left[:, bpp:] = x[:, :-bpp]
        upleft = np.zeros_like(x)
        upleft[:, bpp:] = up[:, :-bpp]
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        cands = np.stack([x, x - left, x - up, x - ((left + up) >> 1), x - paeth]) & 0xFF
        if filter_type is None:
            signed = np.where(cands > 127, 256 - cands, cands).sum(axis=2)
            best = np.argmin(signed, axis=0)
        else:
            best = np.full(x.shape[0], int(filter_type))
        rows = cands[best, np.arange(x.shape[0])].astype(np.uint8)
        parts.append(np.concatenate([best.astype(np.uint8)[:, None], rows], axis=1))
    return np.concatenate(parts).tobytes()


def encode_png16(
    planes: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    filter_type: int | None = None,
) -> bytes:
    """Encode a 16-bit PNG from uint16 (H, W) or (H, W, C) samples, C in 1 (gray), 2 (gray + alpha),
    3 (RGB) or 4 (RGBA). Pillow cannot write 16-bit RGB(A) or gray+alpha PNGs; this can.

    ``filter_type`` forces one PNG row filter (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth) instead
    of the adaptive per-row choice (used by the tests to exercise every filter)."""
    a = np.asarray(planes)
    if a.dtype != np.uint16:
        raise ValueError(f"expected uint16 samples, got {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    h, w, c = a.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}.get(c)
    if color_type is None or h < 1 or w < 1:
        raise ValueError(f"cannot encode shape {planes.shape} as PNG")
    raw = np.ascontiguousarray(a.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    out = [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))]
    if icc_profile:
        out.append(png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        body = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        out.append(png_chunk(b"eXIf", body))
    data = zlib.compress(_png_filter_rows(raw, c * 2, filter_type), 6)
    step = 1 << 23
    for i in range(0, len(data), step):
        out.append(png_chunk(b"IDAT", data[i : i + step]))
    if not data:
        out.append(png_chunk(b"IDAT", data))
    out.append(png_chunk(b"IEND", b""))
    return b"".join(out)
