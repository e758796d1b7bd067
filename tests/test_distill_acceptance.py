"""Acceptance (the slow one, ~1 minute on 2 CPU cores): distil a small student from the REAL
pretrained IMDN x4 teacher on ../shared/data/train and beat bicubic on Set5.

The student is honest but chosen to learn fast: MATLAB-bicubic upscaling plus a small learned
residual (3 convs, 32 channels, zero-initialised last conv), a plugin installed for this test. It
starts exactly at bicubic (Set5 x4 28.43 dB) and must end above it after 150 DUKD iterations; a
student initialised from nothing would need far more than a few hundred CPU iterations.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from dukd_cli import registry
from dukd_cli.distill import config as C
from dukd_cli.distill.trainer import Trainer

BICUBIC_SET5_X4 = 28.43

STUDENT_PLUGIN = '''
import torch
from torch import nn
from dukd_cli.data.imresize import imresize


class BicubicResidual(nn.Module):
    """MATLAB-bicubic upscaling plus a small learned residual (zero-initialised: starts as bicubic)."""

    def __init__(self, scale, n_feats=32, n_convs=3):
        super().__init__()
        self.scale = scale
        layers = [nn.Conv2d(3, n_feats, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(n_convs - 2):
            layers += [nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(n_feats, 3 * scale * scale, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return imresize(x.float(), self.scale) + self.shuffle(self.tail(self.body(x)))


def bicres(scale, n_feats=32, n_convs=3):
    return BicubicResidual(scale, n_feats, n_convs)
'''


@pytest.fixture
def bicres_plugin(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("bicres")
    (root / "dukd_bicres").mkdir()
    (root / "dukd_bicres" / "__init__.py").write_text(STUDENT_PLUGIN)
    info = root / "dukd_bicres-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dukd-bicres\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dukd.architectures]\nbicres = dukd_bicres:bicres\n")
    monkeypatch.syspath_prepend(str(root))
    registry.refresh()
    yield root
    sys.modules.pop("dukd_bicres", None)
    registry.refresh()


def _fixed_batch_losses(trainer, model) -> dict[str, float]:
    """L1 to the ground truth and to the teacher on 64 fixed patches (sample keys unused by training)."""
    ds = trainer.dataset
    pairs = [ds[(i % len(ds), 10**9 + i)] for i in range(64)]
    lr = torch.stack([p[0] for p in pairs]).float() / 255
    hr = torch.stack([p[1] for p in pairs]).float() / 255
    with torch.no_grad():
        was = model.training
        model.eval()
        sr = model(lr)
        model.train(was)
        t = trainer.session.teacher(lr)
    return {"rec": float((sr - hr).abs().mean()), "kd": float((sr - t).abs().mean())}


def test_acceptance_slow_dukd_from_real_imdn_teacher_beats_bicubic(
    shared, imdn_dir, benchmarks_dir, bicres_plugin, tmp_path
):
    if not (benchmarks_dir / "Set5").is_dir():
        pytest.skip("Set5 not found in the shared data")
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale = "bicres", 4
    cfg.teacher.name, cfg.teacher.weights = "imdn", str(imdn_dir / "IMDN_x4.pth")
    cfg.method.name = "dukd"
    cfg.data.paths = [str(shared / "data" / "train")]
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.data.workers = 0
    t = cfg.train
    t.iters, t.batch_size, t.patch_size, t.lr, t.seed = 150, 4, 16, 5e-4, 0
    t.log_every, t.save_every, t.device = 25, 1000, "cpu"
    cfg.val.every, cfg.val.bench, cfg.val.data_dir = 150, "set5", str(benchmarks_dir)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run = tmp_path / "run"
    trainer = Trainer(cfg, run)
    trainer.setup()
    before = _fixed_batch_losses(trainer, trainer.session.student_module)
    result = trainer.fit()
    after = _fixed_batch_losses(trainer, trainer.session.ema.model)
    # The loss falls: on the same 64 held-out patches, the EMA student is closer to the ground truth
    # and to the teacher than the initial (bicubic) student.
    assert after["rec"] < before["rec"] and after["kd"] < 0.9 * before["kd"], (before, after)

    assert result.iteration == 150 and not result.interrupted
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 6 and all(x == x for x in losses)
    vals = [r for r in records if "val_psnr" in r]
    assert vals and vals[-1]["val_bench"].lower() == "set5"
    psnr = vals[-1]["val_psnr"]
    assert psnr > BICUBIC_SET5_X4 + 0.1, f"EMA student Set5 x4 PSNR {psnr:.2f} dB is not above bicubic"
    assert result.best_psnr == pytest.approx(psnr)
    print(
        f"fixed-batch L1 before {before}, after {after}; Set5 x4 EMA PSNR {psnr:.2f} dB (bicubic {BICUBIC_SET5_X4})"
    )
    w = load_file(str(run / "student.safetensors"))
    assert "tail.weight" in w and w["tail.weight"].abs().sum() > 0  # learned something
    assert (run / "student_best.safetensors").is_file() and (run / "config.toml").is_file()
