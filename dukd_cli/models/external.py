"""Every other architecture through spandrel (optional extra ``dukd[spandrel]``).

spandrel recognises 40-odd image-restoration families (ESRGAN/RRDB, Real-ESRGAN compact, SwinIR,
Swin2SR, HAT, DAT, OmniSR, SPAN, SRFormer, PLKSR, ...) from a state dict alone. dukd hands it the
state dict that *our* resolver read (safetensors, or a weights-only pickle: never spandrel's own
file loader), and wraps the model it builds in :class:`SpandrelSR`, which follows the dukd model
contract: ``(N, 3, h, w)`` RGB in [0, 1] to ``(N, 3, s*h, s*w)``, a ``scale`` attribute, input
padding to the model's size requirements (reflect, output cropped), trainable parameters.

The ``spandrel`` architecture entry point (:func:`spandrel`) builds such a model from a
``source=`` checkpoint, so a ``ModelSpec`` for it works everywhere a zoo model does (parameter
counts, distillation, export). Users never name it: a checkpoint file given as ``--model``,
``--teacher`` or ``--reference-model`` that no zoo family claims comes here
(:mod:`dukd_cli.models.checkpoint`).

spandrel imports torchvision at import time, but only two non-SR families use it (LaMa inpainting,
RestoreFormer face restoration). Where torchvision cannot be imported (e.g. a CPU-only torch wheel
beside PyPI's CUDA torchvision), spandrel is imported with a stand-in for those two functions;
every super-resolution family works, those two say why they cannot run.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import sys
import types
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dukd_cli.errors import DukdError

ARCH = "spandrel"
INSTALL_HINT = "pip install 'dukd[spandrel]'"
SR_PURPOSES = ("SR", "FaceSR")

_spandrel: Any = None


class SpandrelMissingError(DukdError):
    """spandrel is not installed (the optional extra)."""


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """Modules standing in for ``torchvision.transforms.functional`` while spandrel is imported."""

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise DukdError("this spandrel architecture needs torchvision, which cannot be imported here")

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = enum.Enum(  # type: ignore[attr-defined]
        "InterpolationMode",
        {n: n.lower() for n in ("NEAREST", "BILINEAR", "BICUBIC", "BOX", "HAMMING", "LANCZOS")},
    )
    functional.rotate = unavailable  # type: ignore[attr-defined]
    functional.normalize = unavailable  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    root.__version__ = "0+dukd-stand-in"  # type: ignore[attr-defined]
    return {m.__name__: m for m in (root, transforms, functional)}


def _forget(prefixes: tuple[str, ...]) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in prefixes]:
        del sys.modules[name]


def import_spandrel() -> Any:
    """The spandrel module, or :class:`SpandrelMissingError` (one line saying how to install it)."""
    global _spandrel
    if _spandrel is not None:
        return _spandrel
    if importlib.util.find_spec("spandrel") is None:
        raise SpandrelMissingError(f"spandrel is not installed: {INSTALL_HINT}")
    try:
        import spandrel as module
    except Exception as first:  # torchvision fails in several ways (RuntimeError, OSError, ImportError)
        _forget(("spandrel", "torchvision"))
        saved = {}
        stand_in = _torchvision_stand_in()
        saved.update(stand_in)
        sys.modules.update(stand_in)
        try:
            import spandrel as module
        except Exception as exc:
            _forget(("spandrel",))
            reason = str(first).strip().splitlines()[0] if str(first).strip() else type(first).__name__
            raise DukdError(f"spandrel is installed but cannot be imported ({reason}; then {exc})") from None
        finally:
            for name in saved:
                sys.modules.pop(name, None)
    _spandrel = module
    return module


def available() -> bool:
    """Whether spandrel is installed and importable."""
    try:
        import_spandrel()
    except DukdError:
        return False
    return True


class NotRecognisedError(DukdError):
    """spandrel does not know the checkpoint's architecture."""


def _call(descriptor: Any) -> Any:
    fn = getattr(descriptor, "_call_fn", None)  # a few families return tuples or need post-processing
    return fn if callable(fn) else (lambda model, image: model(image))


