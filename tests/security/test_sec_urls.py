"""Names from the network never become paths: hostile URLs served on 127.0.0.1 (encoded separators,
``..``, an absolute path), hostile hf:// parts, and the messages of http(s) downloads."""

from __future__ import annotations

import hashlib
import socket
import urllib.parse

import pytest
from hostile import Server, flat, set5_members, tar_gz

from dukd_cli.sources import fetch
from dukd_cli.sources.errors import SourceError
from dukd_cli.sources.hub import parse_hub_source

BODY = b"served bytes " * 100


def test_url_with_encoded_separators_is_cached_inside_the_cache(env, monkeypatch):
    """``x%2F..%2F..%2F..%2F..%2Fescaped.bin`` used to be written four folders above the cache key,
    and an existing file there was returned as the download."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    srv = Server(BODY)
    victim = env / "victim.bin"  # where the old code would have read from (and returned) ...
    victim.write_bytes(b"a local file the URL must not reach")
    escaped = env / "escaped.bin"  # ... and written to
    try:
        got = fetch(f"{srv.base}/x%2F..%2F..%2F..%2F..%2Fescaped.bin", progress=False)
        got2 = fetch(f"{srv.base}/x%2F..%2F..%2F..%2F..%2Fvictim.bin", progress=False)
    finally:
        srv.close()
    assert not escaped.exists()
    assert victim.read_bytes() == b"a local file the URL must not reach"
    downloads = (env / "hub" / "dukd-downloads").resolve()
    for p, name in ((got, "escaped.bin"), (got2, "victim.bin")):
        assert p.resolve().parent.parent == downloads and p.name == name  # <cache>/<key>/<safe name>
        assert p.read_bytes() == BODY
    assert len(srv.paths) == 2  # both were downloaded, neither taken from the disk outside the cache


def test_data_fetch_from_an_absolute_path_url_stays_in_the_cache_and_warns_about_http(
    env, bench_cache, monkeypatch, run_dukd
):
    """``http://HOST/%2F<abs>/Set5.tar.gz`` used to leave the archive at ``<abs>/Set5.tar.gz``."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    target = env / "elsewhere" / "Set5.tar.gz"
    srv = Server(tar_gz(set5_members()))
    try:
        url = f"{srv.base}/{urllib.parse.quote(str(target), safe='')}"
        code, out, err = run_dukd("data", "fetch", "set5", "--source", url)
    finally:
        srv.close()
    assert code == 0, err
    assert not target.exists() and not target.parent.exists()
    assert len(list((bench_cache / "Set5" / "HR").glob("*.png"))) == 5
    cached = [p for p in (env / "hub" / "dukd-downloads").glob("*/*") if p.parent.name != ".locks"]
    assert [p.name for p in cached] == ["Set5.tar.gz"]
    warning = [ln for ln in err.splitlines() if "plain http" in ln]
    assert len(warning) == 1 and "no transport security" in warning[0]


def test_a_failed_download_names_no_part_file_that_does_not_exist(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError) as info:
        fetch(f"https://127.0.0.1:{port}/w.safetensors", progress=False)
    msg = flat(str(info.value))
    assert "after 4 attempts" in msg and ".part" not in msg and "nothing was received" in msg
    assert not list((env / "hub").rglob("*.part"))


def test_hub_sources_with_dotdot_parts_are_refused():
    for bad in (
        "hf://o/r/../../../x.pth",
        "hf://o/r/a/./b.pth",
        "hf://o/r/w.pth@../../x",
        "hf://datasets/o/r/data\\..\\x.tar.gz",
    ):
        with pytest.raises(SourceError, match="not allowed"):
            parse_hub_source(bad)
    assert parse_hub_source("hf://o/r/sub/w.pth@main").filename == "sub/w.pth"


def test_a_declared_file_is_cached_under_its_declared_name(env, monkeypatch):
    """A preset's declared source whose URL ends in a hostile segment: cached as the declared name."""
    from dukd_cli.models.weights import resolve_declared
    from dukd_cli.registry import WeightSource

    monkeypatch.delenv("HF_HUB_OFFLINE")
    srv = Server(BODY)
    ws = WeightSource(
        f"{srv.base}/dl%2F..%2F..%2Fevil", filename="net_x4.pth", sha256=hashlib.sha256(BODY).hexdigest()
    )
    try:
        got = resolve_declared(ws)
    finally:
        srv.close()
    assert got.name == "net_x4.pth" and got.read_bytes() == BODY
    assert got.resolve().parent.parent == (env / "hub" / "dukd-downloads").resolve()
    assert not (env / "hub" / "dukd-downloads" / "evil").exists()
