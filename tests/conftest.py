"""Shared test fixtures.

Tests that need the project's shared data (benchmark images, MATLAB fixtures, IMDN weights) find
it through one setting: the environment variable ``DUKD_SHARED`` (default: ``../shared`` beside
the project root). They skip with a clear reason only where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("DUKD_SHARED", ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder; skips the test when it is absent."""
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(
            f"shared data not found at {root} (set DUKD_SHARED to the folder holding data/ and models/)"
        )
    return root


@pytest.fixture(scope="session")
def benchmarks_dir(shared: Path) -> Path:
    return shared / "data" / "benchmarks"


@pytest.fixture(scope="session")
def imdn_dir(shared: Path) -> Path:
    d = shared / "models" / "imdn"
    if not d.is_dir():
        pytest.skip(f"IMDN weights not found at {d}")
    return d


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Caches the code writes (decoded training images, zoo parameter counts) go to a temporary
    folder for the session, never into the user's ~/.cache/dukd. A test may still set DUKD_CACHE."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUKD_CACHE", str(tmp_path_factory.mktemp("dukd-cache")))
        yield


@pytest.fixture(autouse=True)
def _api_phrasing():
    """Each test starts with messages phrased for the Python API: a command run in-process (run_dukd)
    sets the option names its messages use for the rest of its context, which must not leak."""
    from dukd_cli.models import options

    options.use(options.API)
    yield
    options.use(options.API)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never reach the network: the Hub client runs offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------
# A real third-party plugin, installed the way pip would (a *.dist-info with entry_points.txt),
# on a temporary sys.path entry. Nothing in the registry is patched.
# ---------------------------------------------------------------------------------------------

PLUGIN_CODE = '''
import torch
from torch import nn
from dukd_cli.registry import Preset


class Tiny(nn.Module):
    """A tiny SR network: conv -> relu -> conv -> pixel shuffle, plus a nearest-neighbour skip."""

    def __init__(self, scale, n_feats=8):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"tiny supports x2, x3, x4, not x{scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(3, n_feats, 3, padding=1)
        self.conv_last = nn.Conv2d(n_feats, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        skip = nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return self.shuffle(self.conv_last(torch.relu(self.conv_first(x)))) + skip

    @staticmethod
    def convert_state_dict(sd):
        """Foreign layout 'head.*'/'tail.*' -> native names."""
        out = {}
        for k, v in sd.items():
            k = k.replace("head.", "conv_first.", 1) if k.startswith("head.") else k
            k = k.replace("tail.", "conv_last.", 1) if k.startswith("tail.") else k
            out[k] = v
        return out


def tiny(scale, n_feats=8):
    return Tiny(scale, n_feats=n_feats)


TINY4 = Preset(arch="tiny", kwargs={"n_feats": 4}, scales=(2, 4), description="a tiny test preset")
'''

PLUGIN_ENTRY_POINTS = """\
[dukd.architectures]
tiny = dukd_testplugin:tiny
broken = dukd_testplugin_missing:nothing

[dukd.presets]
tiny4 = dukd_testplugin:TINY4
"""


def make_plugin_dir(root: Path) -> Path:
    """Write an installed-looking distribution 'dukd-testplugin' under ``root``."""
    pkg = root / "dukd_testplugin"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(PLUGIN_CODE)
    info = root / "dukd_testplugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dukd-testplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(PLUGIN_ENTRY_POINTS)
    (info / "top_level.txt").write_text("dukd_testplugin\n")
    return root


@pytest.fixture
def tiny_plugin(tmp_path_factory, monkeypatch):
    """Install the test plugin on sys.path for this test; yields its folder (for PYTHONPATH)."""
    import sys

    from dukd_cli import registry

    root = make_plugin_dir(tmp_path_factory.mktemp("plugin"))
    monkeypatch.syspath_prepend(str(root))
    registry.refresh()
    yield root
    sys.modules.pop("dukd_testplugin", None)
    monkeypatch.undo()
    registry.refresh()


@pytest.fixture
def tiny_x2(tiny_plugin, tmp_path):
    """(weights file, model) of a seeded tiny x2 network from the test plugin (8 features)."""
    import torch
    from safetensors.torch import save_file

    from dukd_cli.models.factory import create_model

    torch.manual_seed(0)
    m = create_model("tiny", 2, n_feats=8).eval()
    w = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(w))
    return w, m


@pytest.fixture
def run_dukd(capsys):
    """Run the CLI in-process: ``code, out, err = run_dukd("zoo", "list")``."""
    import sys

    from dukd_cli.cli import main

    def run(*args: str):
        old = sys.argv
        sys.argv = ["dukd", *map(str, args)]
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = old
        out, err = capsys.readouterr()
        return code, out, err

    return run


# ---------------------------------------------------------------------------------------------
# tests/security: private caches (Hub, dukd) under the test's temporary folder. Kept here (one
# conftest module) so that tests may import this file's helpers by name.
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def env(tmp_path, monkeypatch):
    """Private caches: the Hub's under tmp/hub, dukd's (benchmarks, datasets) under tmp/xdg."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DUKD_DATA", raising=False)
    monkeypatch.delenv("DUKD_MAX_EXTRACT_BYTES", raising=False)
    return tmp_path


@pytest.fixture
def bench_cache(env):
    return env / "xdg" / "dukd" / "benchmarks"
