"""The plugin registry: architectures, presets and distillation methods from Python entry points.

Three entry-point groups are read, and the built-in ``zoo`` registers itself through them exactly
like a third-party distribution would (see ``pyproject.toml``):

``dukd.architectures``
    name -> a callable ``f(scale: int, **kwargs) -> torch.nn.Module``. The module maps an
    ``(N, 3, h, w)`` float RGB tensor in [0, 1] to ``(N, 3, h*scale, w*scale)`` in [0, 1].
``dukd.presets``
    name -> a :class:`Preset` (an architecture, constructor arguments and optional weight
    sources per scale).
``dukd.methods``
    name -> a distillation method class (see ``dukd_cli.distill``).

Entry points are listed without importing them; an entry point is imported the first time it is
used. One that fails to import is reported by name in a :class:`PluginWarning` and left out; the
rest keep working.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import Any

from dukd_cli.errors import UnknownModelError
from dukd_cli.runtime import fastexit

ARCH_GROUP = "dukd.architectures"
PRESET_GROUP = "dukd.presets"
METHOD_GROUP = "dukd.methods"


# The models trained by this project and shipped in the package (zoo/shipped.py, zoo/weights/):
# dukd upscale's default model, and the teacher of dukd distill --demo.
DEFAULT_STUDENT = "dukd-student-x4"
DEFAULT_TEACHER = "dukd-teacher-x4"


class PluginWarning(UserWarning):
    """A plugin entry point that could not be loaded."""


@dataclass(frozen=True)
class WeightSource:
    """A preset's weights at one scale, with what is known about them.

    ``kwargs`` are constructor arguments these weights were trained with, applied on top of the
    preset's (same parameter shapes, other semantics, e.g. input range). ``verified`` says whether
    dukd has checked the file's outputs against its authors' published numbers.
    """

    source: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    verified: bool = False
    notes: str = ""
    # What the file is, where else it is, and what its authors published (all optional):
    filename: str | None = None  # its published name (e.g. EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth)
    sha256: str | None = None  # its SHA-256: 64 hex digits, or the 8-digit prefix its name carries
    mirrors: tuple[str, ...] = ()  # further sources of the same file, tried in order after `source`
    published: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # set -> (PSNR, SSIM), Y
    published_by: str = ""  # where the published numbers come from
    alternatives: tuple[WeightSource, ...] = ()  # other files (not this one), each labelled in its notes

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source of this file, in the order they are tried ('' = no source known)."""
        return tuple(s for s in (self.source, *self.mirrors) if s)


def source_of(w: str | WeightSource) -> WeightSource:
    return w if isinstance(w, WeightSource) else WeightSource(str(w))


@dataclass(frozen=True)
class Preset:
    """A named, ready configuration of an architecture.

    ``weights`` maps a scale to a weight source: a string (anything
    :func:`dukd_cli.models.weights.resolve` accepts, typically ``hf://owner/repo/file@revision#sha256=...``)
    or a :class:`WeightSource` carrying the constructor arguments those weights need.
    """

    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    scales: tuple[int, ...] = (2, 3, 4)
    weights: Mapping[int, str | WeightSource] = field(default_factory=dict)
    description: str = ""
    notes: str = ""
    label: str = ""  # a display name for messages ("SwinIR-S lightweight"); default: the preset's name


@dataclass(frozen=True)
class Entry:
    """One registered name: where it comes from and how to load it."""

    name: str
    group: str
    provider: str  # distribution name (package) that declared the entry point
    value: str  # "module:attr"
    _ep: metadata.EntryPoint = field(repr=False, compare=False)

    def load(self) -> Any:
        return _load(self)


