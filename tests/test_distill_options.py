"""``dukd distill``'s options have one source, :data:`dukd_cli.distill.options.TABLE` (issue 20): the
command's parameters, the option -> configuration key map, the ``--demo`` refusal, the
configuration overrides, the recipe fixes' flags and the options ``dukd study`` shares with
``dukd distill`` are all drawn from it. A Typer parameter declared anywhere else fails here."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
import typer
from test_journey import run

from dukd_cli.cli import app
from dukd_cli.commands.distill import distill_cmd
from dukd_cli.distill import options, validate
from dukd_cli.distill.config import _METHOD_KEYS, DistillConfig
from dukd_cli.distill.options import TABLE


def _command(name: str = "distill"):
    return typer.main.get_command(app).commands[name]


def test_the_command_takes_exactly_the_tables_options_in_its_order():
    params = [p for p in _command().params if p.name != "help"]
    assert [p.name for p in params] == [o.name for o in TABLE]
    for p, o in zip(params, TABLE, strict=True):
        flags = [f for f in o.flags for f in f.split("/")]
        assert sorted(p.opts + p.secondary_opts) == sorted(flags), o.name
        assert p.help == o.distill_help and p.multiple == o.many, o.name
    # the function itself declares nothing: its parameters are the table's signature
    assert list(inspect.signature(distill_cmd, follow_wrapped=False).parameters) == [o.name for o in TABLE]
    code = distill_cmd.__code__
    assert code.co_argcount == 0 and code.co_kwonlyargcount == 0 and code.co_flags & inspect.CO_VARKEYWORDS


def test_names_and_flags_are_unique_and_every_option_is_in_help():
    names = [o.name for o in TABLE]
    flags = [f for o in TABLE for f in o.flags for f in f.split("/")]
    assert len(set(names)) == len(names) and len(set(flags)) == len(flags)
    code, shown, err = run("distill", "--help")
    assert code == 0, err
    missing = [o.flag for o in TABLE if o.flag not in shown]
    assert not missing, missing


def _declared_method_options() -> set[str]:
    from dukd_cli import registry

    return {k for _, cls in registry.methods().values() for k in getattr(cls, "options", {})}


def test_every_key_is_a_configuration_field():
    declared = _declared_method_options()
    for o in TABLE:
        if o.key is None:
            continue
        section, _, name = o.key.partition(".")
        if section == "method" and name not in _METHOD_KEYS:
            assert name in declared, f"{o.flag}: no method declares the option {name!r}"
            continue
        fields = {f.name for f in dataclasses.fields(getattr(DistillConfig(), section))}
        assert name in fields, f"{o.flag}: {o.key} is no configuration field"


def test_the_keymap_and_the_messages_come_from_the_table():
    assert validate.KEYMAP == {o.name: o.key for o in TABLE if o.key}
    for o in TABLE:
        if o.key:
            assert validate.option_for(o.key) == o.flag


def test_the_recipe_fixes_name_the_tables_flags():
    from dukd_cli.distill import recipes
    from dukd_cli.distill.config import DistillConfig

    # a fix declares its key only; its flag is the table's option for that key
    assert "flag" not in {f.name for f in dataclasses.fields(recipes.Fix)}
    assert len(options.BY_KEY) == len([o for o in TABLE if o.key])  # one option per key
    for fix in recipes.FIXES:
        assert fix.flag == options.BY_KEY[fix.key].flags[0], fix.name
    # and --dry-run names them as before
    cfg = DistillConfig()
    cfg.method.recipe = "authors"
    for fix in recipes.FIXES:
        cfg.set(fix.key, fix.on)
    lines = recipes.describe(cfg, {f.option: None for f in recipes.FIXES if f.method_scoped})
    assert [ln.rsplit(" (", 1)[1] for ln in lines[1:]] == [
        "--true-inverse/--no-true-inverse)",
        "--eval-teacher/--no-eval-teacher)",
        "--clamp-zoom-out/--no-clamp-zoom-out)",
        "--ema-warmup/--no-ema-warmup)",
        "--precision)",
        "--feature-grad/--no-feature-grad)",
    ]
    assert lines[1] == (
        "  explicit true_inverse = true overrides the authors recipe's false (--true-inverse/--no-true-inverse)"
    )


def _sample(o: options.Opt):
    if o.type is bool:
        return True
    value = {str: "x", int: 2, float: 0.5}.get(o.type, "x")
    return [value] if o.many else value


def test_demo_refuses_exactly_the_options_the_table_marks():
    for o in TABLE:
        refused = options.refused_by_demo({o.name: _sample(o)})
        assert refused == ([] if o.demo else [o.flag]), o.name
    assert options.refused_by_demo({o.name: o.default for o in TABLE}) == []  # defaults: nothing given
    # what the demo takes is its run's configuration (run_demo's keywords) or the command's own
    from dukd_cli.distill.demo import demo_config

    taken = {o.name for o in TABLE if o.demo}
    assert taken - {"out", "data_dir", "threads", "demo"} == set(inspect.signature(demo_config).parameters)


def test_overrides_follow_the_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pth").write_bytes(b"x")
    out = options.to_overrides(
        {
            "non_strict": True,
            "student_weights": "w.pth",
            "feature_layers": "a, b",
            "milestones": "10,20",
            "method_opt": ["aug_prob=0.5", "max_side=48"],
            "aug_prob": 0.1,
            "no_such": 1,
            "dry_run": False,
        }
    )
    assert out == {
        "method.aug_prob": 0.1,  # its own option wins over --method-opt
        "method.max_side": 48,
        "student.weights": str(tmp_path / "w.pth"),
        "student.strict": False,
        "method.feature_layers": ["a", "b"],
        "train.milestones": [10, 20],
    }


def test_a_command_takes_a_table_option_only_as_the_table_types_it():
    from dukd_cli.commands._options import distill_options

    def wrong_type(scale: str | None = None) -> None: ...

    def not_in_table(bench: str | None = None) -> None: ...

    def many_of_one(scale: list[int] | None = None) -> None: ...

    def taken_once(teacher: str | None = None, data: list[str] | None = None) -> None: ...

    with pytest.raises(TypeError, match="--scale is int"):
        distill_options(scale="")(wrong_type)
    with pytest.raises(TypeError, match="no option 'bench'"):
        distill_options(bench="")(not_in_table)
    with pytest.raises(TypeError, match="--scale is int"):
        distill_options(scale="")(many_of_one)
    with pytest.raises(TypeError, match="no parameter lr"):
        distill_options(lr="")(taken_once)
    sig = inspect.signature(distill_options(teacher="Once.", data="")(taken_once))
    base, info = typing.get_args(sig.parameters["teacher"].annotation)
    assert base == (str | None) and sig.parameters["teacher"].default is None
    assert (info.default, *info.param_decls) == options.BY_NAME["teacher"].flags
    assert info.help == options.BY_NAME["teacher"].help + " Once."


# ------------------------------------------------------------------------------------------------
# dukd study: the options it shares with dukd distill are the table's
# ------------------------------------------------------------------------------------------------

#: dukd study's own options whose flag is also one of dukd distill's, and why they are not the table's.
STUDY_OWN = {
    "method": "a grid axis: repeatable, NAME or NAME+FEATURE",
    "student": "a grid axis: repeatable, NAME:key=value,...",
    "threads": "no --workers in a study (its help would name an option the study lacks)",
    "dry_run": "prints the plan and checks every cell",
}


def test_study_takes_the_options_it_shares_with_distill_from_the_table():
    by_flag = {f: o for o in TABLE for fl in o.flags for f in fl.split("/")}
    study = [p for p in _command("study").params if p.name != "help"]
    shared = []
    for p in study:
        flags = p.opts + p.secondary_opts
        hits = {by_flag[f].name for f in flags if f in by_flag}
        if not hits or p.name in STUDY_OWN:
            continue
        shared.append(p.name)
        (name,) = hits
        o = options.BY_NAME[name]
        # the table's entry: its name (so its configuration key), every flag of it, its help
        assert p.name == o.name and sorted(flags) == sorted(f for fl in o.flags for f in fl.split("/")), (
            p.name
        )
        assert p.help.startswith(o.help), p.name  # then what a study adds
        assert not o.distill_only or o.distill_only not in p.help, p.name
        assert not p.multiple or o.many, p.name
    assert shared == [
        "teacher", "teacher_weights", "scale", "data", "iters", "batch_size", "patch_size", "lr",
        "data_dir", "csd_width", "csd_vgg_weights", "device", "cache_dir",
    ]  # fmt: skip
    assert [p.name for p in study if p.name in STUDY_OWN] == list(STUDY_OWN)
    flags = [f for p in study for f in p.opts + p.secondary_opts]
    assert len(flags) == len(set(flags)), flags  # no short flag taken twice (-m, -s, -t, -d, -b)


def test_study_dry_run_plans_with_the_shared_options(tmp_path, tiny_x2, run_dukd):
    weights, _ = tiny_x2
    data = tmp_path / "photos"
    data.mkdir()
    root = tmp_path / "study"
    code, out, err = run_dukd(
        "study", root, "-m", "kd", "-s", "edsr:n_feats=8,n_resblocks=1", "-t", "tiny",
        "--teacher-weights", weights, "--scale", "2", "-d", data, "--iters", "3", "--batch-size", "2",
        "--patch-size", "8", "--lr", "0.001", "--seeds", "0", "--data-dir", tmp_path, "--csd-width", "0.5",
        "--device", "cpu", "--cache-dir", tmp_path / "cache", "--dry-run",
    )  # fmt: skip
    assert code == 0, out + err
    assert f"teacher: tiny (weights {weights.resolve()})" in out
    assert f"data: {data.resolve()}" in out
    assert "training: iters 3, batch_size 2, patch_size 8, lr 0.001" in out
    assert f"evaluated on: set5 in {tmp_path.resolve()}" in out
    assert "csd: {'width': 0.5}" in out and "x2" in out
    assert "edsr-n_feats8-n_resblocks1/kd/seed0: to run" in out and "1 cells" in out
    assert not root.exists()
