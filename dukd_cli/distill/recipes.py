"""Recipes: ``authors`` (the released DUKD iteration, numerically) and ``dukd`` (the same with our fixes).

Both recipes run one and the same iteration, the one in the authors' released BasicSR plugin
(``models/dukd_model.py`` with ``options/*/dukd_*.yml``): per-family defaults of the released
configs, two optimiser steps per iteration with the first step's gradients accumulated into the
second, zoom-out never augmented, the augmentation operations applied and drawn in the released
order (colour inversion, flip of the height axis, flip of the width axis, transpose; one draw per
operation for the whole batch), Adam (0.9, 0.99, 1e-8), the multi-step learning rate of the
iteration, an EMA of the parameters once per iteration. They differ **only** by the switches in
:data:`FIXES`, each one a configuration key of its own, so an ablation turns one off at a time:

* ``true_inverse`` ([method]): true inverses in reverse order / released: the same ops again, same order;
* ``eval_teacher`` ([train]): teacher in eval mode / released: train mode (under no_grad here);
* ``clamp_zoom_out`` ([method]): zoom-out clamped to [0, 1] / released: the bicubic overshoot kept;
* ``ema_warmup`` ([train]): decay ``min(d, (1 + t) / (10 + t))`` / released: constant ``d`` from iteration 1;
* ``bf16`` ([train] precision): ``auto`` (bf16 autocast on CUDA) / released: ``fp32``;
* ``feature_grad`` ([method]; feature methods): the feature term trains the student / released:
  detached (``models/fakd_model.py`` sums the tap losses through ``torch.tensor([...])``).

A key the user set (command line or ``--config`` file) wins over the recipe; the resolved value is
what ``config.toml`` records, so ``--resume`` runs the same iteration. Method keys apply to methods
that declare the option (``dukd``); the others apply to every method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dukd_cli.distill.options import BY_KEY
from dukd_cli.errors import DukdError

if TYPE_CHECKING:
    from dukd_cli.distill.config import DistillConfig

RECIPES = ("dukd", "authors")
DEFAULT_RECIPE = "dukd"


@dataclass(frozen=True)
class Fix:
    """One named difference between ``dukd`` and ``authors``."""

    name: str
    key: str  # dotted configuration key
    on: Any  # the value under the dukd recipe
    off: Any  # the released value (the authors recipe)
    what: str  # what the fix does
    released: str  # what the released code does instead

    @property
    def flag(self) -> str:
        """The command-line option that sets :attr:`key`, as ``dukd distill``'s option table declares it
        (``--true-inverse/--no-true-inverse``)."""
        return BY_KEY[self.key].flags[0]

    @property
    def method_scoped(self) -> bool:
        return self.key.startswith("method.")

    @property
    def option(self) -> str:
        return self.key.split(".", 1)[1]


FIXES: tuple[Fix, ...] = (
    Fix(
        "true_inverse",
        "method.true_inverse",
        True,
        False,
        "D^-1 applies the true inverse of each operation in reverse order",
        "re-applies the same operations in the same order (a transpose with one flip becomes a 180-degree "
        "rotation: the target of ~13% of zoom-in samples at p 0.3 is misaligned)",
    ),
    Fix(
        "eval_teacher",
        "train.eval_teacher",
        True,
        False,
        "the teacher runs in eval mode (deterministic labels)",
        "keeps the teacher in train mode (a SwinIR teacher's drop-path stays active: random labels)",
    ),
    Fix(
        "clamp_zoom_out",
        "method.clamp_zoom_out",
        True,
        False,
        "the zoom-out input is clamped to [0, 1] like every real input",
        "keeps the bicubic overshoot (values below 0 and above 1)",
    ),
    Fix(
        "ema_warmup",
        "train.ema_warmup",
        True,
        False,
        "EMA decay min(d, (1 + t) / (10 + t)): a short run is not dominated by the initial weights",
        "uses the constant decay 0.999 from the first iteration",
    ),
    Fix(
        "bf16",
        "train.precision",
        "auto",
        "fp32",
        "bf16 autocast on CUDA (precision auto; fp32 on the CPU)",
        "trains in fp32",
    ),
    Fix(
        "feature_grad",
        "method.feature_grad",
        True,
        False,
        "the feature term's gradient reaches the student (fakd, fitnet, at, fsp, dukd --feature-loss)",
        "sums the feature losses through torch.tensor([...]), which drops their gradient: the term is "
        "logged but trains nothing (its FAKD trains like KD)",
    ),
)


def check_recipe(name: str | None) -> str:
    recipe = (name or DEFAULT_RECIPE).strip().lower()
    if recipe not in RECIPES:
        raise DukdError(f"--recipe must be one of {', '.join(RECIPES)}, got '{name}'")
    return recipe


def recipe_value(fix: Fix, recipe: str) -> Any:
    return fix.on if check_recipe(recipe) == "dukd" else fix.off


def applicable(fix: Fix, method_options: Mapping[str, Any] | None) -> bool:
    """A method-scoped fix applies only to a method declaring that option."""
    return not fix.method_scoped or (method_options is not None and fix.option in method_options)


def apply_recipe(cfg: DistillConfig, method_options: Mapping[str, Any]) -> None:
    """Fill every switch the user left unset (``None`` / absent) with the recipe's value, in place.

    ``method_options`` is the method class's declared options (``Method.options``).
    """
    recipe = cfg.method.recipe = check_recipe(cfg.method.recipe)
    for fix in FIXES:
        if not applicable(fix, method_options):
            continue
        if fix.method_scoped:
            if cfg.method.options.get(fix.option) is None:
                cfg.method.options[fix.option] = recipe_value(fix, recipe)
        elif cfg.get(fix.key) is None:
            cfg.set(fix.key, recipe_value(fix, recipe))


@dataclass(frozen=True)
class FixState:
    fix: Fix
    value: Any
    in_force: bool  # the fix is on in this run
    overridden: bool  # the value differs from what the recipe gives (an explicit option)


def fix_states(cfg: DistillConfig, method_options: Mapping[str, Any]) -> list[FixState]:
    """Each applicable switch of a resolved configuration: on or off, and whether the recipe decided it."""
    recipe = check_recipe(cfg.method.recipe)
    out = []
    for fix in FIXES:
        if not applicable(fix, method_options):
            continue
        value = cfg.get(fix.key)
        if fix.name == "bf16":
            in_force = value in ("auto", "bf16")
        else:
            in_force = bool(value) == bool(fix.on)
        out.append(FixState(fix, value, in_force, not _same(value, recipe_value(fix, recipe))))
    return out


def _same(a: Any, b: Any) -> bool:
    return bool(a) == bool(b) if isinstance(b, bool) else a == b


def describe(cfg: DistillConfig, method_options: Mapping[str, Any]) -> list[str]:
    """Lines for ``--dry-run``: the recipe, the fixes in force, and explicit options that override it."""
    recipe = check_recipe(cfg.method.recipe)
    states = fix_states(cfg, method_options)
    on = [
        s.fix.name + (" (on CUDA)" if s.fix.name == "bf16" and s.value == "auto" else "")
        for s in states
        if s.in_force
    ]
    if recipe == "authors":
        head = "recipe: authors (the released iteration)"
    else:
        head = "recipe: dukd (the released iteration with our fixes)"
    lines = [head + f"; fixes in force: {', '.join(on) if on else 'none'}"]
    for s in states:
        if s.overridden:
            lines.append(
                f"  explicit {s.fix.key.split('.', 1)[1]} = {_fmt(s.value)} overrides the {recipe} recipe's "
                f"{_fmt(recipe_value(s.fix, recipe))} ({s.fix.flag})"
            )
    return lines


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def method_summary(cfg: DistillConfig) -> str | None:
    """One line of the upcycling settings in force (dukd only), for ``--dry-run``."""
    if cfg.method.name != "dukd":
        return None
    o = cfg.method.options
    zo = "on" if o.get("zoom_out") else "off"
    if o.get("zoom_out") and o.get("zoom_out_aug"):
        zo += " (augmented: extension)"
    feature = (
        f", feature term {o['feature_loss']} (w_feat {_num(o.get('w_feat'))})"
        if o.get("feature_loss")
        else ""
    )
    return (
        f"dukd: zoom-out {zo}, zoom-in tiles {o.get('zoom_in_tiles')}, augmentation p {_num(o.get('aug_prob'))} "
        f"(zoom-in only{'' if not o.get('zoom_out_aug') else ' and zoom-out'}), w_pix {_num(o.get('w_pix'))}, "
        f"w_kd {_num(o.get('w_kd'))}, update {cfg.method.update}{feature}"
    )


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
