"""``https://`` sources: downloaded into the Hub cache folder with resume, hash check and atomic rename.

Layout: ``<hub cache>/dukd-downloads/<key>/<file name>``, where the key is the first 16 hex digits
of the pinned SHA-256 (or of the URL's, when unpinned) and the file name is the URL's last segment
reduced to a safe basename (:func:`dukd_cli.sources.safe.safe_basename`: a name from the network
never carries a separator, ``..`` or a control character), and the final path is proven inside the
cache before anything is opened. One download per key at a time (an advisory lock,
``dukd-downloads/.locks/<key>.lock``: a second process waits for the first). Plain ``http://`` is accepted with a one-line
warning (no transport security). While downloading, bytes go to
``<file name>.part`` beside it; a cut connection is resumed from there with a ``Range`` request (in
the same call, up to :data:`ATTEMPTS` times, and by the next call). Only a whole file whose hash
matches is renamed onto the final name, so a failed or interrupted download is never taken for
the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from dukd_cli.sources.errors import SourceError
from dukd_cli.sources.hashing import check_sha256, normalise_pin
from dukd_cli.sources.hub import hub_cache_dir, is_offline
from dukd_cli.sources.safe import ensure_inside, safe_basename

ATTEMPTS = 4
CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class UrlSource:
    url: str
    sha256: str | None = None

    @property
    def filename(self) -> str:
        """The URL's last path segment, percent-decoded, reduced to a safe basename (never a path)."""
        path = urllib.parse.urlparse(self.url).path
        return safe_basename(urllib.parse.unquote(path.rsplit("/", 1)[-1]))

    def __str__(self) -> str:
        return self.url + (f"#sha256={self.sha256}" if self.sha256 else "")


def parse_url_source(source: str) -> UrlSource:
    if not source.startswith(("https://", "http://")):
        raise SourceError(f"not an http(s) source: '{source}'")
    url, sha = source, None
    if "#" in source:
        url, frag = source.split("#", 1)
        sha = normalise_pin(frag, f"'{source}'")
    if not urllib.parse.urlparse(url).netloc:
        raise SourceError(f"bad URL '{source}'")
    return UrlSource(url, sha)


def downloads_dir() -> Path:
    return hub_cache_dir() / "dukd-downloads"


def cache_path(src: UrlSource, sha256: str | None = None, name: str | None = None) -> Path:
    """Where ``src`` is cached: a hash-keyed folder and a safe basename (of ``name``, a preset's
    declared file name, where given; else of the URL's last segment), proven inside the cache."""
    pin = src.sha256 or sha256
    key = pin[:16] if pin else hashlib.sha256(src.url.encode()).hexdigest()[:16]
    path = downloads_dir() / key / (safe_basename(name) if name else src.filename)
    ensure_inside(downloads_dir(), path, what=f"the download of {src.url}")
    return path


def _open(url: str, start: int) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": "dukd"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # http(s) only, checked above


def _total(resp: http.client.HTTPResponse, start: int) -> int | None:
    rng = resp.headers.get("Content-Range")
    if rng and "/" in rng and not rng.endswith("/*"):
        return int(rng.rsplit("/", 1)[1])
    n = resp.headers.get("Content-Length")
    return int(n) + start if n is not None else None


def url_download(
    src: UrlSource, *, sha256: str | None = None, progress: bool = True, name: str | None = None
) -> Path:
    """The cached file of ``src``, downloading (or resuming) it first where needed; ``name``: the
    file name to cache it under (a preset's declared name) instead of the URL's."""
    from dukd_cli.runtime.pidlock import hold

    pin = src.sha256 or sha256
    final = cache_path(src, pin, name)
    if final.is_file():
        return final
    if is_offline():
        raise SourceError(
            f"{src.url} is not in the download cache ({final.parent}) and HF_HUB_OFFLINE is set; "
            "download it once online",
            unreachable=True,
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    with hold(
        downloads_dir() / ".locks" / f"{final.parent.name}.lock", what=f"downloading {src.url}", on_wait=_note
    ):
        if final.is_file():  # the process we waited for downloaded it
            return final
        if src.url.startswith("http://"):
            warnings.warn(
                f"{src.url} is plain http: no transport security"
                + ("; its SHA-256 pin is checked" if pin else "; pin it with #sha256=HEX or use https"),
                stacklevel=2,
            )
        part = final.with_name(final.name + ".part")
        _download_part(src, part, progress)
        if pin:
            try:
                check_sha256(part, pin, what=src.url)
            except SourceError:
                part.unlink(missing_ok=True)
                raise
        os.replace(part, final)
    return final


def _note(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _download_part(src: UrlSource, part: Path, progress: bool) -> None:
    """Download ``src`` into ``part`` (resuming what is there), retrying up to :data:`ATTEMPTS` times."""
    bar = None
    last_error = ""
    try:
        for _attempt in range(ATTEMPTS):
            start = part.stat().st_size if part.is_file() else 0
            try:
                resp = _open(src.url, start)
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and start:  # the partial file is already whole (or bad): start over
                    part.unlink()
                    last_error = "range not satisfiable"
                    continue
                raise SourceError(f"could not download {src.url}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(getattr(exc, "reason", exc))
                continue
            with resp:
                status = getattr(resp, "status", 200)
                if start and status != 206:  # the server ignored the range: start over
                    start = 0
                total = _total(resp, start)
                if bar is None and progress:
                    with contextlib.suppress(ImportError):
                        from tqdm.auto import tqdm

                        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=src.filename)
                elif bar is not None:
                    bar.n = start
                    bar.refresh()
                try:
                    with open(part, "ab" if start else "wb") as f:
                        while True:
                            chunk = resp.read(CHUNK)
                            if not chunk:
                                break
                            f.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                    continue
                size = part.stat().st_size
                if total is not None and size < total:
                    last_error = f"connection closed after {size} of {total} bytes"
                    continue
                return
        have = part.stat().st_size if part.is_file() else 0
        if have:
            hint = f"run the command again to resume from the {have} bytes kept in {part}"
        else:
            part.unlink(missing_ok=True)
            hint = "nothing was received; check the address and the network, then run the command again"
        raise SourceError(
            f"could not download {src.url} after {ATTEMPTS} attempts ({last_error}); {hint}", unreachable=True
        )
    finally:
        if bar is not None:
            bar.close()
