"""dukd_cli.sources: https downloads (resume, hash check, nothing half-written) against a server on
127.0.0.1, Hub caches built here in huggingface_hub's layout, super-image repositories by id, and the
paper teachers' declared sources."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest
import torch

from dukd_cli.errors import DukdError, WeightsError
from dukd_cli.sources import fetch
from dukd_cli.sources.errors import SourceError
from dukd_cli.sources.hub import parse_hub_source
from dukd_cli.sources.url import cache_path, parse_url_source, url_download

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def build_hub_cache(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str, repo_type: str = "model"
):
    """Lay files out exactly as huggingface_hub's cache does (blobs, refs/main, snapshots/<commit>)."""
    repo_dir = cache / (("datasets--" if repo_type == "dataset" else "models--") + repo_id.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for name, payload in files.items():
        blob = hashlib.sha256(payload).hexdigest()
        (repo_dir / "blobs" / blob).write_bytes(payload)
        snap = repo_dir / "snapshots" / commit / name
        snap.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(repo_dir / "blobs" / blob, snap.parent), snap)
    return repo_dir


class _Server:
    """Serves PAYLOAD at /w.bin; honours Range; ``cut`` first responses stop after ``cut_at`` bytes."""

    def __init__(self, payload=PAYLOAD, cuts=0, cut_at=300_000):
        self.payload, self.cuts, self.cut_at, self.ranges = payload, cuts, cut_at, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}"
                    )
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cuts > 0:
                    outer.cuts -= 1
                    self.wfile.write(body[: outer.cut_at])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # a cut connection, mid-file
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/w.bin"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return cache


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_https_download_resumes_after_a_cut_connection(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    srv = _Server(cuts=2)
    try:
        path = url_download(parse_url_source(f"{srv.url}#sha256={SHA}"), progress=False)
    finally:
        srv.close()
    assert path.read_bytes() == PAYLOAD
    assert path == cache_path(parse_url_source(srv.url), SHA) and hub in path.parents  # the one cache
    assert srv.ranges == [None, "bytes=300000-", "bytes=600000-"]  # resumed where each cut left off
    assert not list(path.parent.glob("*.part"))
    # cached: no second download, offline too
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch(f"{srv.url}#sha256={SHA}") == path


def test_interrupted_download_leaves_nothing_taken_for_the_file_and_resumes_next_time(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    srv = _Server(cuts=99, cut_at=100_000)
    src = parse_url_source(f"{srv.url}#sha256={SHA}")
    try:
        with pytest.raises(SourceError, match="after 4 attempts.*resume"):
            url_download(src, progress=False)
        final = cache_path(src)
        assert not final.exists()  # never the final name while incomplete
        part = final.with_name(final.name + ".part")
        assert part.stat().st_size == 400_000
        srv.cuts = 0
        assert url_download(src, progress=False).read_bytes() == PAYLOAD
        assert srv.ranges[-1] == "bytes=400000-"
    finally:
        srv.close()


def test_hash_mismatch_is_refused_and_nothing_is_kept(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    srv = _Server()
    src = parse_url_source(f"{srv.url}#sha256={'0' * 64}")
    try:
        with pytest.raises(SourceError, match="SHA-256 mismatch.*refusing"):
            url_download(src, progress=False)
    finally:
        srv.close()
    assert not any(p.is_file() for p in cache_path(src).parent.iterdir())


def test_offline_https_source_not_cached_is_one_clear_line(hub):
    with pytest.raises(SourceError, match="not in the download cache.*HF_HUB_OFFLINE"):
        fetch("https://example.invalid/w.pth")


def test_dataset_sources_parse_and_come_from_the_hub_cache(hub):
    s = parse_hub_source("hf://datasets/o/r/data/A.tar.gz@" + "a" * 40 + "#sha256=" + "b" * 64)
    assert (s.repo_type, s.repo_id, s.filename, s.revision) == ("dataset", "o/r", "data/A.tar.gz", "a" * 40)
    assert parse_hub_source("hf://o/r", allow_repo=True).filename == ""
    commit = "1" * 40
    build_hub_cache(hub, "o/r", {"data/A.tar.gz": b"archive"}, commit, repo_type="dataset")
    assert fetch(f"hf://datasets/o/r/data/A.tar.gz@{commit}").read_bytes() == b"archive"
    with pytest.raises(SourceError, match="SHA-256 mismatch"):
        fetch(f"hf://datasets/o/r/data/A.tar.gz@{commit}#sha256={'c' * 64}")
    with pytest.raises(SourceError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        fetch(f"hf://datasets/o/r/data/B.tar.gz@{commit}")


def test_super_image_repository_by_id_builds_its_edsr(hub):
    """hf://OWNER/REPO reads config.json: [0,1] input, no mean shift, its res_scale and sizes."""
    from dukd_cli.models.factory import create_model, resolve_spec

    torch.manual_seed(0)
    ref = create_model("edsr", 2, n_feats=8, n_resblocks=2, res_scale=1.0, img_range=1.0, mean_shift=False)
    sd = {k: v for k, v in ref.state_dict().items() if "mean" not in k}
    buf = Path(hub.parent / "w.pt")
    torch.save(sd, buf)
    cfg = {"model_type": "EDSR", "n_resblocks": 2, "n_feats": 8, "res_scale": 1, "supported_scales": [2]}
    build_hub_cache(
        hub,
        "eugenesiow/edsr-tiny",
        {"config.json": json.dumps(cfg).encode(), "pytorch_model_2x.pt": buf.read_bytes()},
        "2" * 40,
    )
    spec = resolve_spec("edsr", None, weights="hf://eugenesiow/edsr-tiny")
    assert spec.scale == 2 and spec.weights == "hf://eugenesiow/edsr-tiny"
    assert spec.kwargs == {
        "n_feats": 8,
        "n_resblocks": 2,
        "res_scale": 1.0,
        "img_range": 1.0,
        "mean_shift": False,
    }
    m = create_model("edsr", 2, weights="hf://eugenesiow/edsr-tiny")
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(m(x), ref(x))
    with pytest.raises(WeightsError, match="no x4 model"):
        resolve_spec("edsr", 4, weights="hf://eugenesiow/edsr-tiny")
    with pytest.raises(DukdError, match="holds a edsr model"):
        resolve_spec("rcan", 2, weights="hf://eugenesiow/edsr-tiny")


def test_paper_teachers_declare_their_files_sources_and_numbers():
    from dukd_cli import registry

    for name, prefix in (
        ("edsr-l", "EDSR_Lx"),
        ("rcan-l", "RCAN_BIX"),
        ("swinir-l", "001_classicalSR_DIV2K_s48w8"),
    ):
        for s in (2, 3, 4):
            ws = registry.source_of(registry.get_preset(name).weights[s])
            assert ws.filename.startswith(prefix) and f"{s}" in ws.filename
            if (name, s) not in (("edsr-l", 2), ("edsr-l", 3)):  # EDSR x2/x3 numbers not recorded
                assert ws.published and ws.published_by, (name, s)
            if ws.source:
                assert (
                    "@" in ws.source and ws.sha256 and len(ws.sha256) == 64
                )  # pinned revision and full hash
                assert ws.mirrors[0].startswith("https://github.com/JingyunLiang/SwinIR/releases/download/")
            for alt in ws.alternatives:
                assert "NOT the paper's file" in alt.notes
    e4 = registry.source_of(registry.get_preset("edsr-l").weights[4])
    assert e4.sha256 == "76ee1c8f" and not e4.sources and "BasicSR's model zoo" in e4.notes
    assert "--" not in e4.notes  # shown by any command and by the Python API: names no option


def test_declared_sources_are_tried_in_order_and_a_known_file_is_hash_checked(hub, tmp_path):
    from dukd_cli.models.weights import resolve

    with pytest.raises(WeightsError, match="none of its 2 sources worked.*uwg/upscaler.*github.com"):
        resolve("swinir-l", scale=4)
    with pytest.raises(WeightsError, match='no public Hub copy.*pass weights="PATH/EDSR_Lx4'):
        resolve("EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth")
    fake = tmp_path / "EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth"
    torch.save({"w": torch.zeros(1)}, fake)
    with pytest.raises(WeightsError, match="SHA-256 mismatch.*the published EDSR_Lx4"):
        resolve(fake)
