"""Running a network on real images of any size: tiling and devices (``inference``), one image in
memory (``image``), one file to one file, streamed when large (``job``), several images at once on
the CPU (``lanes``) and planning a whole command's inputs and outputs (``paths``).

May import: ``dukd_cli.images``, ``dukd_cli.models``, ``dukd_cli.runtime``, ``dukd_cli.errors``.
Never evaluate, export, distill or commands.

Public face: ``upscale_paths``, ``upscale_image``, ``run_model``.
"""

_PUBLIC = {"upscale_paths": ".paths", "upscale_image": ".image", "run_model": ".inference"}


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
