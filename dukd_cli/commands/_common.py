"""What every command shares: consoles, the error convention, and option parsing helpers."""

from __future__ import annotations

import sys
import warnings

from rich.console import Console

from dukd_cli.errors import DukdError
from dukd_cli.models import parse_model_args

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print one red error line and exit non-zero (the message is not read as markup: "dukd[spandrel]")."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise SystemExit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False, soft_wrap=True)


def _showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
    warn(str(message))


def install_warning_handler() -> None:
    """Show Python warnings (e.g. a plugin that failed to import) as one yellow line each."""
    warnings.showwarning = _showwarning


def model_args(items: list[str] | None) -> dict:
    return parse_model_args(items)


def run_cli(app) -> None:
    """Run a Typer app with the project's error convention: a DukdError is one line, exit 1."""
    install_warning_handler()
    try:
        app()
    except DukdError as exc:
        fail(str(exc), getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
