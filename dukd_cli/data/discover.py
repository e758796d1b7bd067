"""Training images: what one ``--data`` value names, found on disk (or fetched, for ``div2k``).

``--data SPEC`` (repeatable) accepts:

* ``div2k``: DIV2K's 800 training images (the paper's data), fetched once from a pinned Hub copy
  (:mod:`dukd_cli.data.catalog`; about 3.5 GB, announced with its cache path first); LR by the
  MATLAB-exact bicubic, or DIV2K's official bicubic LR where ``dukd data fetch div2k-lr-x{s}`` got it;
* ``builtin``: photographs bundled with scikit-image (astronaut, chelsea, coffee, rocket, ...), so
  ``dukd distill`` runs anywhere with nothing to download;
* the DIV2K layout: a folder holding ``DIV2K_train_HR`` (and optionally
  ``DIV2K_train_LR_bicubic/X{s}``), or ``DIV2K_train_HR`` itself;
* a paired layout: a folder holding ``HR/`` and ``LR/`` (or ``LR/X{s}``, ``LR_bicubic/X{s}``), files
  matched by name (an LR name may carry ``x{s}``, as DIV2K's ``0001x4.png`` does);
* any other folder: HR images, searched recursively (folders named like ``LR`` are skipped).

:func:`discover` returns the images (HR and, where the layout has one, LR) and a short description
of the layout found; decoding and patching them is :mod:`dukd_cli.distill.data`'s work.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dukd_cli.errors import DukdError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
BUILTIN = "builtin"
DIV2K = "div2k"  # DIV2K's 800 training images, fetched once from a pinned Hub copy
# Photographs shipped inside scikit-image's wheel (skimage/data/), RGB.
BUILTIN_FILES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "ihc.png",
)


@dataclass(frozen=True)
class Source:
    """One training image: its HR file and, where the dataset provides one, its LR file."""

    hr: Path
    lr: Path | None = None


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    for p in it:
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            rel = p.relative_to(folder).parts[:-1]
            if recursive and any(_looks_lr(d) for d in rel):
                continue
            out.append(p)
    return sorted(out)


def _looks_lr(dirname: str) -> bool:
    return bool(re.search(r"(^|[_\-])LR($|[_\-])", dirname)) or bool(re.fullmatch(r"[xX]\d", dirname))


def _lr_dir(candidates: Sequence[Path]) -> Path | None:
    for c in candidates:
        if c.is_dir() and _images_in(c, False):
            return c
    return None


def _pair(hr_files: list[Path], lr_dir: Path | None, scale: int) -> list[Source]:
    if lr_dir is None:
        return [Source(p) for p in hr_files]
    suffix = re.compile(rf"[_\-]?[xX]{scale}$")
    by_stem = {suffix.sub("", p.stem): p for p in _images_in(lr_dir, False)}
    out = []
    for p in hr_files:
        lr = by_stem.get(p.stem)
        if lr is None:
            raise DukdError(
                f"no LR image for {p.name} in {lr_dir} (expected e.g. {p.stem}x{scale}{p.suffix})"
            )
        out.append(Source(p, lr))
    return out


def builtin_sources() -> list[Source]:
    try:
        import skimage.data
    except ImportError:  # pragma: no cover - a declared dependency
        raise DukdError("--data builtin needs scikit-image (pip install scikit-image)") from None
    root = Path(skimage.data.__file__).parent
    found = [root / f for f in BUILTIN_FILES if (root / f).is_file()]
    if not found:
        raise DukdError(f"scikit-image's sample photographs were not found in {root}; pass --data FOLDER")
    return [Source(p) for p in found]


def discover(spec: str | os.PathLike, scale: int) -> tuple[list[Source], str]:
    """The images behind one ``--data`` value, and a short description of the layout found."""
    s = os.fspath(spec)
    if s == BUILTIN:
        return builtin_sources(), "scikit-image sample photographs"
    if s.lower() == DIV2K and not Path(s).exists():
        path = div2k_folder(scale)  # fetched once from the pinned Hub copy (announced first)
        srcs, layout = discover(path, scale)
        return srcs, f"DIV2K from the pinned Hub copy ({layout})"
    path = Path(s).expanduser()
    if not path.exists():
        raise DukdError(f"training data not found: {s} (a folder of HR images, a DIV2K folder, or 'builtin')")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTS:
            raise DukdError(f"{s} is not an image file")
        return [Source(path)], "one HR image"
    if (path / "DIV2K_train_HR").is_dir() or path.name == "DIV2K_train_HR":
        hr_dir = path / "DIV2K_train_HR" if path.name != "DIV2K_train_HR" else path
        root = hr_dir.parent
        lr_dir = _lr_dir(
            [root / "DIV2K_train_LR_bicubic" / f"X{scale}", root / "DIV2K_train_LR_bicubic" / f"x{scale}"]
        )
        srcs = _pair(_images_in(hr_dir, False), lr_dir, scale)
        return srcs, "DIV2K layout, " + (f"LR from {lr_dir.name}/" if lr_dir else "LR made by exact bicubic")
    if (path / "HR").is_dir():
        lr_dir = _lr_dir(
            [
                path / "LR" / f"X{scale}",
                path / "LR" / f"x{scale}",
                path / "LR_bicubic" / f"X{scale}",
                path / "LR_bicubic" / f"x{scale}",
                path / "LR",
            ]
        )
        srcs = _pair(_images_in(path / "HR", True), lr_dir, scale)
        return srcs, "HR/LR paired layout" if lr_dir else "HR folder (LR made by exact bicubic)"
    files = _images_in(path, True)
    if not files:
        raise DukdError(f"no images found in {s} (looked for {', '.join(sorted(IMAGE_EXTS))}, recursively)")
    return [Source(p) for p in files], "folder of HR images (LR made by exact bicubic)"


def div2k_folder(scale: int, on_status: Callable[[str], None] | None = None) -> Path:
    """The DIV2K folder (``DIV2K_train_HR`` and any official LR), fetching the HR images once."""
    from dukd_cli.data.catalog import get, target_dir
    from dukd_cli.data.fetch import fetch, fetch_hint, is_present
    from dukd_cli.sources.errors import SourceError
    from dukd_cli.sources.hub import is_offline

    entry = get("DIV2K")
    if not is_present(entry):
        if is_offline():
            raise DukdError(
                f"DIV2K is not in {target_dir(entry)} and HF_HUB_OFFLINE is set; run '{fetch_hint('DIV2K')}' "
                "where the Hub is reachable (or pass --data FOLDER)"
            )
        say = on_status or (lambda m: print(m, file=sys.stderr, flush=True))
        say(
            f"--data div2k: downloading DIV2K's 800 training images once ({entry.size_label()}) "
            f"into {target_dir(entry)} (LR made by MATLAB-exact bicubic)"
        )
        try:
            fetch("DIV2K", on_status=say)
        except SourceError as exc:
            if not exc.unreachable:
                raise
            raise DukdError(
                f"{exc}; or train on images you have: --data FOLDER (HR images), or "
                f"'{fetch_hint('DIV2K')} --source ARCHIVE_OR_FOLDER' with a copy of DIV2K"
            ) from None
    return target_dir(entry).parent
