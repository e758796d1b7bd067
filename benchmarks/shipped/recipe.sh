#!/usr/bin/env bash
# The recipe behind the shipped x4 models (dukd-teacher-x4, dukd-student-x4) and README's results
# table. Every step is this project's own CLI. Run from the repository root:
#
#   bash benchmarks/shipped/recipe.sh teacher     # EDSR-baseline teacher, scratch
#   bash benchmarks/shipped/recipe.sh students    # the student with scratch, kd and dukd
#   bash benchmarks/shipped/recipe.sh evaluate    # bicubic, teacher and the three students
#
# DUKD_SHARED (default ../shared) holds data/train (the 291 images) and data/benchmarks.
# RUNS (default runs/shipped) receives the run directories and the evaluation JSON.
# The shipped weights were trained on a 2-core CPU (torch 2.13.0 CPU build, 2 threads) with
# bf16 autocast and channels-last; CPU runs are bit-reproducible for a given machine kind.
set -euo pipefail
SHARED=${DUKD_SHARED:-../shared}
RUNS=${RUNS:-runs/shipped}
TRAIN="$SHARED/data/train"
BENCH="$SHARED/data/benchmarks"
COMMON=(--scale 4 --data "$TRAIN" --seed 0 --precision bf16 --channels-last --device cpu
        --val-bench set5 --data-dir "$BENCH")
STUDENT=(--student edsr --student-arg n_feats=32 --student-arg n_resblocks=4)
STUDENT_TRAIN=(--iters 1200 --batch-size 16 --patch-size 48 --lr 5e-4 --milestones 800,1050 --gamma 0.25
               --val-every 300 --save-every 300)

STAGE=${1:-all}
case "$STAGE" in
  teacher|students|evaluate|all) ;;
  *) echo "usage: $0 [teacher|students|evaluate|all]" >&2; exit 2 ;;
esac
mkdir -p "$RUNS"

if [[ $STAGE == teacher || $STAGE == all ]]; then
    dukd distill --method scratch --student edsr-baseline "${COMMON[@]}" \
      --iters 2700 --batch-size 16 --patch-size 48 --lr 4e-4 --milestones 1800,2400 --gamma 0.25 \
      --val-every 500 --save-every 250 --out "$RUNS/teacher"
fi

if [[ $STAGE == students || $STAGE == all ]]; then
    for m in scratch kd dukd; do
      dukd distill --method "$m" --teacher edsr-baseline --teacher-weights "$RUNS/teacher/student.safetensors" \
        "${STUDENT[@]}" "${COMMON[@]}" "${STUDENT_TRAIN[@]}" --out "$RUNS/student-$m"
    done
fi

if [[ $STAGE == evaluate || $STAGE == all ]]; then
    dukd evaluate --model bicubic --scale 4 --bench set5,set14,bsd100 --data-dir "$BENCH" --json "$RUNS/eval-bicubic.json"
    dukd evaluate --model edsr-baseline --weights "$RUNS/teacher/student.safetensors" --scale 4 \
      --bench set5,set14,bsd100 --data-dir "$BENCH" --json "$RUNS/eval-teacher.json"
    for m in scratch kd dukd; do
      dukd evaluate --model edsr --arg n_feats=32 --arg n_resblocks=4 --weights "$RUNS/student-$m/student.safetensors" \
        --scale 4 --bench set5,set14,bsd100 --data-dir "$BENCH" --json "$RUNS/eval-student-$m.json"
    done
fi
