"""Advisory locks that name their holder, and temporary names that carry their creator's PID.

:func:`hold` takes an exclusive ``fcntl.flock`` on a lock file and writes the holder's PID into
it. The kernel releases the lock when the process ends, however it ends (``kill -9`` included), so
a lock is never stale; the PID only serves the message a second process prints. A second process
either waits (``wait=True``; ``on_wait`` gets one line naming the holder first) or gets a
:class:`LockedError` naming the holder's PID.

:func:`pid_tag`, :func:`pid_of` and :func:`pid_alive` let temporary folders carry the PID of the
process that made them, so that a later run can remove those of processes that are gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from dukd_cli.errors import DukdError


class LockedError(DukdError):
    """Another live process holds the lock."""


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


@contextlib.contextmanager
def hold(
    path: str | os.PathLike,
    *,
    what: str,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the advisory lock ``path`` (created where needed) for the ``with`` block.

    ``what`` names the guarded work in messages ("fetching Set5 into ...").
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = _read_pid(fd)
            holder = f"process {pid}" if pid else "another process"
            if not wait:
                raise LockedError(f"{holder} is already {what} (lock {p}); wait for it to finish") from None
            if on_wait is not None:
                on_wait(f"{holder} is already {what}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def pid_tag() -> str:
    """The part of a temporary name that says who made it: ``<pid>-``."""
    return f"{os.getpid()}-"


def pid_of(name: str, prefix: str) -> int | None:
    """The PID in a temporary name ``<prefix><pid>-<random>`` (``None``: not one of ours)."""
    if not name.startswith(prefix):
        return None
    m = re.match(r"(\d+)-[^-/]+$", name[len(prefix) :])
    return int(m.group(1)) if m else None


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
