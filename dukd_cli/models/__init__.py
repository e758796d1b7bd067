"""Networks by name: spec resolution and building (``factory``, ``spec``), weights from files and
the Hub (``weights``), checkpoint files as models (``checkpoint``), detection of an architecture
from a state dict (``detect``; each architecture declares its own rules through the registry),
mismatch hints (``mismatch``), the spandrel adapter (``external``), size rules (``sizes``), the
cached parameter counts (``paramcache``) and the contract every runnable network meets (``upscaler``:
the ``Upscaler`` protocol, its size rules). The plugin registry itself is ``dukd_cli.registry``.

May import: ``dukd_cli.registry``, ``dukd_cli.sources``, ``dukd_cli.rundir``, ``dukd_cli.runtime``,
``dukd_cli.errors``. Never images, upscale, evaluate, export, distill or commands.

Public face: ``create_model``, ``build``, ``resolve_spec``, ``ModelSpec``, ``count_parameters``.
"""

from dukd_cli.runtime.lazy import lazy_face

_PUBLIC = {
    "create_model": ".factory",
    "build": ".factory",
    "resolve_spec": ".factory",
    "count_parameters": ".factory",
    "describe": ".factory",
    "ModelSpec": ".spec",
}

__getattr__, __dir__, __all__ = lazy_face(__name__, _PUBLIC)
