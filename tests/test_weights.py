"""The weight resolver: safe reading, unwrapping, conversion, readable mismatches, the Hub path."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from dukd_cli.errors import StateDictMismatchError, UnsafeCheckpointError, WeightsError
from dukd_cli.models.factory import create_model
from dukd_cli.models.weights import load_into, load_state_dict, resolve, unwrap
from dukd_cli.sources.hub import parse_hub_source


@pytest.fixture
def tiny(tiny_plugin):
    torch.manual_seed(0)
    return create_model("tiny", 2, n_feats=4)


def _same_output(a, b):
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_safetensors_and_pth_round_trip(tiny, tmp_path):
    sd = tiny.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        m = create_model("tiny", 2, n_feats=4, weights=str(tmp_path / name))
        assert _same_output(tiny, m)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}},
        lambda sd: {"params": sd},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {}},
        lambda sd: {"net": {f"_orig_mod.{k}": v for k, v in sd.items()}},
    ],
)
def test_wrappers_and_prefixes_are_unwrapped(tiny, tmp_path, wrap):
    torch.save(wrap(tiny.state_dict()), tmp_path / "w.pth")
    m = create_model("tiny", 2, n_feats=4, weights=str(tmp_path / "w.pth"))
    assert _same_output(tiny, m)


def test_foreign_layout_is_converted_by_the_model(tiny, tmp_path):
    foreign = {
        k.replace("conv_first.", "head.").replace("conv_last.", "tail."): v
        for k, v in tiny.state_dict().items()
    }
    assert any(k.startswith("head.") for k in foreign)
    torch.save({"params": foreign}, tmp_path / "foreign.pt")
    assert _same_output(tiny, create_model("tiny", 2, n_feats=4, weights=str(tmp_path / "foreign.pt")))


def test_mismatch_is_a_readable_report(tiny, tmp_path):
    sd = dict(tiny.state_dict())
    sd.pop("conv_last.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["conv_first.weight"] = torch.zeros(5, 3, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(StateDictMismatchError) as info:
        create_model("tiny", 2, n_feats=4, weights=str(tmp_path / "bad.pth"))
    msg = str(info.value)
    assert "1 missing, 1 unexpected, 1 wrong-shape" in msg
    assert "conv_last.bias" in msg and "extra.weight" in msg and "(5, 3, 3, 3) vs (4, 3, 3, 3)" in msg


def test_non_strict_loads_what_matches(tiny):
    other = create_model("tiny", 4, n_feats=4)  # x4 tail has another shape
    before = other.conv_last.weight.clone()
    report = load_into(other, tiny.state_dict(), strict=False)
    assert torch.equal(other.conv_first.weight, tiny.conv_first.weight)
    assert torch.equal(other.conv_last.weight, before)
    assert [k for k, _, _ in report.wrong_shape] == ["conv_last.weight", "conv_last.bias"]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": {"w": _Evil(marker)}}, f)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        load_state_dict(path)
    assert not marker.exists()
    # also in torch.save's zip container
    torch.save({"w": torch.zeros(1), "cfg": _Evil(marker)}, tmp_path / "evil2.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict(tmp_path / "evil2.pt")
    assert not marker.exists()


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        load_state_dict(tmp_path / "empty.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="cannot read"):
        load_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="cannot read|refusing"):
        load_state_dict(tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="no tensors|not a state dict"):
        unwrap({"a": 1})


def test_hub_source_parsing():
    s = parse_hub_source("hf://owner/repo/sub/w.pth@v1.0#sha256=" + "a" * 64)
    assert (s.repo_id, s.filename, s.revision, s.sha256) == ("owner/repo", "sub/w.pth", "v1.0", "a" * 64)
    s = parse_hub_source("hf://owner/repo@abc123/w.safetensors")
    assert (s.repo_id, s.filename, s.revision) == ("owner/repo", "w.safetensors", "abc123")
    assert parse_hub_source("hf://o/r/f.pth").revision is None
    for bad in ("hf://owner/repo", "hf://owner//f.pth", "hf://o/r/f.pth#sha256=xyz"):
        with pytest.raises(WeightsError):
            parse_hub_source(bad)


def _build_hub_cache(
    cache, repo_id, filename, payload: bytes, commit="0123456789abcdef0123456789abcdef01234567"
):
    """Lay a file out exactly as huggingface_hub's cache does (blobs, refs, snapshots)."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    blob = hashlib.sha256(payload).hexdigest()
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs" / blob).write_bytes(payload)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(repo_dir / "blobs" / blob, snap.parent), snap)
    return commit, blob


