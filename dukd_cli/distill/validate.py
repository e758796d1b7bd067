"""Every value of a distill configuration checked once, where it enters: a CLI option or a key of a
``--config`` (or a run's own ``config.toml``) file.

Each rule states a type and a range; a value that breaks one is a one-line :class:`DukdError`
naming the option (``--lr must be a positive finite number, got -1.0``) or the configuration key
(``[train] iters must be an integer, got true``). Integers are integers (``true`` and ``2.7`` are
not), booleans are booleans, numbers are finite where a range is given.

:data:`OPTIONS` maps configuration keys to the ``dukd distill`` options that set them (both drawn from
:data:`dukd_cli.distill.options.TABLE`), so messages (the resume check's among them) name options that exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from dukd_cli.distill.options import TABLE
from dukd_cli.errors import DukdError

#: dukd distill's option (its Python parameter name) -> the configuration key it sets: from the one
#: table of the command's options (:data:`dukd_cli.distill.options.TABLE`).
KEYMAP: dict[str, str] = {o.name: o.key for o in TABLE if o.key is not None}

#: configuration key -> the option that sets it ("--teacher-arg", "--data", "--non-strict", ...).
OPTIONS: dict[str, str] = {o.key: o.flag for o in TABLE if o.key is not None}


def option_for(key: str) -> str:
    """The option that sets ``key``; a method option without its own flag is ``--method-opt NAME=...``."""
    if key in OPTIONS:
        return OPTIONS[key]
    section, _, name = key.partition(".")
    if section == "method":
        return f"--method-opt {name}=..."
    return f"[{section}] {name} (--config)"


def config_label(key: str) -> str:
    section, _, name = key.partition(".")
    return f"[{section}] {name}"


# --------------------------------------------------------------------------------------------
# Rules: each returns None (fine) or what the value must be
# --------------------------------------------------------------------------------------------

Rule = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    def rule(v: Any) -> str | None:
        if not _is_int(v):
            return "an integer"
        if lo is not None and v < lo:
            return f"an integer >= {lo}"
        if hi is not None and v > hi:
            return f"an integer <= {hi}"
        return None

    return rule


def number(what: str, ok: Callable[[float], bool]) -> Rule:
    def rule(v: Any) -> str | None:
        if not _is_num(v) or not math.isfinite(float(v)) or not ok(float(v)):
            return what
        return None

    return rule


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def string(v: Any) -> str | None:
    return None if isinstance(v, str) and v != "" else "a non-empty string"


def table(v: Any) -> str | None:
    return None if isinstance(v, Mapping) and all(isinstance(k, str) for k in v) else "a table (key = value)"


def strings(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and v and all(isinstance(x, str) and x for x in v)
    return None if ok else "a non-empty list of strings"


def int_list(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and all(_is_int(x) and x >= 0 for x in v)
    return None if ok else "a list of integers >= 0"


def betas(v: Any) -> str | None:
    ok = (
        isinstance(v, (list, tuple))
        and len(v) == 2
        and all(_is_num(x) and math.isfinite(float(x)) and 0.0 <= float(x) < 1.0 for x in v)
    )
    return None if ok else "a pair of numbers in [0, 1)"


def optional(rule: Rule) -> Rule:
    def opt(v: Any) -> str | None:
        return None if v is None else rule(v)

    return opt


POSITIVE = number("a positive finite number", lambda x: x > 0)
NON_NEGATIVE = number("a finite number >= 0", lambda x: x >= 0)
UNIT = number("a number in [0, 1]", lambda x: 0 <= x <= 1)

RULES: dict[str, Rule] = {
    "student.name": optional(string),
    "student.scale": optional(integer(1, 16)),
    "student.weights": optional(string),
    "student.args": table,
    "student.strict": boolean,
    "teacher.name": optional(string),
    "teacher.weights": optional(string),
    "teacher.args": table,
    "method.name": string,
    "method.update": string,
    "method.recipe": string,
    "method.aug_prob": optional(UNIT),
    "method.w_pix": optional(NON_NEGATIVE),
    "method.w_kd": optional(NON_NEGATIVE),
    "method.zoom_in_tiles": optional(integer(0)),
    "method.zoom_out": optional(boolean),
    "method.true_inverse": optional(boolean),
    "method.clamp_zoom_out": optional(boolean),
    "method.zoom_out_aug": optional(boolean),
    "data.paths": strings,
    "data.workers": optional(integer(0)),
    "data.cache_dir": optional(string),
    "data.dataset": optional(string),
    "data.source": optional(string),
    "data.revision": optional(string),
    "train.iters": integer(1),
    "train.batch_size": integer(1),
    "train.patch_size": integer(1),
    "train.lr": POSITIVE,
    "train.milestones": int_list,
    "train.gamma": number("a number in (0, 1]", lambda x: 0 < x <= 1),
    "train.betas": betas,
    "train.eps": POSITIVE,
    "train.ema_decay": UNIT,
    "train.ema_warmup": optional(boolean),
    "train.eval_teacher": optional(boolean),
    "train.seed": integer(0, 2**63 - 1),
    "train.grad_clip": NON_NEGATIVE,
    "train.precision": optional(string),
    "train.channels_last": boolean,
    "train.compile": boolean,
    "train.device": string,
    "train.log_every": integer(0),
    "train.save_every": integer(0),
    "train.save_every_min": NON_NEGATIVE,
    "train.tensorboard": boolean,
    "val.every": integer(0),
    "val.bench": string,
    "val.data_dir": optional(string),
    "val.max_images": optional(integer(1)),
}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check(key: str, value: Any, label: str) -> None:
    """Raise a one-line :class:`DukdError` (``label`` names where the value came from) unless ``value``
    is acceptable for the configuration key ``key``. Keys without a rule (a plugin method's options)
    are left to their owner."""
    rule = RULES.get(key)
    if rule is None:
        return
    want = rule(value)
    if want is not None:
        raise DukdError(f"{label} must be {want}, got {_shown(value)}")


def check_config(key: str, value: Any) -> None:
    check(key, value, config_label(key))


def check_options(overrides: Mapping[str, Any]) -> None:
    """Check configuration values given as ``dukd distill`` options (message: the option's name)."""
    for key, value in overrides.items():
        check(key, value, option_for(key))
