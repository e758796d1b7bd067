"""A checkpoint file (or ``hf://`` file) given where a model name is expected: ``--model RRDB_x4.pth``.

The file is read by the safe resolver (:mod:`dukd_cli.models.weights`: safetensors or a weights-only
pickle), then:

1. the zoo's own families are tried first (:func:`dukd_cli.models.detect.detect`): EDSR, RCAN, SwinIR or
   IMDN with the constructor arguments read off the shapes, so no ``--arg`` is needed;
2. any other architecture goes to spandrel (:mod:`dukd_cli.models.external`, optional extra), handed the
   state dict we read.

The result is an ordinary :class:`dukd_cli.models.factory.ModelSpec` (``arch`` ``spandrel`` for the second
kind) whose ``detected`` field says what was found (``dukd zoo info FILE`` prints it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError, WeightsError, a_or_an

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".safetensors")

# What a file was found to be, per (path, mtime, size): a run resolves its teacher several times
# (configuration, parameter counts, building) and a spandrel detection builds the whole network.
_FOUND: dict[tuple, tuple[str, Any]] = {}
_FOUND_MAX = 8


def is_checkpoint_source(name: str | os.PathLike) -> bool:
    """Whether ``name`` is a checkpoint file (by its suffix) on disk, an ``hf://`` file or an
    ``https://`` file (a bare Hub repository id is not: that is a super-image repository)."""
    s = os.fspath(name)
    if s.startswith(("https://", "http://")):
        from urllib.parse import urlparse

        return Path(urlparse(s.split("#", 1)[0]).path).suffix.lower() in CHECKPOINT_SUFFIXES
    if s.startswith("hf://"):
        from dukd_cli.sources.hub import parse_hub_source

        try:
            filename = parse_hub_source(s).filename
        except WeightsError:
            return False
        return Path(filename).suffix.lower() in CHECKPOINT_SUFFIXES
    p = Path(s).expanduser()
    return p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file()


def _recorded(name: str) -> str:
    """How the source is recorded: local files absolute (runs resume from any directory)."""
    if name.startswith(("hf://", "https://", "http://")):
        return name
    return str(Path(name).expanduser().resolve())


def _file_key(name: str) -> tuple | None:
    if name.startswith(("hf://", "https://", "http://")):
        return None  # the download cache decides what the name means; always read it
    try:
        st = Path(name).expanduser().resolve().stat()
    except OSError:
        return None
    return (str(Path(name).expanduser().resolve()), st.st_mtime_ns, st.st_size)


def _find(name: str) -> tuple[str, Any]:
    """("zoo", Detection) or ("spandrel", its describe() dict) for checkpoint ``name``."""
    from dukd_cli.models import external
    from dukd_cli.models.detect import detect, detectable
    from dukd_cli.models.weights import load_state_dict

    key = _file_key(name)
    if key is not None and key in _FOUND:
        return _FOUND[key]
    state_dict = load_state_dict(name)
    found = detect(state_dict)
    if found is not None:
        result: tuple[str, Any] = ("zoo", found)
    else:
        try:
            result = ("spandrel", external.from_state_dict(state_dict, name).describe())
        except external.SpandrelMissingError:
            raise DukdError(
                f"{name}: its keys match no registered architecture ({', '.join(detectable())}); other architectures "
                f"(ESRGAN, HAT, SPAN, ...) load through spandrel: {external.INSTALL_HINT}"
            ) from None
        except external.NotRecognisedError:
            keys = ", ".join(list(state_dict)[:3])
            raise DukdError(
                f"{name}: neither the registered architectures ({', '.join(detectable())}) nor spandrel recognises this checkpoint "
                f"(its first keys: {keys})"
            ) from None
    if key is not None:
        while len(_FOUND) >= _FOUND_MAX:
            _FOUND.pop(next(iter(_FOUND)))
        _FOUND[key] = result
    return result


def resolve_checkpoint_spec(
    name: str, scale: int | None, kwargs: Mapping[str, Any] | None = None, weights: str | None = None
):
    """The :class:`~dukd_cli.models.factory.ModelSpec` of checkpoint ``name`` (see the module docstring)."""
    import copy

    from dukd_cli import registry
    from dukd_cli.models import external
    from dukd_cli.models.spec import ModelSpec

    kwargs = dict(kwargs or {})
    source = _recorded(name)
    kind, found = _find(name)
    found = copy.deepcopy(found)
    if kind == "zoo":
        if scale is not None and int(scale) != found.scale:
            raise DukdError(
                f"{name} is {a_or_an(found.label)} checkpoint (its upsampler's shapes say x{found.scale}), "
                f"but x{scale} was asked for"
            )
        entry = registry.entry(registry.ARCH_GROUP, found.arch)
        return ModelSpec(
            name=name,
            arch=found.arch,
            scale=found.scale,
            kwargs={**found.kwargs, **kwargs},
            weights=weights or source,
            preset=None,
            provider=entry.provider if entry else "?",
            detected=found.to_dict(),
        )
    label, found_scale = found["label"], int(found["scale"])
    if scale is not None and int(scale) != found_scale:
        raise DukdError(
            f"{name} is {a_or_an(label)} checkpoint (detected by spandrel), but x{scale} was asked for"
        )
    if kwargs:
        raise DukdError(
            f"{name} is {a_or_an(label)} checkpoint built by spandrel from the file itself; it takes no constructor "
            f"arguments (got {', '.join(sorted(kwargs))})"
        )
    entry = registry.entry(registry.ARCH_GROUP, external.ARCH)
    return ModelSpec(
        name=name,
        arch=external.ARCH,
        scale=found_scale,
        kwargs={"source": source},
        weights=weights or source,
        preset=None,
        provider=entry.provider if entry else "?",
        detected=found,
    )
