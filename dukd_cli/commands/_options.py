"""Options several commands share, each declared once as an ``Annotated`` alias (Typer reads the
option from the parameter's annotation; the default stays the parameter's own ``= ...``)::

    def evaluate_cmd(model: Model(MODEL_HELP) = None, weights: Weights = None, arg: Arg = None, ...)

An alias is a function of its help where each command must say something of its own (what
``--model`` accepts, what ``--scale`` defaults to); otherwise one text serves every command.
``dukd distill``'s options are in :data:`dukd_cli.distill.options.TABLE`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer


def Model(help: str) -> Any:
    """``--model/-m``: what to run; ``help`` says what this command accepts and its default."""
    return Annotated[str, typer.Option("--model", "-m", help=help)]


def Scale(help: str) -> Any:
    """``--scale/-s``: the upscaling factor; ``help`` says where this command finds it otherwise."""
    return Annotated[int, typer.Option("--scale", "-s", help=help)]


def Runtime(help: str) -> Any:
    """``--runtime``: torch, or an ONNX file of an exported directory."""
    return Annotated[str, typer.Option("--runtime", help=help)]


Weights = Annotated[
    str,
    typer.Option(
        "--weights",
        "-w",
        help="Weights: file, hf://OWNER/REPO/FILE@REV, or a preset name. Default: a preset's declared "
        "source, a run directory's student.",
    ),
]
Arg = Annotated[list[str], typer.Option("--arg", "-a", help="Constructor argument key=value (repeatable).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
