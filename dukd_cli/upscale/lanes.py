"""Several images at once on the CPU: one torch thread per lane instead of every thread on one image.

A CPU forward pass split over ``N`` OpenMP threads pays a barrier after every operator: the
threads meet, the fast ones wait (with ``OMP_WAIT_POLICY=PASSIVE``, which ``dukd`` sets so that
training stays steady under load, they sleep and are woken). A small image at x4 is hundreds of
small operators, so the meetings cost a fair part of the time (``benchmarks/upscale_vs_loop.py``).
A folder of small images is better served by *lanes*: ``N`` worker threads, each reading,
upscaling and writing whole images on its own with ``cores / N`` torch threads (torch's thread
count is per calling thread), so no operator waits for another core.

:func:`plan` decides (``--jobs auto``): lanes on the CPU, for a PyTorch model, with at least two
images to do, when every image is processed whole within its lane's share of the memory budget
(the tile budget of :func:`dukd_cli.upscale.inference.auto_tile` divided by the lanes, so the peak stays
what one lane would use; sizes come from the files' headers, nothing is decoded to decide); otherwise one lane, all threads on one image (the band pipeline of
:func:`dukd_cli.upscale.paths.upscale_paths`). Pixels differ from the one-lane path at most by the
last bit of float32 (a convolution's sums are split differently over threads) before rounding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dukd_cli.errors import DukdError
from dukd_cli.models.upscaler import Upscaler, size_rules

#: At most this many lanes when chosen automatically (more cost memory and gain little).
MAX_AUTO_LANES = 8


@dataclass(frozen=True)
class LanePlan:
    lanes: int  # images in flight
    threads: int  # torch threads per lane
    reason: str  # why (for --dry-run style notes and tests)


def parse_jobs(value: str | int | None) -> int | None:
    """``--jobs``: ``auto`` (None) or a positive integer; a one-line error otherwise."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise DukdError(f"--jobs must be 'auto' or a positive integer, not '{value}'") from None
    if n < 1:
        raise DukdError(f"--jobs must be 'auto' or a positive integer, not '{value}'")
    return n


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) from the file's header (nothing decoded), or None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:
        return None
    return int(h), int(w)


def whole_side(model: Upscaler, device: torch.device, precision: str, lanes: int) -> int | None:
    """The largest side an image may have to be processed whole in one of ``lanes`` lanes (None:
    the model takes fixed-size tiles only)."""
    from dukd_cli.upscale.inference import auto_tile

    if size_rules(model).fixed is not None:
        return None
    huge = 1 << 20
    side = auto_tile(
        model,
        huge,
        huge,
        device,
        precision=precision,
        budget_fraction=0.5 / lanes,
        cpu_cap=(1 << 30) // lanes,
    )
    return side


def plan(
    model: Upscaler,
    sources: Sequence[Path],
    *,
    device: torch.device,
    precision: str,
    tile: int | str | None,
    jobs: int | None = None,
    threads: int | None = None,
) -> LanePlan:
    """How many images to process at once (see the module docs); ``jobs`` is ``--jobs`` (None: auto)."""
    total = max(1, int(threads if threads is not None else torch.get_num_threads()))
    n = len(sources)
    if jobs is not None:
        if jobs > 1 and device.type != "cpu":
            raise DukdError(f"--jobs {jobs} applies to the CPU only; on {device.type} drop it (or use 1)")
        lanes = max(1, min(int(jobs), n))
        return LanePlan(lanes, max(1, total // lanes), f"--jobs {jobs}")
    if device.type != "cpu":
        return LanePlan(1, total, f"one image at a time on {device.type}")
    if not isinstance(model, torch.nn.Module):
        return LanePlan(1, total, "one image at a time: the runtime has its own threads")
    if n < 2 or total < 2:
        return LanePlan(1, total, "one image" if n < 2 else "one core")
    if isinstance(tile, int) and tile > 0:
        return LanePlan(1, total, "one image at a time: tiles of --tile size")
    # A file whose header cannot be read fails as soon as its lane reads it: it needs no memory.
    longest = max((max(hw) for hw in map(image_size, sources) if hw is not None), default=0)
    # The most lanes whose share of the memory budget still holds the largest image whole.
    for lanes in range(min(total, n, MAX_AUTO_LANES), 1, -1):
        side = whole_side(model, device, precision, lanes)
        if side is None:
            return LanePlan(1, total, "one image at a time: the model takes fixed-size tiles")
        if longest <= side:
            return LanePlan(lanes, total // lanes, f"{lanes} images at once, {total // lanes} thread(s) each")
    return LanePlan(1, total, f"one image at a time: images up to {longest} px need the memory")


def run(
    items: Sequence[Any], work: Callable[[Any], Any], lanes: int, threads: int
) -> Iterator[tuple[Any, Future]]:
    """Run ``work(item)`` on ``lanes`` threads (each with ``threads`` torch threads); yields
    ``(item, future)`` in the order of ``items`` as each finishes, keeping at most ``2 * lanes``
    items started ahead. On an early exit (an exception or the caller stopping) the items not yet
    started are cancelled and the running ones are waited for (each writes its file atomically)."""

    def init() -> None:
        torch.set_num_threads(threads)  # per calling thread

    pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="dukd-lane", initializer=init)
    pending: list[tuple[Any, Future]] = []
    it = iter(items)
    ok = False
    try:

        def top_up() -> None:
            while len(pending) < 2 * lanes:
                try:
                    item = next(it)
                except StopIteration:
                    return
                pending.append((item, pool.submit(work, item)))

        top_up()
        while pending:
            item, fut = pending[0]
            fut.exception()  # wait; a KeyboardInterrupt here ends the loop
            pending.pop(0)
            top_up()
            yield item, fut
        ok = True
    finally:
        pool.shutdown(wait=True, cancel_futures=not ok)
