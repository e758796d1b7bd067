"""Evaluation exactly as SR papers compute it: the protocol (``protocol``: benchmark pairs,
border crop, Y channel, rounding), the metrics (``metrics``: PSNR and SSIM) and checking a preset's
weights against its published numbers (``verify``).

May import: ``dukd_cli.upscale``, ``dukd_cli.images``, ``dukd_cli.models``, ``dukd_cli.data``,
``dukd_cli.runtime``, ``dukd_cli.errors``. Never export, distill, report or commands.

Public face: ``evaluate``, ``psnr_y``, ``ssim_y``.
"""

from dukd_cli.runtime.lazy import lazy_face

_PUBLIC = {"evaluate": ".protocol", "psnr_y": ".metrics", "ssim_y": ".metrics"}

__getattr__, __dir__, __all__ = lazy_face(__name__, _PUBLIC)
