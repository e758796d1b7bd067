"""Deployable artifacts: safetensors + config + model card and the Hub push (``bundle``), ONNX with
its parity check and ONNX Runtime model (``onnx``).

May import: ``dukd_cli.models``, ``dukd_cli.upscale``, ``dukd_cli.evaluate``, ``dukd_cli.rundir``,
``dukd_cli.runtime``, ``dukd_cli.errors``. Never distill, report or commands.

Public face: ``export_model``, ``export_onnx``, ``push_to_hub``.
"""

_PUBLIC = {"export_model": ".bundle", "push_to_hub": ".bundle", "export_onnx": ".onnx"}


def __getattr__(name: str):
    """The public names load their module on first use, so that importing a light submodule
    (or ``dukd --help``) does not import torch."""
    import importlib

    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = sorted(_PUBLIC)
