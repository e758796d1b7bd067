"""Names from outside (a URL, an archive member, a user option) made safe to use as file names.

Two helpers, for every place where a string that dukd did not choose becomes part of a path:

- :func:`safe_basename` reduces a name to one harmless path component: no separators (``/`` or
  ``\\``), never ``.`` or ``..``, no leading dot (no hidden files), no control characters, at most
  :data:`MAX_NAME` characters (the extension is kept), and a fallback where nothing is left;
- :func:`inside` says whether a path, once resolved (symbolic links followed), lies inside a root
  folder; :func:`ensure_inside` raises one line when it does not, and returns the resolved path.

Callers decide the folder (a hash-keyed cache folder, the input's folder, ``--out``) and put only a
safe basename in it, then prove the final path with :func:`ensure_inside` before opening anything.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from dukd_cli.errors import DukdError

MAX_NAME = 120  # characters; well under every file system's 255-byte limit, even in UTF-8

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")  # control characters, separators, Windows-reserved


class UnsafePathError(DukdError):
    """A path that would land outside the folder it belongs in."""


def safe_basename(name: str, *, default: str = "download", max_len: int = MAX_NAME) -> str:
    """``name`` reduced to one safe file name (see the module notes); ``default`` where nothing is left.

    Only the last component of ``name`` is kept (``a/b/c.pth`` -> ``c.pth``; ``..%2F`` must be
    decoded by the caller first, then it is a separator like any other).
    """
    last = re.split(r"[/\\]", str(name))[-1]
    last = unicodedata.normalize("NFC", last)
    last = "".join("_" if (_UNSAFE.match(c) or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")) else c
                   for c in last)  # fmt: skip
    last = last.strip().lstrip(".").rstrip(". ")  # no hidden names, no '.'/'..', no trailing dots
    if not last:
        return default
    if len(last) > max_len:
        stem, dot, ext = last.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            last = stem[: max_len - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            last = last[:max_len].rstrip(". ")
    return last or default


def inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when ``path``, resolved (links followed, ``..`` removed), is ``root`` or lies below it."""
    r = Path(root).expanduser().resolve()
    p = Path(path).expanduser().resolve()
    return p == r or r in p.parents


def ensure_inside(root: str | os.PathLike, path: str | os.PathLike, *, what: str = "") -> Path:
    """The resolved ``path``; one-line :class:`UnsafePathError` unless it lies inside ``root``."""
    if not inside(root, path):
        raise UnsafePathError(
            f"refusing {what or path}: it would be written to {Path(path).expanduser().resolve()}, "
            f"outside {Path(root).expanduser().resolve()}"
        )
    return Path(path).expanduser().resolve()
