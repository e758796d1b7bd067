"""Ctrl-C and SIGTERM during a run: the first asks to stop after the current iteration (the trainer
then saves), the same signal again aborts at once (``KeyboardInterrupt``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class StopSignals:
    """The stop request of one run; handlers installed for its loop only (main thread only)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.requested = False
        self.signum: int | None = None  # the signal that asked to stop (SIGINT, SIGTERM)
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        self.requested, self.signum = False, None
        if threading.current_thread() is not threading.main_thread():
            return
        self._old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for sig, old in self._old.items():
            if old is not None:
                signal.signal(sig, old)
        self._old = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        self.say(f"[yellow]{name}: stopping after this iteration and saving ({name} again to abort)[/]")

    def by(self) -> str:
        """`` by SIGTERM`` when SIGTERM stopped the run (a scheduler's doing), else empty."""
        return f" by {signal.Signals(self.signum).name}" if self.signum == signal.SIGTERM else ""
