"""Archive extraction that cannot leave its folder or fill the disk, and the checks a set passes
before it is installed.

:func:`extract` unpacks a ``.tar``/``.tar.gz``/``.tgz``/``.tar.bz2``/``.tar.xz``/``.zip`` into a
folder member by member, itself (no ``extractall``):

- only regular files and folders are accepted; a symbolic or hard link, a device or a FIFO member
  is refused with one line (a link that stays inside the temporary folder could point outside
  once the set is moved into the cache);
- every member name must be relative, free of ``..``, of backslashes and of control characters,
  and appear once: an exact duplicate, or two names equal after case-folding
  (``1001.png`` + ``1001.PNG``), is refused instead of letting the last one win;
- bytes are counted while they are written: a member over :attr:`Limits.member` or a set over
  :attr:`Limits.total` stops at the limit (a decompression bomb never gets further), and so does an
  archive of more than :attr:`Limits.members` entries.

:func:`copy_regular` copies one file of a folder source the same way: opened without following
links (``O_NOFOLLOW``), refused unless it is a regular file, counted against the same limits.

:func:`check_image` reads an image's header and dimensions (and, for PNG, its chunk checksums)
without decoding its pixels; a file that is not an image is refused before the set is installed.

:func:`limits_for` derives the limits: from the catalogue's known archive size for its pinned
source; for any other source (``--source``) a generous bound, 100 times the archive or 4 GiB,
whichever is smaller; ``max_bytes`` (``dukd data fetch --max-extract-bytes``) or the environment
variable ``DUKD_MAX_EXTRACT_BYTES`` sets the bound instead.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from dukd_cli.errors import DukdError

ENV_MAX = "DUKD_MAX_EXTRACT_BYTES"
GIB = 1 << 30
MIB = 1 << 20
SOURCE_FACTOR = 100  # --source: at most this many times the archive's size ...
SOURCE_CAP = 4 * GIB  # ... and never more than this, unless raised
SOURCE_MEMBER_CAP = 512 * MIB  # one image of an unknown source
CHUNK = 1 << 20
TAR_EXTS = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Limits:
    """What one extraction (or folder copy) may write."""

    total: int  # bytes, all files together
    member: int  # bytes, any one file
    members: int  # entries (files and folders) in the archive
    hint: str = ""  # how to raise them, for the message

    def raised(self) -> str:
        return f"; {self.hint}" if self.hint else ""


class LimitExceeded(DukdError):
    """An archive that would write more than its limits allow."""


def parse_size(text: str | int, what: str = "--max-extract-bytes") -> int:
    """Bytes from ``123``, ``500M``, ``4G``, ``1.5GiB`` ...; one line for anything else."""
    if isinstance(text, int):
        n = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
        if not m:
            raise DukdError(f"{what}: expected a size in bytes such as 500M or 4G, got '{text}'")
        unit = {"": 1, "k": 1 << 10, "m": MIB, "g": GIB, "t": 1 << 40}[m.group(2).lower()]
        n = int(float(m.group(1)) * unit)
    if n <= 0:
        raise DukdError(f"{what}: the size must be positive, got '{text}'")
    return n


def _human(n: int) -> str:
    for unit, f in (("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n} B"


def limits_for(
    *,
    known_size: int | None,
    images: int,
    archive_size: int | None,
    pinned: bool,
    max_bytes: int | str | None = None,
    hint: str = "",
) -> Limits:
    """The limits for one fetch (see the module notes).

    ``known_size``: the catalogue's size of its archive (bytes, ``None`` where unknown);
    ``pinned``: the source is the catalogue's own; ``archive_size``: the bytes of the archive in
    hand (``None`` for a folder).
    """
    members = max(10_000, 50 * images)
    if max_bytes is None and os.environ.get(ENV_MAX, "").strip():
        max_bytes = parse_size(os.environ[ENV_MAX], ENV_MAX)
    if max_bytes is not None:
        n = parse_size(max_bytes)
        return Limits(n, n, members, hint)
    from_catalogue = None
    if known_size:  # images are PNG: extracted they are about as big as the archive
        total = 2 * known_size + 64 * MIB
        from_catalogue = Limits(
            total, min(total, 64 * MIB + 16 * known_size // max(images, 1)), members, hint
        )
    if pinned and from_catalogue is not None:
        return from_catalogue
    total = min(SOURCE_FACTOR * archive_size, SOURCE_CAP) if archive_size else SOURCE_CAP
    member = min(total, SOURCE_MEMBER_CAP)
    if from_catalogue is not None and from_catalogue.total > total:
        return from_catalogue
    return Limits(total, member, members, hint)


class _Budget:
    """Counts bytes written against :class:`Limits`; raises the moment one is passed."""

    def __init__(self, limits: Limits, what: str):
        self.limits, self.what, self.written = limits, what, 0

    def copy(self, src: BinaryIO, dst: Path, name: str) -> None:
        lim = self.limits
        n = 0
        with open(dst, "xb") as out:
            while True:
                # never read more than one byte past what either limit still allows
                room = min(lim.member - n, lim.total - self.written)
                chunk = src.read(min(CHUNK, room + 1))
                if not chunk:
                    return
                n += len(chunk)
                self.written += len(chunk)
                if n > lim.member:
                    raise LimitExceeded(
                        f"{self.what}: member '{name}' is larger than the limit of {_human(lim.member)} "
                        f"per file; stopped after writing {_human(n - len(chunk))} of it, nothing was "
                        f"installed{lim.raised()}"
                    )
                if self.written > lim.total:
                    raise LimitExceeded(
                        f"{self.what} would extract more than the limit of {_human(lim.total)}; stopped at "
                        f"member '{name}', nothing was installed{lim.raised()}"
                    )
                out.write(chunk)


def _clean_name(raw: str, what: str) -> PurePosixPath | None:
    """A member name as a safe relative path; one line for anything else."""
    if "\\" in raw or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise DukdError(f"{what} holds a member with an unsafe name {raw!r}; refusing to extract it")
    p = PurePosixPath(raw)
    parts = [x for x in p.parts if x not in ("", ".")]
    if p.is_absolute() or ".." in parts or re.match(r"^[A-Za-z]:", raw):
        raise DukdError(f"{what} holds a member with an unsafe path '{raw}'; refusing to extract it")
    return PurePosixPath(*parts) if parts else None  # None: the archive's root folder ('./')


def _fold(p: PurePosixPath) -> str:
    return unicodedata.normalize("NFC", str(p)).casefold()


class _Names:
    """Refuses duplicate member names and names equal after case-folding."""

    def __init__(self, what: str):
        self.what, self.files, self.dirs = what, {}, set()

    def add_file(self, p: PurePosixPath) -> None:
        key = _fold(p)
        if key in self.files:
            first = self.files[key]
            kind = "twice" if first == str(p) else f"twice after case-folding ('{first}' and '{p}')"
            raise DukdError(
                f"{self.what} holds '{p}' {kind}; refusing an archive whose files would replace each other"
            )
        if key in self.dirs:
            raise DukdError(f"{self.what} holds '{p}' both as a folder and as a file; refusing it")
        self.files[key] = str(p)
        self.dirs.update(_fold(q) for q in p.parents if str(q) != ".")

    def add_dir(self, p: PurePosixPath) -> None:
        if _fold(p) in self.files:
            raise DukdError(f"{self.what} holds '{p}' both as a folder and as a file; refusing it")
        self.dirs.add(_fold(p))


def extract(archive: Path, dest: Path, limits: Limits) -> None:
    """Extract ``archive`` into the existing folder ``dest`` (see the module notes)."""
    name = archive.name.lower()
    what = str(archive)
    try:
        if name.endswith(".zip"):
            _extract_zip(archive, dest, limits, what)
        elif name.endswith(TAR_EXTS):
            _extract_tar(archive, dest, limits, what)
        else:
            raise DukdError(
                f"{archive.name} is not an archive dukd reads (.tar.gz, .tgz, .tar, .zip) nor a folder"
            )
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise DukdError(f"cannot extract {archive}: {exc}") from None


def _target(dest: Path, rel: PurePosixPath) -> Path:
    out = dest.joinpath(*rel.parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _too_many(what: str, limits: Limits) -> DukdError:
    return LimitExceeded(f"{what} holds more than {limits.members} entries; refusing it{limits.raised()}")


def _member(dest: Path, raw: str, is_dir: bool, names: _Names, what: str) -> PurePosixPath | None:
    """One archive member's checked name: a folder is created (and None returned), a file's relative
    path is registered (duplicates and case collisions refused) and returned for writing."""
    rel = _clean_name(raw, what)
    if rel is None:
        if is_dir:
            return None  # the archive's root entry ('./')
        raise DukdError(f"{what} holds a file member without a name; refusing to extract it")
    if is_dir:
        names.add_dir(rel)
        dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
        return None
    names.add_file(rel)
    return rel


def _extract_tar(archive: Path, dest: Path, limits: Limits, what: str) -> None:
    budget, names, count = _Budget(limits, what), _Names(what), 0
    with tarfile.open(archive) as t:
        for m in t:  # streaming: members are read one at a time, never listed in full first
            count += 1
            if count > limits.members:
                raise _too_many(what, limits)
            if m.issym() or m.islnk():
                raise DukdError(
                    f"{what} holds a {'symbolic' if m.issym() else 'hard'} link '{m.name}' -> '{m.linkname}'; "
                    "dukd extracts regular files only, refusing it"
                )
            if not (m.isfile() or m.isdir()):
                kind = "device" if (m.ischr() or m.isblk()) else "FIFO" if m.isfifo() else "special file"
                raise DukdError(f"{what} holds a {kind} member '{m.name}'; dukd extracts regular files only")
            rel = _member(dest, m.name, m.isdir(), names, what)
            if rel is None:
                continue
            src = t.extractfile(m)
            if src is None:  # pragma: no cover - isfile() members always have data
                raise DukdError(f"{what}: cannot read member '{m.name}'")
            with src:
                budget.copy(src, _target(dest, rel), m.name)


def _extract_zip(archive: Path, dest: Path, limits: Limits, what: str) -> None:
    budget, names = _Budget(limits, what), _Names(what)
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        if len(infos) > limits.members:
            raise _too_many(what, limits)
        for info in infos:
            ftype = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (a plain file)
            if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
                kind = "symbolic link" if ftype == stat.S_IFLNK else "special file"
                raise DukdError(
                    f"{what} holds a {kind} '{info.filename}'; dukd extracts regular files only, refusing it"
                )
            rel = _member(dest, info.filename, info.is_dir(), names, what)
            if rel is None:
                continue
            with z.open(info) as src:
                budget.copy(src, _target(dest, rel), info.filename)


def copy_regular(src: Path, dst: Path, budget: _Budget, shown: str) -> None:
    """Copy the regular file ``src`` (never through a link, never a FIFO or device) to ``dst``."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(src):
            raise DukdError(
                f"{shown} is a symbolic link; dukd copies regular files only (copy the file itself there)"
            ) from None
        raise DukdError(f"cannot read {shown}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DukdError(f"{shown} is not a regular file; dukd copies regular files only")
        budget.copy(f, dst, shown)


def budget(limits: Limits, what: str) -> _Budget:
    """A byte counter for :func:`copy_regular` (one per set)."""
    return _Budget(limits, what)


def check_image(path: Path) -> str | None:
    """Why ``path`` is not a readable image (header, dimensions; PNG checksums), or ``None``."""
    from PIL import Image, UnidentifiedImageError

    from dukd_cli.images.imageio import MAX_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    return f"it has no pixels ({w}x{h})"
                if w * h > MAX_PIXELS:
                    return f"{w}x{h} is more than {MAX_PIXELS:,} pixels"
                im.verify()  # PNG: every chunk's CRC, without decoding the pixels
    except Image.DecompressionBombError:
        return f"more than {MAX_PIXELS:,} pixels"
    except UnidentifiedImageError:
        return "it is not an image Pillow can read"
    except Exception as exc:  # Pillow raises many kinds for damaged files
        return f"it is damaged ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None
