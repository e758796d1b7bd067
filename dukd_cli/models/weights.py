"""One weight resolver for every place that takes weights.

A *source* is one of:

- a local ``.safetensors`` file (safe by construction);
- a local ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` file, read with ``torch.load(weights_only=True)``
  only: a pickle that would run code on load is refused (:class:`UnsafeCheckpointError`);
- ``hf://OWNER/REPO/PATH[@REVISION][#sha256=HEX]`` (also ``hf://OWNER/REPO@REVISION/PATH``), fetched
  with ``huggingface_hub.hf_hub_download`` into its usual cache; ``HF_HUB_OFFLINE=1`` is honoured;
- ``https://...[#sha256=HEX]``, downloaded into the same cache with resume (:mod:`dukd_cli.sources`);
- the name of a preset, meaning that preset's declared sources for the requested scale, in order.

``hf://OWNER/REPO`` (a super-image repository, no file) is expanded by :mod:`dukd_cli.models.factory`,
which reads its ``config.json`` (:mod:`dukd_cli.sources.superimage`).

After reading, the checkpoint is unwrapped (``params_ema`` > ``params`` > ``state_dict`` > ``model``
> ``net``), ``module.`` / ``_orig_mod.`` prefixes are stripped, the model's own converter turns known
foreign layouts into native names, and the result is loaded strictly. A mismatch raises
:class:`StateDictMismatchError` whose message is a readable report (missing, unexpected and
wrong-shape keys) instead of a torch traceback.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dukd_cli.errors import StateDictMismatchError, UnsafeCheckpointError, WeightsError
from dukd_cli.registry import WeightSource
from dukd_cli.sources import fetch, is_remote
from dukd_cli.sources.errors import SourceError
from dukd_cli.sources.hashing import check_sha256
from dukd_cli.sources.superimage import expand_repo, is_repo_source

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net")
STRIP_PREFIXES = ("module.", "_orig_mod.")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def resolve(source: str | os.PathLike, *, scale: int | None = None) -> Path:
    """Turn a weight source into a local file path (downloading through the cache if needed).
    Without a network, a file not in the cache is one error that says how to give a local copy."""
    try:
        return _resolve(source, scale=scale)
    except SourceError as exc:
        if not exc.unreachable:
            raise
        from dukd_cli.models.options import weights_advice

        raise SourceError(
            f"{exc}, or {weights_advice('PATH')} with a local copy of the file", unreachable=True
        ) from None


def _resolve(source: str | os.PathLike, *, scale: int | None = None) -> Path:
    s = os.fspath(source)
    if is_remote(s):
        if is_repo_source(
            s
        ):  # a super-image repository: its file for the scale (dukd_cli.models.factory sets the semantics)
            if scale is None:
                raise WeightsError(f"{s} names a repository; a scale is needed to pick its file")
            s = expand_repo(s, scale)[0]
        ws = declared_with_source(s)
        return resolve_declared(ws, what=s) if ws is not None else fetch(s)
    p = Path(s).expanduser()
    if p.exists():
        if p.is_dir():
            raise WeightsError(f"weights source '{s}' is a directory, not a checkpoint file")
        _check_known_file(p)
        return p
    # A preset name stands for the preset's declared source.
    from dukd_cli.registry import get_preset, source_of

    preset = get_preset(s) if "/" not in s and "\\" not in s else None
    if preset is not None:
        if scale is None:
            raise WeightsError(f"preset '{s}' as a weights source needs a scale")
        declared = preset.weights.get(int(scale))
        if not declared:
            raise WeightsError(
                f"preset '{s}' declares no weights at x{scale}"
                + (f" (it has x{', x'.join(map(str, sorted(preset.weights)))})" if preset.weights else "")
            )
        return resolve_declared(source_of(declared), what=f"preset '{s}' at x{scale}")
    known = known_file(p.name)
    if known is not None:
        from dukd_cli.models.options import weights_advice

        raise WeightsError(f"{s} not found: {known.notes}; {weights_advice(f'PATH/{p.name}')}")
    raise WeightsError(f"weights file not found: {s}")


def resolve_declared(ws: WeightSource, *, what: str = "the declared weights") -> Path:
    """The file of a declared :class:`WeightSource`: each of its sources in order, the first that works."""
    if not ws.sources:
        raise WeightsError(f"{what}: no download source is known; {ws.notes or 'pass a weights file'}")
    errors = []
    unreachable = True  # every source failed for want of a network (then a local copy is the way)
    for src in ws.sources:
        try:
            return fetch(src, sha256=ws.sha256, name=ws.filename)  # cached under its declared name
        except WeightsError as exc:
            if "SHA-256 mismatch" in str(exc):
                raise
            errors.append(str(exc).splitlines()[0])
            unreachable = unreachable and getattr(exc, "unreachable", False)
    error = SourceError if unreachable else WeightsError
    kw = {"unreachable": True} if unreachable else {}
    if len(errors) == 1:
        raise error(errors[0], **kw)
    raise error(f"{what}: none of its {len(errors)} sources worked: " + " | ".join(errors), **kw)


def known_file(name: str) -> WeightSource | None:
    """The declared weights whose published file name is ``name`` (across installed presets), if any."""
    from dukd_cli.registry import presets, source_of

    for _name, (_entry, preset) in presets().items():
        for w in preset.weights.values():
            ws = source_of(w)
            if ws.filename and ws.filename == name:
                return ws
    return None


def declared_with_source(source: str) -> WeightSource | None:
    """The declared weights (of any installed preset) whose first source is ``source``: its mirrors come too."""
    from dukd_cli.registry import presets, source_of

    for _name, (_entry, preset) in presets().items():
        for w in preset.weights.values():
            ws = source_of(w)
            if ws.source and ws.source == source:
                return ws
    return None


def _check_known_file(p: Path) -> None:
    """A local file carrying a known published name must have that file's hash (or hash prefix)."""
    if p.suffix not in PICKLE_SUFFIXES + (".safetensors",):
        return
    ws = known_file(p.name)
    if ws is not None and ws.sha256:
        check_sha256(p, ws.sha256, what=f"{p} (the published {ws.filename})")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _torch_load_safe(path: Path) -> object:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not for users
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
        what = f" (it references {m.group(1)})" if m else ""
        raise UnsafeCheckpointError(
            f"refusing to load {path}: its pickle needs objects beyond plain tensors{what} and could run "
            "code on load; only weights_only checkpoints are accepted (convert it to .safetensors where you trust it)"
        ) from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read checkpoint {path}: {first}") from None


