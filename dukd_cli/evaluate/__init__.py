"""Evaluation exactly as SR papers compute it: the protocol (``protocol``: benchmark pairs,
border crop, Y channel, rounding), the metrics (``metrics``: PSNR and SSIM) and checking a preset's
weights against its published numbers (``verify``).

May import: ``dukd_cli.upscale``, ``dukd_cli.images``, ``dukd_cli.models``, ``dukd_cli.data``,
``dukd_cli.runtime``, ``dukd_cli.errors``. Never export, distill, report or commands.

Public face: ``evaluate``, ``psnr_y``, ``ssim_y``.
"""

_PUBLIC = {"evaluate": ".protocol", "psnr_y": ".metrics", "ssim_y": ".metrics"}


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
