"""Writing an image a band of rows at a time, atomically, optionally on a background thread.

:class:`BandWriter` is what :func:`dukd_cli.images.imageio.write_image` uses for every file (a whole image
is one band) and what ``dukd upscale`` feeds as its tiles finish, so that a huge output is never
held whole: PNG (8 or 16 bits) is encoded band by band by :mod:`dukd_cli.images.pngstream`; other formats
(JPEG, WebP, BMP, TIFF) are gathered into one uint8 (or uint16) array and saved with Pillow, which
costs the output's samples and no float copy of it.

Each band is turned into samples exactly as a whole image would be (clipped, gray as luma or the
R plane, alpha composited over white for formats without alpha, rounded ties-to-even), so a file
written in bands has the same pixels as one written whole. One exception: for gray output the
"R = G = B, take R" shortcut is decided per band (for a whole image, once). Samples are made and
encoded in blocks of about 8 M, so a tall band never exists whole as samples either.

:class:`WritePipeline` runs the encoding on one worker thread (in order), so that reading and
computing the next image overlap writing this one; at most ``depth`` bands wait for it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dukd_cli.errors import DukdError
from dukd_cli.images.pngstream import DEFAULT_PNG_LEVEL, PngStreamWriter
from dukd_cli.runtime.fsutil import atomic_path

#: Samples made and encoded at a time (about 8 M).
BLOCK_SAMPLES = 8 << 20


class WritePipeline:
    """One background thread that runs write tasks in order; ``submit`` blocks while ``depth`` wait."""

    def __init__(self, depth: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dukd-write")
        self._slots = threading.BoundedSemaphore(max(1, int(depth)))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        self._slots.acquire()

        def run() -> Any:
            try:
                return fn(*args)
            finally:
                self._slots.release()

        try:
            return self._pool.submit(run)
        except BaseException:
            self._slots.release()
            raise

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> WritePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class BandWriter:
    """Write an ``height`` x ``width`` image at ``path`` from bands of rows given in order.

    ``mode``: ``"RGB"`` or ``"L"``; ``bits``: 8 or 16 (already checked against the format);
    ``alpha``: whether bands come with an alpha plane (JPEG/BMP: composited over white);
    ``png_level``: zlib level for PNG (0-9). ``write(rgb, alpha)`` takes (rows, width, 3) or
    (rows, width) float arrays in [0, 1] (clipped). ``close()`` renames the finished file onto
    ``path``; ``abort()`` (or any error) removes the temporary file and leaves ``path`` untouched.
    With a ``pipeline`` the encoding runs on its thread; ``close()`` then returns a future.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        height: int,
        width: int,
        *,
        fmt: str,
        mode: str = "RGB",
        bits: int = 8,
        alpha: bool = False,
        icc_profile: bytes | None = None,
        exif: bytes | None = None,
        quality: int = 95,
        png_level: int = DEFAULT_PNG_LEVEL,
        pipeline: WritePipeline | None = None,
    ) -> None:
        self.path = Path(path)
        self.height, self.width, self.fmt, self.mode, self.bits = (
            int(height),
            int(width),
            fmt,
            mode,
            int(bits),
        )
        self.has_alpha = bool(alpha) and fmt not in ("JPEG", "BMP")
        self.composite = bool(alpha) and not self.has_alpha
        self.icc_profile, self.exif, self.quality, self.png_level = (
            icc_profile,
            exif,
            int(quality),
            int(png_level),
        )
        self.channels = (1 if mode == "L" else 3) + (1 if self.has_alpha else 0)
        self.pipeline = pipeline
        self.rows = 0
        self._cm = atomic_path(self.path, suffix=".tmp")
        self._tmp = self._cm.__enter__()
        self._file: Any = None
        self._png: PngStreamWriter | None = None
        self._array: np.ndarray | None = None
        self._failed: BaseException | None = None
        self._finished = False
        try:
            if fmt == "PNG":
                self._file = open(self._tmp, "wb")  # closed in _finish / abort
                self._png = PngStreamWriter(
                    self._file,
                    self.width,
                    self.height,
                    self.channels,
                    self.bits,
                    level=self.png_level,
                    icc_profile=icc_profile,
                    exif=exif,
                )
            else:
                dtype = np.uint16 if self.bits == 16 else np.uint8
                shape = (
                    (self.height, self.width)
                    if self.channels == 1
                    else (self.height, self.width, self.channels)
                )
                self._array = np.empty(shape, dtype=dtype)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise DukdError(f"cannot write {self.path}: {e.strerror or e}") from None
            raise

    # -- the work (on the pipeline's thread when there is one) ----------------------------------

    def _gray(self, rgb: np.ndarray) -> np.ndarray:
        """The band in the file's colour layout (gray: decided once per band, as for a whole image)."""
        from dukd_cli.images.pixels import _to_gray

        if self.mode == "L" and rgb.ndim == 3:
            return _to_gray(rgb)
        if self.mode == "RGB" and rgb.ndim == 2:
            return np.repeat(rgb[..., None], 3, axis=2)
        return rgb

    def _samples(self, img: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
        from dukd_cli.images.pixels import _quantize

        if self.composite and alpha is not None:
            back = alpha if img.ndim == 2 else alpha[..., None]
            img = np.clip(img, 0, 1) * back + (1.0 - back)
        q = _quantize(img, self.bits)
        if self.has_alpha and alpha is not None:
            q = np.concatenate(
                [q if q.ndim == 3 else q[..., None], _quantize(alpha, self.bits)[..., None]], axis=2
            )
        return q

    def _encode(self, r0: int, q: np.ndarray) -> None:
        if self._failed is not None:
            return
        try:
            if self._png is not None:
                self._png.write_rows(q)
            else:
                assert self._array is not None
                self._array[r0 : r0 + q.shape[0]] = q
        except BaseException as e:
            self._failed = e

    def _finish(self) -> Path:
        try:
            if self._failed is not None:
                raise self._failed
            if self._png is not None:
                self._png.close()
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
            else:
                self._save_pillow()
            self._cm.__exit__(None, None, None)
            self._finished = True
            return self.path
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise DukdError(f"cannot write {self.path}: {e.strerror or e}") from None
            raise

    def _save_pillow(self) -> None:
        from PIL import Image

        assert self._array is not None
        q = self._array
        if q.dtype == np.uint16:
            pil = Image.frombytes("I;16", (q.shape[1], q.shape[0]), q.astype("<u2").tobytes())
        else:
            pil = Image.fromarray(q)
        self._array = None
        kwargs: dict = {}
        if self.icc_profile:
            kwargs["icc_profile"] = self.icc_profile
        if self.exif:
            kwargs["exif"] = self.exif
        if self.fmt in ("JPEG", "WEBP"):
            kwargs["quality"] = self.quality
        if self.fmt == "TIFF":
            kwargs["compression"] = "tiff_deflate"
        with open(self._tmp, "wb") as f:
            pil.save(f, format=self.fmt, **kwargs)
            f.flush()
            os.fsync(f.fileno())

    # -- the caller's side ------------------------------------------------------------------------

    def write(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """Add the next ``rgb.shape[0]`` rows. They are quantised here (so the float band can be
        freed at once); the encoding runs on the pipeline's thread when there is one."""
        n = int(rgb.shape[0])
        if self.rows + n > self.height:
            raise ValueError(f"more than {self.height} rows given for {self.path}")
        r0 = self.rows
        self.rows += n
        try:
            img = self._gray(rgb)
        except BaseException:
            self.abort()
            raise
        # Blocks of about 8 M samples: a tall band of a huge image never exists as samples whole.
        step = max(1, BLOCK_SAMPLES // max(1, self.width * self.channels))
        for b0 in range(0, n, step):
            b1 = min(n, b0 + step)
            try:
                q = self._samples(img[b0:b1], None if alpha is None else alpha[b0:b1])
            except BaseException:
                self.abort()
                raise
            if self.pipeline is not None:
                self.pipeline.submit(self._encode, r0 + b0, q)
            else:
                self._encode(r0 + b0, q)
                if self._failed is not None:
                    self._finish_or_abort()  # raises
            del q

    def close(self) -> Path | Future:
        """Finish the file: the path written, or (with a pipeline) a future of it."""
        if self.rows != self.height:
            self.abort()
            raise ValueError(f"{self.rows} of {self.height} rows given for {self.path}")
        if self.pipeline is not None:
            return self.pipeline.submit(self._finish_or_abort)
        return self._finish_or_abort()

    def _finish_or_abort(self) -> Path:
        try:
            return self._finish()
        except BaseException:
            self.abort()  # whatever went wrong, no temporary file stays behind
            raise

    def abort(self) -> None:
        """Drop the temporary file (safe to call more than once, and after a failure)."""
        if self._finished:
            return
        self._finished = True
        self._array = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(Exception):
            self._cm.__exit__(RuntimeError, RuntimeError("aborted"), None)
        with contextlib.suppress(OSError):
            self._tmp.unlink()
