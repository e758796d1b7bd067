"""What every command shares: consoles, the error convention, and option parsing helpers."""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.markup import escape

from dukd_cli.errors import DukdError

if TYPE_CHECKING:
    import typer

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print one red error line (``message`` is plain text, never markup) and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise SystemExit(code)


def warn(message: str) -> None:
    """One yellow warning line; ``message`` is rich markup (escape plain text that may hold brackets)."""
    err_console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False, soft_wrap=True)


def _showwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    warn(escape(str(message)))


def install_warning_handler() -> None:
    """Show Python warnings (e.g. a plugin that failed to import) as one yellow line each."""
    warnings.showwarning = _showwarning


def model_args(items: list[str] | None) -> dict:
    from dukd_cli.models.spec import parse_model_args

    return parse_model_args(items)


def hide_flag_metavars(command: Any, inherited: dict | None = None) -> Any:
    """Flags take no value: show none in --help (Typer labels every bool option ``<bool>``).
    ``command`` is the click command Typer built (Typer may bring its own copy of click).

    Click builds (and caches) a command's help option from the first context it sees, so the
    context made here carries the settings a real run gives it: the app's own
    ``context_settings`` (``-h``) and, for a subcommand, those its parent context passes down."""
    settings = {**(inherited or {}), **(getattr(command, "context_settings", None) or {})}
    ctx = command.context_class(command, info_name=command.name, **settings)
    for param in command.get_params(ctx):  # includes the (cached) --help option
        if getattr(param, "is_flag", False) and getattr(param, "param_type_name", "") == "option":
            param.metavar = ""
    passed_down = {k: v for k, v in settings.items() if k == "help_option_names"}
    for sub in getattr(command, "commands", {}).values():
        hide_flag_metavars(sub, passed_down)
    return command


def _oserror_line(exc: OSError) -> str:
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or exc}"


def run_cli(app: typer.Typer) -> None:
    """Run a Typer app with the project's error convention: a DukdError is one line, exit 1; so is an
    OSError a command did not handle (a full or read-only disk)."""
    import typer

    install_warning_handler()
    try:
        hide_flag_metavars(typer.main.get_command(app))(prog_name="dukd")
    except DukdError as exc:
        fail(str(exc), getattr(exc, "exit_code", 1))
    except OSError as exc:
        fail(_oserror_line(exc))
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
