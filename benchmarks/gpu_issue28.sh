#!/usr/bin/env bash
# USER-LLM near the GPU's limit, at the Vicuna-7B shape (random weights from a config, bfloat16):
# MFU per row, the batch-size sweep, the UHEM at n = 5-50, shared-prefix ranking and a compiled
# scoring row. At most 500 s (about 6-8 minutes expected) on one H200; each part has its own time limit, so a part that
# runs long costs only itself, and every finished part has written its JSON.
#
#   RESULTS_DIR=$OUT bash benchmarks/gpu_issue28.sh      # on the GPU machine (then copy $OUT/*.json to benchmarks/results/)
#   TINY=1 bash benchmarks/gpu_issue28.sh                # CPU rehearsal at a tiny shape (~2 min on a shared 2-core machine)
#
# Writes RESULTS_DIR/gpu_paper_scale*.json (default benchmarks/results) and RESULTS_DIR/gpu_issue28.log.
set -u -o pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/benchmarks/results}"
mkdir -p "$RESULTS_DIR"
PYTHON="${PYTHON:-python3}"
LOG="$RESULTS_DIR/gpu_issue28.log"
: >"$LOG"

if [ "${TINY:-0}" = 1 ]; then
  # Same parts, same code, a shape and sizes a CPU runs in seconds.
  COMMON=(--tiny --device cpu --output-dir "$RESULTS_DIR" --warmup 0 --repeats 1)
  SUFFIX=_tiny
  ROWS=(--history-lengths 2 5 --batch-size 2 --eval-batch-size 4 --item-tokens 12)
  SWEEP=(--skip-rows --sweep-batch-sizes 1 2 4 --item-tokens 12 --item-tokens-spread 4 --length-buckets 4)
  LONG=(--history-lengths 10 --batch-size 2 --eval-batch-size 2 --item-tokens 12)
  PARTS=(--history-lengths 5 10 --batch-size 2 --item-tokens 12 --candidates 40 --users 4 --ranking-batch-size 16)
  COMPILE=(--history-lengths 2 --batch-size 2 --eval-batch-size 4 --item-tokens 12 --compile --warmup 1)  # compiling is not timed
  LIMIT=(300 300 300 300 300)
else
  COMMON=(--output-dir "$RESULTS_DIR")
  SUFFIX=
  ROWS=(--history-lengths 5 10)
  SWEEP=(--skip-rows --sweep-batch-sizes 8 16 32 64 128 256 --warmup 1 --repeats 3 --item-tokens-spread 8 --length-buckets 8)
  LONG=(--history-lengths 20 50 --warmup 1 --repeats 3)
  PARTS=(--warmup 1 --repeats 2)
  COMPILE=(--history-lengths 5 --compile --warmup 2 --repeats 5)
  LIMIT=(60 120 80 110 130)   # 500 s at most: inside one 600-s device call (compiling a 7B graph takes a minute or two)
fi

status=0
run_part() {  # name, time limit (s), command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
  [ "$rc" = 0 ] || status=1
}

# 1. MFU per row at the preset's batches (8 / 32), n = 5 and 10.
run_part rows "${LIMIT[0]}" "$PYTHON" benchmarks/gpu_paper_scale.py "${COMMON[@]}" "${ROWS[@]}" --name "gpu_paper_scale_mfu$SUFFIX"
# 2. Batch-size sweep, n = 5: step 2, step 1 (history inline), scoring, up to the first out-of-memory.
run_part sweep "${LIMIT[1]}" "$PYTHON" benchmarks/gpu_paper_scale.py "${COMMON[@]}" "${SWEEP[@]}" --name "gpu_paper_scale_sweep$SUFFIX"
# 4. Step 2 and scoring at long histories (the encoder alone is in part 4-5 below).
run_part long "${LIMIT[2]}" "$PYTHON" benchmarks/gpu_paper_scale.py "${COMMON[@]}" "${LONG[@]}" --name "gpu_paper_scale_long_mfu$SUFFIX"
# 4-5. The UHEM alone (cuDNN GRU, packed, no cuDNN; n = 5-50) and ranking 1,000 candidates.
run_part uhem_ranking "${LIMIT[3]}" "$PYTHON" benchmarks/gpu_uhem_ranking.py "${COMMON[@]}" "${PARTS[@]}" --name "gpu_paper_scale_uhem_ranking$SUFFIX"
# 3. Scoring under torch.compile (the forward has no host syncs; the GRU is dynamo's one graph break).
run_part compiled "${LIMIT[4]}" "$PYTHON" benchmarks/gpu_paper_scale.py "${COMMON[@]}" "${COMPILE[@]}" --name "gpu_paper_scale_compiled$SUFFIX"

ls -l "$RESULTS_DIR"/gpu_paper_scale*"$SUFFIX".json | tee -a "$LOG"
exit $status
