"""Images on disk: the one reader and writer (``imageio``), the streaming PNG encoder
(``pngstream``), the band writer for outputs larger than memory (``bandwrite``) and the pixel
arithmetic they share (``pixels``).

May import: ``dukd_cli.runtime``, ``dukd_cli.errors``. Never models, upscale or anything above.
"""

_PUBLIC = {"read_image": ".imageio", "read_rgb_uint8": ".imageio", "write_image": ".imageio", "open_writer": ".imageio"}


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
