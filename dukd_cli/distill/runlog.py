"""What a run logs as it goes: ``metrics.jsonl`` (one JSON record per line) and, optionally, TensorBoard.

:class:`RunLog` appends one record per call (a line is written whole or not at all) and mirrors
its numbers to a TensorBoard ``SummaryWriter`` when asked; :func:`truncate` drops the records after
the iteration a resumed run restarts from, so that the file reads like one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError
from dukd_cli.runtime.fsutil import atomic_write_text


def summary_writer_class():
    """TensorBoard's ``SummaryWriter`` class, or the one-line error naming the extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DukdError(
            "--tensorboard needs the tensorboard package: pip install 'dukd[tensorboard]'"
        ) from None
    return SummaryWriter


class RunLog:
    """Records of one run: ``metrics`` (the JSON-lines file) and, with ``tensorboard_dir``, TensorBoard
    scalars from ``purge_step`` on (a resumed run replaces what followed its checkpoint)."""

    def __init__(self, metrics: Path, tensorboard_dir: Path | None = None, purge_step: int = 1) -> None:
        self.metrics = Path(metrics)
        self.tb = None
        if tensorboard_dir is not None:
            self.tb = summary_writer_class()(str(tensorboard_dir), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        if self.tb is not None:
            it = int(record["iteration"])
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "iteration":
                    self.tb.add_scalar(k, v, it)
            for k, v in (record.get("losses") or {}).items():
                self.tb.add_scalar(f"losses/{k}", v, it)
            self.tb.flush()
        line = json.dumps(record, allow_nan=True) + "\n"
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(line)  # one write per record: a line is whole or absent
            f.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def truncate(metrics: Path, upto: int) -> None:
    """Keep the records of iterations ``<= upto`` (unreadable lines are dropped), atomically."""
    p = Path(metrics)
    if not p.is_file():
        return
    keep = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("iteration", 0)) <= upto:
                keep.append(line)
        except (ValueError, AttributeError):
            continue
    atomic_write_text(p, "".join(k + "\n" for k in keep))
