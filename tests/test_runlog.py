"""dukd_cli.distill.runlog: metrics.jsonl records, their TensorBoard mirror, and truncation on resume."""

from __future__ import annotations

import json
import sys
import types

import pytest

from dukd_cli.distill import runlog
from dukd_cli.errors import DukdError


class FakeWriter:
    made: list[FakeWriter] = []

    def __init__(self, logdir, purge_step=None):
        self.logdir, self.purge_step, self.scalars, self.closed = logdir, purge_step, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_records_and_tensorboard_mirror(tmp_path, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = runlog.RunLog(tmp_path / "metrics.jsonl", tmp_path / "tb", purge_step=11)
    log.write({"iteration": 12, "loss": 0.5, "losses": {"rec": 0.25}, "lr": 1e-4, "val_bench": "Set5"})
    log.write({"iteration": 14, "val_psnr": float("nan")})
    log.close()
    w = FakeWriter.made[-1]
    assert (w.logdir, w.purge_step, w.closed) == (str(tmp_path / "tb"), 11, True)
    assert w.scalars[:3] == [("loss", 0.5, 12), ("lr", 1e-4, 12), ("losses/rec", 0.25, 12)]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["losses"] == {"rec": 0.25} and "NaN" in lines[1]


def test_without_tensorboard(tmp_path, monkeypatch):
    log = runlog.RunLog(tmp_path / "m.jsonl")  # no TensorBoard asked: the package is never needed
    log.write({"iteration": 1, "loss": 1.0})
    log.close()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(DukdError, match="tensorboard"):
        runlog.RunLog(tmp_path / "m.jsonl", tmp_path / "tb")


def test_truncate_keeps_records_up_to_the_checkpoint(tmp_path):
    p = tmp_path / "metrics.jsonl"
    runlog.truncate(p, 5)  # no file: nothing to do
    assert not p.exists()
    p.write_text('{"iteration": 2}\n{"iteration": 4}\nnot json\n{"iteration": 6}\n')
    runlog.truncate(p, 4)
    assert p.read_text() == '{"iteration": 2}\n{"iteration": 4}\n'
