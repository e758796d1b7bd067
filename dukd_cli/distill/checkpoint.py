"""Checkpoints of a distill run: one atomic commit, one-line errors, no stale temporary files.

A checkpoint is two files in the run directory::

    state.pt              the full training state: the commit point
    student.safetensors   the EMA student (the deliverable), the same weights as state.pt's "ema"

Both are first written whole to temporary names (``.state.tmp-*``, ``.student.tmp-*``) and flushed
to disk; then ``state.pt`` is renamed into place (that one rename commits the checkpoint) and then
the student. A process killed before the commit leaves the previous checkpoint as it was; one killed
between the two renames leaves ``state.pt`` one checkpoint ahead of ``student.safetensors``, which
:func:`sync_student` rewrites from the state when the run resumes (the student's metadata records
its iteration). Temporary files a killed process left behind are removed when a run starts or
resumes (:func:`remove_stale_temps`).

Test hook: with ``DUKD_TEST_CHECKPOINT_PAUSE=written`` (both files written, nothing committed) or
``=committed`` (state.pt renamed, the student not yet), optionally ``@ITERATION``, the writer touches
the file named by ``DUKD_TEST_CHECKPOINT_PAUSE_FILE`` and sleeps there, so a test can kill the
process inside the write.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dukd_cli.errors import DukdError
from dukd_cli.rundir import RUN_FILES, RunPaths
from dukd_cli.runtime.fsutil import atomic_path
from dukd_cli.runtime.stale import temp_prefix

STATE_FORMAT = "dukd-distill-state"
STATE_VERSION = 1
PAUSE_ENV = "DUKD_TEST_CHECKPOINT_PAUSE"

# The files a run directory holds; their temporary names are ".<stem>.tmp-*" (fsutil.atomic_path).
_RUN_FILES = RUN_FILES


class CheckpointWriteError(DukdError):
    """A checkpoint could not be written (full or read-only disk); the previous one is kept."""


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _cpu_tensors(weights: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def _save_student(
    weights: nn.Module | Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    from safetensors.torch import save_file

    save_file(_cpu_tensors(weights), str(path), metadata={"dukd": json.dumps(metadata, sort_keys=True)})


def _save_state(state: dict, path: Path) -> None:
    torch.save(state, path)


def save_safetensors(
    weights: nn.Module | Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    """Save a state dict atomically; the metadata goes in as ONE key (``dukd``, sorted JSON) because
    safetensors writes several metadata keys in hash order, which would make identical weights differ
    in bytes."""
    try:
        with atomic_path(path, suffix=".safetensors") as tmp:
            _save_student(weights, tmp, metadata)
    except (OSError, RuntimeError) as exc:
        raise CheckpointWriteError(f"cannot write {path}: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{first} (is the disk full?)"


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp(target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.stem), suffix=target.suffix, dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _pause(phase: str, iteration: int) -> None:
    """The test hook (see the module docstring): stop here so a test can kill the process."""
    want = os.environ.get(PAUSE_ENV)
    if not want:
        return
    name, _, at = want.partition("@")
    if name != phase or (at and int(at) != iteration):
        return
    marker = os.environ.get(f"{PAUSE_ENV}_FILE")
    if marker:
        Path(marker).write_text(phase)
    time.sleep(float(os.environ.get(f"{PAUSE_ENV}_SECONDS", "120")))


def write_checkpoint(
    paths: RunPaths,
    state: dict,
    metadata: dict[str, str],
    kept: int | None = None,
    student: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write ``state`` (with its EMA student, ``state["ema"]``) as one checkpoint: both files written
    whole, then state.pt renamed (the commit), then student.safetensors (``student`` where the run
    ships a part of the trained network, else ``state["ema"]``). Raises a one-line
    :class:`CheckpointWriteError` (temporary files removed, the previous checkpoint kept) on failure."""
    mode = 0o666 & ~_umask()
    pending: list[Path] = []
    try:
        st_tmp = _temp(paths.state)
        pending.append(st_tmp)
        sd_tmp = _temp(paths.student)
        pending.append(sd_tmp)
        _save_state(state, st_tmp)
        _save_student(state["ema"] if student is None else student, sd_tmp, metadata)
        for t in (st_tmp, sd_tmp):
            os.chmod(t, mode)  # mkstemp makes 0600; give the usual permissions
            _fsync(t)
        _pause("written", int(state["iteration"]))
        os.replace(st_tmp, paths.state)  # the commit
        pending.remove(st_tmp)
        _pause("committed", int(state["iteration"]))
        os.replace(sd_tmp, paths.student)
        pending.remove(sd_tmp)
        _fsync(paths.root)
    except (OSError, RuntimeError, pickle.PicklingError) as exc:
        prev = (
            f"the previous checkpoint (iteration {kept}) is kept" if kept else "no earlier checkpoint exists"
        )
        raise CheckpointWriteError(
            f"cannot write the checkpoint of iteration {state.get('iteration')} in {paths.root}: {_why(exc)}; {prev}"
        ) from None
    finally:
        for t in pending:
            with contextlib.suppress(OSError):
                t.unlink()


