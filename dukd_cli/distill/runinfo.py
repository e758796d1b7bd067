"""Where and when a run trained: ``RUN_DIR/run.json``, one entry per training session.

config.toml says what a run computes; this file says what it ran on (CPU model, cores, threads,
accelerator, torch and dukd versions) and when each session (the first start, every ``--resume``)
began, so ``dukd report`` can state the hardware and the wall time. Rewritten atomically.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from dukd_cli.rundir import RUN_INFO


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def hardware(device: torch.device) -> dict[str, Any]:
    from dukd_cli import __version__

    hw: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "device": str(device),
        "torch": torch.__version__,
        "dukd": __version__,
    }
    if device.type == "cuda":
        hw["accelerator"] = torch.cuda.get_device_name(device)
    return hw


def read(root: str | os.PathLike) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(root) / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_session(
    root: str | os.PathLike, device: torch.device, iteration: int, precision: str | None = None
) -> None:
    """Append this session (start time, starting iteration, hardware, and the precision the
    training steps run in: ``bf16`` or ``fp32``, what ``--precision auto`` became) to ``RUN_DIR/run.json``."""
    from dukd_cli.runtime.fsutil import atomic_write_text

    data = read(root) or {}
    sessions = [s for s in data.get("sessions", []) if isinstance(s, dict)]
    sessions.append(
        {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "start_iteration": int(iteration),
            **hardware(device),
            **({"precision": precision} if precision else {}),
        }
    )
    atomic_write_text(Path(root) / RUN_INFO, json.dumps({"sessions": sessions}, indent=1) + "\n")
