"""A third-party architecture takes part in detection through its own ``detect`` hook (issue 20):
``dukd zoo info FILE`` (the installed console script) and ``resolve_spec`` recognise a checkpoint of
it, with its constructor arguments read off the shapes. Without the hook it is not recognised."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PLUGIN = """
import torch
from torch import nn

from dukd_cli.models.shapes import Found, indices, pixel_shuffle_scale


class Stack(nn.Module):
    def __init__(self, scale, width=8, depth=2):
        super().__init__()
        self.scale = scale
        self.inp = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(depth))
        self.out = nn.Conv2d(width, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        y = self.inp(x)
        for b in self.blocks:
            y = torch.relu(b(y)) + y
        return self.shuffle(self.out(y))


def stack(scale, width=8, depth=2):
    return Stack(scale, width, depth)


def _detect(native, original):
    inp, out = native.get("inp.weight"), native.get("out.weight")
    if inp is None or out is None:
        return None
    scale = pixel_shuffle_scale(out[0])
    depth = len(indices(native, r"blocks\\.(\\d+)\\.weight"))
    if scale is None or not depth:
        return None
    return Found(scale, {"width": inp[0], "depth": depth}, ("width", "depth"), f"Stack {inp[0]} ch, {depth} blocks")


if HOOK:
    stack.detect = _detect
"""


def _install(root: Path, hook: bool) -> Path:
    pkg = root / "stack_sr"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"HOOK = {hook}\n" + PLUGIN)
    info = root / "stack_sr-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stack-sr\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dukd.architectures]\nstack = stack_sr:stack\n")
    return root


def _checkpoint(root: Path, path: Path) -> None:
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import stack_sr; "
        "torch.manual_seed(0); torch.save(stack_sr.stack(3, width=12, depth=3).state_dict(), sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, str(root), str(path)], check=True)


def _dukd() -> str:
    script = Path(sys.executable).with_name("dukd")
    found = str(script) if script.exists() else shutil.which("dukd")
    if not found:
        pytest.skip("the dukd console script is not installed beside this Python")
    return found


@pytest.mark.parametrize("hook", [True, False])
def test_zoo_info_recognises_a_plugin_checkpoint_through_its_hook(tmp_path, hook):
    root = _install(tmp_path / "site", hook)
    ckpt = tmp_path / "stack.pth"
    _checkpoint(root, ckpt)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([_dukd(), "zoo", "info", str(ckpt), "--json"], capture_output=True, text=True, env=env)
    if hook:
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["architecture"] == "stack" and data["scale"] == 3
        assert data["detected"]["arguments"] == {"width": 12, "depth": 3}
        r2 = subprocess.run([_dukd(), "zoo", "info", str(ckpt)], capture_output=True, text=True, env=env)
        assert r2.returncode == 0 and "Stack 12 ch, 3 blocks x3" in r2.stdout
    else:
        assert r.returncode != 0
        assert "match no registered architecture" in r.stderr or "recognises" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_resolve_spec_builds_a_detected_plugin_network(tmp_path, monkeypatch):
    from dukd_cli import registry
    from dukd_cli.models.detect import detectable
    from dukd_cli.models.factory import build, resolve_spec

    root = _install(tmp_path / "site", True)
    ckpt = tmp_path / "stack.pth"
    _checkpoint(root, ckpt)
    monkeypatch.syspath_prepend(str(root))
    registry.refresh()
    try:
        assert detectable()[:4] == ("edsr", "rcan", "swinir", "imdn") and "stack" in detectable()
        spec = resolve_spec(str(ckpt), None)
        assert (spec.arch, spec.scale, spec.kwargs["width"], spec.kwargs["depth"]) == ("stack", 3, 12, 3)
        model = build(spec).eval()
        with torch.no_grad():
            y = model(torch.rand(1, 3, 5, 6))
        assert y.shape == (1, 3, 15, 18)
    finally:
        sys.modules.pop("stack_sr", None)
        monkeypatch.undo()
        registry.refresh()