class SpandrelSR(nn.Module):
    """A spandrel model under the dukd model contract.

    ``net`` is spandrel's module; the state dict of this wrapper is ``net.<spandrel's keys>``, and
    :meth:`convert_state_dict` accepts the checkpoint's own layout too (spandrel renames some, e.g.
    new-style ESRGAN keys). The input is padded to the model's size requirements (``minimum``,
    ``multiple_of``, ``square``; reflect, output cropped): ``window_size`` is ``multiple_of``.
    """

    def __init__(self, descriptor: Any, source: str | None = None) -> None:
        super().__init__()
        self.net = descriptor.model
        self.scale = int(descriptor.scale)
        self.architecture = str(descriptor.architecture.name)
        self.architecture_id = str(getattr(descriptor.architecture, "id", self.architecture))
        self.tags = list(descriptor.tags)
        self.purpose = str(descriptor.purpose)
        req = descriptor.size_requirements
        self.min_size = int(req.minimum)
        self.multiple_of = int(req.multiple_of)
        self.square = bool(req.square)
        if self.multiple_of > 1:
            self.window_size = self.multiple_of
        self.supports_half = bool(descriptor.supports_half)
        self.supports_bfloat16 = bool(descriptor.supports_bfloat16)
        self.source = source
        self._fn = _call(descriptor)

    def describe(self) -> dict[str, Any]:
        """What spandrel detected, as plain data (``dukd zoo info FILE``)."""
        return {
            "source": "spandrel",
            "architecture": self.architecture,
            "architecture_id": self.architecture_id,
            "label": f"{self.architecture}"
            + (f" ({', '.join(self.tags)})" if self.tags else "")
            + f" x{self.scale}",
            "tags": list(self.tags),
            "purpose": self.purpose,
            "scale": self.scale,
            "input_channels": 3,
            "size_requirements": {
                "minimum": self.min_size,
                "multiple_of": self.multiple_of,
                "square": self.square,
            },
            "supports_half": self.supports_half,
            "supports_bfloat16": self.supports_bfloat16,
        }

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        m = self.multiple_of
        ph, pw = max(h, self.min_size), max(w, self.min_size)
        ph, pw = -(-ph // m) * m, -(-pw // m) * m
        if self.square:
            ph = pw = max(ph, pw)
        return ph, pw

    def forward(self, x: Tensor) -> Tensor:
        from dukd_cli.models.sizes import pad_to_size

        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        # Always a tensor of our own: some spandrel networks work on their input in place (RCAN: x *= 255).
        xp = pad_to_size(x, ph, pw) if (ph, pw) != (h, w) else x.clone()
        y = self._fn(self.net, xp)
        if not isinstance(y, Tensor):
            raise DukdError(f"spandrel {self.architecture} returned {type(y).__name__}, not a tensor")
        return y[..., : h * self.scale, : w * self.scale]

    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``net.``-prefixed keys pass; the checkpoint's own layout is renamed the way spandrel does."""
        sd = dict(state_dict)
        if sd and all(k.startswith("net.") for k in sd):
            return sd
        own = self.state_dict()
        prefixed = {f"net.{k}": v for k, v in sd.items()}
        if set(prefixed) == set(own):
            return prefixed
        try:
            with torch.device("cpu"):
                desc = import_spandrel().ModelLoader(device="cpu").load_from_state_dict(dict(sd))
        except Exception:
            return prefixed  # the strict load then reports what does not match
        return {f"net.{k}": v for k, v in desc.model.state_dict().items()}

    def extra_repr(self) -> str:
        return f"architecture={self.architecture}, scale={self.scale}, tags={self.tags}"


def load_descriptor(state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> Any:
    """Ask spandrel which architecture ``state_dict`` is and build it (weights loaded).

    Raises :class:`SpandrelMissingError` without the extra, :class:`NotRecognisedError` for an
    architecture spandrel does not know, and a one-line :class:`DukdError` for a model dukd cannot
    use (not super-resolution, not RGB in and out, or spandrel failing to build it).
    """
    module = import_spandrel()
    sd = dict(state_dict)
    if sd and all(k.startswith("net.") for k in sd):  # a dukd export of a spandrel model
        sd = {k[len("net.") :]: v for k, v in sd.items()}
    try:
        # Always a real CPU model, also inside a meta-device context (parameter counting): spandrel
        # loads the weights as it builds.
        with torch.device("cpu"):
            desc = module.ModelLoader(device="cpu").load_from_state_dict(sd)
    except module.UnsupportedModelError:
        raise NotRecognisedError(f"{source}: spandrel does not recognise this architecture either") from None
    except Exception as exc:  # a detected family whose builder failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DukdError(
            f"{source}: spandrel recognised the file but could not build its network: {first}"
        ) from None
    name = getattr(desc.architecture, "name", "?")
    from dukd_cli.errors import a_or_an

    if not isinstance(desc, module.ImageModelDescriptor):
        raise DukdError(
            f"{source} is {a_or_an(name)} {desc.purpose} model (image and mask), not super-resolution"
        )
    if desc.purpose not in SR_PURPOSES or int(desc.scale) < 2:
        raise DukdError(
            f"{source} is a x{desc.scale} {name} {desc.purpose} model, not super-resolution (x2 or more)"
        )
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise DukdError(
            f"{source} is {a_or_an(name)} model with {desc.input_channels} input and {desc.output_channels} output "
            "channels; dukd models map RGB to RGB (3 channels)"
        )
    return desc


def from_state_dict(state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> SpandrelSR:
    """A :class:`SpandrelSR` for ``state_dict`` (see :func:`load_descriptor`)."""
    return SpandrelSR(load_descriptor(state_dict, source), source)


def spandrel(scale: int, source: str | os.PathLike | None = None) -> SpandrelSR:
    """Architecture factory: the spandrel network of checkpoint ``source`` (its weights loaded).

    The architecture comes from the file, so ``source`` is required and must be x``scale``.
    """
    if source is None:
        raise DukdError(
            "the 'spandrel' architecture is built from a checkpoint: give the file itself as the model "
            "(e.g. --model RRDB_x4.pth)"
        )
    from dukd_cli.models.weights import load_state_dict

    src = os.fspath(source)
    model = from_state_dict(load_state_dict(src), src)
    if model.scale != int(scale):
        raise DukdError(f"{src} is a x{model.scale} {model.architecture} checkpoint, not x{scale}")
    return model
