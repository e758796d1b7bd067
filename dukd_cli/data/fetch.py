"""Fetch data sets into the cache: download (Hub or mirror), check, extract atomically.

``fetch(name, source=None)`` downloads the set's archive through :mod:`dukd_cli.sources` (the Hub
cache for ``hf://``, resumable downloads for ``https://``; a local archive or folder is read in
place), extracts it into a temporary folder beside the target, checks the image count and names
(:func:`dukd_cli.data.catalog.check_names`), and only then renames the images into the folder the
lookup reads (:func:`dukd_cli.data.catalog.target_dir`). A failed or interrupted fetch leaves
nothing there that would be taken for the set. ``SOURCE.json`` in the target records where the
images came from (source, revision, SHA-256 of the archive).

Safety (:mod:`dukd_cli.data.extract`): archive members are extracted one by one, regular files
only (no links, devices or FIFOs), with relative names that appear once (also after case-folding),
counted against byte limits while they are written; a folder source is copied regular file by
regular file, never through a symbolic link. Every image's header and dimensions are checked and
no two files may land on one name before anything is installed. One fetch of a set at a time: an
advisory lock ``.<folder>.lock`` beside the set's folder (a second fetch waits, with a line naming
the holder's PID). Temporary ``.fetch-<set>-<pid>-*`` folders carry their process's PID; a later
fetch removes those whose process is gone (killed during extraction).

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
import stat
import tempfile
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


def _images(root: Path, lr: bool, *, links_refused: str = "") -> list[Path]:
    """The images of the set under ``root``: those of the folder holding most of them.

    The walk never follows a symbolic link; an image-named entry that is not a regular file (a
    link, a FIFO ...) is refused with one line naming ``links_refused`` (the source).
    """
    by_dir: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        rel = d.relative_to(root).parts
        if "__MACOSX" in rel or (not lr and any(_looks_lr(x) for x in rel)):
            dirnames[:] = []
            continue
        for fn in filenames + [x for x in dirnames if (d / x).is_symlink()]:
            p = d / fn
            if p.suffix.lower() not in IMAGE_EXTS or fn.startswith((".", "._")):
                continue
            mode = p.lstat().st_mode
            if not stat.S_ISREG(mode):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise DukdError(
                    f"{links_refused or root}: {p.relative_to(root)} is {kind}; dukd copies regular files "
                    "only (put the file itself there)"
                )
            by_dir.setdefault(d, []).append(p)
    if not by_dir:
        return []
    return sorted(max(by_dir.values(), key=len))


def _install_names(files: list[Path], src: str) -> dict[Path, str]:
    """The file name each image is installed under; refuses two images landing on one name."""
    out: dict[Path, str] = {}
    seen: dict[str, Path] = {}
    for p in files:
        name = _stem(p) + p.suffix.lower()
        key = name.casefold()
        if key in seen:
            raise DukdError(
                f"{src}: {seen[key].name} and {p.name} would both be installed as {name}; "
                "refusing a set whose images would replace each other"
            )
        seen[key] = p
        out[p] = name
    return out


def _check_images(files: list[Path], root: Path, src: str) -> None:
    from dukd_cli.data.extract import check_image

    for p in files:
        why = check_image(p)
        if why is not None:
            raise DukdError(f"{src}: {p.relative_to(root)} is not a usable image ({why}); refusing the set")


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


TMP_PREFIX = ".fetch-"


def remove_stale(folder: Path, on_status: Status | None = None) -> list[Path]:
    """Remove the ``.fetch-<set>-<pid>-*`` folders in ``folder`` whose process is gone."""
    from dukd_cli.data.catalog import ENTRIES
    from dukd_cli.runtime.pidlock import pid_alive, pid_of

    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not p.name.startswith(TMP_PREFIX):
            continue
        pid = next((x for e in ENTRIES if (x := pid_of(p.name, f"{TMP_PREFIX}{e.name}-")) is not None), None)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        if not os.path.lexists(p):
            removed.append(p)
            if on_status is not None:
                on_status(f"removed {p}, left by process {pid} which is gone")
    return removed


def fetch(
    name: str,
    source: str | None = None,
    *,
    force: bool = False,
    on_status: Status | None = None,
    max_extract_bytes: int | str | None = None,
    wait: bool = True,
) -> Fetched:
    """Fetch one data set (``name`` as in :mod:`dukd_cli.data.catalog`) into its cache folder.

    ``max_extract_bytes``: the bound on extracted bytes instead of the derived one
    (:func:`dukd_cli.data.extract.limits_for`); ``wait=False``: fail with one line, naming the
    holder's PID, when another process is fetching this set, instead of waiting for it.
    """
    from dukd_cli.runtime.pidlock import hold

    entry = get(name)
    target = target_dir(entry)
    if is_present(entry) and not force:
        return Fetched(entry.name, target, provenance(entry).get("source", "(already there)"), already=True)
    src = source or entry.source
    if not src:
        raise DukdError(f"{entry.name}: {entry.notes or 'no source known'}; pass --source ARCHIVE_OR_FOLDER")
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    with hold(lock, what=f"fetching {entry.name} into {target}", wait=wait, on_wait=on_status):
        if is_present(entry) and not force:  # the process we waited for fetched it
            return Fetched(
                entry.name, target, provenance(entry).get("source", "(already there)"), already=True
            )
        remove_stale(target.parent, on_status)
        return _fetch_locked(entry, src, target, on_status, max_extract_bytes)


def _fetch_locked(
    entry: DataEntry, src: str, target: Path, on_status: Status | None, max_extract_bytes: int | str | None
) -> Fetched:
    from dukd_cli.data import extract
    from dukd_cli.runtime.pidlock import pid_tag

    if on_status is not None:
        size = entry.size_label() if src == entry.source else "size of the mirror unknown"
        on_status(f"fetching {entry.name} ({entry.images} images, {size}) from {src} into {target}")
    archive, pin = _download(entry, src, on_status)
    limits = extract.limits_for(
        known_size=entry.known_bytes(),
        images=entry.images,
        archive_size=None if archive.is_dir() else archive.stat().st_size,
        pinned=src == entry.source,
        max_bytes=max_extract_bytes,
        hint=f"raise the limit with --max-extract-bytes of 'dukd data fetch' or {extract.ENV_MAX}",
    )
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{entry.name}-{pid_tag()}", dir=target.parent))
    try:
        if archive.is_dir():
            tree = archive
        else:
            tree = tmp / "extracted"
            tree.mkdir()
            extract.extract(archive, tree, limits)
        files = _images(tree, lr=entry.kind == "train-lr", links_refused=src)
        names = _install_names(files, src)
        why = check_names(entry, [_stem(p) for p in files])
        if why is not None:
            raise DukdError(f"{src} does not hold {entry.name}: {why}; nothing was written to {target}")
        result = tmp / "result"
        hr = result / "HR" if entry.kind == "bench" else result
        hr.mkdir(parents=True)
        if archive.is_dir():  # copied (regular files only, bounded), then the copies are checked
            budget = extract.budget(limits, src)
            for p in files:
                extract.copy_regular(p, hr / names[p], budget, str(p))
        else:
            _check_images(files, tree, src)
            for p in files:
                os.replace(p, hr / names[p])
        if archive.is_dir():  # what is checked is what is installed, even if the folder changes meanwhile
            _check_images([hr / names[p] for p in files], result, src)
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
        _check_installed(target)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return Fetched(entry.name, target, src)


def _check_installed(target: Path) -> None:
    """After the final move: nothing but regular files and folders (no link can point outside)."""
    for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            mode = p.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                shutil.rmtree(target, ignore_errors=True)
                raise DukdError(f"{p} is not a regular file after the move; removed {target}")


def _revision(source: str) -> str | None:
    if source.startswith("hf://") and "@" in source:
        return source.split("#", 1)[0].rsplit("@", 1)[1]
    return None


def fetch_hint(name: str) -> str:
    return f"dukd data fetch {get(name).name.lower()}"


def ensure_benchmarks(
    names: list[str],
    *,
    download: bool,
    data_dir: str | os.PathLike | None = None,
    on_status: Status | None = None,
) -> None:
    """Fetch each named benchmark set the lookup does not find (``download=False``: say how instead).

    Folders and names the catalog does not know are left to :func:`dukd_cli.data.benchmarks.find_set`.
    """
    from dukd_cli.data.benchmarks import canonical_name, find_set
    from dukd_cli.sources.hub import is_offline

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
