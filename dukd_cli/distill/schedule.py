"""The run's schedules and seeds: learning rate, EMA decay, and the seeds derived for each stream."""

from __future__ import annotations

import numpy as np

from dukd_cli.distill.config import DistillConfig


def lr_at(cfg: DistillConfig, iteration: int) -> float:
    """The learning rate of iteration ``iteration`` (0-based): multi-step decay."""
    lr = cfg.train.lr
    for m in cfg.train.milestones:  # multiplied once per milestone passed, as torch's / BasicSR's MultiStepLR
        if iteration >= m:
            lr = lr * cfg.train.gamma
    return lr


def ema_decay_at(cfg: DistillConfig, step: int) -> float:
    """EMA decay with the usual warm-up ``min(decay, (1 + t) / (10 + t))`` (the ``ema_warmup`` fix): a
    short run is not dominated by the initial weights; from ~10k iterations on it is the configured
    decay. Without it (released): the configured decay from the first iteration."""
    d = cfg.train.ema_decay
    return min(d, (1.0 + step) / (10.0 + step)) if cfg.train.ema_warmup else d


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from ``parts`` (the run's seed, a stream number, the rank) through numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])
