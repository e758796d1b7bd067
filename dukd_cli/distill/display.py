"""Training progress on the console (rank 0 only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# --------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------


class Display:
    """Progress on the console: a rich live bar (it/s, ETA, losses, last PSNR) on a terminal, one
    line per log step otherwise. Only rank 0 shows anything."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.progress = None
        self.task = None
        self.info = ""

    def start(self, total: int, done: int, title: str) -> None:
        if not self.enabled:
            return
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[speed]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(title, total=total, completed=done, info="", speed="")
        else:
            self.console.print(f"{title}: iterations {done} -> {total}", highlight=False)

    def update(self, iteration: int, total: int, speed: float | None = None, info: str | None = None) -> None:
        if self.progress is not None:
            kw: dict[str, Any] = {"completed": iteration, "total": total}
            if speed is not None:
                kw["speed"] = f"{speed:.2f} it/s"
            if info is not None:
                kw["info"] = info
            self.progress.update(self.task, **kw)

    def log(self, line: str) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            self.console.print(
                line, highlight=False, soft_wrap=True
            )  # redirected: one line each, never wrapped

    def message(self, line: str) -> None:
        if self.enabled:
            self.console.print(line, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
