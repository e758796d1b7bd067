"""What the teacher-agreement logging adds to one validation (``Trainer.validate``), A/B.

The shipped student's recipe pair (teacher dukd-teacher-x4, student EDSR 32x4, x4) validated on
Set5: ``validate()`` with the agreement (the default) and without it (the probe switched off),
alternating, ``--reps`` times each after one warm-up of each (the first validation with the
agreement also runs the teacher on Set5 and on the probe patches; it is reported on its own).

    python benchmarks/report/agreement_cost.py --json benchmarks/results/agreement_cost.json

Needs ../shared/data (DUKD_SHARED): data/train for the patches, data/benchmarks for Set5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    shared = Path(os.environ.get("DUKD_SHARED", ROOT.parent / "shared"))

    import torch

    from dukd_cli.distill import agreement
    from dukd_cli.distill import config as C
    from dukd_cli.distill.display import Display
    from dukd_cli.distill.trainer import Trainer

    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = "edsr", 4, {"n_feats": 32, "n_resblocks": 4}
    cfg.teacher.name, cfg.method.name = "dukd-teacher-x4", "kd"
    cfg.data.paths, cfg.data.workers = [str(shared / "data" / "train")], 0
    cfg.train.iters, cfg.train.device, cfg.train.precision = 1, "cpu", "fp32"
    cfg.val.every, cfg.val.bench, cfg.val.data_dir = 1, "set5", str(shared / "data" / "benchmarks")
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, Path(tmp) / "run", display=Display(enabled=False))
        tr.setup()
        t0 = time.perf_counter()
        tr.validate()  # builds the probe: teacher on the patches; teacher on Set5 (cache filled)
        first = time.perf_counter() - t0
        probe = tr._agreement_probe
        on, off = [], []
        tr._agreement_probe = None
        tr.validate()  # warm-up without
        for _ in range(args.reps):
            for which, bucket in ((probe, on), (None, off)):
                tr._agreement_probe = which
                t0 = time.perf_counter()
                tr.validate()
                bucket.append(time.perf_counter() - t0)
    res = {
        "what": "Trainer.validate() on Set5, x4, EDSR 32x4 student, dukd-teacher-x4 teacher, CPU fp32",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "reps": args.reps,
        "first_validation_with_agreement_s": first,
        "with_agreement_s": statistics.median(on),
        "without_agreement_s": statistics.median(off),
        "probe_patches": agreement.N_PATCHES,
        "cache_hits": probe.reference.hits if probe else None,
    }
    res["overhead_s"] = res["with_agreement_s"] - res["without_agreement_s"]
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
