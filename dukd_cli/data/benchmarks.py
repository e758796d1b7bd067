"""Benchmark sets: names, where they live on disk, and their HR/LR pairs.

A set is found by name (case-insensitive; aliases below) or given as a folder. Lookup order for a
name: ``--data-dir`` (the ``data_dir`` argument), then ``$DUKD_DATA``, then the user cache directory
``$XDG_CACHE_HOME/dukd/benchmarks`` (``~/.cache/dukd/benchmarks``). Inside a root, a set is either
``NAME/HR/*`` (optionally with ``NAME/LR_bicubic/X{s}/*``) or a flat folder ``NAME/*`` of images.

LR images are made from the mod-cropped HR with the MATLAB-exact bicubic by default
(``docs/protocol.md``); ``lr_source="provided"`` reads ``LR_bicubic/X{s}`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dukd_cli.errors import DukdError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# canonical display name -> folder names to try (first match wins); keys of ALIASES are lower-case
SETS: dict[str, tuple[str, ...]] = {
    "Set5": ("Set5", "set5", "SET5"),
    "Set14": ("Set14", "set14", "SET14"),
    "BSD100": ("BSD100", "B100", "BSDS100", "bsd100", "b100", "bsds100"),
    "Urban100": ("Urban100", "urban100", "URBAN100"),
    "Manga109": ("Manga109", "manga109", "MANGA109"),
    "DIV2K-valid": ("DIV2K-valid", "DIV2K_valid", "DIV2K_valid_HR", "div2k-valid", "div2k_valid", "DIV2K"),
}
ALIASES: dict[str, str] = {
    "set5": "Set5",
    "set14": "Set14",
    "bsd100": "BSD100",
    "b100": "BSD100",
    "bsds100": "BSD100",
    "urban100": "Urban100",
    "manga109": "Manga109",
    "div2k-valid": "DIV2K-valid",
    "div2k_valid": "DIV2K-valid",
    "div2kvalid": "DIV2K-valid",
    "div2k-val": "DIV2K-valid",
    "div2k": "DIV2K-valid",
}
PAPER_SETS = ("Set5", "Set14", "BSD100", "Urban100")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dukd" / "benchmarks"


def search_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for named sets, in order."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get("DUKD_DATA")
    if env:
        roots.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    roots.append(cache_dir())
    return roots


def canonical_name(name: str) -> str | None:
    return ALIASES.get(name.strip().lower())


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


@dataclass(frozen=True)
class BenchSet:
    """A located benchmark set."""

    name: str  # display name (canonical, or the folder name)
    root: Path  # the set's folder
    hr_dir: Path
    lr_root: Path | None  # LR_bicubic folder, if there is one

    def images(self) -> list[Path]:
        return list_images(self.hr_dir)

    def provided_lr(self, hr: Path, scale: int) -> Path:
        if self.lr_root is None:
            raise DukdError(f"{self.name}: no LR_bicubic folder next to {self.hr_dir} (drop --lr-provided)")
        folder = self.lr_root / f"X{scale}"
        if not folder.is_dir():
            folder = self.lr_root / f"x{scale}"
        for cand in (f"{hr.stem}x{scale}", hr.stem, f"{hr.stem}_x{scale}", f"{hr.stem}_LRBI_x{scale}"):
            for ext in (hr.suffix, ".png"):
                p = folder / f"{cand}{ext}"
                if p.is_file():
                    return p
        raise DukdError(f"{self.name}: no provided LR for {hr.name} in {folder}")


def _as_set(folder: Path, display: str) -> BenchSet | None:
    if not folder.is_dir():
        return None
    hr = folder / "HR"
    if hr.is_dir() and list_images(hr):
        lr = folder / "LR_bicubic"
        return BenchSet(display, folder, hr, lr if lr.is_dir() else None)
    if folder.name.endswith("_HR") and list_images(folder):  # DIV2K_valid_HR + DIV2K_valid_LR_bicubic
        lr = folder.with_name(folder.name[: -len("_HR")] + "_LR_bicubic")
        return BenchSet(display, folder, folder, lr if lr.is_dir() else None)
    if list_images(folder):
        lr = folder / "LR_bicubic"
        return BenchSet(display, folder, folder, lr if lr.is_dir() else None)
    return None


def find_set(name: str, data_dir: str | os.PathLike | None = None) -> BenchSet:
    """Locate a benchmark set by name or path; a clear one-line error when it is nowhere."""
    p = Path(name).expanduser()
    canonical = canonical_name(name)
    if canonical is None and (p.is_dir() or os.sep in name or name.startswith(".")):
        found = _as_set(p, p.name)
        if found is None:
            raise DukdError(f"benchmark folder {p} holds no images (expected {p}/HR/*.png or {p}/*.png)")
        return found
    if canonical is None:
        known = ", ".join(SETS)
        raise DukdError(f"unknown benchmark '{name}'; known sets: {known} (or give a folder of HR images)")
    roots = search_roots(data_dir)
    for root in roots:
        for folder_name in SETS[canonical]:
            found = _as_set(root / folder_name, canonical)
            if found is not None:
                return found
    where = ", ".join(str(r) for r in roots)
    raise DukdError(
        f"benchmark {canonical} not found (looked in {where}); put it at <dir>/{canonical}/HR/ and pass "
        f"--data-dir <dir>, or set DUKD_DATA"
    )


def available_sets(
    names: Iterable[str] = PAPER_SETS, data_dir: str | os.PathLike | None = None
) -> list[BenchSet]:
    out = []
    for n in names:
        try:
            out.append(find_set(n, data_dir))
        except DukdError:
            pass
    return out


@dataclass(frozen=True)
class Pair:
    name: str  # image stem
    hr: np.ndarray  # HxWx3 uint8, mod-cropped
    lr: np.ndarray  # (H/s)x(W/s)x3 uint8


def make_lr(hr_uint8: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` on a mod-cropped uint8 HxWx3 image."""
    import torch

    from dukd_cli.data.imresize import imresize

    t = torch.from_numpy(np.array(hr_uint8)).permute(2, 0, 1)
    return imresize(t, 1.0 / scale).permute(1, 2, 0).contiguous().numpy()


