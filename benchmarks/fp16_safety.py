"""Is each zoo family safe in half precision? fp16 ONNX (ONNX Runtime, CPU) against fp32 on real images.

For every family: the network is exported to ONNX, converted with ``dukd_cli.export.fp16.to_fp16`` (what
``dukd export --format onnx-fp16`` writes) and both files are run on the centre crops of Set5's LR
images. Reported: max |fp16 - fp32| over all output pixels and the PSNR of fp16 against fp32
(outputs clamped to [0, 1]). Real weights where this machine has them (the shipped EDSR student,
IMDN's authors' x4 weights); the other families use their random initialisation, which says less
(trained networks can grow larger activations). The verdicts are recorded in ``zoo/precision.py``.

    python benchmarks/fp16_safety.py --json benchmarks/results/fp16_safety.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHARED = Path(os.environ.get("DUKD_SHARED", ROOT.parent / "shared"))
# family -> (model, weights: a file, "declared" (the preset's own) or None (random), scale)
FAMILIES = {
    "edsr": ("dukd-student-x4", "declared", 4),
    "imdn": ("imdn", str(SHARED / "models" / "imdn" / "IMDN_x4.pth"), 4),
    "rcan": ("rcan-s", None, 4),
    "swinir": ("swinir-s", None, 4),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--crop", type=int, default=64, help="LR centre crop side")
    ap.add_argument("--data-dir", default=str(SHARED / "data" / "benchmarks"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "fp16_safety.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    from dukd_cli.data.benchmarks import find_set, load_pairs
    from dukd_cli.export.fp16 import psnr01, to_fp16
    from dukd_cli.export.onnx import _session, export_onnx
    from dukd_cli.models.factory import build, resolve_spec

    out = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    for fam in [f for f in args.families.split(",") if f]:
        model, weights, scale = FAMILIES[fam]
        declared = weights == "declared"
        spec = resolve_spec(model, scale, weights=None if declared else weights, pretrained=declared)
        net = build(spec, device="cpu").float().eval()
        with tempfile.TemporaryDirectory() as tmp:
            f32, f16 = Path(tmp) / "m.onnx", Path(tmp) / "m16.onnx"
            info = export_onnx(net, f32)
            to_fp16(f32, f16)
            s32, s16 = _session(f32, threads=2), _session(f16, threads=2)
            worst, psnrs = 0.0, []
            for p in load_pairs(find_set("set5", args.data_dir), scale):
                lr = p.lr
                c = args.crop
                if info.fixed_input_size:
                    c = min(info.fixed_input_size)
                y0, x0 = max(0, (lr.shape[0] - c) // 2), max(0, (lr.shape[1] - c) // 2)
                x = lr[y0 : y0 + c, x0 : x0 + c].transpose(2, 0, 1)[None].astype(np.float32) / 255
                a = s32.run(None, {"input": x})[0]
                b = s16.run(None, {"input": x})[0].astype(np.float32)
                worst = max(worst, float(np.nan_to_num(np.abs(a - b), nan=np.inf).max()))
                psnrs.append(psnr01(b, a) if np.isfinite(b).all() else float("-inf"))
        out[fam] = {
            "model": model,
            "weights": spec.weights or "random initialisation",
            "max_abs_diff": worst,
            "min_psnr_db": min(psnrs),
            "mean_psnr_db": float(np.mean(psnrs)),
        }
        print(
            f"{fam:8s} {model:18s} max|fp16-fp32| {worst:.2e}  PSNR fp16 vs fp32 min {min(psnrs):.1f} dB "
            f"({'real' if spec.weights else 'random'} weights)",
            flush=True,
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