def remove_stale_temps(root: Path) -> list[str]:
    """Remove the temporary files a killed process left in the run directory; their names."""
    removed = []
    if not root.is_dir():
        return removed
    for name in _RUN_FILES:
        stem = Path(name).stem
        for p in root.glob(f".{stem}.tmp-*"):
            if p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p.name)
    return sorted(removed)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_state(path: Path) -> dict:
    """Read a training state (weights-only unpickling); a one-line :class:`DukdError` when it is
    missing, empty, damaged or not a dukd state."""
    p = Path(path)
    advice = "the run cannot resume from it; start a new run with another --out"
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DukdError(f"cannot read {p}: {exc.strerror or exc}") from None
    if size == 0:
        raise DukdError(f"{p} is empty (0 bytes), not a training state; {advice}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        why = (
            type(exc).__name__ if isinstance(exc, (pickle.UnpicklingError, KeyError, EOFError)) else _why(exc)
        )
        raise DukdError(f"{p} is damaged or not a training state ({why}); {advice}") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise DukdError(f"{p} is not a dukd training state; {advice}")
    return st


def student_iteration(path: Path) -> int | None:
    """The iteration recorded in a student file's metadata (``None``: missing or unreadable)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return int(json.loads(meta["dukd"])["iteration"])
    except Exception:
        return None


def sync_student(
    paths: RunPaths, state: dict, metadata: dict[str, str], student: Mapping[str, torch.Tensor] | None = None
) -> bool:
    """Rewrite student.safetensors from ``state`` when it is not that state's (a kill between the
    two renames of :func:`write_checkpoint`); whether it was rewritten."""
    if student_iteration(paths.student) == int(state["iteration"]):
        return False
    save_safetensors(state["ema"] if student is None else student, paths.student, metadata)
    return True


# --------------------------------------------------------------------------------------------
# What a state holds besides weights: random generators, the log accumulators
# --------------------------------------------------------------------------------------------


def _np_state() -> dict:
    st = np.random.get_state(legacy=False)
    return {
        "bit_generator": st["bit_generator"],
        "key": torch.from_numpy(st["state"]["key"].astype(np.int64)),
        "pos": int(st["state"]["pos"]),
        "has_gauss": int(st["has_gauss"]),
        "gauss": float(st["gauss"]),
    }


def _set_np_state(d: dict) -> None:
    np.random.set_state(
        {
            "bit_generator": d["bit_generator"],
            "state": {"key": d["key"].numpy().astype(np.uint32), "pos": d["pos"]},
            "has_gauss": d["has_gauss"],
            "gauss": d["gauss"],
        }
    )


def rng_state(generator: torch.Generator, device: torch.device) -> dict:
    """Every random generator the run draws from (torch, CUDA, numpy, python, the method's)."""
    st = {
        "torch": torch.get_rng_state(),
        "numpy": _np_state(),
        "python": random.getstate(),
        "method": generator.get_state(),
    }
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device).cpu()
    return st


def set_rng_state(rng: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    _set_np_state(rng["numpy"])
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(rng["method"])


def pack_log(acc: Mapping[str, torch.Tensor], n: int) -> dict:
    """The loss sums since the last log step, so a resumed run logs the same means."""
    return {"acc": {k: v.detach().to("cpu") for k, v in acc.items()}, "n": int(n)}


def unpack_log(
    state: Mapping[str, Any], rank: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], int]:
    """This rank's accumulators from a state (none in states written before they were saved)."""
    logs = state.get("log") or []
    log = logs[rank] if rank < len(logs) else {}
    return {k: v.to(device) for k, v in (log.get("acc") or {}).items()}, int(log.get("n", 0))
