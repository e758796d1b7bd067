"""The run directory as a trainer holds it: checked, locked (one writer: rank 0), a resumed run's
configuration read back, and at each session's start config.toml, the session record and the run
log. Its file names are :mod:`dukd_cli.rundir`'s; checkpoints are :mod:`dukd_cli.distill.checkpoint`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dukd_cli.distill import checkpoint as ckpt
from dukd_cli.distill import config as cfgmod
from dukd_cli.distill import ddp, runlog
from dukd_cli.distill.config import DistillConfig
from dukd_cli.errors import DukdError
from dukd_cli.rundir import RunPaths
from dukd_cli.runtime.fsutil import atomic_write_text, check_writable_dir
from dukd_cli.runtime.runlock import RunLock


class RunDirectory:
    """``--out`` (a new run) or ``--resume`` (a run to continue)."""

    def __init__(self, run_dir: str | Path, *, resume: bool) -> None:
        self.given = run_dir  # as the user named it (messages)
        self.paths = RunPaths(Path(run_dir))
        self.resume = resume
        self._lock: RunLock | None = None

    def open(self, cfg: DistillConfig, overrides: dict[str, Any] | None) -> DistillConfig:
        """Take the directory (its lock, on rank 0); the configuration to run: ``cfg``, or for
        --resume the saved one with ``overrides`` applied (checked against the state)."""
        if self.resume:
            self._check()  # before the lock: --resume of nothing creates no folder
        main = ddp.env_info().is_main
        if main:  # rank 0 alone writes the run directory (other nodes may not see it)
            check_writable_dir(self.paths.root)  # now, not after the data is prepared
            # One writer per run directory, taken before anything is written into it.
            self._lock = RunLock(self.paths.root).acquire()
        try:
            self._check()  # under the lock: a run may have ended in there meanwhile
            if self.resume:
                saved = cfgmod.load(self.paths.config)
                done = int(ckpt.read_state(self.paths.state)["iteration"])
                cfg = cfgmod.check_resume(saved, overrides or {}, done)
            if main and cfg.train.tensorboard:
                runlog.summary_writer_class()  # a missing extra is said before anything is written
        except BaseException:
            self.release()
            raise
        return cfg

    def _check(self) -> None:
        if self.resume:
            if not self.paths.state.is_file() or not self.paths.config.is_file():
                raise DukdError(f"{self.given} holds no run to resume (no state.pt / config.toml)")
        elif self.paths.state.is_file():
            raise DukdError(
                f"{self.given} already holds a run; continue it with --resume {self.given}, or pick another --out"
            )

    def release(self) -> None:
        """Let another process write the run directory."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def sweep(self) -> list[str]:
        """Rank 0, before anything is written: remove the temporary files of an interrupted write."""
        stale = ckpt.remove_stale_temps(self.paths.root)
        if not stale:
            return []
        return [f"removed {len(stale)} temporary file(s) of an interrupted write: {', '.join(stale)}"]

    def start(self, cfg: DistillConfig, device: torch.device, iteration: int, precision: str) -> None:
        """Rank 0, once the session is built: config.toml (the resolved configuration, what --resume
        reads back), this session's record (hardware, start, precision: for dukd report), and on
        resume metrics.jsonl cut back to the checkpoint."""
        try:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            header = "dukd distill: resolved configuration (read back by --resume)"
            atomic_write_text(self.paths.config, cfgmod.to_toml(cfg, header))
            from dukd_cli.distill.runinfo import record_session

            record_session(self.paths.root, device, iteration, precision=precision)
            if self.resume:
                runlog.truncate(self.paths.metrics, iteration)
        except OSError as exc:
            raise DukdError(
                f"cannot write to the run directory {self.paths.root}: {exc.strerror or exc}"
            ) from None
