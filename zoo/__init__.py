"""The built-in model zoo: EDSR, RCAN, SwinIR and IMDN, one network per module.

Each module has a factory named like the module (``zoo.edsr.edsr(scale, ...)``) that returns an
``nn.Module`` mapping (N, 3, h, w) RGB in [0, 1] to (N, 3, h*scale, w*scale) (not clamped), with
parameter names of the official releases, a ``convert_state_dict`` staticmethod for other
projects' layouts and ``feature_taps()``. The zoo registers itself through the same entry points
as any third-party plugin (``pyproject.toml``); ``zoo.presets`` holds the paper's configurations.
"""

import sys as _sys
import types as _types

__all__ = ["edsr", "imdn", "rcan", "swinir"]


class _Zoo(_types.ModuleType):
    """``zoo.edsr`` (and the others) is the factory, as it always was, but imported on first use:
    importing the package (as loading a preset from ``zoo.presets`` does) does not import torch.
    Once a submodule is imported Python binds its name on the package to the module; the factory
    is still what the name gives."""

    def __getattribute__(self, name: str):
        value = super().__getattribute__(name)
        if name in __all__ and isinstance(value, _types.ModuleType):
            return getattr(value, name)
        return value

    def __getattr__(self, name: str):  # a factory whose module is not imported yet
        if name in __all__:
            import importlib

            return getattr(importlib.import_module(f"{__name__}.{name}"), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_sys.modules[__name__].__class__ = _Zoo
