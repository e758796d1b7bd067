"""dukd data list/fetch, evaluate's fetch of a missing named set, --data div2k, and the dry run:
against Hub caches this test builds (huggingface_hub's layout), mirrors given with --source, and
HF_HUB_OFFLINE messages. Nothing is downloaded."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image
from test_sources import build_hub_cache

from dukd_cli.data import catalog
from dukd_cli.data.benchmarks import find_set
from dukd_cli.errors import DukdError

URBAN_REV = catalog.get("urban100").revision


def _png(size=32, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _urban(n=100, size=32) -> bytes:
    return _tar_gz({f"Urban100_HR/img_{i:03d}.png": _png(size, i) for i in range(1, n + 1)})


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DUKD_DATA", raising=False)
    return tmp_path


def test_fetch_from_a_mirror_hub_repo_then_evaluate_as_typed(env, run_dukd):
    commit = "3" * 40
    build_hub_cache(env / "hub", "mirror/urban", {"data/Urban100_HR.tar.gz": _urban()}, commit, "dataset")
    code, out, err = run_dukd(
        "data",
        "fetch",
        "urban100",
        "--source",
        f"hf://datasets/mirror/urban/data/Urban100_HR.tar.gz@{commit}",
    )
    assert code == 0, err
    bench = find_set("urban100")
    assert (
        bench.hr_dir == env / "xdg" / "dukd" / "benchmarks" / "Urban100" / "HR" and len(bench.images()) == 100
    )
    record = json.loads((bench.root / "SOURCE.json").read_text())
    assert record["revision"] == commit and record["images"] == 100
    code, out, err = run_dukd("data", "fetch", "urban100")
    assert code == 0 and "already at" in out
    # `dukd evaluate --bench urban100`, literally: the shipped student, its only scale, all 100 images
    code, out, err = run_dukd("evaluate", "--bench", "urban100", "--json", env / "r.json")
    assert code == 0, err
    r = json.loads((env / "r.json").read_text())
    assert (r["model"], r["scale"], r["results"][0]["bench"], r["results"][0]["n_images"]) == (
        "dukd-student-x4", 4, "Urban100", 100,
    )  # fmt: skip
    code, out, _ = run_dukd("data", "list", "--json")
    rows = {x["name"]: x for x in json.loads(out)}
    assert (
        rows["Urban100"]["found"] == str(bench.root)
        and rows["Set5"]["sha256"]
        and rows["Manga109"]["source"] is None
    )


def test_evaluate_fetches_a_missing_set_from_its_pinned_revision(env, run_dukd, monkeypatch):
    """Online (no HF_HUB_OFFLINE), a pinned commit already in the Hub cache is served from it."""
    build_hub_cache(
        env / "hub", "eugenesiow/Urban100", {"data/Urban100_HR.tar.gz": _urban(size=24)}, URBAN_REV, "dataset"
    )
    monkeypatch.delenv("HF_HUB_OFFLINE")
    code, out, err = run_dukd("evaluate", "--bench", "urban100", "--max-images", "3")
    assert code == 0, err
    assert "fetching Urban100 (100 images, 135 MB) from hf://datasets/eugenesiow/Urban100/" in " ".join(
        err.split()
    )
    assert "Urban100 (3)" in out


def test_offline_and_no_download_say_what_to_run(env, run_dukd, monkeypatch):
    code, _, err = run_dukd("evaluate", "--bench", "urban100")
    assert code == 1 and "Traceback" not in err
    flat = " ".join(err.split())
    assert "HF_HUB_OFFLINE is set" in flat and "dukd data fetch urban100" in flat
    monkeypatch.delenv("HF_HUB_OFFLINE")
    code, _, err = run_dukd("evaluate", "--bench", "set5", "--no-download")
    assert code == 1 and "--no-download" in err and "dukd data fetch set5" in " ".join(err.split())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_dukd("data", "fetch", "set14")
    assert code == 1 and "not in the Hugging Face cache" in err and "HF_HUB_OFFLINE" in err


def test_a_wrong_mirror_is_refused_and_leaves_nothing(env, run_dukd):
    bad = env / "bad.tar.gz"
    bad.write_bytes(_urban(n=99))
    code, _, err = run_dukd("data", "fetch", "urban100", "--source", bad)
    assert (
        code == 1
        and "99 images where Urban100 has 100" in err
        and "nothing was written" in " ".join(err.split())
    )
    root = env / "xdg" / "dukd" / "benchmarks"
    assert not (root / "Urban100").exists() and not list(root.glob(".fetch-*"))
    renamed = env / "renamed.tar.gz"
    renamed.write_bytes(_tar_gz({f"x/pic{i}.png": _png(8, i) for i in range(100)}))
    code, _, err = run_dukd("data", "fetch", "urban100", "--source", renamed)
    assert code == 1 and "unexpected image names" in err
    code, _, err = run_dukd("data", "fetch", "set5", "set14", "--source", bad)
    assert code == 1 and "exactly one NAME" in err


def test_folder_and_zip_mirrors_are_accepted(env, run_dukd):
    folder = env / "set5-copy" / "Set5" / "HR"
    folder.mkdir(parents=True)
    for i, n in enumerate(catalog.SET5):
        (folder / f"{n}_HR.png").write_bytes(_png(16, i))
    lr = env / "set5-copy" / "Set5" / "LR_bicubic" / "X2"
    lr.mkdir(parents=True)
    (lr / "babyx2.png").write_bytes(_png(8))  # LR folders are not taken for HR
    code, _, err = run_dukd("data", "fetch", "set5", "--source", env / "set5-copy")
    assert code == 0, err
    assert sorted(p.stem for p in find_set("set5").images()) == sorted(catalog.SET5)
    z = env / "Set14.zip"
    z.write_bytes(_zip({f"Set14_HR/{n}.png": _png(16, i) for i, n in enumerate(catalog.SET14)}))
    code, _, err = run_dukd("data", "fetch", "set14", "--source", z)
    assert code == 0, err and len(find_set("set14").images()) == 14


def test_div2k_training_data(env, run_dukd):
    from dukd_cli.data.discover import discover

    with pytest.raises(DukdError, match="HF_HUB_OFFLINE is set; run 'dukd data fetch div2k'"):
        discover("div2k", 2)
    z = env / "DIV2K_train_HR.zip"
    z.write_bytes(_zip({f"DIV2K_train_HR/{i:04d}.png": _png(8, i) for i in range(1, 801)}))
    code, _, err = run_dukd("data", "fetch", "div2k", "--source", z)
    assert code == 0, err
    srcs, layout = discover("div2k", 2)
    assert len(srcs) == 800 and "pinned Hub copy" in layout and srcs[0].hr.name == "0001.png"


def test_dry_run_names_the_teacher_file_and_div2k_and_downloads_nothing(env, run_dukd):
    code, out, err = run_dukd(
        "distill", "--teacher", "edsr-l", "--student", "edsr-s", "--scale", "4", "--dry-run"
    )
    assert code == 0, err
    flat = " ".join(out.split())
    assert "teacher file: EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth, SHA-256 76ee1c8f" in flat
    assert "data: DIV2K (800 images), source hf://datasets/goodfellowliu/DIV2K/DIV2K_train_HR.zip" in flat
    assert f"revision {catalog.get('div2k').revision}" in flat
    assert 'dataset = "DIV2K"' in out and "revision = " in out  # recorded in config.toml
    assert not (env / "hub").exists() and not (env / "xdg" / "dukd" / "datasets").exists()
    code, out, _ = run_dukd(
        "distill",
        "--teacher",
        "swinir-l",
        "--student",
        "swinir-s",
        "--scale",
        "2",
        "--dry-run",
        "--data",
        "builtin",
    )
    flat = " ".join(out.split())
    assert (
        code == 0
        and "SHA-256 ac6d4895f73aa1b3" in flat
        and "then https://github.com/JingyunLiang/SwinIR" in flat
    )
    assert "data: builtin" in flat and not (env / "hub").exists()


def test_zoo_list_in_a_pipe_prints_whole_names(run_dukd):
    code, out, _ = run_dukd("zoo", "list")
    assert code == 0 and "\ndukd-student-x4\tpreset\tedsr" in out and "dukd-teacher-x4" in out
    code, out, _ = run_dukd("zoo", "info", "edsr-l", "--scale", "4", "--json")
    w = json.loads(out)["weights"]["x4"]
    assert w["filename"].endswith("76ee1c8f.pth") and w["published"]["Set5"] == [32.46, 0.8968]
    assert "NOT the paper's file" in w["alternatives"][0]["notes"]


def test_zoo_verify(shared, benchmarks_dir, env, run_dukd):
    from dukd_cli.evaluate.protocol import evaluate
    from dukd_cli.evaluate.verify import verify
    from dukd_cli.models.factory import create_model

    (ref,) = evaluate(
        create_model("dukd-student-x4", pretrained=True), 4, ["set5"], data_dir=benchmarks_dir, max_images=2
    )
    rows = verify(
        "dukd-student-x4", 4, published={"Set5": (ref.psnr, ref.ssim)}, data_dir=benchmarks_dir, max_images=2
    )
    assert rows[0].psnr == ref.psnr and rows[0].ok
    rows = verify(
        "dukd-student-x4", 4, published={"Set5": (ref.psnr + 0.2, 0.9)}, data_dir=benchmarks_dir, max_images=2
    )
    assert not rows[0].ok and abs(rows[0].diff + 0.2) < 1e-9
    # a paper teacher: the sets are found, then its file has no source: one line naming the file
    d = env / "bench"
    d.mkdir()
    for n in ("Set5", "Set14", "BSD100"):
        (d / n).symlink_to(benchmarks_dir / n)
    (d / "Urban100" / "HR").mkdir(parents=True)
    (d / "Urban100" / "HR" / "img_001.png").write_bytes(_png(16))
    code, _, err = run_dukd("zoo", "verify", "rcan-l", "--scale", "4", "--data-dir", d)
    assert code == 1 and "--weights PATH/RCAN_BIX4.pt" in err and "Traceback" not in err
    assert "--teacher-weights" not in err  # zoo verify has no such option
    code, _, err = run_dukd("zoo", "verify", "edsr-l", "--scale", "2")
    assert code == 1 and "no published numbers" in err
