"""End the ``dukd`` process as soon as its command is done, without Python's own teardown.

Once a command has returned, everything it wrote is closed and renamed into place, yet the
interpreter still spends a noticeable time finalising (clearing some 1,500 modules, torch's among
them, and collecting their objects): 0.36-0.60 s for a one-image ``dukd upscale`` on the project's
2-core machine, a tenth of a 30-image run. :func:`exit_now` does what matters of that teardown and no more:

1. waits for the non-daemon threads and lets thread pools shut down (``threading``'s own exit
   step: this is what joins a ``ThreadPoolExecutor``'s workers at normal exit);
2. runs the ``atexit`` handlers (multiprocessing's children, ``weakref.finalize`` objects such as
   temporary directories, logging's flush, coverage's data file);
3. flushes standard output and error, then ends the process with the command's exit code.

Only the console entry points (``dukd`` and ``python -m dukd_cli``) call it; the Python API and
the in-process CLI (:func:`dukd_cli.cli.main`) never do. It steps aside, ending the normal way,
when a tracer or profiler is active (``python -m cProfile``, a debugger, coverage), when
``DUKD_FULL_EXIT`` is set to anything but ``0``, or once code from outside dukd ran in the process
(a plugin's architecture, preset or method: :func:`foreign_code_ran`, called by the registry). dukd
closes every file it writes before a command returns; a plugin may not (a log opened at build time and
never closed keeps its last lines in a buffer that only the normal teardown flushes).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Mapping
from typing import NoReturn

#: Set (to anything but 0) for Python's normal interpreter teardown.
ENV = "DUKD_FULL_EXIT"


def observed() -> bool:
    """True when something watches the interpreter (it may write its results at teardown)."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return True
    mon = getattr(sys, "monitoring", None)  # Python 3.12+: tools such as coverage's sysmon core
    if mon is not None:
        return any(mon.get_tool(i) is not None for i in range(6))
    return False


#: Who ran code in this process from outside dukd (distribution names); empty: only dukd's own.
foreign: set[str] = set()


def foreign_code_ran(provider: str) -> None:
    """Record that ``provider``'s code (a plugin) was loaded: the process then ends the normal way."""
    foreign.add(provider)


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    value = environ.get(ENV, "")
    return (value == "" or value == "0") and not observed() and not foreign


def exit_code(code: object) -> int:
    """The process exit code for ``SystemExit(code)``, as Python computes it (a message: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` after the steps in the module docs (or normally, see there)."""
    if not wanted():
        sys.exit(code)
    shutdown_threads = getattr(threading, "_shutdown", None)
    if shutdown_threads is None:  # not CPython's threading: let the interpreter do it all
        sys.exit(code)
    shutdown_threads()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
