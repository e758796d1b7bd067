"""Errors a user can cause and fix.

Every :class:`DukdError` is shown by the CLI as one red line (its message) and a non-zero exit
code, never a traceback. Library callers can catch it like any exception.
"""


class DukdError(Exception):
    """A user-facing error: bad input, unknown name, missing file, unsafe checkpoint."""

    exit_code = 1


class UnknownModelError(DukdError):
    """A model, preset or architecture name that no installed plugin provides."""


class WeightsError(DukdError):
    """A weight source that cannot be resolved, read or loaded."""


class UnsafeCheckpointError(WeightsError):
    """A pickle that would run code on load (refused)."""


class StateDictMismatchError(WeightsError):
    """A checkpoint whose keys or shapes do not match the model (carries a readable report)."""


def a_or_an(label: str) -> str:
    """``label`` with its article, as it is read aloud: "an IMDN ...", "an EDSR ...", "a SwinIR ..."."""
    return f"{'an' if label[:1].upper() in 'AEIOU' else 'a'} {label}"
