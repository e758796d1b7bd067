"""Fixtures of tests/security: private caches (Hub, dukd) under the test's temporary folder."""

from __future__ import annotations

import pytest


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
