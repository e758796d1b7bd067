"""SHA-256 of files, and the one check every pinned download goes through."""

from __future__ import annotations

import hashlib
import os
import re

from dukd_cli.sources.errors import SourceError

SHA_RE = re.compile(r"^[0-9a-fA-F]{8,64}$")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def normalise_pin(pin: str, where: str = "") -> str:
    """A SHA-256 pin: 64 hex digits, or a prefix of at least 8 (BasicSR names files by one)."""
    p = pin.strip().lower().removeprefix("sha256=").removeprefix("sha256:")
    if not SHA_RE.match(p):
        raise SourceError(
            f"bad SHA-256 pin{f' in {where}' if where else ''}: expected 8 to 64 hex digits, got '{pin}'"
        )
    return p


def matches(digest: str, pin: str) -> bool:
    return digest.lower().startswith(normalise_pin(pin))


def check_sha256(path: str | os.PathLike, pin: str, *, what: str = "") -> str:
    """Raise :class:`SourceError` unless the file's SHA-256 matches ``pin``; returns the digest."""
    got = sha256_file(path)
    if not matches(got, pin):
        raise SourceError(
            f"SHA-256 mismatch for {what or path}: the file has {got}, expected {normalise_pin(pin)}; refusing to use it"
        )
    return got
