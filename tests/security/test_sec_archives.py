"""Hostile data-set sources through ``dukd data fetch --source``: each is refused with one line, exit
1, and nothing installed or left behind in the cache."""

from __future__ import annotations

import resource

import pytest
from hostile import bomb, child, flat, png, set5_members, tar_gz, zip_bytes

from dukd_cli.data.benchmarks import find_set


def _refused(code, err, bench_cache, *needles):
    text = flat(err)
    assert code == 1 and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
    for n in needles:
        assert n in text, text
    if bench_cache.exists():  # nothing installed, no temporary folder left
        assert [p.name for p in bench_cache.iterdir() if not p.name.endswith(".lock")] == []


def test_tar_symlink_that_escapes_after_the_move_is_refused(env, bench_cache, run_dukd):
    """A relative link inside the extraction folder ('a/b/c/d/Set5_HR/woman.png' -> '../../../../../x.png',
    which is the archive's own 'x.png' there) points five folders above Set5/HR once installed: at
    ``env/x.png``, outside the cache."""
    secret = env / "x.png"
    secret.write_bytes(png(8, 99))
    deep = "a/b/c/d/Set5_HR"
    members = [*set5_members(deep, skip=("woman",)), ("file", "x.png", png(8, 7))]
    members.append(("sym", f"{deep}/woman.png", "../../../../../x.png"))
    (env / "link.tar.gz").write_bytes(tar_gz(members))
    code, _, err = run_dukd("data", "fetch", "set5", "--source", env / "link.tar.gz")
    _refused(code, err, bench_cache, "symbolic link", "woman.png")


def test_tar_hard_link_member_is_refused(env, bench_cache, run_dukd):
    """A hard link member (woman.png -> baby.png) would install one image twice under two names."""
    members = [*set5_members(skip=("woman",)), ("hard", "Set5_HR/woman.png", "Set5_HR/baby.png")]
    (env / "hard.tar.gz").write_bytes(tar_gz(members))
    code, _, err = run_dukd("data", "fetch", "set5", "--source", env / "hard.tar.gz")
    _refused(code, err, bench_cache, "hard link")


def test_zip_symlink_member_is_refused(env, bench_cache, run_dukd):
    """A Unix symlink entry in a zip; extractall wrote its target path as the 'image'."""
    members = [*set5_members(skip=("woman",)), ("sym", "Set5_HR/woman.png", "../../../../../x.png")]
    (env / "link.zip").write_bytes(zip_bytes(members))
    code, _, err = run_dukd("data", "fetch", "set5", "--source", env / "link.zip")
    _refused(code, err, bench_cache, "symbolic link")


def test_non_image_named_png_is_refused(env, bench_cache, run_dukd):
    members = [
        *set5_members(skip=("woman",)),
        ("file", "Set5_HR/woman.png", b"#!/bin/sh\necho not an image\n"),
    ]
    (env / "fake.tar.gz").write_bytes(tar_gz(members))
    code, _, err = run_dukd("data", "fetch", "set5", "--source", env / "fake.tar.gz")
    _refused(code, err, bench_cache, "woman.png is not a usable image")


def test_duplicate_member_is_refused_instead_of_the_last_one_winning(env, bench_cache, run_dukd):
    members = [*set5_members(), ("file", "Set5_HR/baby.png", png(8, 42))]
    (env / "dup.tar.gz").write_bytes(tar_gz(members))
    code, _, err = run_dukd("data", "fetch", "set5", "--source", env / "dup.tar.gz")
    _refused(code, err, bench_cache, "Set5_HR/baby.png' twice")


def _bsd100(extra_name: str) -> list[tuple]:
    """99 BSD100-named images plus one whose name collides with '1001.png' after normalisation."""
    members = [("file", f"BSD100_HR/{1000 + i}.png", png(4, i)) for i in range(1, 100)]
    return [*members, ("file", f"BSD100_HR/{extra_name}", png(4, 500))]


