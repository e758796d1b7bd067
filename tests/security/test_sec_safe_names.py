"""The helpers every name from outside goes through before it becomes a path
(:mod:`dukd_cli.sources.safe`; also for output names such as ``--suffix``)."""

from __future__ import annotations

import pytest

from dukd_cli.sources.safe import MAX_NAME, UnsafePathError, ensure_inside, inside, safe_basename


def test_safe_basename_keeps_one_harmless_component():
    cases = {
        "../../etc/passwd": "passwd",
        "..": "download",
        ".": "download",
        "a\\..\\..\\b.pth": "b.pth",
        "/abs/path/w.safetensors": "w.safetensors",
        ".hidden": "hidden",
        "x\x00y\x1b[31m.pth": "x_y_[31m.pth",
        "": "download",
        "C:\\Windows\\w.pth": "w.pth",
        "a\u2028b.png": "a_b.png",
    }
    for raw, want in cases.items():
        assert safe_basename(raw) == want, raw
    long = safe_basename("x" * 500 + ".safetensors")
    assert len(long) <= MAX_NAME and long.endswith(".safetensors") and "/" not in long


def test_inside_follows_links_and_dotdot(tmp_path):
    root = tmp_path / "cache"
    (root / "k").mkdir(parents=True)
    (root / "k" / "out").symlink_to(tmp_path)
    assert inside(root, root / "k" / "f.bin")
    assert not inside(root, root / "k" / ".." / ".." / "f.bin")
    assert not inside(root, root / "k" / "out" / "f.bin")  # through a link to outside
    with pytest.raises(UnsafePathError, match="outside"):
        ensure_inside(root, root / "k" / "out" / "f.bin")
