"""Deployable artifacts: safetensors + config and the Hub push (``bundle``), the model card
(``card``), what ``config.json`` records of the weights and the distill run (``provenance``), ONNX
with its parity check and ONNX Runtime model (``onnx``), fp16 and int8 ONNX (``fp16``, ``int8``;
the int8 calibration patches and hold-out scoring in ``calib``),
spandrel's layout (``spandrel``), the ONNX runtimes of ``--runtime`` (``runtimes``).

May import: ``dukd_cli.models``, ``dukd_cli.upscale``, ``dukd_cli.evaluate``, ``dukd_cli.rundir``,
``dukd_cli.runtime``, ``dukd_cli.errors``. Never distill, report or commands.

Public face: ``export_model``, ``export_onnx``, ``push_to_hub``.
"""

from dukd_cli.runtime.lazy import lazy_face

_PUBLIC = {"export_model": ".bundle", "push_to_hub": ".bundle", "export_onnx": ".onnx"}

__getattr__, __dir__, __all__ = lazy_face(__name__, _PUBLIC)