def _provider(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    if not name and dist is not None:
        name = dist.metadata["Name"] if dist.metadata else None
    return name or "?"


@cache
def _entries(group: str) -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for ep in metadata.entry_points(group=group):
        if ep.name in found:
            # Two distributions claim the same name: keep the first, say so.
            warnings.warn(
                f"dukd plugin: '{ep.name}' in {group} is declared by both "
                f"{found[ep.name].provider} and {_provider(ep)}; using {found[ep.name].provider}",
                PluginWarning,
                stacklevel=2,
            )
            continue
        found[ep.name] = Entry(ep.name, group, _provider(ep), ep.value, ep)
    return found


OWN_DISTRIBUTION = "dukd"  # entry points dukd declares itself (its own zoo)
_loaded: dict[tuple[str, str], Any] = {}
_failed: dict[tuple[str, str], str] = {}


def _load(entry: Entry) -> Any:
    key = (entry.group, entry.name)
    if key in _loaded:
        return _loaded[key]
    if key in _failed:
        return None
    if entry.provider != OWN_DISTRIBUTION:
        fastexit.foreign_code_ran(entry.provider)  # its open files are flushed by the normal exit
    try:
        obj = entry._ep.load()
    except Exception as exc:  # a broken plugin must not take the CLI down
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        _failed[key] = msg
        warnings.warn(
            f"dukd plugin '{entry.name}' ({entry.group}, from {entry.provider}) failed to load: {msg}",
            PluginWarning,
            stacklevel=2,
        )
        return None
    _loaded[key] = obj
    return obj


def refresh() -> None:
    """Forget what was discovered (after installing a plugin at run time, or in tests)."""
    _entries.cache_clear()
    _loaded.clear()
    _failed.clear()


def failed_plugins() -> dict[tuple[str, str], str]:
    """``{(group, name): error}`` for entry points that failed to import so far."""
    return dict(_failed)


def _loaded_group(group: str) -> dict[str, tuple[Entry, Any]]:
    out = {}
    for name, entry in _entries(group).items():
        obj = entry.load()
        if obj is not None:
            out[name] = (entry, obj)
    return out


def architectures() -> dict[str, tuple[Entry, Callable[..., Any]]]:
    """All loadable architectures: ``{name: (entry, factory)}``."""
    return _loaded_group(ARCH_GROUP)


def presets() -> dict[str, tuple[Entry, Preset]]:
    """All loadable presets: ``{name: (entry, preset)}``."""
    out = {}
    for name, (entry, obj) in _loaded_group(PRESET_GROUP).items():
        if not isinstance(obj, Preset):
            warnings.warn(
                f"dukd plugin '{name}' ({PRESET_GROUP}, from {entry.provider}) is not a dukd_cli.registry.Preset",
                PluginWarning,
                stacklevel=2,
            )
            continue
        out[name] = (entry, obj)
    return out


def methods() -> dict[str, tuple[Entry, Any]]:
    """All loadable distillation methods: ``{name: (entry, method_class)}``."""
    return _loaded_group(METHOD_GROUP)


def _suggest(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def get_architecture(name: str) -> Callable[..., Any]:
    entries = _entries(ARCH_GROUP)
    if name not in entries:
        known = sorted(set(entries) | set(_entries(PRESET_GROUP)))
        raise UnknownModelError(
            f"unknown architecture '{name}'{_suggest(name, known)}; `dukd zoo list` shows what is installed"
        )
    obj = entries[name].load()
    if obj is None:
        raise UnknownModelError(
            f"architecture '{name}' is installed but failed to load: {_failed[(ARCH_GROUP, name)]}"
        )
    return obj


def get_preset(name: str) -> Preset | None:
    """The preset called ``name``, or ``None`` when there is no such preset."""
    entries = _entries(PRESET_GROUP)
    if name not in entries:
        return None
    obj = entries[name].load()
    if obj is None:
        raise UnknownModelError(
            f"preset '{name}' is installed but failed to load: {_failed[(PRESET_GROUP, name)]}"
        )
    if not isinstance(obj, Preset):
        raise UnknownModelError(
            f"preset '{name}' from {entries[name].provider} is not a dukd_cli.registry.Preset"
        )
    return obj


def get_method(name: str) -> Any:
    entries = _entries(METHOD_GROUP)
    if name not in entries:
        raise UnknownModelError(
            f"unknown distillation method '{name}'{_suggest(name, list(entries))}; known: {', '.join(sorted(entries))}"
        )
    obj = entries[name].load()
    if obj is None:
        raise UnknownModelError(
            f"method '{name}' is installed but failed to load: {_failed[(METHOD_GROUP, name)]}"
        )
    return obj


def fingerprint(group: str, name: str) -> str | None:
    """What identifies the code behind a loaded entry point: its distribution and version, its
    ``module:attr``, and the size and mtime of every Python file beside the module (an edited
    plugin gets a new fingerprint). ``None`` for an unknown entry. An entry not loaded yet is
    found without importing it (its module's file, from the import system's spec), so a cache keyed
    by the fingerprint can answer without importing the plugin (and torch)."""
    import importlib.util
    import sys

    e = _entries(group).get(name)
    if e is None or (group, name) in _failed:
        return None
    dist = getattr(e._ep, "dist", None)
    version = getattr(dist, "version", None) or "?"
    module_name = e.value.split(":", 1)[0]
    module = sys.modules.get(module_name)
    files = []
    path = getattr(module, "__file__", None)
    if path is None and module is None:
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None and spec.has_location else None
    if path:
        from pathlib import Path

        folder = Path(path).parent
        for f in sorted(folder.glob("*.py")):
            try:
                st = f.stat()
            except OSError:
                continue
            files.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join([e.provider, version, e.value, *files])


def entry(group: str, name: str) -> Entry | None:
    return _entries(group).get(name)


def names(group: str) -> list[str]:
    return sorted(_entries(group))
