"""Where weights and data come from: one downloader, one cache, one hash check.

A *remote source* is one of:

- ``hf://OWNER/REPO/PATH[@REVISION][#sha256=HEX]`` (a model repository) or
  ``hf://datasets/OWNER/REPO/PATH[@REVISION][#sha256=HEX]`` (a dataset repository), fetched with
  ``huggingface_hub.hf_hub_download`` into its usual cache (its progress bar, ``HF_HUB_OFFLINE``);
- ``https://...[#sha256=HEX]`` (``http://`` too), downloaded into the same cache folder under
  ``dukd-downloads/``, resumed with an HTTP ``Range`` request after a cut connection, hash-checked,
  and renamed into place only when whole and right (nothing half-written is ever taken for a file).
  Its cache name is a hash-keyed folder and a safe basename (:mod:`dukd_cli.sources.safe`), never a
  path taken from the URL; plain ``http://`` prints a warning (no transport security).

:func:`fetch` turns any of them into a local path; a local path is returned as it is. Every
SHA-256 pin (in the source's ``#sha256=`` fragment or the ``sha256`` argument; a prefix of at least
8 hex digits is accepted, as BasicSR's file names carry) is checked by :func:`check_sha256`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dukd_cli.sources.errors import SourceError
from dukd_cli.sources.hashing import check_sha256, sha256_file
from dukd_cli.sources.hub import HubSource, hub_cache_dir, hub_download, is_offline, parse_hub_source
from dukd_cli.sources.url import UrlSource, parse_url_source, url_download

__all__ = [
    "HubSource",
    "SourceError",
    "UrlSource",
    "check_sha256",
    "fetch",
    "hub_cache_dir",
    "hub_download",
    "is_offline",
    "is_remote",
    "parse_hub_source",
    "parse_url_source",
    "sha256_file",
    "url_download",
]


def is_remote(source: str | os.PathLike) -> bool:
    s = os.fspath(source)
    return s.startswith(("hf://", "https://", "http://"))


def fetch(
    source: str | os.PathLike, *, sha256: str | None = None, progress: bool = True, name: str | None = None
) -> Path:
    """A local file for ``source`` (downloaded into the cache where needed), hash-checked.

    ``name``: for ``https://``, the file name to cache it under (a preset's declared name, reduced
    to a safe basename) instead of the URL's last segment.
    """
    s = os.fspath(source)
    if s.startswith("hf://"):
        src = parse_hub_source(s)
        path = hub_download(src)
        pin = src.sha256 or sha256
    elif s.startswith(("https://", "http://")):
        src = parse_url_source(s)
        pin = src.sha256 or sha256
        # checked before it is renamed into place
        return url_download(src, sha256=pin, progress=progress, name=name)
    else:
        path = Path(s).expanduser()
        if not path.is_file():
            raise SourceError(f"file not found: {s}")
        pin = sha256
    if pin:
        check_sha256(path, pin, what=s)
    return path