@lru_cache(maxsize=256)
def _load_pair(hr_path: str, scale: int, lr_path: str | None, _stamp: tuple) -> Pair:
    """Decode one pair; ``_stamp`` (file sizes and mtimes) invalidates the cache when files change."""
    from dukd_cli.data.imresize import modcrop
    from dukd_cli.images.imageio import read_rgb_uint8

    hr = modcrop(read_rgb_uint8(hr_path), scale)
    if lr_path is None:
        lr = make_lr(hr, scale)
    else:
        lr = read_rgb_uint8(lr_path)
        if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
            raise DukdError(
                f"provided LR {lr_path} is {lr.shape[1]}x{lr.shape[0]}, expected "
                f"{hr.shape[1] // scale}x{hr.shape[0] // scale} for x{scale}"
            )
    hr.setflags(write=False)
    lr.setflags(write=False)
    return Pair(Path(hr_path).stem, hr, lr)


def load_pairs(bench: BenchSet, scale: int, *, lr_provided: bool = False, max_images: int | None = None):
    """Yield the set's (mod-cropped HR, LR) pairs; decoded pairs are cached in memory for re-use."""
    paths = bench.images()
    if max_images is not None:
        paths = paths[:max_images]
    for p in paths:
        lr_path = str(bench.provided_lr(p, scale)) if lr_provided else None
        stamp = tuple((st.st_mtime_ns, st.st_size) for st in [os.stat(q) for q in (p, lr_path) if q])
        yield _load_pair(str(p), int(scale), lr_path, stamp)