def test_hub_path_offline_from_the_cache(tiny, tmp_path, monkeypatch):
    src = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(src))
    payload = src.read_bytes()
    cache = tmp_path / "hub"
    commit, sha = _build_hub_cache(cache, "someone/tiny-sr", "x2/w.safetensors", payload)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    for source in (
        "hf://someone/tiny-sr/x2/w.safetensors",
        f"hf://someone/tiny-sr/x2/w.safetensors@{commit}",
        f"hf://someone/tiny-sr@main/x2/w.safetensors#sha256={sha}",
    ):
        m = create_model("tiny", 2, n_feats=4, weights=source)
        assert _same_output(tiny, m), source

    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        resolve(f"hf://someone/tiny-sr/x2/w.safetensors#sha256={'0' * 64}")
    with pytest.raises(WeightsError, match="not in the Hugging Face cache at revision v9.*HF_HUB_OFFLINE"):
        resolve("hf://someone/tiny-sr/x2/w.safetensors@v9")
    with pytest.raises(WeightsError, match="not in the Hugging Face cache"):
        resolve("hf://someone/other/w.pth")
    shutil.rmtree(cache)


def test_preset_name_as_source(tiny_plugin):
    with pytest.raises(WeightsError, match="declares no weights at x2"):
        resolve("tiny4", scale=2)


def test_preset_default_is_the_papers_file_and_a_retrain_keeps_its_arguments():
    """edsr-l's default is BasicSR's file (no source known: its name), never super-image's retrain."""
    from dukd_cli.models.factory import resolve_spec

    plain = resolve_spec("edsr-l", 4)
    assert plain.weights is None and plain.kwargs["res_scale"] == 0.1
    spec = resolve_spec("edsr-l", 4, pretrained=True)
    assert spec.weights == "EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth"
    assert spec.kwargs == {"n_feats": 256, "n_resblocks": 32, "res_scale": 0.1}
    retrain = "hf://eugenesiow/edsr/pytorch_model_4x.pt"  # not declared: the preset's own arguments stay
    assert resolve_spec("edsr-l", 4, weights=retrain, pretrained=True).kwargs["res_scale"] == 0.1
    with pytest.raises(WeightsError, match='no public Hub copy.*pass weights="PATH/EDSR_Lx4') as err:
        create_model("edsr-l", 4, pretrained=True)  # Python: an argument, not a command's option
    assert "--" not in str(err.value)


def test_edsr_without_mean_shift_ignores_the_mean_buffers():
    torch.manual_seed(0)
    a = create_model("edsr", 2, n_feats=8, n_resblocks=2, img_range=1.0, mean_shift=False)
    sd = {k: v for k, v in a.state_dict().items() if "mean" not in k}  # a mirror without the mean
    b = create_model("edsr", 2, n_feats=8, n_resblocks=2, img_range=1.0, mean_shift=False)
    load_into(b, sd)
    assert _same_output(a, b)
    c = create_model("edsr", 2, n_feats=8, n_resblocks=2)
    load_into(c, sd)  # the same file under official semantics gives other outputs
    assert not _same_output(a, c)


def test_naming_the_declared_source_explicitly_keeps_its_semantics():
    from dukd_cli.models.factory import resolve_spec

    swin = "hf://uwg/upscaler/SwinIR/001_classicalSR_DIV2K_s48w8_SwinIR-M_x4.pth@b542ac1292ca56f3bff1451557f57858c6ad3343"
    spec = resolve_spec("swinir-l", 4, weights="swinir-l")
    assert spec.weights.startswith(swin) and spec.kwargs["img_size"] == 48
    with pytest.raises(WeightsError, match="not in the Hugging Face cache"):
        create_model("swinir-l", 4, pretrained=True)
