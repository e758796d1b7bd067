"""Fetch data sets into the cache: download (Hub or mirror), check, extract atomically.

``fetch(name, source=None)`` downloads the set's archive through :mod:`dukd_cli.sources` (the Hub
cache for ``hf://``, resumable downloads for ``https://``; a local archive or folder is read in
place), extracts it into a temporary folder beside the target, checks the image count and names
(:func:`dukd_cli.data.catalog.check_names`), and only then renames the images into the folder the
lookup reads (:func:`dukd_cli.data.catalog.target_dir`). A failed or interrupted fetch leaves
nothing there that would be taken for the set. ``SOURCE.json`` in the target records where the
images came from (source, revision, SHA-256 of the archive).

Accepted layouts (the catalog's and any mirror's): a ``.tar.gz``/``.tgz``/``.tar``/``.zip``
archive, or a folder, holding the images anywhere inside (``Urban100_HR/img_001.png``,
``Urban100/HR/img_001.png``, ``DIV2K_train_HR/0001.png`` ...); folders that look like LR
(``LR*``, ``X4`` ...) are skipped for HR sets.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dukd_cli.data.catalog import DataEntry, check_names, get, target_dir
from dukd_cli.errors import DukdError
from dukd_cli.sources.errors import SourceError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SOURCE_FILE = "SOURCE.json"

Status = Callable[[str], None]


@dataclass(frozen=True)
class Fetched:
    name: str
    path: Path
    source: str
    already: bool = False  # it was there before


def is_present(entry: DataEntry) -> bool:
    d = target_dir(entry)
    return d.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in _hr_dir(d).iterdir())


def _hr_dir(d: Path) -> Path:
    return d / "HR" if (d / "HR").is_dir() else d


def provenance(entry: DataEntry) -> dict:
    """What ``SOURCE.json`` of a fetched set says (empty when not fetched by dukd)."""
    try:
        return json.loads((target_dir(entry) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _looks_lr(part: str) -> bool:
    return bool(re.search(r"(^|[_\-])LR($|[_\-])", part, re.IGNORECASE)) or bool(
        re.fullmatch(r"[xX]\d", part)
    )


_SUFFIX = re.compile(r"[_\-](HR|GT)$", re.IGNORECASE)


def _stem(p: Path) -> str:
    return _SUFFIX.sub("", p.stem)


def _images(root: Path, lr: bool) -> list[Path]:
    """The images of the set under ``root``: those of the folder holding most of them."""
    by_dir: dict[Path, list[Path]] = {}
    for p in root.rglob("*"):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTS or p.name.startswith((".", "._")):
            continue
        rel = p.relative_to(root).parts[:-1]
        if "__MACOSX" in rel or (not lr and any(_looks_lr(d) for d in rel)):
            continue
        by_dir.setdefault(p.parent, []).append(p)
    if not by_dir:
        return []
    return sorted(max(by_dir.values(), key=len))


def _safe_extract(archive: Path, dest: Path) -> None:
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for m in z.namelist():
                    if m.startswith(("/", "\\")) or ".." in Path(m).parts:
                        raise DukdError(f"{archive} holds an unsafe path '{m}'; refusing to extract it")
                z.extractall(dest)
        elif name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
            with tarfile.open(archive) as t:
                t.extractall(dest, filter="data")
        else:
            raise DukdError(
                f"{archive.name} is not an archive dukd reads (.tar.gz, .tgz, .tar, .zip) nor a folder"
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DukdError(f"cannot extract {archive}: {exc}") from None


def _download(entry: DataEntry, source: str, on_status: Status | None) -> tuple[Path, str | None]:
    """A local archive or folder for ``source``, and the SHA-256 it was checked against."""
    from dukd_cli.sources import fetch as fetch_source
    from dukd_cli.sources import is_remote

    pin = entry.sha256 if source == entry.source else None
    if is_remote(source):
        return fetch_source(source, sha256=pin), pin
    p = Path(source).expanduser()
    if not p.exists():
        raise DukdError(
            f"--source {source}: no such file or folder (give hf://datasets/OWNER/REPO/FILE@REV, https://..., or a path)"
        )
    return p, None


def fetch(
    name: str,
    source: str | None = None,
    *,
    force: bool = False,
    on_status: Status | None = None,
) -> Fetched:
    """Fetch one data set (``name`` as in :mod:`dukd_cli.data.catalog`) into its cache folder."""
    entry = get(name)
    target = target_dir(entry)
    if is_present(entry) and not force:
        return Fetched(entry.name, target, provenance(entry).get("source", "(already there)"), already=True)
    src = source or entry.source
    if not src:
        raise DukdError(f"{entry.name}: {entry.notes or 'no source known'}; pass --source ARCHIVE_OR_FOLDER")
    if on_status is not None:
        size = entry.size_label() if src == entry.source else "size of the mirror unknown"
        on_status(f"fetching {entry.name} ({entry.images} images, {size}) from {src} into {target}")
    archive, pin = _download(entry, src, on_status)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{entry.name}-", dir=target.parent))
    try:
        if archive.is_dir():
            tree = archive
        else:
            tree = tmp / "extracted"
            tree.mkdir()
            _safe_extract(archive, tree)
        files = _images(tree, lr=entry.kind == "train-lr")
        why = check_names(entry, [_stem(p) for p in files])
        if why is not None:
            raise DukdError(f"{src} does not hold {entry.name}: {why}; nothing was written to {target}")
        result = tmp / "result"
        hr = result / "HR" if entry.kind == "bench" else result
        hr.mkdir(parents=True)
        for p in files:
            dst = hr / (_stem(p) + p.suffix.lower())
            if archive.is_dir():
                shutil.copy2(p, dst)
            else:
                os.replace(p, dst)
        record = {"name": entry.name, "source": src, "revision": _revision(src), "images": len(files)}
        if pin:
            record["sha256"] = pin
        (result / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        old = None
        if target.exists():  # --force: move the old one aside, then swap
            old = tmp / "old"
            os.replace(target, old)
        try:
            os.replace(result, target)
        except OSError:
            if old is not None:
                os.replace(old, target)
            raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return Fetched(entry.name, target, src)


def _revision(source: str) -> str | None:
    if source.startswith("hf://") and "@" in source:
        return source.split("#", 1)[0].rsplit("@", 1)[1]
    return None


def fetch_hint(name: str) -> str:
    return f"dukd data fetch {get(name).name.lower()}"


def ensure_benchmarks(
    names: list[str], *, download: bool, data_dir=None, on_status: Status | None = None
) -> None:
    """Fetch each named benchmark set the lookup does not find (``download=False``: say how instead).

    Folders and names the catalog does not know are left to :func:`dukd_cli.data.benchmarks.find_set`.
    """
    from dukd_cli.data.benchmarks import canonical_name, find_set
    from dukd_cli.sources import is_offline

    for n in names:
        canonical = canonical_name(n)
        if canonical is None:
            continue
        try:
            find_set(n, data_dir)
            continue
        except DukdError as exc:
            missing = str(exc)
        entry = get(canonical)
        if not entry.source:
            raise DukdError(f"{missing}; {entry.name}: {entry.notes}")
        if not download or is_offline():
            why = "HF_HUB_OFFLINE is set" if is_offline() else "--no-download"
            raise DukdError(
                f"{missing}; not downloaded ({why}): run '{fetch_hint(canonical)}' where the Hub is reachable, "
                f"{local_copy_hint(canonical)}"
            )
        try:
            fetch(canonical, on_status=on_status)
        except SourceError as exc:
            if not exc.unreachable:
                raise
            raise DukdError(f"{exc}; {local_copy_hint(canonical)}") from None


def local_copy_hint(name: str) -> str:
    """How to use a copy of benchmark set ``name`` that is here already (no network needed)."""
    entry = get(name)
    return (
        f"or use a copy you have: --data-dir DIR holding {entry.name}/HR/, or "
        f"'{fetch_hint(name)} --source ARCHIVE_OR_FOLDER'"
    )
