"""Help for a checkpoint that does not fit the model asked for: what the file is, and what to type.

:func:`explain` turns the strict-load failure of :func:`dukd_cli.models.weights.load_into` into an
:class:`ExplainedMismatch`: the key report, then what the file really is (from
:func:`dukd_cli.models.detect.detect`, or spandrel) and how to load it: a preset of that shape, the
constructor arguments that differ, the scale the file is for (its upsampler's shapes tell), or the
file itself as the model.

What to type depends on the command: every command passes its own :class:`Options` to
:meth:`ExplainedMismatch.for_options` (the :func:`hints` context manager does it), so a message
only ever names options the command at hand has (``--non-strict`` exists only for
``dukd distill``'s student). Without options (the Python API) the help names arguments, not flags.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dukd_cli.errors import StateDictMismatchError
from dukd_cli.models.options import (
    API,
    Options,
    _current,
)


class ExplainedMismatch(StateDictMismatchError):
    """A :class:`StateDictMismatchError` that knows what the file is and can say what to type."""

    def __init__(self, base: str, facts: dict[str, Any], options: Options = API, report: Any = None) -> None:
        self.base = base
        self.facts = facts
        self.options = options
        self.report = report  # the LoadReport (missing, unexpected, wrong-shape keys)
        self.source = facts.get("weights")
        super().__init__("\n".join([base, *hint_lines(facts, options)]))

    def for_options(self, options: Options) -> ExplainedMismatch:
        """The same failure, its help phrased with ``options``."""
        return ExplainedMismatch(self.base, self.facts, options, self.report)


@contextlib.contextmanager
def hints(options: Options) -> Iterator[None]:
    """Re-raise a mismatch inside the block with help in terms of ``options``; other help given
    inside the block (:func:`weights_advice`) names ``options`` too."""
    token = _current.set(options)
    try:
        yield
    except ExplainedMismatch as exc:
        raise exc.for_options(options) from None
    finally:
        _current.reset(token)


def for_options(exc: StateDictMismatchError, options: Options) -> StateDictMismatchError:
    return exc.for_options(options) if isinstance(exc, ExplainedMismatch) else exc


# --------------------------------------------------------------------------------------------


def _spandrel_facts(weights: str | None) -> dict[str, Any]:
    """What spandrel makes of the file: {'spandrel': describe()} / {'spandrel_missing': True} / {}."""
    from dukd_cli.models import external

    if not weights:
        return {}
    if not external.available():
        return {"spandrel_missing": True}
    try:
        from dukd_cli.models.weights import load_state_dict

        return {"spandrel": external.from_state_dict(load_state_dict(weights), str(weights)).describe()}
    except Exception:  # help text only: never hide the real failure
        return {}


def explain(exc: StateDictMismatchError, spec: Any) -> ExplainedMismatch:
    """Attach to ``exc`` what the checkpoint of ``spec`` (a ModelSpec) is; help phrased for the API."""
    from dukd_cli import registry
    from dukd_cli.models.detect import detect
    from dukd_cli.models.spec import factory_arguments

    facts: dict[str, Any] = {
        "name": spec.name,
        "arch": spec.arch,
        "scale": int(spec.scale),
        "kwargs": dict(spec.kwargs),
        "weights": spec.weights,
        "preset": spec.preset,
    }
    shapes = getattr(exc, "shapes", None)
    found = detect(shapes) if shapes else None
    if found is not None:
        try:
            defaults, _ = factory_arguments(registry.get_architecture(found.arch))
        except Exception:
            defaults = {}
        facts["detection"] = found
        facts["defaults"] = defaults
    elif spec.arch != "spandrel":
        facts.update(_spandrel_facts(spec.weights))
    return ExplainedMismatch(str(exc), facts, _current.get(), getattr(exc, "report", None))


def _opt(flag: str | None, value: str, what: str) -> str:
    return f"`{flag} {value}`" if flag else f"{what} {value}"


def hint_lines(facts: dict[str, Any], o: Options) -> list[str]:
    """The help lines under a mismatch report, naming only the options in ``o``."""
    from dukd_cli.models.detect import detectable, differing_arguments, format_argument

    lines: list[str] = []
    weights = facts.get("weights")
    as_model = _opt(o.model, str(weights), "model") if weights else None
    found = facts.get("detection")
    if found is not None:
        ways: list[str] = []
        same_arch = found.arch == facts["arch"]
        diff = differing_arguments(found, facts["kwargs"], facts.get("defaults", {})) if same_arch else {}
        scale_differs = found.scale != facts["scale"]
        presets = [p for p in found.presets if p != facts.get("preset")]
        if presets:
            ways.append(_opt(o.model, presets[0], "model"))
        if same_arch and diff:
            if o.arg:
                ways.append("`" + " ".join(f"{o.arg} {format_argument(k, v)}" for k, v in diff.items()) + "`")
            else:
                ways.append("arguments " + ", ".join(f"{k}={v!r}" for k, v in diff.items()))
        if scale_differs:
            ways.append(_opt(o.scale, str(found.scale), "scale"))
        if as_model and (not same_arch or not ways):
            ways.append(f"the file itself as the model, {as_model}")
        what = f"this file is {found.label}"
        if scale_differs:
            what += f": it is for x{found.scale} (its upsampler's shapes say so), not x{facts['scale']}"
        lines.append(f"  {what}" + (f": use {' or '.join(ways)}" if ways else ""))
    elif facts.get("spandrel"):
        d = facts["spandrel"]
        line = f"  this file is {d['label']} (detected by spandrel), not {facts['arch']}"
        if as_model:
            line += f": give the file itself as the model, {as_model}"
        lines.append(line)
    elif facts.get("spandrel_missing"):
        lines.append(
            f"  its keys match no registered architecture ({', '.join(detectable())}); if it is another architecture, "
            "install spandrel (pip install 'dukd[spandrel]')"
            + (f" and give the file itself as the model, {as_model}" if as_model else "")
        )
    else:
        lines.append("  pass the architecture and constructor arguments these weights were trained with")
    if o.non_strict:
        lines.append(f"  ({o.non_strict} loads only the tensors whose names and shapes match)")
    return lines
