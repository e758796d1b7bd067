"""Int8 (simulated) quality of a student before and after teacher-guided QAT, as dukd's QAT layers compute it.

For one x-s network and the fp32 weights given (and optionally the student.safetensors of a
``dukd distill --quantize int8`` run), prints and writes Y-PSNR/SSIM as ``dukd evaluate`` measures
them, for:

- ``fp32``: the network as trained;
- ``int8-naive``: its fp32 weights through :mod:`dukd_cli.distill.qat`'s fake-quant layers, every
  activation range calibrated by min/max over training patches (ONNX Runtime's MinMax calibration);
- ``fp32-qat``: the QAT run's weights in fp32 (what the further training did to the network itself);
- ``int8-qat``: the QAT run's weights, calibrated the same way (what the int8 export then gets).

    python benchmarks/qat_fakequant.py --model dukd-student-x4 --qat-run runs/qat --json out.json

These are PyTorch simulations of ORT's QDQ arithmetic (see the module's list of what is and is not
simulated); the deployed ONNX Runtime figures come from ``dukd evaluate --runtime onnx-int8``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dukd_cli.distill import data as datamod  # noqa: E402
from dukd_cli.distill import qat  # noqa: E402
from dukd_cli.evaluate.protocol import evaluate  # noqa: E402
from dukd_cli.models.factory import build, resolve_spec  # noqa: E402


def calibration_patches(data: str, scale: int, n: int, patch: int, seed: int, cache: str | None):
    """``n`` LR patches of the training data (as the trainer cuts them, no flips), batches of 8."""
    ts = datamod.prepare([data], scale, patch, cache)
    ds = datamod.PatchDataset(ts.items, scale, patch, seed, augment=False)
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(ds), (n,), generator=g).tolist()
    lrs = [ds[(i, k)][0].float().div(255.0) for k, i in enumerate(picks)]
    return [torch.stack(lrs[i : i + 8]) for i in range(0, n, 8)]


def measure(net, scale, benches, data_dir):
    out = {}
    for r in evaluate(net, scale, benches, data_dir=data_dir, device="cpu", progress=False):
        out[r.bench] = {"psnr": round(float(r.psnr), 4), "ssim": round(float(r.ssim), 5)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="dukd-student-x4")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--weights", default=None, help="fp32 weights (default: the preset's)")
    ap.add_argument("--qat-run", default=None, help="a `dukd distill --quantize int8` run directory")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "benchmarks"))
    ap.add_argument("--bench", default="set5,set14")
    ap.add_argument("--calib", type=int, default=64, help="calibration patches")
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    benches = [b for b in a.bench.split(",") if b]
    spec = resolve_spec(a.model, a.scale, weights=a.weights, pretrained=a.weights is None)
    calib = calibration_patches(a.data, a.scale, a.calib, a.patch, 0, a.cache_dir)
    rows = {}
    t0 = time.perf_counter()
    fp32 = build(spec, device="cpu").eval()
    rows["fp32"] = measure(fp32, a.scale, benches, a.data_dir)
    naive = qat.prepare(build(spec, device="cpu").eval())
    qat.calibrate(naive, calib)
    rows["int8-naive"] = measure(naive, a.scale, benches, a.data_dir)
    if a.qat_run:
        from safetensors.torch import load_file

        trained = build(spec, device="cpu").eval()
        trained.load_state_dict(load_file(str(Path(a.qat_run) / "student.safetensors")))
        rows["fp32-qat"] = measure(trained, a.scale, benches, a.data_dir)  # what QAT did to the fp32 network
        qat.prepare(trained)
        qat.calibrate(trained, calib)
        rows["int8-qat"] = measure(trained, a.scale, benches, a.data_dir)
    result = {
        "model": a.model,
        "weights": spec.weights,
        "qat_run": a.qat_run,
        "calibration": {"patches": a.calib, "patch": a.patch, "data": a.data, "method": "min-max"},
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    for name, r in rows.items():
        print(f"{name:11s} " + "  ".join(f"{b} {v['psnr']:.3f} dB / {v['ssim']:.4f}" for b, v in r.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
