"""The plugin registry, exercised with a really installed third-party distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from dukd_cli import registry
from dukd_cli.errors import DukdError, UnknownModelError
from dukd_cli.models.factory import count_parameters, create_model, resolve_spec
from dukd_cli.models.spec import parse_model_args


def test_plugin_architecture_is_discovered_and_builds(tiny_plugin):
    assert "tiny" in registry.names(registry.ARCH_GROUP)
    assert registry.entry(registry.ARCH_GROUP, "tiny").provider == "dukd-testplugin"
    model = create_model("tiny", 3, n_feats=6)
    y = model(torch.rand(2, 3, 5, 7))
    assert y.shape == (2, 3, 15, 21)
    assert model.conv_first.out_channels == 6


def test_plugin_preset_resolves(tiny_plugin):
    spec = resolve_spec("tiny4", 4)
    assert (spec.arch, spec.kwargs, spec.preset) == ("tiny", {"n_feats": 4}, "tiny4")
    with pytest.raises(DukdError, match="x2, x4, not x3"):
        resolve_spec("tiny4", 3)
    # constructor arguments override the preset's
    assert resolve_spec("tiny4", 2, kwargs={"n_feats": 5}).kwargs == {"n_feats": 5}


def test_broken_plugin_is_reported_by_name_and_the_rest_works(tiny_plugin):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        archs = registry.architectures()
    assert "tiny" in archs and "broken" not in archs
    msgs = [str(w.message) for w in caught if issubclass(w.category, registry.PluginWarning)]
    assert any("'broken'" in m and "dukd-testplugin" in m for m in msgs), msgs
    with pytest.raises(UnknownModelError, match="broken.*failed to load"):
        registry.get_architecture("broken")


def test_unknown_names_give_suggestions(tiny_plugin):
    with pytest.raises(UnknownModelError, match="did you mean tiny"):
        create_model("tiyn", 2)


def test_unknown_constructor_argument_is_one_clear_error(tiny_plugin):
    with pytest.raises(DukdError, match="takes no argument 'n_blocks'; it accepts: n_feats"):
        create_model("tiny", 2, n_blocks=3)
    with pytest.raises(DukdError, match="cannot build 'tiny' at x8"):
        create_model("tiny", 8)


def test_parse_model_args():
    assert parse_model_args(["n_feats=64", "res_scale=0.1", "depths=[6,6]", "name=abc", "flag=true"]) == {
        "n_feats": 64,
        "res_scale": 0.1,
        "depths": (6, 6),
        "name": "abc",
        "flag": True,
    }
    with pytest.raises(DukdError, match="key=value"):
        parse_model_args(["n_feats"])


def test_cli_lists_and_describes_the_plugin(tiny_plugin, run_dukd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run_dukd("zoo", "list", "tiny")
    assert code == 0, err
    assert "tiny4" in out and "dukd-testplugin" in out
    code, out, err = run_dukd("zoo", "info", "tiny", "--scale", "3", "--arg", "n_feats=6", "--json")
    assert code == 0, err
    data = json.loads(out)
    expected = count_parameters(create_model("tiny", 3, n_feats=6))
    assert (data["name"], data["scale"], data["params"]) == ("tiny", 3, expected)
    assert data["arguments"] == {"n_feats": 6}


def test_cli_errors_are_one_line(tiny_plugin, run_dukd):
    code, out, err = run_dukd("zoo", "info", "no-such-model")
    assert code == 1
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:") and "no-such-model" in lines[0]
    assert "Traceback" not in err


def test_installed_plugin_visible_to_a_fresh_process(tiny_plugin):
    """The real thing: a separate interpreter, the plugin only on PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tiny_plugin), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "dukd_cli", "zoo", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["tiny"]["provider"] == "dukd-testplugin"
    assert rows["tiny"]["kind"] == "architecture"
    assert rows["tiny"]["scales"] == [2, 3, 4]
    assert rows["tiny4"]["kind"] == "preset"
    assert "broken" in proc.stderr and "failed to load" in proc.stderr
