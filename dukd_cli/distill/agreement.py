"""Teacher agreement while training: how closely the student follows its teacher (the paper's Fig. 5).

At every validation the trainer logs, beside the validation PSNR/SSIM, two numbers into
``metrics.jsonl``:

``agree_val_psnr``
    PSNR (Y, border = scale, as the evaluator) between the student's and the teacher's outputs on
    the validation set. The student's outputs are the validation forward passes themselves (the
    evaluator's ``reference``); the teacher is frozen, so its outputs are computed at the first
    validation and kept (as the uint8 images the evaluator compares; up to ``CACHE_BYTES``).
``agree_train_psnr``
    the same PSNR on a fixed sample of ``N_PATCHES`` training patches (LR ``patch_size``), drawn
    once from the run's seed: the same patches at every validation, after ``--resume`` too. The
    teacher's outputs on them are computed once; each validation costs one small student forward.

Nothing here touches a global random generator, so bit-exact resume is unaffected. A method that
needs no teacher (``scratch``) still gets these numbers when the run names a teacher (the recipe's
scratch baseline does): the teacher is then built for validation only. Without a teacher nothing
is logged. :func:`fixed_patches` and :func:`patch_agreement` are also what ``dukd report`` uses to
measure a finished run on the very same patches.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from dukd_cli.distill.config import DistillConfig
    from dukd_cli.distill.data import PatchDataset
    from dukd_cli.distill.session import Session
    from dukd_cli.models.spec import ModelSpec

N_PATCHES = 16
# Sample indices of the probe patches: far above any index the training stream reaches.
PROBE_BASE = 1 << 48
CACHE_BYTES = 512 << 20
_SALT = 0xA6EE  # separates the probe's draw from every other use of the seed


def fixed_patch_keys(n_images: int, seed: int, n: int = N_PATCHES) -> list[tuple[int, int]]:
    """``(image, sample index)`` keys of the probe patches: images spread over the set (a seeded
    permutation, cycled), sample indices ``PROBE_BASE + j`` (crop and flips follow from them)."""
    if n_images < 1 or n < 1:
        return []
    perm = np.random.default_rng([int(seed) & 0xFFFFFFFF, _SALT]).permutation(int(n_images))
    return [(int(perm[j % n_images]), PROBE_BASE + j) for j in range(int(n))]


def fixed_patches(dataset: PatchDataset, seed: int, n: int = N_PATCHES) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe patches of a :class:`~dukd_cli.distill.data.PatchDataset`: uint8 LR (n, 3, p, p)
    and HR (n, 3, sp, sp), a pure function of the dataset and the seed."""
    pairs = [dataset[k] for k in fixed_patch_keys(len(dataset), seed, n)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _to_u8(y: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float -> (N, H, W, 3) uint8 as the evaluator quantises (clamp, x255, round)."""
    return y.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def sr_patches(model: nn.Module, lr_u8: torch.Tensor, device: torch.device, batch: int = 16) -> np.ndarray:
    """Super-resolve uint8 patches in fp32, eval mode (restored afterwards); uint8 (N, H, W, 3)."""
    was = model.training
    model.eval()
    try:
        outs = []
        for i in range(0, lr_u8.shape[0], batch):
            x = lr_u8[i : i + batch].to(device).float().div_(255.0)
            outs.append(_to_u8(model(x)))
    finally:
        model.train(was)
    return np.concatenate(outs) if outs else np.zeros((0, 0, 0, 3), np.uint8)


def mean_psnr_y(a: np.ndarray, b: np.ndarray, scale: int) -> float:
    """Mean over images of PSNR on Y (border ``scale``); identical pairs (inf) are left out."""
    from dukd_cli.evaluate.metrics import psnr_y

    vals = [psnr_y(x, y, int(scale)) for x, y in zip(a, b, strict=True)]
    finite = [v for v in vals if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.inf


def patch_agreement(
    student: nn.Module, teacher_u8: np.ndarray, lr_u8: torch.Tensor, scale: int, device: torch.device
) -> float:
    """PSNR (dB) between the student's outputs on the probe patches and the teacher's (given)."""
    return mean_psnr_y(sr_patches(student, lr_u8, device), teacher_u8, scale)


class CachedReference(nn.Module):
    """The frozen teacher as the evaluator's ``reference``, answering repeated inputs from a cache.

    The cache holds the quantised outputs (uint8): the evaluator quantises what it gets, and
    ``u8 / 255`` quantises back to the same ``u8``, so a cached answer scores exactly as a fresh one.
    """

    def __init__(self, teacher: nn.Module, limit_bytes: int = CACHE_BYTES) -> None:
        super().__init__()
        self.teacher = teacher
        self.scale = int(teacher.scale)
        for attr in ("window_size", "fixed_input_size"):
            if getattr(teacher, attr, None) is not None:
                setattr(self, attr, getattr(teacher, attr))
        self.limit = int(limit_bytes)
        self._cache: dict[str, np.ndarray] = {}
        self._bytes = 0
        self.hits = 0

    def train(self, mode: bool = True) -> CachedReference:  # the teacher stays in eval mode
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.detach().float().contiguous().cpu().numpy()
        key = hashlib.blake2b(xc.tobytes(), digest_size=16).hexdigest() + repr(xc.shape)
        hit = self._cache.get(key)
        if hit is not None:
            self.hits += 1
            return torch.from_numpy(hit).to(x.device).permute(0, 3, 1, 2).float().div_(255.0)
        y = self.teacher(x)
        u8 = _to_u8(y)
        if self._bytes + u8.nbytes <= self.limit:
            self._cache[key] = u8
            self._bytes += u8.nbytes
        return y


@dataclass
class Probe:
    """What a run measures its teacher agreement with (built once per training session)."""

    reference: CachedReference
    lr_u8: torch.Tensor
    teacher_u8: np.ndarray
    scale: int
    device: torch.device

    def train_psnr(self, student: nn.Module) -> float:
        return patch_agreement(student, self.teacher_u8, self.lr_u8, self.scale, self.device)


def _teacher_of(session: Session) -> nn.Module | None:
    """The run's teacher; for a method without one, the teacher the run names (built for validation only)."""
    if session.teacher is not None:
        return session.teacher
    cfg = session.cfg
    if not cfg.teacher.name:
        return None
    from dukd_cli.distill.resolve import build_teacher

    return build_teacher(teacher_spec(cfg), session.device)


def teacher_spec(cfg: DistillConfig) -> ModelSpec | None:
    """The teacher a configuration names, resolved by the rules of a method that needs one (kd's;
    the run's own method options do not apply to it)."""
    from dukd_cli.distill.methods import KD
    from dukd_cli.distill.resolve import resolve

    cfg = cfg.copy()
    cfg.method.name, cfg.method.options = "kd", {}
    return resolve(cfg, KD).teacher


def build_probe(session: Session, dataset: PatchDataset) -> Probe | None:
    """A run's probe, built at its first validation (``None``: no teacher, nothing to compare).
    A teacher that cannot be built raises :class:`DukdError` (the trainer notes it and goes on)."""
    teacher = _teacher_of(session)
    if teacher is None:
        return None
    lr_u8, _ = fixed_patches(dataset, int(session.cfg.train.seed))
    scale = int(session.cfg.student.scale)
    dev = session.device
    return Probe(CachedReference(teacher), lr_u8, sr_patches(teacher, lr_u8, dev), scale, dev)


def record(probe: Probe | None, student: nn.Module, val_result: Any) -> dict[str, float]:
    """The agreement fields of one validation record (empty without a probe)."""
    if probe is None:
        return {}
    out = {"agree_train_psnr": probe.train_psnr(student), "agree_patches": int(probe.lr_u8.shape[0])}
    ref = getattr(val_result, "ref_psnr", None)
    if ref is not None:
        out["agree_val_psnr"] = float(ref)
    return out
