"""Options several commands share, each declared once as an ``Annotated`` alias (Typer reads the
option from the parameter's annotation; the default stays the parameter's own ``= ...``)::

    def evaluate_cmd(model: Model(MODEL_HELP) = None, weights: Weights = None, arg: Arg = None, ...)

An alias is a function of its help where each command must say something of its own (what
``--model`` accepts, what ``--scale`` defaults to); otherwise one text serves every command.

``dukd distill``'s options are in :data:`dukd_cli.distill.options.TABLE`; :func:`table_parameter`
makes a table entry a Typer parameter (``dukd distill`` is all of them), and :func:`distill_options`
gives another command (``dukd study``) the ones it shares with ``dukd distill``, flags and help
from the table.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from dukd_cli.distill.options import BY_NAME, Opt

F = TypeVar("F", bound=Callable[..., Any])


def table_parameter(o: Opt, help: str, default: Any = None, annotation: Any = None) -> inspect.Parameter:
    """A table entry as a keyword parameter: ``name: Annotated[type, typer.Option(*o.flags, help=help)]
    = default``; ``annotation`` defaults to the table's type (a list when repeatable)."""
    kind: Any = annotation if annotation is not None else list[o.type] if o.many else o.type
    return inspect.Parameter(
        o.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[kind, typer.Option(*o.flags, help=help)],
    )


def distill_options(**more: str) -> Callable[[F], F]:
    """Decorate a command so that each parameter named here is ``dukd distill``'s option of that name:
    its flags from the table, its help :attr:`Opt.help` then ``more[name]`` (what this command adds,
    e.g. "Per cell."; ``""``: nothing). The command declares the parameter's Python type and default
    (``teacher: str | None = None``); the type must be the table's, and a repeatable option may be
    taken once. Every other parameter stays the command's own."""

    def wrap(func: F) -> F:
        sig = inspect.signature(func, eval_str=True)
        missing = sorted(set(more) - set(sig.parameters))
        if missing:
            raise TypeError(f"{func.__name__}() has no parameter {', '.join(missing)}")
        params = []
        for p in sig.parameters.values():
            if p.name in more:
                o = _entry(func.__name__, p)
                helps = " ".join(h for h in (o.help, more[p.name]) if h)
                p = table_parameter(o, helps, p.default, p.annotation).replace(kind=p.kind)
            params.append(p)
        func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return func

    return wrap


def _entry(command: str, p: inspect.Parameter) -> Opt:
    """The table entry of the parameter ``p``, checked against its annotation."""
    o = BY_NAME.get(p.name)
    if o is None:
        raise TypeError(f"{command}({p.name}): dukd distill has no option {p.name!r}")
    args = [a for a in typing.get_args(p.annotation) if a is not type(None)]
    kind = args[0] if isinstance(p.annotation, types.UnionType) and len(args) == 1 else p.annotation
    many = typing.get_origin(kind) is list
    base = typing.get_args(kind)[0] if many else kind
    if base is not o.type or (many and not o.many):
        want = f"list[{o.type.__name__}]" if o.many else o.type.__name__
        raise TypeError(f"{command}({p.name}): annotated {p.annotation}, the table's {o.flag} is {want}")
    return o


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
