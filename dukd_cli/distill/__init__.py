"""Distillation: methods (scratch, kd, dukd, fakd, fitnet, at, fsp), data upcycling, invertible augmentations,
feature terms, several teachers, the trainer.

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
"""

from dukd_cli.distill.config import DistillConfig
from dukd_cli.distill.feature_methods import FAKD
from dukd_cli.distill.methods import DUKD, KD, Batch, Method, MethodContext, Option, Scratch
from dukd_cli.distill.resolve import resolve
from dukd_cli.distill.trainer import FitResult, NonFiniteLossError, Trainer

__all__ = [
    "DUKD",
    "FAKD",
    "KD",
    "Batch",
    "DistillConfig",
    "FitResult",
    "Method",
    "MethodContext",
    "NonFiniteLossError",
    "Option",
    "Scratch",
    "Trainer",
    "resolve",
]
