"""The training state of a session as state.pt holds it, and back.

:func:`pack` gathers what a checkpoint saves (student, EMA, optimiser, a method's own modules,
fake-quant ranges, progress, and per rank the random generators and the log accumulators);
:func:`restore` puts a read state back into a freshly built :class:`~dukd_cli.distill.session.Session`.
Writing the files (atomically, as one checkpoint) is :mod:`dukd_cli.distill.checkpoint`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dukd_cli.distill import checkpoint as ckpt
from dukd_cli.distill import qat
from dukd_cli.distill.config import _from_toml
from dukd_cli.distill.session import Session
from dukd_cli.errors import DukdError
from dukd_cli.rundir import RunPaths


@dataclass
class Progress:
    """Where a run stands: iterations done and the best validation so far."""

    iteration: int = 0
    best_psnr: float | None = None
    best_iteration: int | None = None


def metadata(session: Session, iteration: int) -> dict[str, str]:
    """student.safetensors' metadata: what the file holds and at which iteration."""
    s = session.resolved.student
    return {
        "format": "dukd-student",
        "architecture": s.arch,
        "scale": str(s.scale),
        "arguments": json.dumps(_from_toml(s.kwargs), default=str),
        "iteration": str(iteration),
        "method": session.cfg.method.name,
    }


def pack(session: Session, progress: Progress, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """state.pt's content (rank 0); ``per_rank``: every rank's ``{"rng", "log"}``, gathered."""
    cfg, dist = session.cfg, session.dist
    state: dict[str, Any] = {
        "format": ckpt.STATE_FORMAT,
        "version": ckpt.STATE_VERSION,
        "iteration": progress.iteration,
        "world": dist.world,
        "student": session.student_module.state_dict(),
        "ema": session.ema.model.state_dict(),
        "optimizer": session.optimizer.state_dict(),
        "rng": [r["rng"] for r in per_rank],
        # The data stream is a function of the iteration; recorded for readers of the file.
        "data": {"next_sample": progress.iteration * cfg.train.batch_size * dist.world},
        "best": {"psnr": progress.best_psnr, "iteration": progress.best_iteration},
        "log": [r["log"] for r in per_rank],
    }
    if session.method_modules is not None:
        state["method"] = session.method_modules.state_dict()
    if cfg.train.quantize:  # the activation ranges are no state-dict keys
        state["qat"] = {
            "student": qat.observer_state(session.student_module),
            "ema": qat.observer_state(session.ema.model),
        }
    return state


def restore(session: Session, st: dict[str, Any], paths: RunPaths) -> Progress:
    """Load a read state into ``session`` (weights, optimiser, this rank's generators)."""
    if int(st.get("world", 1)) != session.dist.world:
        raise DukdError(
            f"the run was trained with {st.get('world', 1)} process(es); resume it with the same number"
        )
    try:
        session.student_module.load_state_dict(st["student"])
        if session.method_modules is not None and "method" in st:
            session.method_modules.load_state_dict(st["method"])
        session.ema.model.load_state_dict(st["ema"])
        if session.cfg.train.quantize:  # the activation ranges are no state-dict keys
            qat.load_observer_state(session.student_module, st["qat"]["student"])
            qat.load_observer_state(session.ema.model, st["qat"]["ema"])
        session.optimizer.load_state_dict(st["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        s = session.cfg.student
        raise DukdError(
            f"{paths.state} does not fit the student of {paths.config} ({s.name} x{s.scale}): "
            f"it holds another architecture's weights ({_first_line(exc)})"
        ) from None
    best = st.get("best") or {}
    ckpt.set_rng_state(st["rng"][session.dist.rank], session.generator, session.device)
    return Progress(int(st["iteration"]), best.get("psnr"), best.get("iteration"))


def resume(session: Session, paths: RunPaths) -> tuple[Progress, dict[str, Any], list[str]]:
    """Read state.pt back into a freshly built session: its progress, the state (for the log sums)
    and notes; rank 0 rewrites student.safetensors when a checkpoint was interrupted mid-write."""
    state = ckpt.read_state(paths.state)
    progress = restore(session, state, paths)
    notes = []
    meta = metadata(session, progress.iteration)
    if session.main and ckpt.sync_student(paths, state, meta, student=session.shipped_state()):
        notes.append(
            f"student.safetensors was behind state.pt (a checkpoint interrupted mid-write); rewritten "
            f"from iteration {progress.iteration}"
        )
    return progress, state, notes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
