#!/usr/bin/env bash
# The DUKD paper's Table 2 protocol with this project's CLI: every student (EDSR-S, RCAN-S,
# SwinIR-S) x method (scratch, kd, dukd) x scale, x2 first, then x3 and x4; the EDSR x4 KD and DUKD
# students start from the matching x2 student (--init-from, non-strict, EMA weights), as the
# released configs do. Then Set5/Set14/BSD100/Urban100 with `dukd evaluate` and a Table-2-shaped
# Markdown table with the paper's numbers beside ours (table2_md.py).
#
#   DIV2K=/data/DIV2K BENCH=/data/benchmarks \
#   EDSR_L_X2=... EDSR_L_X3=... EDSR_L_X4=... RCAN_L_X2=... ... SWINIR_L_X4=... \
#   bash benchmarks/paper/table2.sh [train|evaluate|table|all]
#
# Needs a GPU and DIV2K (250k iterations per row, as released). Environment:
#   DIV2K      training data (a folder holding DIV2K_train_HR[, DIV2K_train_LR_bicubic]); required
#   BENCH      folder holding Set5/ Set14/ BSD100/ Urban100/ (HR/); default $DUKD_DATA
#   <T>_X<s>   teacher weights per teacher and scale (EDSR_L_X4, RCAN_L_X2, SWINIR_L_X3, ...); default:
#              the preset's declared source (edsr-l declares a community mirror; rcan-l and swinir-l none)
#   ITERS      iterations per run (default 250000; a smoke test: ITERS=2)
#   RECIPE     authors (default: the released iteration, for reproducing the table) or dukd
#   SCALES     default "2 3 4"; STUDENTS default "edsr rcan swinir"; METHODS default "scratch kd dukd"
#   RUNS       run directories and evaluation JSON (default runs/table2)
#   EVAL_BENCH benchmarks to evaluate (default: Set5, Set14, BSD100, Urban100 where present)
#   EXTRA      more `dukd distill` options for every run (e.g. "--batch-size 4 --patch-size 16 --device cpu")
#   SELF_ENSEMBLE_EDSR=1  evaluate the EDSR rows with x8 self-ensemble (the released EDSR configs set
#              val.self_ensemble: true; whether the paper's EDSR numbers used it is not stated)
set -euo pipefail
: "${DIV2K:?set DIV2K to the training data folder}"
ITERS=${ITERS:-250000}
RECIPE=${RECIPE:-authors}
SCALES=${SCALES:-"2 3 4"}
STUDENTS=${STUDENTS:-"edsr rcan swinir"}
METHODS=${METHODS:-"scratch kd dukd"}
RUNS=${RUNS:-runs/table2}
BENCH=${BENCH:-${DUKD_DATA:-}}
EXTRA=${EXTRA:-}
HERE=$(cd "$(dirname "$0")" && pwd)
STAGE=${1:-all}
case "$STAGE" in train|evaluate|table|all) ;; *) echo "usage: $0 [train|evaluate|table|all]" >&2; exit 2 ;; esac
mkdir -p "$RUNS"
# Released schedule: lr 1e-4, x0.1 at 100k and 200k of 250k (scaled with ITERS for short runs).
M1=$((ITERS * 2 / 5)); M2=$((ITERS * 4 / 5)); [[ $M1 -lt 1 ]] && M1=1; [[ $M2 -le $M1 ]] && M2=$((M1 + 1))

teacher_opts() {  # family scale
  local var; var="$(echo "$1" | tr a-z A-Z)_L_X$2"
  echo "--teacher $1-l${!var:+ --teacher-weights ${!var}}"
}

if [[ $STAGE == train || $STAGE == all ]]; then
  for s in $SCALES; do            # x2 first: the x4 EDSR students start from it
    for f in $STUDENTS; do
      for m in $METHODS; do
        run="$RUNS/$f-$m-x$s"
        [[ -f $run/state.pt ]] && continue
        opts=(--method "$m" --student "$f-s" --scale "$s" --data "$DIV2K" --recipe "$RECIPE"
              --iters "$ITERS" --milestones "$M1,$M2" --val-every 0 --out "$run")
        # shellcheck disable=SC2207
        [[ $m != scratch ]] && opts+=($(teacher_opts "$f" "$s"))
        if [[ $f == edsr && $s == 4 && $m != scratch ]]; then
          opts+=(--init-from "$RUNS/$f-$m-x2")   # released: KD / DUKD EDSR x4 from the x2 student
        fi
        # shellcheck disable=SC2086
        dukd distill "${opts[@]}" $EXTRA
      done
    done
  done
fi

if [[ $STAGE == evaluate || $STAGE == all ]]; then
  for s in $SCALES; do
    for f in $STUDENTS; do
      for m in $METHODS; do
        run="$RUNS/$f-$m-x$s"
        ens=(); [[ $f == edsr && ${SELF_ENSEMBLE_EDSR:-0} == 1 ]] && ens=(--self-ensemble)
        dukd evaluate --model "$f-s" --weights "$run/student.safetensors" --scale "$s" \
          ${BENCH:+--data-dir "$BENCH"} ${EVAL_BENCH:+--bench "$EVAL_BENCH"} "${ens[@]}" --json "$RUNS/eval-$f-$m-x$s.json"
      done
    done
  done
fi

if [[ $STAGE == table || $STAGE == all ]]; then
  python "$HERE/table2_md.py" "$RUNS" --scales "$SCALES" --students "$STUDENTS" --methods "$METHODS" | tee "$RUNS/table2.md"
fi
