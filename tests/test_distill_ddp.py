"""DDP on the CPU (gloo): two processes agree on the weights and match one process with the same global batch
(DUKD, two-step: the data and the method's random draws are the global batch's, sliced per rank)."""

from __future__ import annotations

import os
import socket
import weakref

import numpy as np
import torch
import torch.multiprocessing as mp
from PIL import Image

from dukd_cli.distill import config as C


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(data, cache, batch):
    cfg = C.DistillConfig()
    cfg.teacher.name, cfg.teacher.weights = "edsr", str(cache.parent / "teacher.safetensors")
    cfg.teacher.args = {"n_feats": 8, "n_resblocks": 1}
    cfg.student.name, cfg.student.scale = "edsr", 2
    cfg.student.args = {"n_feats": 4, "n_resblocks": 1}
    cfg.method.name = "dukd"  # two-step: two optimiser steps, two student forwards before one backward
    cfg.method.options = {"aug_prob": 0.5}
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = [str(data)], str(cache), 0
    cfg.train.iters, cfg.train.batch_size, cfg.train.patch_size = 4, batch, 8
    cfg.train.log_every, cfg.train.save_every, cfg.train.seed = 2, 100, 3
    cfg.train.device = "cpu"
    cfg.val.every = 0
    return cfg


def _worker(rank: int, world: int, port: int, data: str, cache: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from pathlib import Path

    from dukd_cli.distill import ddp
    from dukd_cli.distill.trainer import Trainer

    tr = Trainer(_cfg(Path(data), Path(cache), batch=2), os.path.join(out, "run"))
    tr.setup()
    wrapper = weakref.ref(tr.session.student)
    tr.fit()
    # fit() lets go of the DDP wrapper (it holds the process group), so that shutdown() frees the group
    # while the interpreter is alive.
    released = wrapper() is None
    torch.save(tr.session.student_module.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    ddp.shutdown()
    Path(out, f"released{rank}").write_text(str(released))


def test_two_gloo_processes_match_one_process(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
    cache = tmp_path / "cache"
    from safetensors.torch import save_file

    from dukd_cli.models.factory import create_model

    torch.manual_seed(5)
    teacher = create_model("edsr", 2, n_feats=8, n_resblocks=1)
    save_file(
        {k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp_path / "teacher.safetensors")
    )
    # One process, global batch 4 (also fills the cache so the ranks only read it).
    from dukd_cli.distill.trainer import Trainer

    single = Trainer(_cfg(data, cache, batch=4), tmp_path / "single")
    single.fit()
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(cache), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    ref = single.session.student_module.state_dict()
    for k in r0:
        assert torch.allclose(r0[k], ref[k], atol=1e-5, rtol=1e-4), f"DDP differs from one process on {k}"
    assert [(tmp_path / f"released{r}").read_text() for r in range(2)] == ["True", "True"]
    # Rank 0 alone wrote the run directory.
    assert (tmp_path / "run" / "student.safetensors").is_file() and (tmp_path / "run" / "state.pt").is_file()
    st = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert st["world"] == 2 and len(st["rng"]) == 2
