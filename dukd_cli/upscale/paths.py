"""Upscale real images of any size and mode: the Python API behind ``dukd upscale``.

- :func:`upscale_image` turns one :class:`dukd_cli.images.imageio.LoadedImage` into an
  :class:`UpscaleResult` (arrays + what the writer needs to keep the file's character: gray stays
  gray, 16-bit stays 16-bit, alpha and ICC profile kept).
- :func:`collect_inputs` expands files, folders and glob patterns; :func:`plan_outputs` decides
  every output path up front (never an input, never two outputs on one path, existing outputs
  skipped unless ``overwrite``); :func:`upscale_paths` runs the plan and reports per file, so one
  bad file never stops the rest. It reads ahead, computes, and encodes on a writer thread, each
  image written band by band as its tiles finish (:mod:`dukd_cli.upscale.job`), so memory grows
  with the tile, not the image.

Image modes: the reader converts palette, CMYK and other modes to RGB and applies the EXIF
orientation; gray images are upscaled as RGB and written back as gray; alpha is upscaled
separately (bicubic by default, or through the network with ``alpha_mode="model"``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dukd_cli.errors import DukdError
from dukd_cli.images.pngstream import DEFAULT_PNG_LEVEL
from dukd_cli.models.upscaler import Upscaler, as_upscaler
from dukd_cli.upscale.image import ALPHA_MODES, EXT_ALIASES, IMAGE_EXTS, OUTPUT_EXTS, check_overlap
from dukd_cli.upscale.inference import (
    MIN_TILE,
    check_precision,
    model_device,
)
from dukd_cli.upscale.job import Job

GLOB_CHARS = "*?["
#: Images up to this many input pixels have the next image read while they compute.
PREFETCH_PIXELS = 4_000_000


# --------------------------------------------------------------------------------------------------
# one image
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# many paths
# --------------------------------------------------------------------------------------------------


@dataclass
class InputError:
    source: str
    message: str


@dataclass
class Inputs:
    """What the command line's inputs named, looked at once: the files (deduplicated, in order), one
    :class:`InputError` per input that named nothing usable, and whether the inputs were exactly one
    plain file (the only case where ``-o`` may name the output file). Unpacks as ``files, errors``."""

    files: list[Path]
    errors: list[InputError]
    single_file: bool

    def __iter__(self) -> Iterator[Any]:
        return iter((self.files, self.errors))


def collect_inputs(inputs: Iterable[str | os.PathLike]) -> Inputs:
    """Expand files, folders (their image files, sorted, not recursive) and glob patterns, each
    input looked at once (missing path, empty folder, pattern without matches: an error)."""
    files: list[Path] = []
    errors: list[InputError] = []
    seen: set[str] = set()
    plain = 0  # inputs that named one existing file as such (not a folder, not a pattern)
    inputs = list(inputs)

    def add(p: Path) -> None:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)

    for raw in inputs:
        text = os.fspath(raw)
        p = Path(text).expanduser()
        if p.is_dir():
            found = sorted(
                c
                for c in p.iterdir()
                if c.is_file() and not c.name.startswith(".") and c.suffix.lower() in IMAGE_EXTS
            )
            if not found:
                errors.append(
                    InputError(text, f"folder {text} holds no images ({', '.join(IMAGE_EXTS[:4])}, ...)")
                )
            for c in found:
                add(c)
        elif p.exists():
            add(p)
            plain += 1
        elif any(ch in text for ch in GLOB_CHARS):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                errors.append(InputError(text, f"no file matches '{text}'"))
            for m in matches:
                add(m)
        else:
            errors.append(InputError(text, f"no such file or folder: {text}"))
    return Inputs(files, errors, single_file=len(inputs) == 1 and plain == 1 and len(files) == 1)


def normalise_ext(ext: str | None) -> str | None:
    if ext is None:
        return None
    e = ext.strip().lower().lstrip(".")
    if e not in EXT_ALIASES:
        raise DukdError(f"--ext must be one of {', '.join(OUTPUT_EXTS)}, not '{ext}'")
    return EXT_ALIASES[e]


def _default_ext(src: Path) -> str:
    return EXT_ALIASES.get(src.suffix.lower().lstrip("."), "png")


def format_factor(f: float) -> str:
    return str(int(f)) if float(f).is_integer() else f"{f:g}"


def _output_is_file(output: Path, n_inputs: int, named_dir: bool) -> bool:
    if output.is_dir() or str(output).endswith(("/", os.sep)):
        return False
    if output.suffix.lower().lstrip(".") in EXT_ALIASES:
        return True
    if output.suffix and n_inputs == 1 and not named_dir:
        return True  # e.g. out.tif: rejected later with a clear message
    return False


def plan_outputs(
    files: Sequence[Path],
    output: str | os.PathLike | None,
    *,
    factor_label: str,
    suffix: str | None = None,
    ext: str | None = None,
    overwrite: bool = False,
    single_input: bool = False,
) -> list[Job]:
    """Decide each output path.

    - ``output`` None: next to each input, ``<stem><suffix>.<ext>`` (suffix default ``_x<factor>``).
    - ``output`` a file name (one input only; ends in .png/.jpg/.jpeg/.webp): exactly that file.
    - otherwise ``output`` is a folder (created): ``<stem><suffix>.<ext>`` inside it (suffix default
      empty).
    ``ext`` default: the input's own (png, jpg, webp), else png. An output that would overwrite an
    input, or the output of another input, fails that input; an existing output is skipped unless
    ``overwrite``.
    """
    ext = normalise_ext(ext)
    out = Path(output).expanduser() if output is not None else None
    jobs: list[Job] = []
    as_file = out is not None and _output_is_file(out, len(files), not single_input)
    if as_file and (len(files) != 1 or not single_input):
        raise DukdError(
            f"-o {output} names a file; with a folder, a glob or several inputs give an output folder"
        )
    inputs_real = {os.path.realpath(f) for f in files}
    taken: dict[str, Path] = {}
    for src in files:
        if as_file:
            assert out is not None
            e = out.suffix.lower().lstrip(".")
            if e not in EXT_ALIASES:
                raise DukdError(
                    f"-o {output}: unsupported output type '{out.suffix}' (use {', '.join(OUTPUT_EXTS)})"
                )
            if ext is not None and EXT_ALIASES[e] != ext:
                raise DukdError(f"-o {output} disagrees with --ext {ext}")
            dest = out
        else:
            sfx = suffix if suffix is not None else ("" if out is not None else f"_x{factor_label}")
            e = ext or _default_ext(src)
            folder = out if out is not None else src.parent
            dest = folder / f"{src.stem}{sfx}.{e}"
        job = Job(src, dest)
        real = os.path.realpath(dest)
        if real in inputs_real:
            job.status, job.message = (
                "failed",
                f"{src}: output {dest} would overwrite an input; use --suffix or -o",
            )
        elif real in taken:
            job.status, job.message = (
                "failed",
                f"{src}: output {dest} is also the output of {taken[real]}; rename one",
            )
        elif dest.exists() and not overwrite:
            job.status, job.message = "skipped", f"{dest} exists; skipped (use --overwrite to replace it)"
        if job.status != "failed":
            taken[real] = src
        jobs.append(job)
    return jobs


@dataclass
class UpscaleSummary:
    jobs: list[Job] = field(default_factory=list)
    input_errors: list[InputError] = field(default_factory=list)
    lanes: int = 1  # images processed at once (see dukd_cli.upscale.lanes)

    @property
    def done(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "done"]

    @property
    def skipped(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "skipped"]

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.input_errors


Report = Callable[[str, str], None]  # (kind: "error" | "notice" | "done", message)


def _about(source: Path, message: str) -> str:
    """``message`` naming ``source`` once (the reader's messages already name the file)."""
    return message if str(source) in message else f"{source}: {message}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _skip_summary(skipped: list[Job]) -> str:
    if len(skipped) == 1:
        return skipped[0].message
    return f"{len(skipped)} outputs exist (e.g. {skipped[0].dest}); skipped (use --overwrite to replace them)"


def check_suffix(suffix: str | None) -> None:
    """``--suffix`` is a fragment of a file name: no folder separators, no ``..``, no control
    characters (it would put the output somewhere other than beside its input, or in -o)."""
    if suffix is None:
        return
    seps = {"/", os.sep, os.altsep or "/"}
    bad = (
        any(c in seps or ord(c) < 32 or ord(c) == 127 for c in suffix) or ".." in suffix or len(suffix) > 100
    )
    if bad:
        raise DukdError(
            f"--suffix must be a plain file-name fragment (no '/', no '..', no control characters, "
            f"at most 100 characters), got {suffix!r}"
        )


def upscale_paths(
    model: Upscaler,
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike | None = None,
    *,
    suffix: str | None = None,
    ext: str | None = None,
    overwrite: bool = False,
    tile: int | str | None = None,
    tile_overlap: int | None = None,
    precision: str = "fp32",
    self_ensemble: bool = False,
    alpha_mode: str = "bicubic",
    outscale: float | None = None,
    quality: int = 95,
    png_level: int = DEFAULT_PNG_LEVEL,
    parallel: int | None = None,
    report: Report | None = None,
    on_advance: Callable[[Job], None] | None = None,
    on_plan: Callable[[list[Job]], None] | None = None,
    on_tile: Callable[[Job, int, int], None] | None = None,
    max_pixels: int | None = None,
) -> UpscaleSummary:
    """Upscale every image named by ``inputs`` (files, folders, globs) into ``output``.

    Every problem with one file is reported through ``report("error", line)`` and recorded;
    processing goes on with the next file. Existing outputs are reported once, in one ``notice``.
    ``summary.ok`` says whether everything succeeded. Problems with the options themselves
    (precision for this device, tile overlap, PNG level) raise :class:`DukdError` before any work.

    Reading the next image, computing this one and encoding the previous one overlap (one reader
    thread, one writer thread); each image is written band by band as its tiles finish (see
    :mod:`dukd_cli.upscale.job`), atomically. ``on_tile(job, done, total)`` follows the tiles.
    On the CPU, a folder of images small enough is processed several images at once instead
    (``parallel``, ``--jobs``: None for automatic, see :mod:`dukd_cli.upscale.lanes`). An output above
    ``max_pixels`` pixels (None: :data:`dukd_cli.models.sizeguard.MAX_OUTPUT_PIXELS`) fails its input before
    any computing.
    """
    from dukd_cli.upscale import lanes

    model = as_upscaler(model)
    say: Report = report or (lambda kind, msg: None)
    max_pixels, tile_overlap, png_level, precision = _check_options(
        model, tile, tile_overlap, precision, alpha_mode, outscale, suffix, png_level, max_pixels
    )
    summary, todo = _plan(model, inputs, output, outscale, suffix, ext, overwrite, say, on_plan, on_advance)
    outcomes = _Outcomes(say, on_advance)
    args = (tile, tile_overlap, precision, self_ensemble, alpha_mode, outscale, quality, png_level)
    device = model_device(model, torch.device("cpu"))
    plan = lanes.plan(
        model, [j.source for j in todo], device=device, precision=precision, tile=tile, jobs=parallel
    )
    summary.lanes = plan.lanes
    if plan.lanes > 1:
        _run_lanes(model, todo, args, max_pixels, plan.lanes, plan.threads, outcomes)
    else:
        _run_overlapped(model, todo, args, max_pixels, on_tile, outcomes)
    return summary


def _check_options(
    model: Upscaler,
    tile: int | str | None,
    tile_overlap: int | None,
    precision: str,
    alpha_mode: str,
    outscale: float | None,
    suffix: str | None,
    png_level: int,
    max_pixels: int | None,
) -> tuple[int, int, int, str]:
    """The options checked once, before any file: ``(max_pixels, tile_overlap, png_level, precision)``
    as they will be used."""
    from dukd_cli.images.pngstream import check_png_level
    from dukd_cli.models.sizeguard import check_max_pixels

    if alpha_mode not in ALPHA_MODES:
        raise DukdError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, not '{alpha_mode}'")
    if outscale is not None and float(outscale) <= 0:
        raise DukdError(f"--outscale must be positive, got {outscale}")
    if isinstance(tile, int) and tile < MIN_TILE:
        raise DukdError(
            f"--tile must be 'auto', 0 (whole images) or a size of at least {MIN_TILE} pixels, not '{tile}'"
        )
    check_suffix(suffix)
    max_pixels = check_max_pixels(max_pixels)
    tile_overlap = check_overlap(tile, tile_overlap)
    png_level = check_png_level(png_level)
    precision = check_precision(precision, model_device(model, torch.device("cpu")))  # once, not per file
    if not isinstance(model, torch.nn.Module) and precision != "fp32":
        raise DukdError(f"{type(model).__name__} runs in fp32 only; drop --precision {precision}")
    return max_pixels, tile_overlap, png_level, precision


def _plan(
    model: Upscaler,
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike | None,
    outscale: float | None,
    suffix: str | None,
    ext: str | None,
    overwrite: bool,
    say: Report,
    on_plan: Callable[[list[Job]], None] | None,
    on_advance: Callable[[Job], None] | None,
) -> tuple[UpscaleSummary, list[Job]]:
    """Collect the inputs and plan every output; report what cannot be read, what is skipped and
    what fails already. Returns the summary and the jobs still to do."""
    found = collect_inputs(inputs)
    files, in_errors = found.files, found.errors
    summary = UpscaleSummary(input_errors=in_errors)
    for e in in_errors:
        say("error", e.message)
    scale = int(model.scale)
    label = format_factor(float(outscale) if outscale is not None else scale)
    single = found.single_file
    jobs = plan_outputs(
        files, output, factor_label=label, suffix=suffix, ext=ext, overwrite=overwrite, single_input=single
    )
    summary.jobs = jobs
    if on_plan:
        on_plan(jobs)
    skipped = [j for j in jobs if j.status == "skipped"]
    if skipped:
        say("notice", _skip_summary(skipped))
    for job in jobs:
        if job.status == "failed":
            say("error", job.message)
        if job.status != "todo" and on_advance:
            on_advance(job)
    return summary, [j for j in jobs if j.status == "todo"]


#: What one file's failure may raise: reported for that file, the others go on.
_EXPECTED = (DukdError, RuntimeError, ValueError, OSError, MemoryError)


class _Outcomes:
    """Records and reports each job's end, in the jobs' order: the futures of files whose last bands
    may still be encoding wait in ``writing`` until they are collected."""

    def __init__(self, say: Report, on_advance: Callable[[Job], None] | None) -> None:
        self.say, self.on_advance = say, on_advance
        self.writing: list[tuple[Job, Any]] = []

    def fail(self, job: Job, exc: BaseException) -> None:
        if isinstance(exc, DukdError):
            job.status, job.message = "failed", _about(job.source, _short(exc))
        else:
            hint = " (try a smaller --tile, e.g. 256)" if "memory" in str(exc).lower() else ""
            job.status, job.message = (
                "failed",
                _about(job.source, f"{type(exc).__name__}: {_short(exc)}{hint}"),
            )
        self.say("error", job.message)

    def finish(self, job: Job, fut: Any) -> None:
        try:
            fut.result()
        except _EXPECTED as exc:
            self.fail(job, exc)
        else:
            job.status, job.message = "done", f"{job.source} -> {job.dest}"
            self.say("done", job.message)
        if self.on_advance:
            self.on_advance(job)

    def failed_early(self, job: Job, exc: BaseException) -> None:
        """``job`` failed before its writing started: report it after those before it."""
        self.collect(wait=True)  # keep the reports in order
        self.fail(job, exc)
        if self.on_advance:
            self.on_advance(job)

    def collect(self, wait: bool) -> None:
        while self.writing and (wait or self.writing[0][1].done()):
            self.finish(*self.writing.pop(0))


def _run_lanes(
    model: Upscaler,
    todo: list[Job],
    args: tuple[Any, ...],
    max_pixels: int,
    n_lanes: int,
    threads: int,
    outcomes: _Outcomes,
) -> None:
    """Several images at once, each whole in its own lane (see :mod:`dukd_cli.upscale.lanes`)."""
    from dukd_cli.images.imageio import read_image
    from dukd_cli.upscale import lanes
    from dukd_cli.upscale.job import upscale_job

    def work(job: Job) -> Any:
        img = read_image(job.source)
        res = upscale_job(model, img, job, *args, None, None, max_pixels=max_pixels)  # this lane, whole
        return res.result() if hasattr(res, "result") else res

    for job, fut in lanes.run(todo, work, n_lanes, threads):
        outcomes.finish(job, fut)


def _run_overlapped(
    model: Upscaler,
    todo: list[Job],
    args: tuple[Any, ...],
    max_pixels: int,
    on_tile: Callable[[Job, int, int], None] | None,
    outcomes: _Outcomes,
) -> None:
    """One image at a time, overlapped: the next is read (one reader thread) while this one computes,
    and the previous one's bands encode on the write pipeline."""
    from concurrent.futures import ThreadPoolExecutor

    from dukd_cli.images.bandwrite import WritePipeline
    from dukd_cli.images.imageio import read_image
    from dukd_cli.upscale.job import upscale_job

    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dukd-read")
    pipeline = WritePipeline(depth=2)
    ok = False
    try:
        ahead = reader.submit(read_image, todo[0].source) if todo else None
        for k, job in enumerate(todo):
            assert job.dest is not None and ahead is not None
            current, ahead = ahead, None

            def read_next(k: int = k) -> Any:
                return reader.submit(read_image, todo[k + 1].source) if k + 1 < len(todo) else None

            try:
                img = current.result()
                # Read the next image while this one computes, unless this one is huge (then two
                # inputs at once would cost more memory than the overlap saves time).
                if img.rgb.shape[0] * img.rgb.shape[1] <= PREFETCH_PIXELS:
                    ahead = read_next()
                fut = upscale_job(model, img, job, *args, pipeline, on_tile, max_pixels=max_pixels)
                del img
            except _EXPECTED as exc:
                outcomes.failed_early(job, exc)
            else:
                outcomes.writing.append((job, fut))
            if ahead is None:
                ahead = read_next()
            outcomes.collect(wait=False)
        outcomes.collect(wait=True)
        ok = True
    finally:
        if ahead is not None and not ok:
            ahead.cancel()
        reader.shutdown(wait=True, cancel_futures=not ok)
        pipeline.shutdown()  # let queued encodes finish: every started file ends whole or removed
