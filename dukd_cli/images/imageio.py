"""The project's one image reader and writer (evaluation, upscaling and training data all use it).

Reading (:func:`read_image`, :func:`read_rgb_uint8`) goes through Pillow and normalises every mode
to RGB (plus an optional alpha plane) without losing precision:

* ``1``, ``L``, ``LA``, ``I;16*``, ``I`` and ``F`` are gray (``is_gray``): the gray plane is
  replicated to R = G = B. ``P``/``PA`` become RGB or RGBA (RGBA when the palette has
  transparency); ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and ``RGBX`` become RGB through Pillow's
  converters; a ``tRNS`` colour key on L/RGB becomes an alpha plane.
* 16-bit data keeps its 16 bits (``bit_depth == 16``): 16-bit gray PNG/TIFF (``I;16``), and also
  48/64-bit RGB(A) and 32-bit gray+alpha PNGs and 48/64-bit RGB(A) TIFFs, which Pillow 13 opens
  as 8-bit images (it keeps only the high byte of each sample). For those the file is decoded
  twice, once keeping the high bytes and once, with the opposite byte order requested from
  Pillow's own decoder, keeping the low bytes, and the two are recombined: exact 16-bit samples
  with Pillow doing all the decompression and PNG unfiltering. 32-bit gray+alpha PNGs are decoded
  once with the raw bytes of each sample.
* ``I`` (32-bit integer) holds 16-bit data in practice (it is how some Pillow versions open 16-bit
  gray); values must lie in [0, 65535]. ``F`` (float) is taken on the [0, 1] scale when its
  maximum is at most 1, otherwise on Pillow's 8-bit scale [0, 255]; it is clipped to [0, 1] and
  reported as ``bit_depth == 16`` (more than 8 bits of precision worth keeping on write).
* The EXIF orientation is applied to the pixels (``PIL.ImageOps.exif_transpose``) and the
  orientation tag is removed from the returned EXIF block, so pixels and metadata agree.
* An animated or multi-frame file (GIF, APNG, WebP, multi-page TIFF) gives its first frame, with a
  warning that says so.
* The ICC profile is returned as found, except for CMYK images (their profile describes CMYK, not
  the RGB we return, so it is dropped).
* Every failure a user can cause (missing, empty, corrupt or truncated file, not an image, absurd
  size) raises :class:`~dukd_cli.errors.DukdError` with one line that names the file. Images up to
  Pillow's own hard limit (``2 * Image.MAX_IMAGE_PIXELS``, about 179 megapixels, e.g.
  13000 x 13000) are read without the Pillow warning; larger ones are refused.

Writing (:func:`write_image`) is atomic: the image is encoded into a temporary file in the target
folder and moved over the target with ``os.replace``; on any error no file (and no half-written
target) is left behind. The format follows the extension: ``.png``, ``.jpg``/``.jpeg``,
``.webp``, ``.bmp``, ``.tif``/``.tiff``. 16-bit output is written for PNG (gray, gray+alpha, RGB,
RGBA: Pillow cannot write 16-bit RGB PNGs, so this module has a small PNG encoder built on zlib)
and for gray TIFF without alpha; other formats and modes fall back to 8 bits with a warning.
JPEG and BMP cannot carry alpha: the image is composited over white (with a warning).
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from dukd_cli.errors import DukdError
from dukd_cli.images.pixels import _as_float01
from dukd_cli.images.pngstream import DEFAULT_PNG_LEVEL, check_png_level, encode_png16

if TYPE_CHECKING:
    from dukd_cli.images.bandwrite import BandWriter, WritePipeline

__all__ = [
    "LoadedImage",
    "read_image",
    "read_rgb_uint8",
    "write_image",
    "encode_png16",
    "FORMATS",
    "MAX_PIXELS",
]

#: The largest image (in pixels) that is read: Pillow's own decompression-bomb error threshold.
MAX_PIXELS = 2 * 89_478_485

#: Extension -> Pillow format name.
FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

_ORIENTATION = 0x0112
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, IndexError, TypeError)


@dataclass
class LoadedImage:
    """A decoded image, normalised to float32 RGB in [0, 1].

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1]; gray images have R = G = B.
        alpha: (H, W) float32 in [0, 1], or None when the image has no alpha channel.
        mode: the Pillow mode of the file (``"L"``, ``"RGB"``, ``"P"``, ``"I;16"``, ...).
        bit_depth: 8, or 16 for images with more than 8 bits per sample.
        is_gray: the file holds a single gray plane (plus maybe alpha).
        icc_profile: the embedded ICC profile, or None.
        exif: the EXIF block (``Exif\\0\\0`` + TIFF data) with the orientation tag removed, or None.
        path: where it was read from.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    mode: str
    bit_depth: int
    is_gray: bool
    icc_profile: bytes | None
    exif: bytes | None
    path: Path

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


