"""The option names a command uses for one model, so that messages (mismatch help, weights advice) only name options the command at hand has; without a command (the Python API) they name arguments."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    """The option names a command uses for one model (``None``: the command has no such option)."""

    model: str | None = "--model"
    arg: str | None = "--arg"
    weights: str | None = "--weights"
    scale: str | None = "--scale"
    non_strict: str | None = None


API = Options(None, None, None, None, None)
EVALUATE = UPSCALE = EXPORT = Options()
REFERENCE = Options("--reference-model", "--reference-arg", "--reference-weights", "--scale")
TEACHER = Options("--teacher", "--teacher-arg", "--teacher-weights", "--scale")
STUDENT = Options("--student", "--student-arg", "--student-weights", "--scale", "--non-strict")
VERIFY = Options(None, None, "--weights", "--scale")  # dukd zoo verify NAME: the name is an argument
_current: contextvars.ContextVar[Options] = contextvars.ContextVar("dukd_mismatch_options", default=API)


def use(options: Options) -> None:
    """Phrase mismatch help with ``options`` from now on in this context (a command's first line)."""
    _current.set(options)


def weights_advice(value: str) -> str:
    """How to give the weights ``value`` for the model at hand: ``pass --teacher-weights VALUE`` in
    a command (the option of the model the command is building), ``pass weights="VALUE"`` from
    Python (no command's options are in force)."""
    flag = _current.get().weights
    return f"pass {flag} {value}" if flag else f'pass weights="{value}"'
