"""Images on disk: the one reader and writer (``imageio``), the streaming PNG encoder
(``pngstream``), the band writer for outputs larger than memory (``bandwrite``) and the pixel
arithmetic they share (``pixels``).

May import: ``dukd_cli.runtime``, ``dukd_cli.errors``. Never models, upscale or anything above.
"""

from dukd_cli.runtime.lazy import lazy_face

_PUBLIC = {
    "read_image": ".imageio",
    "read_rgb_uint8": ".imageio",
    "write_image": ".imageio",
    "open_writer": ".imageio",
}

__getattr__, __dir__, __all__ = lazy_face(__name__, _PUBLIC)
