"""The ``dukd`` command line: a thin Typer shell over the ``dukd_cli`` Python API."""

from __future__ import annotations

import typer

from dukd_cli import __version__
from dukd_cli.commands import data as data_commands
from dukd_cli.commands import zoo as zoo_commands
from dukd_cli.commands._common import run_cli
from dukd_cli.commands.distill import distill_cmd
from dukd_cli.commands.evaluate import evaluate_cmd
from dukd_cli.commands.export import export_cmd
from dukd_cli.commands.report import report_cmd
from dukd_cli.commands.study import study_cmd
from dukd_cli.commands.upscale import upscale_cmd

app = typer.Typer(
    name="dukd",
    help="Compress super-resolution networks by Data Upcycling Knowledge Distillation, "
    "evaluate them exactly as SR papers do, and ship them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dukd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """dukd: distill, evaluate, upscale and export super-resolution networks."""


app.add_typer(zoo_commands.app, name="zoo")
app.add_typer(data_commands.app, name="data")
app.command("evaluate")(evaluate_cmd)
app.command("distill")(distill_cmd)
app.command("upscale")(upscale_cmd)
app.command("export")(export_cmd)
app.command("report")(report_cmd)
app.command("study")(study_cmd)


def main() -> None:
    """The CLI in-process (tests call this): ends by raising ``SystemExit``, as Typer does."""
    run_cli(app)


def entry() -> None:
    """The console entry point (``dukd``, ``python -m dukd_cli``): :func:`main`, then the process
    ends without Python's teardown (see :mod:`dukd_cli.runtime.fastexit`)."""
    from dukd_cli.runtime.fastexit import exit_code, exit_now

    try:
        main()
    except SystemExit as exc:
        exit_now(exit_code(exc.code))
    exit_now(0)


if __name__ == "__main__":
    entry()
