"""One thread budget for the whole process: never more busy threads than the cores it was given.

A dukd process computes with several pools: torch's intra-op threads (OpenMP), torch's inter-op
pool, :mod:`dukd_cli.data.imresize`'s work-item pool (sized by ``torch.get_num_threads()``), the
training-data preparation pool and the loader's worker processes. This module decides them
together:

* **cores**: what the process may run on: ``os.sched_getaffinity`` (``taskset``, ``--cpuset-cpus``),
  further capped by a cgroup CPU quota (``docker --cpus``, Kubernetes limits) where one is set;
* **threads**: the budget, ``--threads N`` or all the cores; never above the cores;
* **intra**: torch's intra-op threads: the budget minus the loader workers (at least 1); the
  imresize pool follows it; the inter-op pool is 1 (dukd never forks TorchScript work);
* loader workers run 1 thread each (PyTorch sets that in every worker) and children inherit
  ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` equal to ``intra``.

**Waiting threads yield their core.** GNU OpenMP (what PyTorch's CPU wheels use) makes a thread
that waits at the end of a parallel region spin for a long time before sleeping. On a machine
where other processes compete for the cores, the spinning threads burn the time slices the
working thread needs, and each of the thousands of small parallel regions of a training
iteration waits for a descheduled thread: measured here with another process busy, a CPU
distillation iteration took 6x the wall time and 7x the CPU time of the same iteration with
``OMP_WAIT_POLICY=PASSIVE`` (``benchmarks/threads_load.py``). The runtime reads that variable once,
when torch is loaded, so :func:`configure_environment` sets it (unless the user already did)
before the CLI imports torch. Library users who want it set ``OMP_WAIT_POLICY=PASSIVE`` in the
environment themselves (or call :func:`configure_environment` before ``import torch``).
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from dukd_cli.errors import DukdError

WAIT_POLICY = "PASSIVE"
CHILD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (cgroup v2 ``cpu.max`` or v1), or None."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup quota (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def configure_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Before torch is imported: OpenMP threads that wait yield their core (``OMP_WAIT_POLICY``).

    A value the user set is kept. Has no effect once the OpenMP runtime is loaded.
    """
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


@dataclass(frozen=True)
class Budget:
    """How many threads each pool of the process gets."""

    cores: int  # what the process may run on
    threads: int  # the budget (<= cores)
    intra: int  # torch intra-op threads (and imresize's pool)
    interop: int  # torch inter-op threads
    workers: int  # data loader worker processes (1 thread each)
    note: str | None = None  # set when a request was lowered to fit

    def describe(self) -> str:
        w = f", {self.workers} loader worker(s)" if self.workers else ""
        return f"{self.threads} of {self.cores} core(s): {self.intra} torch thread(s){w}"


def plan(threads: int | None = None, workers: int = 0, cores: int | None = None) -> Budget:
    """The budget for ``threads`` (None: every core) with ``workers`` loader processes."""
    cores = available_cores() if cores is None else max(1, int(cores))
    note = None
    if threads is None:
        total = cores
    else:
        total = int(threads)
        if total < 1:
            raise DukdError(f"--threads must be at least 1, got {threads}")
        if total > cores:
            note = f"--threads {total} lowered to {cores}: this process may use {cores} core(s)"
            total = cores
    workers = max(0, int(workers))
    intra = max(1, total - workers)
    return Budget(cores=cores, threads=total, intra=intra, interop=1, workers=workers, note=note)


def apply(budget: Budget, environ: MutableMapping[str, str] | None = None) -> Budget:
    """Make torch (and the children this process starts) follow ``budget``; returns it."""
    import torch

    env = os.environ if environ is None else environ
    if torch.get_num_threads() != budget.intra:
        torch.set_num_threads(budget.intra)
    try:
        if torch.get_num_interop_threads() != budget.interop:
            torch.set_num_interop_threads(budget.interop)
    except RuntimeError:  # the inter-op pool already started: it can no longer be resized
        pass
    for key in CHILD_ENV:
        env[key] = str(budget.intra)
    return budget


def default_workers(device_type: str, budget_threads: int | None = None) -> int:
    """Loader workers when none are asked for: none on the CPU (the main process computes with
    every core), half the budget (at most 8) on an accelerator, where the main process mostly waits."""
    if device_type == "cpu":
        return 0
    total = budget_threads if budget_threads is not None else available_cores()
    return min(8, max(1, total // 2))
