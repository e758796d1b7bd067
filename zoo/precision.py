"""Which zoo families are safe in half precision (fp16), as measured; used by ``dukd export --format onnx-fp16``.

Measured with ``benchmarks/fp16_safety.py``: the network exported to ONNX, converted to fp16 by
``dukd_cli.export.fp16.to_fp16`` (what ``--format onnx-fp16`` writes) and run in ONNX Runtime on the CPU
against the fp32 file, on 64x64 centre crops of Set5's five x4 LR images. "Safe" means no overflow
and at least 50 dB PSNR of fp16 against fp32 (outputs in [0, 1]); a 0.5/255 error is ~54 dB.
Families measured only with random weights say less than trained ones (training can grow
activations past fp16's 65504), so the export checks every file against fp32 anyway.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fp16Verdict:
    safe: bool
    evidence: str


FP16_SAFE: dict[str, Fp16Verdict] = {
    "edsr": Fp16Verdict(
        True, "dukd-student-x4 (shipped weights): max |fp16 - fp32| 1.5e-4, PSNR fp16 vs fp32 86.1 dB"
    ),
    "imdn": Fp16Verdict(
        True, "IMDN x4 (authors' weights): max |fp16 - fp32| 1.2e-3, PSNR fp16 vs fp32 75.9 dB"
    ),
    "rcan": Fp16Verdict(
        True, "rcan-s (random initialisation): max |fp16 - fp32| 3.7e-4, PSNR fp16 vs fp32 80.5 dB"
    ),
    "swinir": Fp16Verdict(
        True, "swinir-s (random initialisation): max |fp16 - fp32| 5.5e-4, PSNR fp16 vs fp32 76.5 dB"
    ),
}


def fp16_verdict(arch: str) -> Fp16Verdict | None:
    """The measured verdict for a zoo architecture, or None (not measured: a plugin's network)."""
    return FP16_SAFE.get(str(arch).lower())
