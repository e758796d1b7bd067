"""Distillation: methods (scratch, kd, dukd, fakd, fitnet, at, fsp), data upcycling, invertible augmentations,
feature terms, several teachers, the trainer.

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
