"""``hf://`` sources: Hugging Face Hub files through ``huggingface_hub.hf_hub_download``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dukd_cli.sources.errors import SourceError
from dukd_cli.sources.hashing import normalise_pin

SHAPE = "hf://[datasets/]OWNER/REPO/PATH[@REVISION][#sha256=HEX]"


@dataclass(frozen=True)
class HubSource:
    """A parsed ``hf://`` source. ``filename`` is empty for a whole repository (``hf://OWNER/REPO``)."""

    repo_id: str
    filename: str
    revision: str | None = None
    sha256: str | None = None
    repo_type: str = "model"  # or "dataset"

    def __str__(self) -> str:
        s = "hf://" + ("datasets/" if self.repo_type == "dataset" else "") + self.repo_id
        if self.filename:
            s += f"/{self.filename}"
        if self.revision:
            s += f"@{self.revision}"
        if self.sha256:
            s += f"#sha256={self.sha256}"
        return s

    def with_file(self, filename: str) -> HubSource:
        return HubSource(self.repo_id, filename, self.revision, None, self.repo_type)


def parse_hub_source(source: str, *, allow_repo: bool = False) -> HubSource:
    """Parse ``hf://[datasets/]OWNER/REPO/PATH[@REV][#sha256=HEX]`` (or ``.../REPO@REV/PATH``).

    ``allow_repo``: also accept a bare repository, ``hf://OWNER/REPO[@REV]``.
    """
    if not source.startswith("hf://"):
        raise SourceError(f"not a Hub source: '{source}'")
    rest = source[len("hf://") :]
    sha = None
    if "#" in rest:
        rest, frag = rest.split("#", 1)
        sha = normalise_pin(frag, f"'{source}'")
    repo_type = "model"
    for prefix in ("datasets/", "models/"):
        if rest.startswith(prefix):
            repo_type, rest = ("dataset" if prefix == "datasets/" else "model"), rest[len(prefix) :]
    parts = rest.split("/")
    bad = SourceError(f"bad Hub source '{source}': expected {SHAPE}")
    if len(parts) < 2 or not all(parts) or (len(parts) == 2 and not allow_repo):
        raise bad
    owner, repo, path = parts[0], parts[1], "/".join(parts[2:])
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    elif path and "@" in parts[-1]:
        path, revision = path.rsplit("@", 1)
    if not repo or (revision is not None and not revision) or (not path and not allow_repo):
        raise bad
    for piece in (owner, repo, *path.split("/"), *(revision or "").split("/")):
        if piece in (".", "..") or "\\" in piece or any(ord(c) < 32 or ord(c) == 127 for c in piece):
            raise SourceError(
                f"bad Hub source '{source}': '.', '..', backslashes and control characters "
                "are not allowed in its parts"
            )
    return HubSource(f"{owner}/{repo}", path, revision, sha, repo_type)


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, read at call time (the library reads its environment once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "huggingface" / "hub"


def hub_download(src: HubSource, filename: str | None = None) -> Path:
    """Fetch one file of ``src`` through the Hub cache; a clear one-line error for every failure."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise SourceError("huggingface_hub is not installed; it is needed for hf:// sources") from exc
    fname = filename or src.filename
    if not fname:
        raise SourceError(f"{src} names a repository, not a file")
    offline = is_offline()
    shown = str(src) if filename is None else str(src.with_file(fname))
    # No network: the cache only, and one line at once instead of the Hub client's ~30 s of retries.
    from dukd_cli.runtime.hubnet import endpoint, unreachable_reason

    down = None if offline else unreachable_reason()
    try:
        path = hf_hub_download(
            src.repo_id,
            fname,
            repo_type=src.repo_type,
            revision=src.revision,
            cache_dir=str(hub_cache_dir()),
            local_files_only=offline or down is not None,
            endpoint=endpoint(),
        )
    except Exception as exc:
        kind = type(exc).__name__
        rev = f" at revision {src.revision}" if src.revision else ""
        if down is not None:
            raise SourceError(
                f"{shown} is not in the Hugging Face cache{rev} ({hub_cache_dir()}) and the Hub ({endpoint()}) "
                f"cannot be reached ({down}); connect to the network",
                unreachable=True,
            ) from None
        if offline or "LocalEntryNotFound" in kind or "OfflineMode" in kind:
            raise SourceError(
                f"{shown} is not in the Hugging Face cache{rev} ({hub_cache_dir()}) and the Hub cannot be reached"
                f"{' (HF_HUB_OFFLINE is set)' if offline else ''}; download it once online",
                unreachable=True,
            ) from None
        if "RepositoryNotFound" in kind or "GatedRepo" in kind:
            raise SourceError(
                f"Hub repository '{src.repo_id}' not found or not accessible ({kind})"
            ) from None
        if "RevisionNotFound" in kind:
            raise SourceError(
                f"revision '{src.revision}' not found in Hub repository '{src.repo_id}'"
            ) from None
        if "EntryNotFound" in kind:
            raise SourceError(f"file '{fname}' not found in Hub repository '{src.repo_id}'{rev}") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
        raise SourceError(f"could not fetch {shown}: {first}") from None
    from dukd_cli.sources.safe import ensure_inside

    ensure_inside(hub_cache_dir(), path, what=f"the file of {shown}")
    return Path(path)
