"""Builders of hostile inputs for tests/security: archives with links, duplicates and bombs, a
server on 127.0.0.1 that serves whatever path it is asked for, and a CLI run in a child process
(for limits the kernel enforces, kills and concurrent runs)."""

from __future__ import annotations

import http.server
import io
import os
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def flat(text: str) -> str:
    """Rich wraps long lines to the console's width; assertions read them as one line."""
    return " ".join(text.split())


def png(size: int = 8, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def set5_members(folder: str = "Set5_HR", skip: tuple[str, ...] = ()) -> list[tuple]:
    return [("file", f"{folder}/{n}.png", png(8, i)) for i, n in enumerate(SET5) if n not in skip]


def tar_gz(members: list[tuple]) -> bytes:
    """``("file", name, bytes)``, ``("sym", name, target)``, ``("hard", name, target)`` members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = data
                t.addfile(info)
    return buf.getvalue()


def zip_bytes(members: list[tuple]) -> bytes:
    """``("file", name, bytes)`` and ``("sym", name, target)`` (a Unix symlink entry) members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for kind, name, data in members:
            if kind == "file":
                z.writestr(name, data)
            else:
                info = zipfile.ZipInfo(name)
                info.create_system = 3  # Unix
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                z.writestr(info, data)
    return buf.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.n = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.n)
        b[:k] = bytes(k)
        self.n -= k
        return k


def bomb(path: Path, size: int) -> Path:
    """A Set5 archive (``.tar.gz`` or ``.zip`` by ``path``'s name) whose ``baby.png`` is ``size`` zero
    bytes: a few hundred kB on disk."""
    others = set5_members(skip=("baby",))
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            with z.open("Set5_HR/baby.png", "w", force_zip64=True) as f:
                left = size
                while left:
                    k = min(left, 1 << 20)
                    f.write(bytes(k))
                    left -= k
            for _, name, data in others:
                z.writestr(name, data)
    else:
        with tarfile.open(path, mode="w:gz", compresslevel=9) as t:
            info = tarfile.TarInfo("Set5_HR/baby.png")
            info.size = size
            t.addfile(info, io.BufferedReader(_Zeros(size)))
            for _, name, data in others:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


class Server:
    """Serves ``body`` at every path on 127.0.0.1 (the raw request paths are kept in ``paths``)."""

    def __init__(self, body: bytes):
        self.body, self.paths = body, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


ROOT = Path(__file__).resolve().parents[2]


def child(args: list[str], *, hook: str = "", preexec=None, output=subprocess.PIPE, **kw) -> subprocess.Popen:
    """The CLI in a child process (``dukd ARGS``), with the current environment; ``hook`` is Python
    run first in the child (to pause it at a chosen point)."""
    code = (
        f"import sys\n{hook}\nfrom dukd_cli.cli import entry\nsys.argv = ['dukd', *sys.argv[1:]]\nentry()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec,
        **kw,
    )


# Pause the child inside extraction: when the third archive member is opened (through
# TarFile.extractfile, or TarFile.makefile as extractall does), write the file $PAUSE_MARKER and wait
# (at most 120 s) until the file $PAUSE_GO exists; the test kills it there or lets it go on.
PAUSE_IN_EXTRACTION = """
import os, tarfile, time
_n = [0]
def _pausing(orig):
    def paused(self, member, *args, **kw):
        _n[0] += 1
        if _n[0] == 3:
            open(os.environ["PAUSE_MARKER"], "w").write(str(os.getpid()))
            t = time.time()
            while not os.path.exists(os.environ["PAUSE_GO"]) and time.time() - t < 120:
                time.sleep(0.05)
        return orig(self, member, *args, **kw)
    return paused
tarfile.TarFile.extractfile = _pausing(tarfile.TarFile.extractfile)
tarfile.TarFile.makefile = _pausing(tarfile.TarFile.makefile)
"""


def wait_for(predicate, proc, what: str, limit: float = 120.0) -> None:
    """Poll ``predicate`` until it holds; fail at once if ``proc`` ended first."""
    import time

    t = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the child ended (code {proc.returncode}) before {what}")
        if time.time() - t > limit:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