@dataclass
class _Decoded:
    """Pixels at their native precision: ``color`` (H, W) or (H, W, 3), ``alpha`` (H, W) or None,
    both integer (full scale ``maxval``) or float (already on the [0, 1] scale when maxval is 1)."""

    color: np.ndarray
    alpha: np.ndarray | None
    maxval: float
    mode: str
    bit_depth: int
    is_gray: bool
    icc_profile: bytes | None
    exif: bytes | None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _open(path: Path) -> Image.Image:
    """Open (not yet decode) an image file; every user error becomes a one-line DukdError."""
    if not path.exists():
        raise DukdError(f"image not found: {path}")
    if path.is_dir():
        raise DukdError(f"expected an image file, got a folder: {path}")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DukdError(f"cannot read {path}: {e.strerror or e}") from None
    if size == 0:
        raise DukdError(f"empty file (0 bytes), not an image: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise DukdError(f"image too large to read safely (over {MAX_PIXELS:,} pixels): {path}") from None
    except UnidentifiedImageError:
        raise DukdError(f"not an image file (or a format Pillow cannot read): {path}") from None
    except _DECODE_ERRORS as e:
        raise DukdError(f"cannot read image {path}: {e}") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise DukdError(
            f"image too large to read safely ({w}x{h} = {w * h:,} pixels, limit {MAX_PIXELS:,}): {path}"
        )
    if w < 1 or h < 1:
        im.close()
        raise DukdError(f"image has no pixels ({w}x{h}): {path}")
    return im


def _reopen(path: Path) -> Image.Image:
    """Open a file that :func:`_open` already accepted once more (for a second decode)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, UnidentifiedImageError, *_DECODE_ERRORS) as e:
        raise DukdError(f"cannot read image {path}: {e}") from None


def _load(im: Image.Image, path: Path) -> None:
    """Decode the pixels now, turning decoder failures (corrupt, truncated) into a DukdError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except _DECODE_ERRORS as e:
        raise DukdError(f"corrupt or truncated image {path}: {e}") from None


def _transpose(im: Image.Image, path: Path) -> Image.Image:
    """Apply the EXIF orientation (and drop the tag), as ``ImageOps.exif_transpose`` does."""
    try:
        out = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as e:
        raise DukdError(f"unreadable EXIF orientation in {path}: {e}") from None
    return out if out is not None else im


def _exif_bytes(im: Image.Image) -> bytes | None:
    """The image's EXIF block without the orientation tag, or None when there is nothing left."""
    try:
        exif = im.getexif()
    except _DECODE_ERRORS:
        return None
    if _ORIENTATION in exif:
        del exif[_ORIENTATION]
    if len(exif) == 0:
        return None
    return exif.tobytes() or None


def _tile_rawmode(tile: ImageFile._Tile | tuple) -> str | None:
    args = tile.args if hasattr(tile, "args") else tile[3]
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(tile: ImageFile._Tile, rawmode: str) -> ImageFile._Tile:
    args = tile.args
    new_args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    return tile._replace(args=new_args)


def _swap_16(rawmode: str) -> str | None:
    """``RGB;16B`` -> ``RGB;16L`` and back (native ``;16N`` resolved first); None if not 16-bit."""
    base, sep, order = rawmode.partition(";16")
    if not sep or order not in ("B", "L", "N"):
        return None
    if order == "N":
        order = "L" if sys.byteorder == "little" else "B"
    return f"{base};16{'L' if order == 'B' else 'B'}"


def _deep_decode(path: Path, im: Image.Image) -> _Decoded | None:
    """Exact decode of the 16-bit layouts that Pillow opens as 8-bit images (see module docs).

    ``im`` is the opened, not yet loaded image (its tiles tell the sample layout). Returns None
    when it is not such an image.
    """
    rawmodes = {_tile_rawmode(t) for t in im.tile}
    if len(rawmodes) != 1:
        return None
    rawmode = rawmodes.pop()
    if rawmode is None:
        return None
    icc = im.info.get("icc_profile") or None
    if im.mode == "RGBA" and rawmode == "LA;16B":
        # 16-bit gray + alpha PNG: decode the 4 raw bytes of each pixel as "RGBA".
        with _reopen(path) as raw:
            raw.tile = [_with_rawmode(t, "RGBA") for t in raw.tile]
            _load(raw, path)
            b = np.asarray(_transpose(raw, path), dtype=np.uint16)
            exif = _exif_bytes(raw)
        return _Decoded(
            (b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3], 65535.0, "LA", 16, True, icc, exif
        )
    if im.mode not in ("RGB", "RGBA") or not rawmode.startswith(im.mode + ";16"):
        return None
    other = _swap_16(rawmode)
    if other is None:
        return None
    # Pillow's decoder keeps one byte of each 16-bit sample: the high one with the file's byte
    # order, the low one when told the opposite order. Unfiltering/decompression is byte-exact
    # either way, so the two decodes recombine into the exact samples.
    with _reopen(path) as hi_im, _reopen(path) as lo_im:
        lo_im.tile = [_with_rawmode(t, other) for t in lo_im.tile]
        _load(hi_im, path)
        _load(lo_im, path)
        hi = np.asarray(_transpose(hi_im, path), dtype=np.uint16)
        lo = np.asarray(_transpose(lo_im, path), dtype=np.uint16)
        exif = _exif_bytes(hi_im)
    full = (hi << 8) | lo
    if im.mode == "RGBA":
        return _Decoded(full[..., :3], full[..., 3], 65535.0, im.mode, 16, False, icc, exif)
    return _Decoded(full, None, 65535.0, im.mode, 16, False, icc, exif)


def _frame_count(im: Image.Image) -> int:
    """Frames in the file (GIF, APNG, WebP animations; multi-page TIFF); 1 when it cannot tell."""
    try:
        n = getattr(im, "n_frames", 1)
    except _DECODE_ERRORS:
        return 1
    return n if isinstance(n, int) and not isinstance(n, bool) else 1


def _decode(path: str | os.PathLike) -> _Decoded:
    """Decode a file to native-precision planes (shared by :func:`read_image` and friends)."""
    path = Path(path)
    im = _open(path)
    try:
        frames = _frame_count(im)
        if frames > 1:
            warnings.warn(
                f"{path}: an animated or multi-frame image ({frames} frames); first frame only", stacklevel=3
            )
        mode = im.mode
        if mode in ("RGB", "RGBA") and im.tile:
            if im.format in ("PNG", "TIFF"):
                deep = _deep_decode(path, im)
                if deep is not None:
                    return deep
            if any(";16" in (_tile_rawmode(t) or "") for t in im.tile):
                warnings.warn(
                    f"{path}: 16-bit samples read with 8-bit precision (Pillow limitation)", stacklevel=3
                )
        _load(im, path)
        icc = im.info.get("icc_profile") or None
        upright = _transpose(im, path)
        exif = _exif_bytes(im)  # after the transpose: this drops the orientation tag
        return _planes(upright, path, mode, icc, exif)
    finally:
        im.close()


def _planes(im: Image.Image, path: Path, mode: str, icc: bytes | None, exif: bytes | None) -> _Decoded:
    """Native-precision planes of a decoded, orientation-corrected Pillow image."""
    m = im.mode
    has_trns = "transparency" in im.info
    try:
        if m == "1":
            return _Decoded(np.asarray(im.convert("L")), None, 255.0, mode, 8, True, icc, exif)
        if m == "L" and not has_trns:
            return _Decoded(np.asarray(im), None, 255.0, mode, 8, True, icc, exif)
        if m in ("LA", "La"):
            a = np.asarray(im.convert("LA") if m == "La" else im)
            return _Decoded(a[..., 0], a[..., 1], 255.0, mode, 8, True, icc, exif)
        if m == "L":  # gray with a tRNS colour key
            a = np.asarray(im.convert("RGBA"))
            return _Decoded(a[..., 0], a[..., 3], 255.0, mode, 8, True, icc, exif)
        if m.startswith("I;16"):
            a = np.asarray(im).astype(np.uint16)
            return _Decoded(a, None, 65535.0, mode, 16, True, icc, exif)
        if m == "I":
            a = np.asarray(im)
            if a.size and (a.min() < 0 or a.max() > 65535):
                raise DukdError(f"32-bit integer image with values outside 0..65535 is not supported: {path}")
            return _Decoded(a.astype(np.uint16), None, 65535.0, mode, 16, True, icc, exif)
        if m == "F":
            a = np.asarray(im, dtype=np.float32)
            if not np.all(np.isfinite(a)):
                raise DukdError(f"float image with NaN or infinite values: {path}")
            scale = 1.0 if a.size == 0 or float(a.max()) <= 1.0 else 255.0
            return _Decoded(np.clip(a / scale, 0, 1), None, 1.0, mode, 16, True, icc, exif)
        if m == "RGBA" or m == "PA" or (m in ("P", "RGB") and has_trns):
            a = np.asarray(im if m == "RGBA" else im.convert("RGBA"))
            return _Decoded(a[..., :3], a[..., 3], 255.0, mode, 8, False, icc, exif)
        if m == "RGBa":
            a = np.asarray(im.convert("RGBA"))
            return _Decoded(a[..., :3], a[..., 3], 255.0, mode, 8, False, icc, exif)
        if m == "RGB":
            return _Decoded(np.asarray(im), None, 255.0, mode, 8, False, icc, exif)
        if m == "CMYK":
            # The ICC profile of a CMYK file describes CMYK: it does not apply to the RGB we return.
            return _Decoded(np.asarray(im.convert("RGB")), None, 255.0, mode, 8, False, None, exif)
        return _Decoded(np.asarray(im.convert("RGB")), None, 255.0, mode, 8, False, icc, exif)
    except DukdError:
        raise
    except _DECODE_ERRORS as e:
        raise DukdError(f"cannot convert image mode {m!r} to RGB: {path} ({e})") from None


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file as float32 RGB in [0, 1] plus alpha and metadata (see module docs)."""
    d = _decode(path)
    color = d.color.astype(np.float32)
    if d.maxval != 1.0:
        color /= np.float32(d.maxval)
    if color.ndim == 2:
        color = np.repeat(color[..., None], 3, axis=2)
    alpha = None
    if d.alpha is not None:
        alpha = d.alpha.astype(np.float32)
        if d.maxval != 1.0:
            alpha /= np.float32(d.maxval)
    return LoadedImage(
        rgb=np.ascontiguousarray(color),
        alpha=alpha,
        mode=d.mode,
        bit_depth=d.bit_depth,
        is_gray=d.is_gray,
        icc_profile=d.icc_profile,
        exif=d.exif,
        path=Path(path),
    )


def read_rgb_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB for evaluation (the protocol compares uint8 images).

    8-bit images are returned exactly; gray images become R = G = B (the BasicSR convention the
    protocol follows); alpha is ignored. 16-bit samples ``v`` become ``round(v / 257)``
    (``(v + 128) // 257``; 257 is odd, so there are no ties), which maps 0 -> 0 and 65535 -> 255 and
    inverts the usual 8 -> 16 bit expansion ``v * 257`` exactly. Float images are rounded from
    ``x * 255``.
    """
    d = _decode(path)
    c = d.color
    if d.maxval == 255.0:
        out = c.astype(np.uint8, copy=False)
    elif d.maxval == 65535.0:
        out = ((c.astype(np.uint32) + 128) // 257).astype(np.uint8)
    else:
        out = np.round(np.clip(c.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    if not out.flags.writeable or not out.flags.c_contiguous:
        out = np.array(out, order="C")  # a private, writable copy (Pillow's buffers are read-only)
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _clean_exif(exif: bytes | None) -> bytes | None:
    """The EXIF block with the orientation tag removed (written pixels are already upright)."""
    if not exif:
        return None
    e = Image.Exif()
    try:
        e.load(exif)
    except _DECODE_ERRORS:
        raise DukdError("the EXIF block to write is not valid EXIF data") from None
    if _ORIENTATION in e:
        del e[_ORIENTATION]
    return e.tobytes()


def open_writer(
    path: str | os.PathLike,
    height: int,
    width: int,
    *,
    mode: str = "RGB",
    bit_depth: int = 8,
    alpha: bool = False,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
    png_level: int = DEFAULT_PNG_LEVEL,
    pipeline: WritePipeline | None = None,
    stacklevel: int = 2,
) -> BandWriter:
    """A :class:`dukd_cli.images.bandwrite.BandWriter` for ``path``, with :func:`write_image`'s rules
    (format from the extension, 16 bits where the format allows, alpha composited over white for
    JPEG/BMP, EXIF orientation dropped); feed it bands of rows in order, then ``close()`` it."""
    from dukd_cli.images.bandwrite import BandWriter

    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DukdError(
            f"cannot write {path}: unknown image extension {path.suffix!r} (use one of {', '.join(sorted(FORMATS))})"
        )
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if alpha and fmt in ("JPEG", "BMP"):
        warnings.warn(
            f"{fmt} cannot store transparency: compositing {path.name} over white", stacklevel=stacklevel
        )
    deep = bit_depth == 16 and (fmt == "PNG" or (fmt == "TIFF" and mode == "L" and not alpha))
    if bit_depth == 16 and not deep:
        warnings.warn(
            f"16-bit {mode}{'A' if alpha else ''} is not supported for {fmt}: writing {path.name} with 8 bits",
            stacklevel=stacklevel,
        )
    exif = _clean_exif(exif)
    if fmt == "BMP":
        icc_profile, exif = None, None
    return BandWriter(
        path,
        height,
        width,
        fmt=fmt,
        mode=mode,
        bits=16 if deep else 8,
        alpha=alpha,
        icc_profile=icc_profile,
        exif=exif,
        quality=quality,
        png_level=check_png_level(png_level),
        pipeline=pipeline,
    )


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    mode: str = "RGB",
    bit_depth: int = 8,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
    png_level: int = DEFAULT_PNG_LEVEL,
) -> Path:
    """Write an image atomically; the format follows the extension (see module docs).

    Args:
        path: target file; its folder is created when missing.
        rgb: (H, W, 3) float in [0, 1] (clipped); (H, W) or (H, W, 1) is taken as gray. uint8 /
            uint16 arrays are accepted as their [0, 1] equivalents.
        alpha: optional (H, W) float in [0, 1]; written as RGBA / LA where the format allows.
            JPEG and BMP cannot hold alpha: the image is composited over white (with a warning).
        mode: ``"RGB"`` or ``"L"`` (gray; from RGB input the R plane when R = G = B, else
            ITU-R 601 luma).
        bit_depth: 8 or 16. 16 is written for PNG (all modes) and gray TIFF without alpha; other
            cases fall back to 8 bits with a warning.
        icc_profile: ICC profile to embed (PNG, JPEG, WebP, TIFF; BMP drops it).
        exif: EXIF block to embed (PNG, JPEG, WebP, TIFF; BMP drops it). Its orientation tag is
            removed: the pixels written are upright.
        quality: JPEG / WebP quality.
        png_level: PNG (zlib) compression level 0-9; 1-3 use one row filter and zlib's RLE
            strategy (fast, like OpenCV's default), 4-9 the adaptive row filters (smaller, slower).

    Samples are quantised by rounding ``x * (2**bits - 1)``. Returns the path written.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DukdError(
            f"cannot write {path}: unknown image extension {path.suffix!r} (use one of {', '.join(sorted(FORMATS))})"
        )
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    img = _as_float01(rgb, "rgb")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2) if mode == "RGB" else img
    elif img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), (H, W, 1) or (H, W), got shape {np.shape(rgb)}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"cannot write an empty image of shape {np.shape(rgb)}")
    a = None
    if alpha is not None:
        a = _as_float01(alpha, "alpha")
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.shape != img.shape[:2]:
            raise ValueError(f"alpha shape {a.shape} does not match the image {img.shape[:2]}")
    writer = open_writer(
        path,
        img.shape[0],
        img.shape[1],
        mode=mode,
        bit_depth=bit_depth,
        alpha=a is not None,
        icc_profile=icc_profile,
        exif=exif,
        quality=quality,
        png_level=png_level,
        stacklevel=3,
    )
    writer.write(img, a)
    writer.close()
    return path
