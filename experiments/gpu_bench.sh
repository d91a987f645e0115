#!/usr/bin/env bash
# One device call (issue 15, README "Performance"): `python -m thinfilm.bench` for the researcher's
# networks on a CUDA card, every lever off and on; results as JSON lines under $OUT. Budget: <= 8 min.
#   OUT=results bash experiments/gpu_bench.sh          (on the device: PYTHONPATH=. is set here)
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
start=$(date +%s)
run() {  # name, limit in s, bench args...
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 -m thinfilm.bench --device cuda --repeats 5 --json "$OUT/$name.json" "$@" \
    > "$OUT/$name.log" 2>&1
  echo "$name: exit $? [$(( $(date +%s) - start )) s] $(grep -E 'train_s_per_step|train_mfu|batch1_s' "$OUT/$name.log" | tr -s ' ' | tr '\n' ' ')"
}
for cfg in pmma_256 pmma_512; do
  run "${cfg}_bf16" 90 --config "experiments/$cfg.toml" --precision bf16
  run "${cfg}_bf16_cl" 90 --config "experiments/$cfg.toml" --precision bf16 --channels-last
  run "${cfg}_bf16_compile" 150 --config "experiments/$cfg.toml" --precision bf16 --compile
  run "${cfg}_fp32" 90 --config "experiments/$cfg.toml" --precision fp32
done
run pmma_256_bf16_syncfree 90 --config experiments/pmma_256.toml --precision bf16 --set train.sync_free=true
run default_bf16 60 --config experiments/default.toml --precision bf16
run default_bf16_syncfree 60 --config experiments/default.toml --precision bf16 --set train.sync_free=true
echo "total: $(( $(date +%s) - start )) s"
