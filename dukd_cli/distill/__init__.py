"""Distillation: methods (scratch, kd, dukd, fakd, fitnet, at, fsp), data upcycling, invertible augmentations,
feature terms, several teachers, the trainer; ``options``: the one table of ``dukd distill``'s options.

A run, as data: ``resolve`` (resolve.py) decides a :class:`DistillConfig` once into a ``Resolved``
(specs, method class, options); ``build_session`` (session.py) builds from it the ``Session``
(device and DDP, student, teacher, EMA (ema.py), optimiser, method); ``Trainer`` (trainer.py) runs
the loop over it: Ctrl-C/SIGTERM (signals.py), loss sums (meter.py), state.pt's content
(trainstate.py) written as one checkpoint (checkpoint.py), the run directory (workdir.py), the run
log (runlog.py). Methods: methods.py (the interface, scratch, kd, dukd), feature_methods.py (fakd,
fitnet, at, fsp), csd.py; their pieces: upcycle.py, augment.py, features.py, teachers.py.

Python API::

    from dukd_cli.distill import DistillConfig, Trainer
    cfg = DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.teacher.name = "edsr-s", 4, "edsr-l"
    Trainer(cfg, "runs/edsr-s").fit()

The public face loads on first use, so that the command line reads ``options`` (and ``dukd --help``
runs) without importing torch.
"""

import sys
from types import ModuleType

from dukd_cli.runtime.lazy import lazy_face

_PUBLIC = {
    "DistillConfig": ".config",
    **dict.fromkeys(("DUKD", "KD", "Batch", "Method", "MethodContext", "Option", "Scratch"), ".methods"),
    "FAKD": ".feature_methods",
    "resolve": ".resolve",
    **dict.fromkeys(("FitResult", "NonFiniteLossError", "Trainer"), ".trainer"),
}

__getattr__, __dir__, __all__ = lazy_face(__name__, _PUBLIC)


class _Package(ModuleType):
    """``resolve`` names both a submodule and the public function. Importing the submodule sets the
    package's attribute; it stays the function, as ``from dukd_cli.distill import resolve`` promises."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "resolve" and isinstance(value, ModuleType):
            value = value.resolve
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