def test_names_equal_after_case_folding_are_refused(env, bench_cache, run_dukd):
    """'1001.png' + '1001.PNG': 100 names that pass the count and pattern checks, 99 files installed."""
    (env / "case.tar.gz").write_bytes(tar_gz(_bsd100("1001.PNG")))
    code, _, err = run_dukd("data", "fetch", "bsd100", "--source", env / "case.tar.gz")
    _refused(code, err, bench_cache, "twice after case-folding", "1001.png", "1001.PNG")


def test_folder_names_that_install_as_one_file_are_refused(env, bench_cache, run_dukd):
    """A folder with '1001.png' and '1001_HR.png' (both installed as 1001.png)."""
    folder = env / "bsd"
    folder.mkdir()
    for _kind, name, data in _bsd100("1001_HR.png"):
        (folder / name.split("/")[-1]).write_bytes(data)
    code, _, err = run_dukd("data", "fetch", "bsd100", "--source", folder)
    _refused(code, err, bench_cache, "would both be installed as 1001.png")


def test_symlink_in_a_source_folder_is_not_followed(env, bench_cache, run_dukd):
    """A link in a --source folder to a file outside it used to be copied into the cache."""
    secret = env / "outside.png"
    secret.write_bytes(png(8, 123))
    folder = env / "copy" / "Set5" / "HR"
    folder.mkdir(parents=True)
    for i, n in enumerate(("baby", "bird", "butterfly", "head")):
        (folder / f"{n}.png").write_bytes(png(8, i))
    (folder / "woman.png").symlink_to(secret)
    code, _, err = run_dukd("data", "fetch", "set5", "--source", env / "copy")
    _refused(code, err, bench_cache, "woman.png is a symbolic link")
    with pytest.raises(Exception, match="not found"):
        find_set("set5")


ZEROS = 64 << 20  # one 'image' of 64 MiB of zeros: about 65 kB compressed
FSIZE = 16 << 20  # the kernel refuses any file over 16 MiB in the child (RLIMIT_FSIZE)


@pytest.fixture(scope="module", params=["bomb.tar.gz", "bomb.zip"])
def bomb_file(request, tmp_path_factory):
    return bomb(tmp_path_factory.mktemp("bomb") / request.param, ZEROS)


def test_a_decompression_bomb_stops_at_the_limit(env, bench_cache, bomb_file, monkeypatch):
    """The limit set small (4 MiB; by the option for the tar.gz, by the environment for the zip). The
    child may not write any file over 16 MiB (RLIMIT_FSIZE): code that wrote the member out before
    checking its size fails with 'File too large' instead of the limit's message."""
    assert bomb_file.stat().st_size < 1 << 20
    args = ["data", "fetch", "set5", "--source", bomb_file]
    if bomb_file.name.endswith(".zip"):
        monkeypatch.setenv("DUKD_MAX_EXTRACT_BYTES", "4M")
    else:
        args += ["--max-extract-bytes", "4M"]

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE, FSIZE))

    proc = child(args, preexec=small_files)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    text = flat(out)
    assert "larger than the limit of 4.0 MiB" in text and "baby.png" in text, text
    assert "stopped after writing 4.0 MiB" in text and "nothing was installed" in text, text
    assert "--max-extract-bytes" in text and "File too large" not in text
    assert [p.name for p in bench_cache.iterdir() if not p.name.endswith(".lock")] == []


def test_default_extraction_limits():
    """Pinned catalogue archive: from its size; --source: 100x the archive, at most 4 GiB, never
    below the catalogue's bound; the environment or the option replaces both."""
    from dukd_cli.data.catalog import get
    from dukd_cli.data.extract import GIB, MIB, limits_for

    div2k = get("div2k")
    pinned = limits_for(known_size=div2k.known_bytes(), images=800, archive_size=div2k.size, pinned=True)
    assert pinned.total == 2 * 3530603713 + 64 * MIB and pinned.member < 200 * MIB
    mirror = limits_for(known_size=None, images=14, archive_size=300_000, pinned=False)
    assert (mirror.total, mirror.member) == (30_000_000, 30_000_000)
    huge = limits_for(known_size=None, images=14, archive_size=10 * GIB, pinned=False)
    assert huge.total == 4 * GIB and huge.member == 512 * MIB
    assert limits_for(known_size=None, images=5, archive_size=1, pinned=False, max_bytes="1.5G").total == int(
        1.5 * GIB
    )
