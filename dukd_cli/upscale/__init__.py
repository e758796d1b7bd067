"""Running a network on real images of any size: tiling and devices (``inference``), one image in
memory (``image``), one file to one file, streamed when large (``job``), several images at once on
the CPU (``lanes``) and planning a whole command's inputs and outputs (``paths``).

May import: ``dukd_cli.images``, ``dukd_cli.models``, ``dukd_cli.runtime``, ``dukd_cli.errors``.
Never evaluate, export, distill or commands.

Public face: ``upscale_paths``, ``upscale_image``, ``run_model``.
"""

from dukd_cli.runtime.lazy import lazy_face

_PUBLIC = {"upscale_paths": ".paths", "upscale_image": ".image", "run_model": ".inference"}

__getattr__, __dir__, __all__ = lazy_face(__name__, _PUBLIC)
