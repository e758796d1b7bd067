"""Temporary names that say who made them, so that a later run can remove those of dead processes.

Every temporary file or folder dukd writes beside an output is named
``.<stem>.tmp-<PID>-<random><suffix>`` (:func:`temp_prefix`). A process killed inside a write
(kill -9, the OOM killer, a power cut) leaves that name behind; :func:`sweep` removes, in one
folder, the temporary names whose PID is no longer a running process. The commands sweep the
folder they are about to write into (``upscale``, ``export``; ``distill`` cleans its run directory,
which its lock reserves, in :mod:`dukd_cli.distill.checkpoint`), once per folder and process.

A name whose process is alive is never touched, nor a name without a PID (made by an older dukd,
or not by dukd at all). PIDs are those of this machine: do not share an output folder between
machines that write into it at the same time.

Test hook: with ``DUKD_TEST_PAUSE=NAME`` a writer reaching :func:`pause` point ``NAME`` touches the file
named by ``DUKD_TEST_PAUSE_FILE`` and sleeps, so a test can kill it inside the write.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

PAUSE_ENV = "DUKD_TEST_PAUSE"

_TEMP = re.compile(r"^\..+\.tmp-(\d+)-")
_swept: set[str] = set()


def temp_prefix(stem: str) -> str:
    """The prefix of a temporary name for ``stem`` made by this process."""
    return f".{stem}.tmp-{os.getpid()}-"


def owner(name: str) -> int | None:
    """The PID in a temporary name (None: not one of ours, or one without a PID)."""
    m = _TEMP.match(name)
    return int(m.group(1)) if m else None


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return True
    return True


def sweep(folder: str | os.PathLike, *, once: bool = True) -> list[str]:
    """Remove the temporary files and folders of dead processes in ``folder``; their names.

    With ``once`` (the default) a folder already swept by this process is not listed again."""
    path = Path(folder)
    key = os.path.abspath(path)
    if once and key in _swept:
        return []
    _swept.add(key)
    removed: list[str] = []
    try:
        entries = list(os.scandir(path))
    except OSError:
        return removed
    for entry in entries:
        pid = owner(entry.name)
        if pid is None or alive(pid):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(entry.name)
    return sorted(removed)


def pause(point: str) -> None:
    """The test hook (see the module docstring)."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    marker = os.environ.get(f"{PAUSE_ENV}_FILE")
    if marker:
        with contextlib.suppress(OSError):
            Path(marker).write_text(point)
    time.sleep(float(os.environ.get(f"{PAUSE_ENV}_SECONDS", "120")))
