"""One writer per run directory: an advisory lock held for the whole life of a run.

``dukd distill`` (a new run or ``--resume``) takes :class:`RunLock` on ``RUN_DIR/.dukd-run.lock``
before it writes anything into the directory. The lock is ``fcntl.flock`` on that file: the kernel
releases it when the holder's process ends, however it ends (kill -9 included), so a lock is never
stale; the file itself is only a place to hang the lock and to say who holds it (the holder's PID
is written into it). A second process that wants the directory gets a one-line :class:`RunLockedError`
naming that PID.

The lock file stays in a run directory (hidden, a few bytes); a directory the lock created and
nothing else ever wrote into is removed again on release, so a run refused early leaves nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from dukd_cli.errors import DukdError

LOCK_NAME = ".dukd-run.lock"  # dukd_cli.rundir.RUN_LOCK (runtime sits below rundir)


class RunLockedError(DukdError):
    """Another process holds the run directory."""


def holder_pid(path: str | os.PathLike) -> int | None:
    """The PID written into a lock file (None when it holds none)."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class RunLock:
    """``flock`` on ``folder/.dukd-run.lock`` (created, with ``folder``, if missing)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._made_folder = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock without waiting; raise :class:`RunLockedError` if another process holds it."""
        if self._fd is not None:
            return self
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made_folder = True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = holder_pid(self.path)
                who = f"dukd process (PID {pid})" if pid else "process"
                raise RunLockedError(
                    f"{self.folder} is in use by another {who}: one run writes a directory at a time; "
                    "wait for it to end, or pick another --out"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have removed the file between our open and our flock: then we
            # locked a file nobody else will see; start again on the file that is there now.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock; a folder this lock created and that holds nothing else is removed."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._made_folder and _only_the_lock(self.folder):
                with contextlib.suppress(OSError):
                    self.path.unlink()  # still locked: nobody can have taken it in between
                with contextlib.suppress(OSError):
                    self.folder.rmdir()
            else:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # no holder now
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __del__(self) -> None:  # an owner dropped without release(): let the directory go
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _only_the_lock(folder: Path) -> bool:
    try:
        return [p.name for p in folder.iterdir()] == [LOCK_NAME]
    except OSError:
        return False
