"""Parameter counts and supported scales of installed architectures, cached on disk.

Both need the network built (on the meta device): about 0.1 s per model, so ``dukd zoo list``,
which counts every preset and probes every architecture at four scales, took seconds. The answers
are kept in ``<cache>/zoo-params.json`` (``$DUKD_CACHE``, else ``~/.cache/dukd``) per architecture,
with the entry point's :func:`dukd_cli.registry.fingerprint` (distribution, version, module files):
a changed plugin starts afresh. An unreadable or unwritable cache only costs the time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dukd_cli import registry
from dukd_cli.runtime.fsutil import atomic_write_text

FILE = "zoo-params.json"
VERSION = 1


def cache_file() -> Path:
    from dukd_cli.runtime.cache import cache_root

    return cache_root() / FILE


class ParamCache:
    """Read once, written back once (:meth:`save`) if anything was added."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_file()
        self.data: dict[str, Any] = {}
        self.dirty = False
        try:
            raw = json.loads(self.path.read_text())
            if (
                isinstance(raw, dict)
                and raw.get("version") == VERSION
                and isinstance(raw.get("entries"), dict)
            ):
                self.data = raw["entries"]
        except (OSError, ValueError):
            pass

    def _slot(self, arch: str) -> dict[str, Any] | None:
        """The cached values of ``arch``'s entry point; emptied when its fingerprint changed."""
        fp = registry.fingerprint(registry.ARCH_GROUP, arch)
        if fp is None:
            return None
        slot = self.data.get(arch)
        if (
            not isinstance(slot, dict)
            or slot.get("fingerprint") != fp
            or not isinstance(slot.get("values"), dict)
        ):
            slot = self.data[arch] = {"fingerprint": fp, "values": {}}
        return slot["values"]

    def params(self, arch: str, scale: int, kwargs: Mapping[str, Any] | None = None) -> int:
        """:func:`dukd_cli.models.factory.count_parameters_of`, cached."""
        values = self._slot(arch)
        key = f"params x{int(scale)} " + json.dumps(dict(kwargs or {}), sort_keys=True, default=repr)
        if values is not None and isinstance(values.get(key), int):
            return values[key]
        from dukd_cli.models.factory import count_parameters_of  # builds the network: imports torch

        n = int(count_parameters_of(arch, scale, kwargs or {}))
        if values is not None:
            values[key], self.dirty = n, True
        return n

    def scales(self, arch: str) -> tuple[int, ...]:
        """:func:`dukd_cli.models.factory.supported_scales`, cached."""
        values = self._slot(arch)
        if values is not None and isinstance(values.get("scales"), list):
            return tuple(int(s) for s in values["scales"])
        from dukd_cli.models.factory import supported_scales  # builds the network: imports torch

        found = tuple(supported_scales(arch))
        if values is not None:
            values["scales"], self.dirty = list(found), True
        return found

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            atomic_write_text(
                self.path, json.dumps({"version": VERSION, "entries": self.data}, sort_keys=True)
            )
        except OSError:
            pass
        self.dirty = False
