"""Is the Hugging Face Hub reachable? One quick TCP connect, so a machine without network fails in
a second with one line instead of the Hub client's ~30 s of retries.

The endpoint is read at call time (``HF_ENDPOINT``, default https://huggingface.co). Behind a proxy
(``HTTPS_PROXY`` / ``ALL_PROXY``) a direct connect says nothing, so the check is skipped there.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def unreachable_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub endpoint cannot be reached (``None``: it can, or a proxy is in use)."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return None
    return _probe(endpoint(), timeout)


@cache
def _probe(url: str, timeout: float) -> str | None:
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return f"HF_ENDPOINT '{url}' names no host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        return f"{host}:{port}: {why}"
