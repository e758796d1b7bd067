"""Atomic file writes (every file dukd writes appears whole or not at all), and checks that an
output can be written, made before the long work that produces it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (named with this PID: :mod:`dukd_cli.runtime.stale`); on success
    it is renamed onto ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. ``suffix`` keeps
    the extension for writers that look at it (Pillow, safetensors, torch.onnx).
    """
    from dukd_cli.runtime import stale

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    stale.sweep(target.parent)  # what killed writers left here (their PID is in the name)
    ext = suffix if suffix is not None else target.suffix
    fd, tmp = tempfile.mkstemp(prefix=stale.temp_prefix(target.stem), suffix=ext, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        stale.pause("atomic")
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def check_writable_dir(path: str | os.PathLike) -> None:
    """Raise a one-line :class:`DukdError` unless files can be created in the folder ``path`` (which
    need not exist yet: its nearest existing ancestor is tried). Nothing is left behind."""
    from dukd_cli.errors import DukdError

    target = Path(path).expanduser().absolute()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise DukdError(f"cannot write to {target}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dukd-write-check-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise DukdError(f"cannot write to {target}: {exc.strerror or exc}") from None


def check_writable_file(
    path: str | os.PathLike, *, overwrite: bool = False, option: str | None = None
) -> None:
    """Raise a one-line :class:`DukdError` unless the file ``path`` can be written: not a folder, not
    an existing file unless ``overwrite`` (the ``--overwrite`` flag of the command), a writable folder."""
    from dukd_cli.errors import DukdError

    p = Path(path).expanduser()
    what = f"{option} {p}" if option else str(p)
    if p.is_dir():
        raise DukdError(f"{what} is a folder; give a file name")
    if p.exists() and not overwrite:
        raise DukdError(f"{what} already exists; pass --overwrite to replace it")
    check_writable_dir(p.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
