"""Training data: HR/LR patch pairs from folders, DIV2K, paired layouts or bundled sample photos.

``--data SPEC`` (repeatable) names the images; :mod:`dukd_cli.data.discover` finds them (DIV2K,
HR/LR pairs, folders, ``builtin``).

Every image is decoded once with the project's one reader (:mod:`dukd_cli.images.imageio`) into an
uncompressed ``.npy`` cache (keyed by the file's SHA-256); a missing LR is made with the
MATLAB-exact bicubic of the mod-cropped HR and cached under the HR's hash and the scale. Training
then memory-maps the cache, so patches are read without decoding, in worker processes.

Determinism: a patch is a pure function of ``(seed, global sample index)``. The sampler walks a
per-epoch permutation of the images (seeded by ``(seed, epoch)``); the crop position and the
flips/rotation of sample ``g`` come from a generator seeded by ``(seed, g)``. Data order therefore
does not depend on the number of worker processes, resumes exactly from an iteration number, and
shards across DDP ranks as consecutive slices of one global batch.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dukd_cli.data.discover import Source, discover
from dukd_cli.errors import DukdError
from dukd_cli.runtime.cache import cache_root
from dukd_cli.runtime.fsutil import atomic_path, atomic_write_text
from dukd_cli.runtime.threads import available_cores
from dukd_cli.sources.hashing import sha256_file  # the project's one SHA-256 helper

# --------------------------------------------------------------------------------------------
# The decode cache
# --------------------------------------------------------------------------------------------


class _HashIndex:
    """Remembers file hashes by (path, size, mtime) so unchanged files are not re-read every run."""

    def __init__(self, root: Path) -> None:
        self.path = root / "hash-index.json"
        try:
            self.data: dict[str, str] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.dirty = False
        self._touched = False  # a file was hashed (new or changed): images were probably decoded

    def sha(self, p: Path) -> str:
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self.data:
            self.data[key] = sha256_file(p)
            self.dirty = self._touched = True
        return self.data[key]

    @property
    def dirty_since_load(self) -> bool:
        return self._touched

    def save(self) -> None:
        if self.dirty:
            atomic_write_text(self.path, json.dumps(self.data))
            self.dirty = False


def _trim_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``; elsewhere nothing).

    Filling the cache decodes and resizes every image in a thread pool; glibc keeps what those
    threads freed in their arenas, ~40 MiB of resident memory for the rest of a run on the
    built-in photos (``benchmarks/distill_memory.py``)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(arr))


def _decode(path: Path) -> np.ndarray:
    from dukd_cli.images.imageio import read_rgb_uint8

    try:
        return read_rgb_uint8(path)
    except DukdError:
        raise
    except Exception as exc:  # an unreadable file: say which
        raise DukdError(f"cannot read training image {path}: {exc}") from None


def _bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    from dukd_cli.data.imresize import imresize, modcrop

    t = torch.from_numpy(np.array(modcrop(hr, scale), copy=True)).permute(2, 0, 1)
    return imresize(t, 1.0 / scale).permute(1, 2, 0).contiguous().numpy()


@dataclass(frozen=True)
class Item:
    """One cached training image: memory-mappable HR and LR arrays (H, W, 3) uint8."""

    name: str
    hr: str
    lr: str
    lr_h: int
    lr_w: int


@dataclass
class TrainingSet:
    """What the ``--data`` values resolved to."""

    items: list[Item]
    skipped: list[str] = field(default_factory=list)  # images smaller than a patch
    layouts: list[str] = field(default_factory=list)
    patch_size: int = 0  # the LR patch side the images were checked against
    smallest_side: int = 0  # the smallest LR side of all images found (a patch that keeps them all)

    def summary(self) -> str:
        s = f"{len(self.items)} training images"
        if self.skipped:
            s += f" ({len(self.skipped)} smaller than a {self.patch_size} px LR patch skipped"
            if self.smallest_side:
                total = len(self.items) + len(self.skipped)
                s += f"; --patch-size {self.smallest_side} keeps all {total}"
            s += ")"
        return s


# CPython 3.11 (what CI runs) keeps the AST converter's recursion counter in state that all threads
# share, so two threads parsing at once can fail with "SystemError: AST constructor recursion depth
# mismatch" (python/cpython#106905). ``np.load`` parses every .npy header with ``ast.literal_eval``:
# the preparation pool opens one file at a time (a header and a memory map; the pixels are read
# outside the lock).
_NPY_OPEN_LOCK = threading.Lock()


def _npy_map(path: Path) -> np.ndarray:
    with _NPY_OPEN_LOCK:
        return np.load(path, mmap_mode="r")


def _npy_shape(path: Path) -> tuple[int, ...]:
    return tuple(_npy_map(path).shape)


def _prepare_one(src: Source, root: Path, index: _HashIndex, scale: int) -> tuple[str, str, int, int]:
    """Fill the cache for one image; returns (hr_npy, lr_npy, lr_h, lr_w)."""
    sha = index.sha(src.hr)
    hr_npy = root / "hr" / sha[:2] / f"{sha}.npy"
    hr_arr = None
    if not hr_npy.is_file():
        hr_arr = _decode(src.hr)
        _save_npy(hr_npy, hr_arr)
    hr_shape = hr_arr.shape if hr_arr is not None else _npy_shape(hr_npy)
    if src.lr is not None:
        lsha = index.sha(src.lr)
        lr_npy = root / "lr" / lsha[:2] / f"{lsha}.npy"
        if not lr_npy.is_file():
            _save_npy(lr_npy, _decode(src.lr))
        lh, lw = _npy_shape(lr_npy)[:2]
        if (lh, lw) != (hr_shape[0] // scale, hr_shape[1] // scale):
            raise DukdError(
                f"{src.lr} is {lw}x{lh} but its HR {src.hr.name} is {hr_shape[1]}x{hr_shape[0]}; "
                f"at x{scale} the LR should be {hr_shape[1] // scale}x{hr_shape[0] // scale}"
            )
    else:
        lr_npy = root / "lr" / sha[:2] / f"{sha}_x{scale}.npy"
        if not lr_npy.is_file():
            if hr_arr is None:
                hr_arr = np.array(_npy_map(hr_npy))
            _save_npy(lr_npy, _bicubic_lr(hr_arr, scale))
        lh, lw = hr_shape[0] // scale, hr_shape[1] // scale
    return str(hr_npy), str(lr_npy), int(lh), int(lw)


def prepare(
    specs: Sequence[str],
    scale: int,
    patch_size: int,
    cache_dir: str | os.PathLike | None = None,
    *,
    threads: int | None = None,
) -> TrainingSet:
    """Discover the images, fill the decode/LR cache where needed, and drop images smaller than a patch.

    Images are prepared by a thread pool (decoding and the bicubic release the GIL), so a first run
    on DIV2K takes a fraction of the single-threaded time; the result's order is the data's order.
    """
    from concurrent.futures import ThreadPoolExecutor

    scale, p = int(scale), int(patch_size)
    root = cache_root(cache_dir) / "train"
    root.mkdir(parents=True, exist_ok=True)
    index = _HashIndex(root)
    out = TrainingSet([], patch_size=p)
    n_threads = threads or min(8, available_cores())
    try:
        sources: list[Source] = []
        for spec in specs:
            found, layout = discover(spec, scale)
            out.layouts.append(f"{spec}: {len(found)} images, {layout}")
            sources.extend(found)
        if n_threads > 1 and len(sources) > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                results = list(pool.map(lambda s: _prepare_one(s, root, index, scale), sources))
        else:
            results = [_prepare_one(s, root, index, scale) for s in sources]
        for src, (hr_npy, lr_npy, lh, lw) in zip(sources, results, strict=True):
            side = min(lh, lw)
            out.smallest_side = side if not out.smallest_side else min(out.smallest_side, side)
            if lh < p or lw < p:
                out.skipped.append(str(src.hr))
                continue
            out.items.append(Item(str(src.hr), hr_npy, lr_npy, lh, lw))
    finally:
        index.save()
    if index.dirty_since_load:
        _trim_heap()  # decoding and resizing freed tens of MiB the C heap would otherwise keep
    if not out.items:
        raise DukdError(
            f"no training image is large enough for a {p} px LR patch at x{scale} "
            f"({len(out.skipped)} skipped); lower --patch-size or add data"
        )
    return out


# --------------------------------------------------------------------------------------------
# Sampling patches
# --------------------------------------------------------------------------------------------


class PatchDataset(Dataset):
    """Random LR patches with aligned HR patches; indexed by ``(image, global sample index)``.

    Returns uint8 (3, p, p) and (3, p*s, p*s) tensors (converted to float on the training device:
    a quarter of the bytes to move).
    """

    def __init__(
        self, items: Sequence[Item], scale: int, patch_size: int, seed: int, augment: bool = True
    ) -> None:
        self.items = list(items)
        self.scale, self.p, self.seed, self.augment = int(scale), int(patch_size), int(seed), augment
        self._maps: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _map(self, path: str) -> np.ndarray:
        arr = self._maps.get(path)
        if arr is None:
            arr = self._maps[path] = _npy_map(Path(path))
        return arr

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}  # memory maps are reopened in each worker
        return state

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx, g = key
        it = self.items[idx]
        s, p = self.scale, self.p
        rng = np.random.default_rng([self.seed, 1, int(g)])
        top = int(rng.integers(0, it.lr_h - p + 1))
        left = int(rng.integers(0, it.lr_w - p + 1))
        flips = rng.random(3) < 0.5 if self.augment else np.zeros(3, bool)
        lr = self._map(it.lr)[top : top + p, left : left + p]
        hr = self._map(it.hr)[s * top : s * (top + p), s * left : s * (left + p)]
        out = []
        for a in (lr, hr):
            if flips[0]:
                a = a[:, ::-1]
            if flips[1]:
                a = a[::-1]
            if flips[2]:
                a = a.transpose(1, 0, 2)
            out.append(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))))
        return out[0], out[1]


class PatchBatchSampler(Sampler):
    """An endless, deterministic stream of batches of ``(image, global sample index)`` keys.

    Iteration ``t`` has a global batch of ``batch_size * world`` samples, indices
    ``g = t * batch_size * world + j``; rank ``r`` takes the slice ``[r * batch_size, (r+1) * batch_size)``.
    Sample ``g`` is image ``perm_e[g mod N]`` of epoch ``e = g // N`` (a permutation seeded by
    ``(seed, e)``). Starting at ``start_iter`` resumes the stream exactly.
    """

    def __init__(
        self, n_images: int, batch_size: int, seed: int, *, start_iter: int = 0, world: int = 1, rank: int = 0
    ):
        if n_images < 1:
            raise ValueError("no images to sample")
        self.n, self.b, self.seed = int(n_images), int(batch_size), int(seed)
        self.start, self.world, self.rank = int(start_iter), int(world), int(rank)
        self._perm: tuple[int, np.ndarray] | None = None

    def _image(self, g: int) -> int:
        e, i = divmod(g, self.n)
        if self._perm is None or self._perm[0] != e:
            self._perm = (e, np.random.default_rng([self.seed, 0, e]).permutation(self.n))
        return int(self._perm[1][i])

    def batch_keys(self, iteration: int) -> list[tuple[int, int]]:
        base = iteration * self.b * self.world + self.rank * self.b
        return [(self._image(g), g) for g in range(base, base + self.b)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        t = self.start
        while True:
            yield self.batch_keys(t)
            t += 1


def _worker_init(_worker_id: int) -> None:
    """Workers ignore Ctrl-C: the main process finishes its iteration, saves, and shuts them down
    (a worker that died on SIGINT would make the next batch fetch fail instead)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    dataset: PatchDataset,
    batch_size: int,
    seed: int,
    *,
    start_iter: int = 0,
    world: int = 1,
    rank: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over the deterministic batch stream (worker processes when ``workers > 0``)."""
    sampler = PatchBatchSampler(len(dataset), batch_size, seed, start_iter=start_iter, world=world, rank=rank)
    kwargs = {}
    if workers > 0:
        kwargs = {"persistent_workers": False, "prefetch_factor": 4, "worker_init_fn": _worker_init}
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=int(workers), pin_memory=pin_memory, **kwargs
    )
