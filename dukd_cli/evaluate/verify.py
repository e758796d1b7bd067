"""Check a preset's pretrained weights against the numbers their authors published.

``dukd zoo verify NAME --scale S`` fetches the declared file (its sources in order, hash-checked),
fetches the benchmark sets it has published numbers for (unless offline), evaluates exactly as
``dukd evaluate`` does, and compares PSNR (and shows SSIM) set by set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dukd_cli.errors import DukdError

if TYPE_CHECKING:
    from dukd_cli.evaluate.protocol import Progress

DEFAULT_TOLERANCE_DB = 0.05


@dataclass
class VerifyRow:
    bench: str
    published_psnr: float
    published_ssim: float
    psnr: float
    ssim: float
    n_images: int
    tolerance: float

    @property
    def diff(self) -> float:
        return self.psnr - self.published_psnr

    @property
    def ok(self) -> bool:
        return abs(self.diff) <= self.tolerance

    def to_dict(self) -> dict:
        return {**self.__dict__, "diff": self.diff, "ok": self.ok}


def published_for(name: str, scale: int) -> tuple[Mapping[str, tuple[float, float]], str]:
    from dukd_cli import registry

    preset = registry.get_preset(name)
    if preset is None:
        raise DukdError(f"'{name}' is not a preset; zoo verify checks a preset's declared weights")
    declared = preset.weights.get(int(scale))
    if not declared:
        raise DukdError(f"preset '{name}' declares no weights at x{scale}")
    ws = registry.source_of(declared)
    if not ws.published:
        raise DukdError(f"no published numbers are recorded for preset '{name}' at x{scale}")
    return ws.published, ws.published_by


def verify(
    name: str,
    scale: int,
    *,
    weights: str | None = None,
    published: Mapping[str, tuple[float, float]] | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    tolerance: float = DEFAULT_TOLERANCE_DB,
    max_images: int | None = None,
    device: str = "auto",
    on_status: Callable[[str], None] | None = None,
    progress: Progress | bool | None = None,
) -> list[VerifyRow]:
    """Evaluate preset ``name`` at ``scale`` (its declared weights, or ``weights``) against ``published``."""
    from dukd_cli.data.fetch import ensure_benchmarks
    from dukd_cli.evaluate.protocol import evaluate
    from dukd_cli.models.factory import build, resolve_spec
    from dukd_cli.upscale.inference import select_device

    if published is None:
        published, _ = published_for(name, scale)
    benches = list(published)
    ensure_benchmarks(benches, download=download, data_dir=data_dir, on_status=on_status)
    spec = resolve_spec(name, scale, weights=weights, pretrained=True)
    if on_status is not None:
        on_status(f"weights: {spec.weights}")
    model = build(spec, device=select_device(device))
    results = evaluate(
        model, scale, benches, data_dir=data_dir, device=device, max_images=max_images, progress=progress
    )
    rows = []
    for r in results:
        p_psnr, p_ssim = published[r.bench]
        rows.append(VerifyRow(r.bench, p_psnr, p_ssim, r.psnr, r.ssim, r.n_images, tolerance))
    return rows
