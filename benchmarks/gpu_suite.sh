#!/usr/bin/env bash
# Every GPU number of the project in one call: training throughput, time-to-Dice, grouped 5-fold CV,
# random split, U-Net vs UNet++ (and pruned heads), the bundled models, GPU latency/throughput.
# Usage: OUT=out/gpu DATA=/path/to/datasets bash benchmarks/gpu_suite.sh [quick]
# Writes $OUT/suite.log, $OUT/results.tgz (all JSON/CSV/PNG), the bundled models' weights.
# Each stage's failure is logged and the suite goes on; results are packed after every stage,
# so a time-out still returns what finished.
set -u
OUT=${OUT:-out/gpu}
DATA=${DATA:-../shared/datasets}
QUICK=${1:-}
W=$OUT/work
mkdir -p "$W"
LOG=$OUT/suite.log
export POLYPSEG_DATA=$DATA POLYPSEG_CACHE=${POLYPSEG_CACHE:-/tmp/polypseg-cache} PYTHONUNBUFFERED=1
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
CVC=$DATA/CVC-ClinicDB
DATA_GROUPS=""
# A copy laid out as images/ + masks/ (no space in folder names, for transfers) brings its sequence table.
[ -f "$CVC/sequences.csv" ] && [ -d "$CVC/images" ] && DATA_GROUPS="--set data.groups=$CVC/sequences.csv"
PY=${PY:-python3}
# Time budgets (s) per training run; `quick` shrinks them for a CPU dry run of the script itself.
T_RANDOM=${T_RANDOM:-60} T_FOLD=${T_FOLD:-36} T_FULL=${T_FULL:-60} T_FAST=${T_FAST:-20} T_UNET=${T_UNET:-30} BENCH_S=10 DEV=cuda SIZE="--set data.height=288 --set data.width=384"
TP="--width 32 --size 256 256" BENCH="--iters 50"
if [ "$QUICK" = quick ]; then
  T_RANDOM=4 T_FOLD=3 T_FULL=3 T_FAST=3 T_UNET=3 BENCH_S=2 DEV=cpu SIZE="--set data.height=64 --set data.width=80 --set model.width=4"
  TP="--width 4 --size 64 80" BENCH="--iters 2 --height 64 --width 80 --no-onnx"
fi
START=$(date +%s)
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
# Reports embed images (~3 MB each): only fold 0's and the random split's travel back.
pack() { (cd "$W" && tar czf ../results.tgz --exclude='*.pt' --exclude='*.tmp*' --exclude='./.*' \
  $(ls -d */report.html 2>/dev/null | grep -v -E '^eval_(fold0|random)/' | sed 's/^/--exclude=/') .) 2>/dev/null; }
stage() { local name=$1; shift; log "stage $name: $*"; if "$@" >>"$LOG" 2>&1; then log "stage $name ok"; else log "stage $name FAILED"; fi; pack; }
train() {  # train NAME T SET...
  local name=$1 t=$2; shift 2
  $PY -m polypseg train --data "$CVC" --out "$W/$name" --no-progress --preset full --set device=$DEV \
    --set time_limit_s=$t --set optim.epochs=1000 --set ema=0.99 $SIZE $DATA_GROUPS "$@"
}
evaluate() {  # evaluate RUN OUTNAME [extra args]
  local run=$1 name=$2; shift 2
  $PY -m polypseg evaluate --checkpoint "$W/$run/best.pt" --data "$CVC" --split test --out "$W/$name" --device $DEV \
    --batch-size 32 --overwrite "$@"
}

log "device: $($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")'); torch $($PY -c 'import torch; print(torch.__version__)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1

# 0. Smoke: one tiny epoch on the device, or stop here (saves the GPU window for a fixed rerun).
if ! $PY -m polypseg train --data "$CVC" --out "$W/smoke" --no-progress --set device=$DEV --set optim.epochs=1 \
    --set model.width=4 --set data.height=64 --set data.width=80 >>"$LOG" 2>&1; then
  log "smoke FAILED"; tail -30 "$LOG"; pack; exit 1
fi
rm -rf "$W/smoke"
log "smoke ok"

# 1. Training throughput: network alone vs our loop (torch and kornia augmentation) vs conventional pipeline.
# SKIP="throughput bench" skips stages already measured (a rerun in a short GPU window).
SKIP=${SKIP:-}
skip() { case " $SKIP " in *" $1 "*) log "stage $1 skipped"; return 0;; esac; return 1; }
skip throughput || stage throughput $PY benchmarks/train_throughput.py --data "$CVC" --device $DEV $TP --batch 16 \
  --seconds $BENCH_S --workers 8 --json "$W/train_throughput.json"
# 2. Leaky random 80/20 split (the seed's protocol): time to Dice 0.90.
stage random train random $T_RANDOM --set data.split_by=frame
( evaluate random eval_random >>"$LOG" 2>&1 ) &
# 3. Grouped 5-fold cross-validation (sequence-grouped); each fold evaluated while the next trains.
fold() { stage fold$1 train fold$1 $T_FOLD --set data.split_by=kfold --set data.fold=$1; ( evaluate fold$1 eval_fold$1 >>"$LOG" 2>&1 ) & }
fold 0
# 4. The bundled models: full on all of CVC-ClinicDB; fast (width 16, 144x192) with fold 0 held out.
#    Weights go out right away (safetensors fp16; the full one split to fit 16 MiB per returned file).
stage full train full $T_FULL --set data.split_by=none
$PY -m polypseg export --checkpoint "$W/full/best.pt" --format safetensors --out "$OUT/unetpp_cvc.safetensors" >>"$LOG" 2>&1 \
  && (cd "$OUT" && split -b 12M -d unetpp_cvc.safetensors unetpp_cvc.safetensors.part && rm unetpp_cvc.safetensors)
stage fast train fast $T_FAST --set data.split_by=kfold --set data.fold=0 --set model.width=16 \
  --set data.height=144 --set data.width=192 ${QUICK:+--set model.width=4 --set data.height=48 --set data.width=64}
$PY -m polypseg export --checkpoint "$W/fast/best.pt" --format safetensors --out "$OUT/unetpp_fast_cvc.safetensors" >>"$LOG" 2>&1
for L in 1 2 3 4; do ( evaluate fast eval_fast_L$L --prune $L >>"$LOG" 2>&1 ) & done
for f in 1 2 3 4; do fold $f; done
# 5. U-Net on fold 0, and UNet++ fold 0 pruned to each head.
stage unet train unet $T_UNET --set data.split_by=kfold --set data.fold=0 --set model.name=unet
( evaluate unet eval_unet >>"$LOG" 2>&1 ) &
for L in 1 2 3 4; do ( evaluate fold0 eval_fold0_L$L --prune $L >>"$LOG" 2>&1 ) & done
# 6. Inference latency/throughput on the GPU.
skip bench || stage bench $PY -m polypseg benchmark --device $DEV $BENCH --json "$W/benchmark_gpu.json"
wait
pack
log "done"
