#!/usr/bin/env bash
# The README's `dukd report` example: SHORT runs of the shipped student's recipe
# (benchmarks/shipped/recipe.sh, step `students`): the same teacher (dukd-teacher-x4), student
# (EDSR 32 channels, 4 blocks), data, seed, precision and lr, but 300 iterations of 8 LR patches of
# 32x32 instead of 1200 of 16 x 48x48, one thread per run, so the three runs fit in ~20 min of a busy
# 2-core CPU. They are NOT the runs behind the shipped weights (those students saw ~18x more patch
# pixels); the page says so. Run from the repository root:
#
#   bash benchmarks/report/example.sh train     # scratch, kd and dukd students of dukd-teacher-x4
#   bash benchmarks/report/example.sh report    # the page: runs/report-example/report.html (+ PNGs)
#   bash benchmarks/report/example.sh screenshot  # README's picture: headless Chromium, top of the page
#
# DUKD_SHARED (default ../shared) holds data/train (the 291 images) and data/benchmarks.
set -euo pipefail
SHARED=${DUKD_SHARED:-../shared}
RUNS=${RUNS:-runs/report-example}
BENCH="$SHARED/data/benchmarks"
STAGE=${1:-all}
case "$STAGE" in
  train|report|screenshot|all) ;;
  *) echo "usage: $0 [train|report|screenshot|all]" >&2; exit 2 ;;
esac
mkdir -p "$RUNS"

if [[ $STAGE == train || $STAGE == all ]]; then
    for m in scratch kd dukd; do
      OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} nice -n 10 dukd distill --method "$m" --teacher dukd-teacher-x4 \
        --student edsr --student-arg n_feats=32 --student-arg n_resblocks=4 \
        --scale 4 --data "$SHARED/data/train" --seed 0 --precision bf16 --channels-last --device cpu \
        --val-bench set5 --data-dir "$BENCH" \
        --iters 300 --batch-size 8 --patch-size 32 --lr 5e-4 --milestones 200,260 --gamma 0.25 \
        --val-every 50 --log-every 10 --save-every 100 --out "$RUNS/student-$m"
    done
fi

if [[ $STAGE == report || $STAGE == all ]]; then
    nice -n 10 dukd report "$RUNS/student-scratch" "$RUNS/student-kd" "$RUNS/student-dukd" \
      --bench set5,set14 --data-dir "$BENCH" -o "$RUNS/report.html" \
      --title "scratch vs KD vs DUKD: EDSR 32x4 student of dukd-teacher-x4, x4 (short CPU runs)" \
      --note "Short example runs (300 iterations of 8 patches of 32x32 on a 2-core CPU, benchmarks/report/example.sh), not the runs behind the shipped dukd-student-x4: the students are far from converged."
fi

if [[ $STAGE == screenshot || $STAGE == all ]]; then
    # Debian's chromium package; the PNG is cut to the results, curves and agreement, 256 colours.
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,${SHOT_HEIGHT:-2050} \
      --screenshot="$RUNS/screenshot-full.png" "file://$(realpath "$RUNS/report.html")" 2>/dev/null
    python - "$RUNS/screenshot-full.png" benchmarks/report/example.png <<'PY'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
im.quantize(256, method=Image.Quantize.MEDIANCUT).save(sys.argv[2], optimize=True)
print(sys.argv[2], im.size)
PY
fi