def read_checkpoint(path: str | os.PathLike) -> object:
    """Read a checkpoint file safely (safetensors or weights-only pickle); no unwrapping."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    if p.stat().st_size == 0:
        raise WeightsError(f"weights file is empty: {p}")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"cannot read safetensors file {p}: {first}") from None
    return _torch_load_safe(p)


def unwrap(obj: object) -> dict[str, torch.Tensor]:
    """Unwrap training wrappers and strip parallel/compile prefixes; returns tensors only."""
    seen = 0
    while isinstance(obj, Mapping) and seen < 8:
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not isinstance(obj, Mapping):
        raise WeightsError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. BasicSR's integer bookkeeping; never weights
        k = str(key)
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if k.startswith(prefix):
                    k, changed = k[len(prefix) :], True
        out[k] = value
    if not out:
        raise WeightsError("checkpoint holds no tensors (not a state dict?)")
    return out


def load_state_dict(source: str | os.PathLike, *, scale: int | None = None) -> dict[str, torch.Tensor]:
    """Resolve, read and unwrap a source into a flat state dict (not yet converted)."""
    return unwrap(read_checkpoint(resolve(source, scale=scale)))


# --------------------------------------------------------------------------------------------
# Loading into a model
# --------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What a load did: keys loaded, and those it could not match."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def summary(self) -> str:
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.wrong_shape)} wrong-shape key(s)"
        )

    def format(self, limit: int = 8) -> str:
        lines = []

        def block(title: str, items: list[str]) -> None:
            if not items:
                return
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {x}" for x in items[:limit])
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")

        block("missing from the checkpoint", self.missing)
        block("unexpected in the checkpoint", self.unexpected)
        block(
            "wrong shape (checkpoint vs model)",
            [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.wrong_shape],
        )
        return "\n".join(lines)


def convert_for(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the model's own layout converter, if it declares one."""
    conv = getattr(model, "convert_state_dict", None)
    if conv is None:
        return state_dict
    try:
        return dict(conv(dict(state_dict)))
    except Exception as exc:
        raise WeightsError(f"cannot convert checkpoint to {type(model).__name__} layout: {exc}") from None


def load_into(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    strict: bool = True,
    source: str = "checkpoint",
) -> LoadReport:
    """Load a (converted) state dict into ``model``.

    Strict: any missing, unexpected or wrong-shape key raises :class:`StateDictMismatchError` with a
    readable report, and the model is left untouched. Non-strict: every key whose name and shape
    match is loaded; the report lists the rest.
    """
    raw = state_dict
    state_dict = convert_for(model, state_dict)
    own = model.state_dict()
    report = LoadReport()
    usable: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k not in own:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            report.wrong_shape.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            usable[k] = v
    report.missing = [k for k in own if k not in state_dict]
    if strict and not report.ok:
        raise mismatch_error(model, raw, report, source)
    with torch.no_grad():
        for k, v in usable.items():
            own[k].copy_(v.to(dtype=own[k].dtype))
    report.loaded = sorted(usable)
    if not strict and not report.loaded:
        raise StateDictMismatchError(
            f"{source}: no key of the checkpoint matches the model\n{report.format()}"
        )
    return report


def mismatch_error(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], report: LoadReport, source: str
) -> StateDictMismatchError:
    """The strict-load failure: the report, then what to do (no option names: the caller's own help,
    :mod:`dukd_cli.models.mismatch`, adds those). Carries ``report``, ``source`` and the checkpoint's
    ``shapes`` (key -> shape, as read) for that help."""
    err = StateDictMismatchError(
        f"{source} does not match {type(model).__name__} (x{getattr(model, 'scale', '?')}): "
        f"{report.summary()}\n{report.format()}"
    )
    err.report = report
    err.source = source
    err.shapes = {str(k): tuple(v.shape) for k, v in state_dict.items()}
    return err


def load_weights(
    model: torch.nn.Module, source: str | os.PathLike, *, strict: bool = True, scale: int | None = None
) -> LoadReport:
    """Resolve ``source`` and load it into ``model`` (see :func:`load_into`)."""
    sd = load_state_dict(source, scale=scale if scale is not None else getattr(model, "scale", None))
    return load_into(model, sd, strict=strict, source=os.fspath(source))
